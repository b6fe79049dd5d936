"""``centrobind example imu``: bind an IMU-like sensor to pictures and captions, end to end.

1. Data (offline, seeded; :mod:`centrobind.examples.imu_data`): a training set and a separate
   test set of accelerometer windows (``.npy``), pictures (PNG) and captions of six activities.
2. **Towers compared**: two CentroBind runs on the training manifest, identical but for the IMU
   tower: ``conv1d`` (a 1-D CNN over the ``[3, 128]`` window) vs ``mlp`` (the same MLP head as
   every other modality, over the flattened window). Pictures: ``cnn``; captions: frozen MiniLM
   features + ``mlp`` (precomputed and raw items in one run).
3. **Keeping a pretrained space** (ImageBind's recipe): stage 1 trains the picture tower into
   MiniLM's caption space (captions: ``identity`` tower, so the space *is* MiniLM's) on picture +
   caption pairs only (half of the training items); stage 2 freezes that picture tower
   (``--init-from`` stage 1, ``cnn,...,freeze``) and trains the IMU tower on picture + IMU pairs
   only (the other half; no caption column at all). Captions are then encoded by the kept space
   (stage 1's identity tower: plain MiniLM) and IMU windows by stage 2: caption <-> IMU retrieval
   is scored although the two never met. A control repeats stage 2 with a random frozen picture
   tower (no stage 1).
4. Metrics on the held-out test set, with the run's ``Model.encode`` on raw items: zero-shot
   activity accuracy from text (each IMU window is given the class of the nearest of the six
   class prompts), and class-level top-1 retrieval IMU -> caption and IMU -> picture (the top
   hit has the query's activity; chance 1/6). A markdown report and two figures.
"""

from __future__ import annotations

import csv
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from .imu_data import ACTIVITIES, TEMPOS, make_imu_data

__all__ = ["run_imu_example"]

PROMPT = "someone {act} {adv}"
#: Towers of the example (small: it trains five runs on two CPU cores in minutes).
CONV1D = "conv1d,width=16,layers=3"
PICTURE = "cnn,width=8,layers=3,size=16"
ADVERB = {"slow": "slowly", "fast": "quickly"}


def _prompts() -> list[str]:
    return [PROMPT.format(act=a, adv=ADVERB[t]) for a in ACTIVITIES for t in TEMPOS]


def _read_rows(manifest: Path) -> list[dict[str, str]]:
    with open(manifest, newline="") as f:
        return list(csv.DictReader(f))


def _write_rows(path: Path, rows: list[dict[str, str]], columns: list[str]) -> Path:
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    return path


def _scores(model: Any, test: Path, text_model: Any = None) -> dict[str, float]:
    """Zero-shot text -> IMU accuracy and class-level top-1 retrieval on the test manifest (%).
    ``text_model``: encode captions with another run sharing the space (default ``model``)."""
    text_model = text_model or model
    rows = _read_rows(test)
    base = test.parent
    classes = [f"{a}-{t}" for a in ACTIVITIES for t in TEMPOS]
    y = np.array([classes.index(r["activity"]) for r in rows])
    imu = model.encode("imu", [str(base / r["imu"]) for r in rows])
    out: dict[str, float] = {}
    prompts = text_model.encode("caption", _prompts())
    out["zero-shot text->imu accuracy"] = 100 * float(((imu @ prompts.T).argmax(1) == y).mean())
    for m in ("caption", "image"):
        enc = text_model if m == "caption" else model
        items = [r[m] if m == "caption" else str(base / r[m]) for r in rows]
        g = enc.encode(m, items)
        top = (imu @ g.T).argmax(1)
        out[f"imu->{m} top-1 same activity"] = 100 * float((y[top] == y).mean())
    return out


def _cfg(epochs: int, seed: int, **kw: Any) -> Any:
    from centrobind.config import TrainConfig

    base = {
        "epochs": epochs,
        "batch_size": 64,
        "seed": seed,
        "quiet": True,
        "lr": 2e-3,
        "split": (0.8, 0.1, 0.1),
        "device": "cpu",
    }
    return TrainConfig(**{**base, **kw})


def _train(manifest: Path, out: Path, cfg: Any, **kw: Any) -> tuple[Any, float]:
    from centrobind.inference import load
    from centrobind.runs import train_run

    t0 = time.perf_counter()
    train_run(manifest, cfg, out, labels=["activity"], **kw)
    return load(out, device="cpu"), time.perf_counter() - t0


def run_imu_example(
    out: str | Path, n: int = 480, n_test: int = 240, epochs: int = 20, seed: int = 0
) -> Path:
    """Run the whole example into ``out`` (data, runs, ``report.md``, ``results.json``,
    figures); returns the report path."""
    import warnings

    from centrobind.errors import CentrobindWarning

    out = Path(out)
    train = make_imu_data(out / "data" / "train", n, seed)
    test = make_imu_data(out / "data" / "test", n_test, seed + 1000)
    runs = out / "runs"
    res: dict[str, Any] = {"n_train": n, "n_test": n_test, "epochs": epochs, "seed": seed}
    small = {"image": PICTURE, "caption": "mlp"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CentrobindWarning)  # the test split is the other set
        towers: dict[str, Any] = {}
        for name, imu in (("conv1d", CONV1D), ("mlp", "mlp")):
            cfg = _cfg(epochs, seed, towers={**small, "imu": imu}, embed_dim=64)
            model, secs = _train(train, runs / f"imu-{name}", cfg)
            towers[name] = {**_scores(model, test), "train seconds": round(secs, 1)}
        res["towers"] = towers
        res["pretrained_space"] = _keep_space(train, test, runs, epochs, seed)
    (out / "results.json").write_text(json.dumps(res, indent=2))
    _figures(out, train, res)
    report = out / "report.md"
    report.write_text(_markdown(res))
    return report


def _keep_space(train: Path, test: Path, runs: Path, epochs: int, seed: int) -> dict[str, Any]:
    """Stage 1 (pictures -> MiniLM's caption space on picture+caption pairs), stage 2 (IMU ->
    the frozen picture tower on picture+IMU pairs, no captions), and the control."""
    rows = _read_rows(train)
    half = len(rows) // 2
    d = train.parent
    a = _write_rows(d / "stage1.csv", rows[:half], ["image", "caption", "activity"])
    b = _write_rows(d / "stage2.csv", rows[half:], ["image", "imu", "activity"])
    keep = {"caption": "identity", "image": PICTURE}
    cfg1 = _cfg(epochs, seed, towers=keep, embed_dim=384, objective="all_pairs")
    text, s1 = _train(a, runs / "space-stage1", cfg1)
    stage2 = {"image": PICTURE + ",freeze", "imu": CONV1D}
    cfg2 = _cfg(
        epochs,
        seed,
        towers=stage2,
        embed_dim=384,
        objective="fixed_anchor",
        anchor="image",
        anchor_init="none",
    )
    out: dict[str, Any] = {"stage 1 seconds": round(s1, 1)}
    model, s2 = _train(b, runs / "space-stage2", cfg2, init_from=runs / "space-stage1")
    out["bound"] = {**_scores(model, test, text), "stage 2 seconds": round(s2, 1)}
    control, _ = _train(b, runs / "space-control", cfg2)  # no stage 1: a random frozen picture net
    out["control"] = _scores(control, test, text)
    out["chance"] = 100 / 6
    return out


def _figures(out: Path, manifest: Path, res: dict[str, Any]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from PIL import Image

    rows = _read_rows(manifest)
    fig, axes = plt.subplots(2, 6, figsize=(15, 4.2), gridspec_kw={"height_ratios": [2, 1.4]})
    for c in range(6):
        r = rows[c]
        x = np.load(manifest.parent / r["imu"])
        for k, name in enumerate("xyz"):
            axes[0, c].plot(x[k], lw=0.9, label=name)
        axes[0, c].set_title(r["activity"], fontsize=10)
        axes[0, c].set_xticks([])
        axes[1, c].imshow(Image.open(manifest.parent / r["image"]))
        axes[1, c].set_title(r["caption"], fontsize=7)
        axes[1, c].axis("off")
    axes[0, 0].legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    fig.savefig(out / "imu_examples.png", dpi=90)
    plt.close(fig)

    t = res["towers"]
    ps = res["pretrained_space"]
    keys = list(t["conv1d"])[:-1]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 3.8))
    w = 0.38
    for i, name in enumerate(("conv1d", "mlp")):
        ax1.bar(np.arange(len(keys)) + (i - 0.5) * w, [t[name][k] for k in keys], w, label=name)
    ax1.set_xticks(np.arange(len(keys)), [k.replace(" ", "\n", 2) for k in keys], fontsize=8)
    ax1.set_ylabel("% on the test set")
    ax1.set_title("IMU tower: conv1d vs MLP on the flattened window")
    ax1.axhline(100 / 6, color="grey", ls=":", lw=1)
    ax1.legend()
    zs = "zero-shot text->imu accuracy"
    vals = [ps["bound"][zs], ps["control"][zs], ps["chance"]]
    ax2.bar(
        ["bound via pictures", "control (random\nfrozen pictures)", "chance"],
        vals,
        color=["C2", "C7", "C7"],
    )
    ax2.set_ylabel("zero-shot text -> IMU accuracy (%)")
    ax2.set_title("No text-IMU pairs: text <-> IMU emerges")
    fig.tight_layout()
    fig.savefig(out / "imu_results.png", dpi=90)
    plt.close(fig)


def _markdown(res: dict[str, Any]) -> str:
    t, ps = res["towers"], res["pretrained_space"]
    keys = list(t["conv1d"])
    lines = [
        "# IMU example: results",
        "",
        f"{res['n_train']} training and {res['n_test']} test items, {res['epochs']} epochs, "
        f"seed {res['seed']}; scores in % on the test set (chance {100 / 6:.1f}%).",
        "",
        "| IMU tower | " + " | ".join(keys) + " |",
        "|---|" + "---|" * len(keys),
    ]
    for name in ("conv1d", "mlp"):
        lines.append(f"| {name} | " + " | ".join(f"{t[name][k]:.1f}" for k in keys) + " |")
    k = "zero-shot text->imu accuracy"
    lines += [
        "",
        "Pretrained space kept (captions: identity tower on MiniLM; stage 2 saw no caption):",
        "",
        "| stage 2 picture tower | " + " | ".join(ps["control"]) + " |",
        "|---|" + "---|" * len(ps["control"]),
        "| from stage 1, frozen | "
        + " | ".join(f"{ps['bound'][c]:.1f}" for c in ps["control"])
        + " |",
        "| random, frozen (control) | "
        + " | ".join(f"{ps['control'][c]:.1f}" for c in ps["control"])
        + " |",
        "",
        f"Zero-shot text -> IMU: {ps['bound'][k]:.1f}% bound vs {ps['control'][k]:.1f}% control.",
        "",
        "![examples](imu_examples.png)",
        "",
        "![results](imu_results.png)",
        "",
    ]
    return "\n".join(lines)
