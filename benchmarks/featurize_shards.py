"""Featurize items/s with 1 process and with N concurrent ``--shard I/N`` processes.

    python benchmarks/featurize_shards.py [--n 4000] [--shards 2] [--out /tmp/featurize_shards]

The manifest has a caption (``minilm``) and a 32x32 PNG image (``imstats``) per row (the raw data
of ``benchmarks/featurize.py``). Each case is the real CLI, timed from start to exit (model
loading, manifest reading, writing and the digests included); the sharded case starts N
processes at once into one folder and ends when the last exits. Items/s counts rows x columns.
Each process keeps torch's default threads, as a user's would; ``--threads T`` sets
``OMP_NUM_THREADS`` for every process (``--threads 1`` with N = cores avoids oversubscription).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from featurize import _raw  # noqa: E402  (the same raw data as benchmarks/featurize.py)


def _manifest(root: Path, n: int) -> Path:
    _raw(root, n)
    with open(root / "text.csv") as f:
        texts = [r[0] for r in list(csv.reader(f))[1:]]
    path = root / "both.csv"
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["caption", "image"])
        w.writerows([[t, f"img/{i}.png"] for i, t in enumerate(texts)])
    return path


def _run(man: Path, out: Path, shards: int, threads: int | None) -> float:
    env = dict(os.environ)
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    base = [sys.executable, "-m", "centrobind.cli", "featurize", str(man), "--out", str(out),
            "--device", "cpu", "--quiet"]  # fmt: skip
    cmds = [base] if shards == 1 else [[*base, "--shard", f"{i}/{shards}"] for i in range(shards)]
    t = time.perf_counter()
    procs = [subprocess.Popen(c, env=env, stdout=subprocess.PIPE, text=True) for c in cmds]
    outs = [p.communicate()[0] for p in procs]
    wall = time.perf_counter() - t
    if any(p.returncode for p in procs):
        raise SystemExit(f"featurize failed: {outs}")
    return wall


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n", type=int, default=4000)
    p.add_argument("--shards", type=int, default=2)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--out", default="/tmp/featurize_shards")
    args = p.parse_args()
    root = Path(args.out)
    shutil.rmtree(root, ignore_errors=True)
    man = _manifest(root / "raw", args.n)
    walls = {}
    for k in (1, args.shards):
        walls[k] = _run(man, root / f"out-{k}", k, args.threads)
        print(f"{k} process(es): {walls[k]:.1f} s, {2 * args.n / walls[k]:.0f} items/s", flush=True)
    a = np.load(root / "out-1" / "modalities" / "image.npy")
    parts = sorted((root / f"out-{args.shards}" / "modalities" / "image").glob("*.npy"))
    same = bool(np.array_equal(a, np.concatenate([np.load(q) for q in parts])))
    print(json.dumps({
        "n": args.n, "columns": 2, "cpus": os.cpu_count(), "threads": args.threads,
        "seconds": walls, "speedup": round(walls[1] / walls[args.shards], 2),
        "sharded_equals_single": same,
    }))  # fmt: skip


if __name__ == "__main__":
    main()
