"""Training at scale: rows/s and peak memory of the in-memory and streaming paths.

For each N (rows) and storage dtype it writes (once, cached in ``--dir``) a dataset of 3
modalities x 256 features in shards of 2**20 rows, with a shared latent so the task is real.
Then, each in its own child process (so its memory is that measurement's own: "peak RSS" is
``VmHWM``, which includes the data files' pages mapped in and still resident, reclaimable page
cache; "peak anon" is the sampled peak of ``RssAnon``, the process's own arrays and tensors):

- ``stream``: the streaming source (block order), ``--steps`` training steps after the scan pass
  (which also warms the page cache): rows/s, peak RSS, scan seconds;
- ``memory``: the same steps on the in-memory path (skipped when its peak would not fit);
- ``floor``: the same model and step on one fixed batch already in memory: the matmul floor;
- ``embed`` (``--embed``): ``embed --out FOLDER`` of every row with a run trained briefly on the
  first dataset (rows/s of the whole call, peak RSS).

Usage::

    python benchmarks/scale.py --rows 100000 1000000 10000000 --dtype float16 float32

The figures in docs/performance.md come from this script (the command line is printed with them).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import resource
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

SHARD = 1 << 20
DIM = 256
MODS = ("a", "b", "c")


def make_data(root: Path, n: int, dtype: str, seed: int = 0) -> Path:
    """The dataset folder for ``n`` rows (written once; digests recorded)."""
    from centrobind.data.store import shard_name
    from centrobind.digests import record_digests

    folder = root / f"n{n}-{dtype}"
    if (folder / "digests.json").exists():
        return folder
    rng = np.random.default_rng(seed)
    w = {m: rng.normal(size=(32, DIM)).astype(np.float32) / 4 for m in MODS}
    for m in MODS:
        (folder / "modalities" / m).mkdir(parents=True, exist_ok=True)
    for s, a in enumerate(range(0, n, SHARD)):
        rows = min(SHARD, n - a)
        z = rng.normal(size=(rows, 32)).astype(np.float32)
        for m in MODS:
            x = np.tanh(z @ w[m]) + 0.3 * rng.normal(size=(rows, DIM)).astype(np.float32)
            np.save(folder / "modalities" / m / shard_name(s), x.astype(dtype))
    record_digests(folder)
    return folder


class _Limited:
    """The first ``steps`` batches of a source (so a measurement is a fixed number of steps)."""

    def __init__(self, source: Any, steps: int) -> None:
        self.source, self.steps = source, steps
        self.modalities, self.dims = source.modalities, source.dims

    def __len__(self) -> int:
        return len(self.source)

    def num_batches(self, batch_size: int, drop_last: bool) -> int:
        return min(self.steps, self.source.num_batches(batch_size, drop_last))

    def batches(self, *args: Any, **kw: Any) -> Iterator[Any]:
        for i, b in enumerate(self.source.batches(*args, **kw)):
            if i >= self.steps:
                return
            yield b

    def describe(self) -> dict[str, Any]:
        return self.source.describe()

    def close(self) -> None:
        return None


def _peak_rss() -> int:
    """This process's peak resident memory in bytes: ``VmHWM`` (the high-water mark of its own
    address space; ``getrusage``'s ``ru_maxrss`` would also count the parent's memory before the
    child's exec)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


class _AnonPeak:
    """The peak of this process's anonymous resident memory (``RssAnon``: its own arrays and
    tensors, not the data files' pages mapped in, which the kernel may reclaim), sampled every
    20 ms by a daemon thread."""

    def __init__(self) -> None:
        import threading

        self.peak = 0
        threading.Thread(target=self._run, daemon=True).start()

    @staticmethod
    def now() -> int:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) * 1024
        return 0

    def _run(self) -> None:
        while True:
            self.peak = max(self.peak, self.now())
            time.sleep(0.02)

    def gb(self) -> float:
        return max(self.peak, self.now()) / 1e9


def _embed(folder: str, run: str, out: Any) -> None:
    """``embed_to_folder`` of every row of ``folder`` with ``run`` (in this child process)."""
    import shutil
    import tempfile

    import torch

    from centrobind.data.ondisk import open_dataset
    from centrobind.runs import embed_to_folder

    torch.set_num_threads(2)
    anon = _AnonPeak()
    n = len(open_dataset(folder))
    target = Path(tempfile.mkdtemp(dir=Path(folder).parent)) / "emb"
    t0 = time.perf_counter()
    embed_to_folder(run, folder, target, device="cpu", progress=False)
    secs = time.perf_counter() - t0
    shutil.rmtree(target.parent)
    out.put({"kind": "embed", "setup_s": 0.0, "rows_per_s": n / secs, "train_s": secs,
             "peak_rss_gb": _peak_rss() / 1e9, "peak_anon_gb": anon.gb()})  # fmt: skip


def _train_run(folder: Path) -> Path:
    """A run folder trained briefly (one epoch) on ``folder``, for the embed measurement."""
    import subprocess
    import sys

    run = folder.parent / f"run-{folder.name}"
    if not (run / "model.safetensors").exists():
        cmd = [sys.executable, "-m", "centrobind.cli", "train", "--data", str(folder),
               "--out", str(run), "--epochs", "1", "--batch-size", "1024",
               "--quiet", "--seed", "0"]  # fmt: skip
        subprocess.run(cmd, check=True)
    return run


def _measure(kind: str, folder: str, steps: int, batch: int, out: Any) -> None:
    """One measurement in this (child) process; puts a dict on ``out``."""
    import torch

    from centrobind.config import TrainConfig
    from centrobind.data import load
    from centrobind.data.ondisk import open_dataset
    from centrobind.data.source import InMemorySource, make_order
    from centrobind.pipeline import build_models, make_splits, prepare_data, prepare_stream
    from centrobind.train import fit

    torch.set_num_threads(2)
    anon = _AnonPeak()
    cfg = TrainConfig(batch_size=batch, epochs=1, quiet=True, val_rows=2)
    t0 = time.perf_counter()
    if kind == "memory":
        ds = load(folder)
        prep = prepare_data(ds, make_splits(ds, cfg), cfg)
        order = make_order(cfg.row_order, cfg.block_rows, cfg.shuffle_blocks)
        src: Any = InMemorySource(prep.train.features, prep.train.mask, ds.modalities, order)
    else:
        disk = open_dataset(folder)
        prep = prepare_stream(disk, make_splits(disk, cfg), cfg)  # type: ignore[assignment]
        src = prep.train
    setup = time.perf_counter() - t0
    binder, objective = build_models(prep, cfg)
    if kind == "floor":
        feats, mask = next(iter(src.batches(0, 0, batch, True)))

        class _Fixed(_Limited):
            def batches(self, *a: Any, **k: Any) -> Iterator[Any]:
                for _ in range(self.steps):
                    yield feats, mask

        src = _Fixed(src, steps)
    res = fit(binder, objective, _Limited(src, steps), None, cfg)
    out.put(
        {
            "kind": kind,
            "setup_s": setup,
            "train_s": res.train_seconds,
            "rows_per_s": steps * batch / res.train_seconds,
            "peak_rss_gb": _peak_rss() / 1e9,
            "peak_anon_gb": anon.gb(),
        }
    )


def measure(
    kind: str, folder: Path, steps: int, batch: int, run: Path | None = None
) -> dict[str, Any]:
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    if kind == "embed":
        p = ctx.Process(target=_embed, args=(str(folder), str(run), q))
    else:
        p = ctx.Process(target=_measure, args=(kind, str(folder), steps, batch, q))
    p.start()
    p.join()
    if p.exitcode != 0:
        return {"kind": kind, "error": f"exit code {p.exitcode}"}
    return dict(q.get())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, nargs="+", default=[100_000, 1_000_000])
    ap.add_argument("--dtype", nargs="+", default=["float16", "float32"])
    ap.add_argument("--dir", default="/tmp/centrobind-scale")
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--batch", type=int, default=1024)
    ap.add_argument(
        "--memory-limit-gb",
        type=float,
        default=20.0,
        help="skip the in-memory path when 4.5 x the float32 features exceed this",
    )
    ap.add_argument("--json", help="also write the rows as JSON here")
    ap.add_argument("--embed", action="store_true", help="also time embed --out FOLDER")
    args = ap.parse_args()
    rows = []
    run: Path | None = None
    print(
        f"{'N':>10} {'dtype':>8} {'path':>7} {'rows/s':>9} {'x floor':>8} {'peak RSS GB':>11} "
        f"{'peak anon GB':>12} {'setup s':>8}"
    )
    for n in args.rows:
        for dtype in args.dtype:
            t0 = time.perf_counter()
            folder = make_data(Path(args.dir), n, dtype)
            made = time.perf_counter() - t0
            floor = measure("floor", folder, args.steps, args.batch)
            got = [floor, measure("stream", folder, args.steps, args.batch)]
            if 4.5 * n * DIM * len(MODS) * 4 / 1e9 <= args.memory_limit_gb:
                got.append(measure("memory", folder, args.steps, args.batch))
            if args.embed:
                run = run or _train_run(folder)
                got.append(measure("embed", folder, args.steps, args.batch, run))
            for r in got:
                r.update(n=n, dtype=dtype, data_s=made)
                rows.append(r)
                if "error" in r:
                    print(f"{n:>10} {dtype:>8} {r['kind']:>7} {r['error']}")
                    continue
                ratio = r["rows_per_s"] / floor.get("rows_per_s", float("nan"))
                if r["kind"] == "embed":
                    ratio = float("nan")  # another job: no training floor
                print(
                    f"{n:>10} {dtype:>8} {r['kind']:>7} {r['rows_per_s']:>9.0f} {ratio:>8.2f} "
                    f"{r['peak_rss_gb']:>11.2f} {r['peak_anon_gb']:>12.2f} {r['setup_s']:>8.1f}",
                    flush=True,
                )
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
