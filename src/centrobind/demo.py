"""``centrobind demo``: a tri-modal example built offline, end to end.

1. Raw data: ``n`` of scikit-learn's 8x8 handwritten digits saved as PNG images; a caption per
   image from templates, naming the digit and two properties measured on that image (stroke
   weight: thin/medium/bold from the ink total; slant: leaning left/upright/leaning right from
   the ink's x-y moment); and a spoken clip per image made by espeak-ng (the digit's name and the
   stroke weight, in one of four voices at a random speed and pitch), from the espeakng-loader
   wheel (:mod:`centrobind.espeak`; pip only, no system package).
2. ``featurize``: captions with MiniLM, images with ``pixels:16:gray``, speech with ``logmel``.
3. Training (seeded): CentroBind, AllPairs and FixedAnchor with each modality as the anchor; the
   best anchor is chosen on the validation split, never on the test split.
4. A report (markdown + one PNG): retrieval on the held-out test split (R@1/R@5, the paired item
   is the target) and free-text queries with the retrieved test images shown and the retrieved
   speech clips named.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any, TypedDict

import numpy as np

from centrobind.errors import CentrobindError

__all__ = ["build_raw", "run_demo", "QUERIES"]

WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
VOICES = ["en-us", "en-us+f2", "en+m3", "en+f4"]
TEMPLATES = [
    "a {weight} handwritten {word}, {slant}",
    "the digit {word} written in {weight} strokes, {slant}",
    "{slant}, a {weight} {word}",
    "a scanned {word}: {weight} ink, {slant}",
]
QUERIES = [
    "a bold handwritten seven",
    "the digit zero",
    "a thin one leaning right",
    "number four written in thin strokes",
]
ENCODERS = {"caption": "minilm", "image": "pixels:16:gray", "speech": "logmel"}
PAIRS = [("caption", "image"), ("speech", "image"), ("image", "caption")]


def _tertile_words(values: np.ndarray, words: list[str]) -> list[str]:
    lo, hi = np.quantile(values, [1 / 3, 2 / 3])
    return [words[0] if v <= lo else words[2] if v > hi else words[1] for v in values]


def _slant(img: np.ndarray) -> float:
    """x-y moment of the ink over its y variance (> 0: the top leans right)."""
    h, w = img.shape
    ys, xs = np.mgrid[0:h, 0:w]
    m = img / img.sum()
    cx, cy = (m * xs).sum(), (m * ys).sum()
    return float(-(m * (xs - cx) * (ys - cy)).sum() / max((m * (ys - cy) ** 2).sum(), 1e-9))


def build_raw(root: Path, n: int, seed: int = 0) -> Path:
    """Write ``n`` paired (image, caption, speech) samples under ``root``; returns the manifest
    (``manifest.csv``: image, caption, speech, digit). ``said.json`` lists what each clip says."""
    from PIL import Image
    from sklearn.datasets import load_digits

    from centrobind.espeak import Speaker

    speaker = Speaker()  # its own copy of espeak-ng: the clips depend only on the seed
    digits = load_digits()
    if not 10 <= n <= len(digits.images):
        raise CentrobindError(f"--n must be between 10 and {len(digits.images)}, got {n}")
    rng = np.random.default_rng(seed)
    idx = rng.permutation(len(digits.images))[:n]
    imgs, ys = digits.images[idx], digits.target[idx]  # [n, 8, 8] in 0..16, [n]
    weight = _tertile_words(imgs.reshape(n, -1).sum(1), ["thin", "medium", "bold"])
    slant = _tertile_words(
        np.array([_slant(im) for im in imgs]), ["leaning left", "upright", "leaning right"]
    )
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "speech").mkdir(exist_ok=True)
    rows, spoken = [], []
    for i in range(n):
        pix = (255 - imgs[i] * 255 / 16).round().astype(np.uint8)  # dark ink on white
        Image.fromarray(pix).resize((32, 32), Image.Resampling.NEAREST).save(
            root / "images" / f"{i:04d}.png"
        )
        word = WORDS[ys[i]]
        caption = TEMPLATES[rng.integers(len(TEMPLATES))].format(
            word=word, weight=weight[i], slant=slant[i]
        )
        said = f"{word}. {weight[i]}"
        voice = VOICES[rng.integers(len(VOICES))]
        speed, pitch = int(rng.integers(140, 200)), int(rng.integers(30, 70))
        wav = root / "speech" / f"{i:04d}.wav"
        speaker.say(said, wav, voice, speed, pitch)
        rows.append(
            {
                "image": f"images/{i:04d}.png",
                "caption": caption,
                "speech": f"speech/{i:04d}.wav",
                "digit": str(int(ys[i])),
            }
        )
        spoken.append(f"{said} ({voice}, {speed} wpm)")
    import csv

    manifest = root / "manifest.csv"
    with open(manifest, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    (root / "said.json").write_text(json.dumps(spoken, indent=0) + "\n")
    return manifest


# ---- retrieval helpers (small on purpose: centrobind.load / Index can replace them) --------


def _embed(run: Any, modality: str, x: np.ndarray) -> np.ndarray:
    """Raw features ``[n, D_m]`` -> the run's L2-normalised embeddings ``[n, D]``."""
    import torch

    t = torch.as_tensor(np.asarray(x, dtype=np.float32))
    if run.standardizer is not None:
        t = run.standardizer.transform(modality, t)
    return run.binder.embed(modality, t).numpy()


def _top_k(q: np.ndarray, g: np.ndarray, k: int) -> np.ndarray:
    """Row ids ``[nq, k]`` of the ``k`` highest dot products, best first."""
    return np.argsort(-(q @ g.T), axis=1, kind="stable")[:, :k]


class _MethodOptions(TypedDict, total=False):
    """The :class:`~centrobind.config.TrainConfig` fields that tell the demo's methods apart."""

    objective: str
    anchor: str


class _TrainOptions(TypedDict, total=False):
    """The :class:`~centrobind.config.TrainConfig` fields the demo sets for every method."""

    epochs: int
    batch_size: int
    early_stopping: int | None
    seed: int
    device: str
    quiet: bool
    anchor_pretrain_epochs: int


def _train_all(data: Path, runs: Path, cfg_kw: _TrainOptions) -> dict[str, Path]:
    """Train CentroBind, AllPairs and each FixedAnchor; returns method -> run folder."""
    from centrobind.config import TrainConfig
    from centrobind.runs import train_run

    out: dict[str, Path] = {}
    methods: list[tuple[str, _MethodOptions]] = [
        ("CentroBind", {"objective": "centrobind"}),
        ("AllPairs", {"objective": "all_pairs"}),
    ]
    methods += [(f"FixedAnchor({m})", {"objective": "fixed_anchor", "anchor": m}) for m in ENCODERS]
    for name, kw in methods:
        folder = runs / name.lower().replace("(", "-").replace(")", "")
        train_run(data, TrainConfig(**kw, **cfg_kw), folder)
        out[name] = folder
    return out


def _seed_rows(ds: Any, runs: dict[str, Path]) -> tuple[dict[str, Any], str, dict[str, Any]]:
    """One seed: R@1/R@5 (``evaluate_run``) and digit@1 per pair for CentroBind, AllPairs and
    the fixed anchor that is best on validation. Returns (rows, best anchor, val metrics)."""
    from centrobind.runs import evaluate_run, load_run

    anchors = [k for k in runs if k.startswith("FixedAnchor")]
    val = {k: load_run(runs[k]).meta.get("best_val_metric") for k in anchors}
    scores = {k: -1e9 if v is None else float(v) for k, v in val.items()}
    best = max(anchors, key=scores.__getitem__)
    labels = ds.labels["digit"].numpy()
    rows: dict[str, Any] = {}
    for name in ("CentroBind", "AllPairs", best):
        metrics = evaluate_run(runs[name])["retrieval"]
        run = load_run(runs[name])
        test = run.splits["test"].numpy()
        mask = ds.mask.numpy()[:, test]
        emb = {m: _embed(run, m, ds.features[m].numpy()[test]) for m in ds.modalities}
        row: dict[str, Any] = {}
        for a, b in PAIRS:
            both = mask[ds.modalities.index(a)] & mask[ds.modalities.index(b)]
            hit = _top_k(emb[a][both], emb[b][both], 1)[:, 0]  # top-1 gallery row per query
            same = labels[test][both][hit] == labels[test][both]
            r = metrics[f"{a}->{b}"]
            row[f"{a}->{b}"] = {
                "R@1": r["R@1"], "R@5": r["R@5"], "n": r["n_queries"],
                "digit@1": 100.0 * float(same.mean()),
            }  # fmt: skip
        rows["FixedAnchor (best on val)" if name == best else name] = row
    return rows, best, val


def _aggregate(per_seed: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean and std (ddof 0) over seeds of every metric."""
    out: dict[str, Any] = {}
    for name in per_seed[0]:
        out[name] = {}
        for pair, m in per_seed[0][name].items():
            agg: dict[str, Any] = {"n": m["n"]}
            for key in ("R@1", "R@5", "digit@1"):
                vals = np.array([s[name][pair][key] for s in per_seed], dtype=np.float64)
                agg[key], agg[key + "_std"] = float(vals.mean()), float(vals.std())
            out[name][pair] = agg
    return out


def run_demo(
    out: str | Path,
    tiny: bool = False,
    n: int | None = None,
    seed: int = 0,
    quiet: bool = False,
    seeds: int | None = None,
) -> Path:
    """Build, featurize, train (``seeds`` seeds: default 3, tiny 1) and report; returns the
    report path ``<out>/report.md`` (also ``results.json`` and ``retrieval.png``). Runs torch on
    one thread (restored afterwards)."""
    import torch

    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise CentrobindError(f"{out} is not empty; choose a new --out folder")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models: one thread is as fast, and robust on a busy machine
    try:
        return _run_demo(out, tiny, n, seed, quiet, seeds)
    finally:
        torch.set_num_threads(threads)


def _run_demo(
    out: Path, tiny: bool, n: int | None, seed: int, quiet: bool, seeds: int | None
) -> Path:
    from centrobind.data import load
    from centrobind.featurize import featurize

    t0 = time.perf_counter()
    n = n if n is not None else (40 if tiny else 600)
    seeds = seeds if seeds is not None else (1 if tiny else 3)
    if seeds < 1:
        raise CentrobindError(f"--seeds must be >= 1, got {seeds}")
    log = (lambda *a: None) if quiet else (lambda *a: print(*a, flush=True))
    log(f"[1/4] building {n} image/caption/speech samples in {out / 'raw'}")
    manifest = build_raw(out / "raw", n, seed)
    log("[2/4] featurizing (MiniLM captions, 16x16 pixels, log-mel speech)")
    data = out / "dataset"
    fz = featurize(manifest, data, encoders=ENCODERS, labels=["digit"], device="cpu",
                   progress=not quiet)  # fmt: skip
    log("      " + fz.line())
    ds = load(str(data))
    per_seed: list[dict[str, Any]] = []
    best_anchors: list[str] = []
    vals: list[dict[str, Any]] = []
    first_runs: dict[str, Path] = {}
    for i in range(seeds):
        log(f"[3/4] seed {seed + i}: training CentroBind, AllPairs, FixedAnchor x 3 anchors")
        runs = _train_all(data, out / "runs" / f"seed{seed + i}", _training(tiny, seed + i))
        first_runs = first_runs or runs
        rows, best, val = _seed_rows(ds, runs)
        per_seed.append(rows)
        best_anchors.append(best)
        vals.append(val)
    log("[4/4] writing the report")
    n_test, queries = _query_examples(out, data, ds, first_runs["CentroBind"])

    result = {
        "n_items": n,
        "n_test": n_test,
        "seeds": [seed + i for i in range(seeds)],
        "tiny": tiny,
        "encoders": ENCODERS,
        "best_anchor": best_anchors,
        "val_metric": vals,
        "methods": _aggregate(per_seed),
        "per_seed": per_seed,
        "queries": queries,
        "seconds": time.perf_counter() - t0,
        "cpus": os.cpu_count(),
        "featurize": {
            "encoded": fz.encoded,
            "failed": fz.failed,
            "items_per_s": {k: round(v, 1) for k, v in fz.items_per_s.items()},
        },
    }
    (out / "results.json").write_text(json.dumps(result, indent=2) + "\n")
    report = out / "report.md"
    report.write_text(_markdown(result))
    return report


def _training(tiny: bool, seed: int) -> _TrainOptions:
    """The demo's training budget for one seed (``tiny``: a few epochs, for tests)."""
    cfg_kw: _TrainOptions = {
        "epochs": 5 if tiny else 150,
        "batch_size": 16 if tiny else 64,
        "early_stopping": None if tiny else 30,
        "seed": seed,
        "device": "cpu",
        "quiet": True,
    }
    if tiny:
        cfg_kw["anchor_pretrain_epochs"] = 2
    return cfg_kw


def _query_examples(
    out: Path, data: Path, ds: Any, run_dir: Path
) -> tuple[int, list[dict[str, Any]]]:
    """Free-text :data:`QUERIES` against the test split with the run in ``run_dir`` (CentroBind,
    first seed): the top-5 images (drawn to ``<out>/retrieval.png``) and top-3 speech clips per
    query. Returns (number of test rows, one entry per query)."""
    from centrobind.featurize import load_encoder, read_items
    from centrobind.runs import load_run

    labels = ds.labels["digit"].numpy()
    run = load_run(run_dir)
    test = run.splits["test"].numpy()
    gal_img = test[ds.mask.numpy()[ds.modalities.index("image"), test]]
    gal_sp = test[ds.mask.numpy()[ds.modalities.index("speech"), test]]
    q = _embed(run, "caption", load_encoder("minilm").encode(QUERIES))
    top_img = gal_img[_top_k(q, _embed(run, "image", ds.features["image"].numpy()[gal_img]), 5)]
    top_sp = gal_sp[_top_k(q, _embed(run, "speech", ds.features["speech"].numpy()[gal_sp]), 3)]
    images = read_items(data, "image") or []
    speech = read_items(data, "speech") or []
    said = json.loads((out / "raw" / "said.json").read_text())
    _figure(out / "retrieval.png", QUERIES, top_img, images, labels)
    queries = [
        {
            "query": qtext,
            "images": [
                {"row": int(r), "digit": int(labels[r]), "file": Path(images[r]).name}
                for r in top_img[i]
            ],
            "speech": [
                {"row": int(r), "file": Path(speech[r]).name, "said": said[r]} for r in top_sp[i]
            ],
        }
        for i, qtext in enumerate(QUERIES)
    ]
    return int(len(test)), queries


def _figure(path: Path, queries: list[str], top: np.ndarray, images: list, labels) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from PIL import Image

    k = top.shape[1]
    fig, axes = plt.subplots(len(queries), k, figsize=(1.3 * k + 2.6, 1.35 * len(queries)))
    axes = np.atleast_2d(axes)
    for i, q in enumerate(queries):
        for j in range(k):
            ax = axes[i, j]
            r = int(top[i, j])
            with Image.open(images[r]) as im:
                ax.imshow(np.asarray(im.convert("L")), cmap="gray", vmin=0, vmax=255)
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(f"#{j + 1}: {int(labels[r])}", fontsize=8)
            if j == 0:
                ax.set_ylabel(q.replace(" written", "\nwritten").replace(" leaning", "\nleaning"),
                              fontsize=7, rotation=0, ha="right", va="center")  # fmt: skip
    fig.tight_layout()
    fig.savefig(path, dpi=72)
    plt.close(fig)


def _best(methods: dict[str, Any], key: str) -> str:
    """The method with the highest mean R@1 on pair ``key``."""
    return max(methods, key=lambda name: float(methods[name][key]["R@1"]))


def _markdown(res: dict[str, Any]) -> str:
    methods = res["methods"]
    keys = [f"{a}->{b}" for a, b in PAIRS]
    n_q = {k: next(iter(methods.values()))[k]["n"] for k in keys}
    head = "| method | " + " | ".join(f"{k.replace('->', '→')} R@1 | R@5 | digit@1" for k in keys)
    lines = [head + " |", "|---|" + "---:|" * 3 * len(keys)]
    for name, row in methods.items():
        cells = [
            f"{row[k]['R@1']:.1f} ± {row[k]['R@1_std']:.1f} | {row[k]['R@5']:.1f} ± "
            f"{row[k]['R@5_std']:.1f} | {row[k]['digit@1']:.0f} ± {row[k]['digit@1_std']:.0f}"
            for k in keys
        ]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    chance = [f"{100 / n_q[k]:.1f} | {min(100.0, 500 / n_q[k]):.1f} | 10" for k in keys]
    lines.append("| chance | " + " | ".join(chance) + " |")

    best = "; ".join(f"{k.replace('->', '→')}: {_best(methods, k)}" for k in keys)
    queries = []
    for q in res["queries"]:
        digits = ", ".join(str(x["digit"]) for x in q["images"])
        speech = "; ".join(f"`{x['file']}` “{x['said']}”" for x in q["speech"])
        queries.append(
            f"- **“{q['query']}”**: the five images show digits {digits}; "
            f"top-3 speech clips: {speech}"
        )
    vals = "; ".join(
        f"seed {sd}: "
        + ", ".join(f"{k[12:-1]} {v:.1f}" if v is not None else f"{k} n/a" for k, v in val.items())
        for sd, val in zip(res["seeds"], res["val_metric"], strict=True)
    )
    chosen = ", ".join(
        f"seed {sd}: {b[12:-1]}" for sd, b in zip(res["seeds"], res["best_anchor"], strict=True)
    )
    fz = res["featurize"]
    rate = ", ".join(f"{m} {v:.0f}/s" for m, v in fz["items_per_s"].items())
    table = "\n".join(lines)
    queries_md = "\n".join(queries)
    tiny = " --tiny" if res["tiny"] else ""
    seed_list = ", ".join(map(str, res["seeds"]))
    return f"""# Tri-modal demo: digits, captions and speech in one space

Rebuild with `centrobind demo --out demo_out{tiny}` (offline). This page:
seeds {seed_list}, {res["seconds"]:.0f} s end to end on a {res["cpus"]}-CPU machine.

**Data** ({res["n_items"]} paired samples). Images: scikit-learn's 8x8 handwritten digits, saved
as PNG. Captions: from templates, naming the digit, its stroke weight (thin / medium / bold:
tertiles of the ink total) and its slant (leaning left / upright / leaning right: tertiles of the
ink's x-y moment), e.g. “a bold handwritten seven, leaning right”. Speech: espeak-ng saying the
digit and the stroke weight (“seven. bold”) in one of four voices at a random speed and pitch.

**Features** (`centrobind featurize`): captions → `minilm` (384-d), images → `pixels:16:gray`
(256-d), speech → `logmel` (128-d); throughput in this run: {rate}.

**Training**: the same 2-layer MLP heads (D = 64) for every method, early stopping on the
validation split, {len(res["seeds"])} seed(s) (each with its own seeded train/val/test split). The
fixed anchor is picked per seed on the validation split, never on the test split (validation
mean R@1: {vals}); chosen: **{chosen}**.

## Retrieval on the held-out test split ({res["n_test"]} samples)

Mean ± std over the seeds. R@k (%): the query's own paired item is among the top k of the
{res["n_test"]}-item test gallery. digit@1 (%): the top-1 item shows the same digit. One query
= {100 / max(n_q.values()):.1f} points.

{table}

Best R@1 per pair: {best}.

## Text queries (CentroBind, seed {res["seeds"][0]}; its test split is the gallery)

Free-text queries, not captions from the data. Each row shows the five retrieved test images
(title: rank and true digit); the three retrieved speech clips are named below.

![retrieved images](retrieval.png)

{queries_md}
"""
