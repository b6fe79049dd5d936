"""The ``rawdata`` suite: a first hour on your own small raw data, end to end.

A few hundred generated items with class structure in three modalities, made offline and
seeded (:func:`make_shapes`): a shape (circle, square or triangle) in a colour (red or blue),
six classes, each item

- an image (PNG, 48 x 48): the shape at a random position and size on a noisy light background;
- a caption: a template naming the shape and its colour, with synonyms and unrelated words
  (size, place);
- a sound (WAV, 16 kHz): the shape sets the pitch (C4, G4 or D5, +-3 %), the colour the rhythm
  (one long tone, or three short beeps), at a random start, loudness and noise level.

Then what a user does (:func:`run_rawdata`): ``featurize`` with the default encoders, ``train``
with :class:`~centrobind.config.TrainConfig` defaults, ``evaluate``; the figure is held-out label
precision@5 (:func:`~centrobind.eval.label_retrieval`, mean over the ordered modality pairs on
the test split: of the five nearest test items of the other modality, the share with the
query's class). The same data is trained with each setting of :data:`GRID` too, to show how far
the defaults are from the best setting found.
"""

from __future__ import annotations

import csv
import dataclasses
import time
import wave
from pathlib import Path
from typing import Any

import numpy as np

from ..config import TrainConfig

__all__ = ["GRID", "SHAPES", "COLOURS", "make_shapes", "run_rawdata", "rawdata_markdown"]

SHAPES = ("circle", "square", "triangle")
COLOURS = ("red", "blue")
_SYNONYMS = {
    "circle": ("circle", "disc", "round shape", "round dot"),
    "square": ("square", "box", "four-sided block", "square tile"),
    "triangle": ("triangle", "wedge", "three-sided shape", "pointed triangle"),
    "red": ("red", "crimson", "scarlet", "bright red"),
    "blue": ("blue", "navy", "deep blue", "cobalt"),
}
_RGB = {"red": (200, 40, 40), "blue": (40, 60, 200)}
_PITCH = {"circle": 261.6, "square": 392.0, "triangle": 587.3}
_TEMPLATES = (
    "a {size} {colour} {shape} {place}",
    "{place}: one {colour} {shape}, {size}",
    "the picture shows a {shape} in {colour}, {size}",
    "{size} {shape}, coloured {colour}, {place}",
)
_SIZES = ("tiny", "small", "medium", "large", "big")
_PLACES = ("on the left", "on the right", "near the top", "near the bottom", "in the middle")

#: Settings tried besides the defaults: each a dict of TrainConfig fields (the same seeds).
GRID: tuple[dict[str, Any], ...] = (
    {"batch_size": 256},  # the old default: one step per epoch on 210 training rows
    {"batch_size": 32},
    {"lr": 3e-3},
    {"logit_scale_init": 10.0},
    {"logit_scale_init": 3.0},
    {"epochs": 300},
    {"early_stopping": 20},
    {"val_metric": "R@1"},  # the old validation score on a 30-row split
)


def _draw(shape: str, rgb: tuple[int, int, int], rng: np.random.Generator, size: int = 48) -> Any:
    from PIL import Image, ImageDraw

    bg = rng.integers(215, 250, 3)
    arr = np.clip(bg + rng.normal(0, 6, (size, size, 3)), 0, 255).astype(np.uint8)
    im = Image.fromarray(arr)
    r = float(rng.uniform(6, 15))
    cx, cy = rng.uniform(r + 2, size - r - 2, 2)
    colour = tuple(int(np.clip(c + rng.integers(-25, 26), 0, 255)) for c in rgb)
    d = ImageDraw.Draw(im)
    if shape == "circle":
        d.ellipse([cx - r, cy - r, cx + r, cy + r], fill=colour)
    elif shape == "square":
        d.rectangle([cx - r, cy - r, cx + r, cy + r], fill=colour)
    else:
        d.polygon([(cx, cy - r), (cx - r, cy + r * 0.8), (cx + r, cy + r * 0.8)], fill=colour)
    return im


def _sound(shape: str, colour: str, rng: np.random.Generator, rate: int = 16000) -> np.ndarray:
    t = np.arange(int(0.8 * rate)) / rate
    f = _PITCH[shape] * rng.uniform(0.97, 1.03)
    env = np.zeros_like(t)
    start = rng.uniform(0.0, 0.15)
    if colour == "red":  # one long tone
        env[(t >= start) & (t < start + 0.5)] = 1.0
    else:  # three short beeps
        for k in range(3):
            on = start + k * 0.18
            env[(t >= on) & (t < on + 0.08)] = 1.0
    x = rng.uniform(0.3, 0.8) * env * np.sin(2 * np.pi * f * t)
    return x + rng.normal(0, rng.uniform(0.005, 0.05), t.shape)


def _write_wav(path: Path, x: np.ndarray, rate: int = 16000) -> None:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(np.clip(np.round(x * 32767), -32768, 32767).astype("<i2").tobytes())


def make_shapes(root: str | Path, n: int = 300, seed: int = 0) -> Path:
    """Write ``n`` generated (image, caption, sound) items with a ``label`` column (shape and
    colour, six classes, balanced) under ``root``; returns ``root/manifest.csv``."""
    root = Path(root)
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "sounds").mkdir(exist_ok=True)
    rng = np.random.default_rng(seed)
    classes = [(s, c) for s in SHAPES for c in COLOURS]
    rows = []
    for i in range(n):
        shape, colour = classes[i % len(classes)]
        _draw(shape, _RGB[colour], rng).save(root / "images" / f"{i:04d}.png")
        _write_wav(root / "sounds" / f"{i:04d}.wav", _sound(shape, colour, rng))
        caption = _TEMPLATES[rng.integers(len(_TEMPLATES))].format(
            shape=rng.choice(_SYNONYMS[shape]),
            colour=rng.choice(_SYNONYMS[colour]),
            size=rng.choice(_SIZES),
            place=rng.choice(_PLACES),
        )
        rows.append(
            {
                "image": f"images/{i:04d}.png",
                "caption": caption,
                "sound": f"sounds/{i:04d}.wav",
                "label": f"{colour} {shape}",
            }
        )
    manifest = root / "manifest.csv"
    with open(manifest, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return manifest


def _score(data: Path, cfg: TrainConfig, folder: Path) -> dict[str, float]:
    """Train one run and return its held-out label P@5 / mAP, instance R@1 and epochs."""
    from ..runs import evaluate_run, train_run

    _, fit = train_run(data, cfg, folder)
    m = evaluate_run(folder)
    mean = m["label_retrieval"]["label"]["mean"]
    return {
        "P@5": float(mean["P@5"]),
        "mAP": float(mean["mAP"]),
        "R@1": float(m["retrieval"]["mean"]["R@1"]),
        "epochs": float(len(fit.history)) if fit is not None else 0.0,
    }


def _label(setting: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in setting.items()) or "defaults"


def run_rawdata(
    out: str | Path,
    n: int = 300,
    seeds: int = 3,
    grid: tuple[dict[str, Any], ...] = GRID,
    encoders: dict[str, str] | None = None,
    quiet: bool = True,
    base: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Build the data, featurize it with the default encoders (or ``encoders``), then train and
    evaluate the defaults and every ``grid`` setting on ``seeds`` seeds (seed s: split s and
    initialisation s). Returns ``{"n", "seeds", "encoders", "rows": [{"setting", "seed",
    "P@5", "mAP", "R@1", "epochs"}], "summary": {setting: {"P@5": (mean, std), ...}},
    "defaults", "best", "gap", "seconds"}`` (gap = best P@5 - the defaults' P@5). ``base``:
    TrainConfig fields under every setting (tests: a few epochs)."""
    from ..featurize import featurize

    t0 = time.perf_counter()
    out = Path(out)
    manifest = make_shapes(out / "raw", n=n, seed=0)
    fz = featurize(
        manifest, out / "data", encoders=encoders, labels=["label"], device="cpu",
        progress=not quiet,
    )  # fmt: skip
    settings: list[dict[str, Any]] = [{}, *grid]
    rows: list[dict[str, Any]] = []
    for setting in settings:
        for seed in range(seeds):
            given = {**(base or {}), **setting, "seed": seed, "quiet": True, "device": "cpu"}
            cfg = TrainConfig(**given)
            folder = out / "runs" / f"{_label(setting).replace(', ', '_')}-seed{seed}"
            rows.append(
                {"setting": _label(setting), "seed": seed, **_score(out / "data", cfg, folder)}
            )
    summary: dict[str, Any] = {}
    for setting in settings:
        mine = [r for r in rows if r["setting"] == _label(setting)]
        summary[_label(setting)] = {
            k: (float(np.mean([r[k] for r in mine])), float(np.std([r[k] for r in mine])))
            for k in ("P@5", "mAP", "R@1", "epochs")
        }
    best = max(summary, key=lambda s: summary[s]["P@5"][0])
    return {
        "n": n,
        "seeds": seeds,
        "encoders": fz.encoders,
        "rows": rows,
        "summary": summary,
        "defaults": "defaults",
        "best": best,
        "gap": summary[best]["P@5"][0] - summary["defaults"]["P@5"][0],
        "seconds": time.perf_counter() - t0,
        "train_defaults": {
            k: v for k, v in dataclasses.asdict(TrainConfig()).items() if k in _SHOWN_DEFAULTS
        },
    }


_SHOWN_DEFAULTS = ("batch_size", "epochs", "lr", "early_stopping", "min_steps", "val_metric")


def rawdata_markdown(res: dict[str, Any]) -> str:
    """The suite's section of a report: one table, defaults first, and the gap to the best."""
    enc = ", ".join(f"{m} `{s}`" for m, s in res["encoders"].items())
    lines = [
        "## Raw data: a small generated set, end to end (`rawdata`)",
        "",
        f"{res['n']} generated items (6 classes: circle/square/triangle x red/blue), each an "
        "image with the shape at a random place and size, a caption and a sound (pitch from "
        f"the shape, rhythm from the colour); featurized with the defaults ({enc}); "
        f"{res['seeds']} seeds. Held-out label precision@5 (%, mean over the 6 ordered pairs of "
        "the test split): of the 5 nearest test items of the other modality, the share of the "
        "query's class (chance 16.7). R@1: the paired item itself.",
        "",
        "| setting | label P@5 | label mAP | instance R@1 | epochs run |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, s in res["summary"].items():
        cells = [f"{s[k][0]:.1f} ± {s[k][1]:.1f}" for k in ("P@5", "mAP", "R@1")]
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {s['epochs'][0]:.0f} |")
    lines += [
        "",
        f"Best setting: {res['best']}; the defaults are {res['gap']:.1f} points of P@5 below "
        f"it ({res['seconds']:.0f} s for the suite).",
        "",
    ]
    return "\n".join(lines)


#: The ``--suite`` name of this suite. Not part of ``--suite all``: it runs its own pipeline
#: (featurize, train, evaluate) and is reported on its own page.
SUITE = "rawdata"


def run_rawdata_suite(
    out: str | Path, seeds: int | None = None, quick: bool = False, quiet: bool = False
) -> list[dict[str, Any]]:
    """``centrobind benchmark --suite rawdata``: :func:`run_rawdata` (3 seeds, all of
    :data:`GRID`; ``quick``: 1 seed, 150 items, the old batch size only), written to
    ``out/rawdata.md`` and ``out/rawdata.json``. Returns the result rows."""
    import json

    from ..errors import ConfigError

    if seeds is not None and seeds < 1:
        raise ConfigError(f"--seeds must be >= 1, got {seeds}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if quick:
        res = run_rawdata(out / "rawdata", n=150, seeds=seeds or 1, grid=GRID[:1], quiet=quiet)
    else:
        res = run_rawdata(out / "rawdata", seeds=seeds or 3, quiet=quiet)
    (out / "rawdata.md").write_text(rawdata_markdown(res), encoding="utf-8")
    (out / "rawdata.json").write_text(json.dumps(res, indent=1) + "\n", encoding="utf-8")
    if not quiet:
        print(
            f"wrote {out / 'rawdata.md'}: defaults {res['summary']['defaults']['P@5'][0]:.1f} "
            f"label P@5, best ({res['best']}) {res['summary'][res['best']]['P@5'][0]:.1f}"
        )
    rows: list[dict[str, Any]] = res["rows"]
    return rows
