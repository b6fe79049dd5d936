"""Run single benchmark cells for a method variant: the research loop behind the benchmark.

Each cell is exactly the benchmark's (``centrobind.bench.jobs.Job.run``: same split, heads,
budget and evaluation), for one objective with any options, at one logit scale, on the seeds
you ask for; it prints one JSON line per cell and a mean ± std summary. Use it to try an idea
on a few seeds before adding a method to the suite.

Usage::

    python benchmarks/cells.py --setting weak --objective centrobind --scale 3 --seeds 0-4
    python benchmarks/cells.py --setting weak --objective centrobind \\
        --option detach_anchor=false --scale 3 --seeds 0-4
    python benchmarks/cells.py --setting clean --objective all_pairs --scale 7 --epochs 200 \\
        --override lr=3e-3 --workers 2
    python benchmarks/cells.py --setting weak --m 16 --objective all_pairs --scale 3 --seeds 0-2
    python benchmarks/cells.py --setting mfeat --drop 0.6 --scale 7 --seeds 0-2

Settings: ``mfeat``, ``clean`` (synthetic, m1 noise 0.1), ``weak`` (synthetic, m1 noise 2.0).
``--drop p``: each training modality dropped at rate p (the missing suite). ``--m M``: the
M-suite's data (synthetic with M modalities, half the samples) instead of the 4-modality
setting. ``--epochs`` defaults to the benchmark's budget for the setting. Output per
cell: validation score (the trainer's early-stopping metric), test mean R@1, R@1 on the pairs
without m1 (synthetic), the epochs trained, seconds. Not part of the test suite.
"""

from __future__ import annotations

import argparse
import json
import statistics
from concurrent.futures import ProcessPoolExecutor
from typing import Any


def _value(text: str) -> Any:
    """``true``/``false``/numbers/JSON as such, anything else as a string."""
    low = text.lower()
    if low in ("true", "false"):
        return low == "true"
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _pairs(items: list[str]) -> tuple[tuple[str, Any], ...]:
    out = []
    for it in items:
        if "=" not in it:
            raise SystemExit(f"expected KEY=VALUE, got {it!r}")
        k, v = it.split("=", 1)
        out.append((k, _value(v)))
    return tuple(out)


def _seeds(text: str) -> list[int]:
    """``0-4`` or ``0,3``: non-negative seeds."""
    try:
        if "-" in text:
            a, b = text.split("-")
            seeds = list(range(int(a), int(b) + 1))
        else:
            seeds = [int(x) for x in text.split(",")]
    except ValueError:
        seeds = []
    if not seeds or min(seeds) < 0:
        raise argparse.ArgumentTypeError(f"expected e.g. 0-4 or 0,3, got {text!r}")
    return seeds


def run_cell(args: tuple) -> dict[str, Any]:
    setting, objective, options, overrides, scale, seed, epochs, m, drop = args
    import torch
    from threadpoolctl import threadpool_limits

    from centrobind.bench.jobs import (
        MFEAT,
        SYNTH_CLEAN_NOISE,
        SYNTH_WEAK_NOISE,
        BenchSettings,
        Job,
        synthetic_key,
    )
    from centrobind.bench.methods import Method

    torch.set_num_threads(1)
    threadpool_limits(1)
    s = BenchSettings()
    data = {
        "mfeat": MFEAT,
        "clean": ("synthetic", SYNTH_CLEAN_NOISE, s.synthetic_samples),
        "weak": ("synthetic", SYNTH_WEAK_NOISE, s.synthetic_samples),
    }[setting]
    if m is not None:  # the M-suite's data
        data = synthetic_key(data[1], s.synthetic_samples // 2, m)
    budget = epochs or (None if setting == "mfeat" else s.synthetic_epochs)
    method = Method("cell", objective=objective, options=options, overrides=overrides)
    job = Job(
        "cells",
        setting,
        method.with_scale(scale),
        seed,
        data,
        drop=drop,
        probe_tasks=0,
        loo=False,
        epochs=budget,
    )
    r = job.run(s.train_config())
    wo = [
        v for k, v in r.items() if k.startswith("pair/") and "m1" not in k[5:].split("->")
    ]  # pairs without m1 (not m10..m16)
    return {
        "setting": setting if m is None else f"{setting} M={m}",
        "seed": seed,
        "scale": scale,
        "val": r["val_metric"],
        "R@1": r["R@1"],
        "R@1_without_m1": statistics.mean(wo) if setting != "mfeat" and wo else None,
        "epochs": r.get("epochs"),
        "seconds": r.get("seconds"),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--setting", required=True, choices=["mfeat", "clean", "weak"])
    ap.add_argument("--objective", default="centrobind")
    ap.add_argument("--option", action="append", default=[], help="objective option KEY=VALUE")
    ap.add_argument("--override", action="append", default=[], help="TrainConfig KEY=VALUE")
    ap.add_argument("--scale", type=float, required=True, help="logit scale")
    ap.add_argument("--seeds", type=_seeds, default="0-2", help="e.g. 0-4 or 0,3")
    ap.add_argument("--epochs", type=int, default=None, help="default: the benchmark's budget")
    ap.add_argument("--m", type=int, default=None, help="the M-suite's data with M modalities")
    ap.add_argument(
        "--drop", type=float, default=0.0, help="drop each training modality at this rate"
    )
    ap.add_argument("--workers", type=int, default=1)
    a = ap.parse_args()
    if a.scale <= 0 or a.workers < 1 or (a.epochs is not None and a.epochs < 1):
        ap.error("--scale must be > 0, --workers and --epochs >= 1")
    if a.m is not None and (a.m < 2 or a.setting == "mfeat"):
        ap.error("--m needs a synthetic setting and M >= 2")
    if not 0.0 <= a.drop < 1.0:
        ap.error("--drop must be in [0, 1)")
    from centrobind.objectives import OBJECTIVES, make_objective

    options = _pairs(a.option)
    try:  # a bad objective or option: one line here, not a traceback from a worker
        kw = dict(options)
        if a.objective in OBJECTIVES and OBJECTIVES[a.objective].needs_num_modalities(kw):
            kw["num_modalities"] = 6 if a.setting == "mfeat" else a.m or 4
        make_objective(a.objective, **kw)
    except (KeyError, TypeError, ValueError) as e:
        ap.error(f"--objective {a.objective} {list(options)}: {e}")
    jobs = [
        (a.setting, a.objective, options, _pairs(a.override), a.scale, seed, a.epochs, a.m, a.drop)
        for seed in a.seeds
    ]
    with ProcessPoolExecutor(a.workers) as pool:
        rows = list(pool.map(run_cell, jobs))
    for r in rows:
        print(json.dumps(r))
    for key in ("val", "R@1", "R@1_without_m1"):
        v = [r[key] for r in rows if r[key] is not None]
        if v:
            sd = statistics.stdev(v) if len(v) > 1 else 0.0
            print(f"{key}: {statistics.mean(v):.1f} ± {sd:.1f} ({len(v)} seeds)")


if __name__ == "__main__":
    main()
