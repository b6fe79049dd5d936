"""Train, evaluate, embed and search a dataset ~3x larger than the memory a process may use.

Writes (once) a dataset of ``--rows`` x 3 modalities x 256 float32 features (5.2 GB at the
default 1.7M rows; see ``benchmarks/scale.py``), creates a memory cgroup limited to
``--limit-gb`` (cgroup v1 ``memory.limit_in_bytes`` or v2 ``memory.max``; needs root, as in a
container) and runs each CLI command inside it, reporting its exit code, wall time and the
cgroup's peak memory (v1 ``memory.max_usage_in_bytes``, v2 ``memory.peak``; page cache
included, which the kernel reclaims under the limit).

Usage::

    python benchmarks/larger_than_memory.py --dir /tmp/cb-big --limit-gb 2
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from scale import make_data  # noqa: E402


def make_cgroup(limit: int) -> tuple[Path, str]:
    """A fresh memory cgroup with ``limit`` bytes; returns (folder, peak file name)."""
    v1 = Path("/sys/fs/cgroup/memory")
    if v1.is_dir():
        cg = v1 / f"centrobind-big-{os.getpid()}"
        cg.mkdir()
        (cg / "memory.limit_in_bytes").write_text(str(limit))
        (cg / "memory.memsw.limit_in_bytes").exists() and (
            cg / "memory.memsw.limit_in_bytes"
        ).write_text(str(limit))
        return cg, "memory.max_usage_in_bytes"
    cg = Path("/sys/fs/cgroup") / f"centrobind-big-{os.getpid()}"
    cg.mkdir()
    (cg / "memory.max").write_text(str(limit))
    (cg / "memory.swap.max").exists() and (cg / "memory.swap.max").write_text("0")
    return cg, "memory.peak"


def drop_page_cache() -> bool:
    """Empty the page cache (root only): pages cached earlier stay charged to the cgroup that
    first read them, so without this the data already in memory would not count against the
    limit. Returns whether it was dropped."""
    try:
        os.sync()
        Path("/proc/sys/vm/drop_caches").write_text("1\n")
        return True
    except OSError:
        return False


def run_in(cg: Path, peak_file: str, cmd: str) -> tuple[int, float, float, str]:
    """Run ``cmd`` (shell) inside cgroup ``cg``; (exit code, seconds, peak GB, output tail)."""
    if peak_file == "memory.max_usage_in_bytes":
        (cg / peak_file).write_text("0")  # v1: reset the high-water mark
    wrapped = f"echo $$ > {cg}/cgroup.procs && exec {cmd}"
    t0 = time.perf_counter()
    p = subprocess.run(["bash", "-c", wrapped], capture_output=True, text=True)
    dt = time.perf_counter() - t0
    peak = int((cg / peak_file).read_text()) / 1e9 if (cg / peak_file).exists() else float("nan")
    tail = (p.stdout + p.stderr).strip().splitlines()[-3:]
    return p.returncode, dt, peak, " | ".join(tail)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dir", default="/tmp/centrobind-big")
    ap.add_argument("--rows", type=int, default=1_700_000)
    ap.add_argument("--limit-gb", type=float, default=2.0)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--batch-size", type=int, default=4096)
    args = ap.parse_args()
    root = Path(args.dir)
    data = make_data(root, args.rows, "float32")
    size = sum(f.stat().st_size for f in (data / "modalities").rglob("*.npy")) / 1e9
    print(f"data: {data} ({args.rows} rows, {size:.2f} GB of features), limit {args.limit_gb} GB")
    queries = root / "queries"  # 5 rows of modality b: the query set of the search step
    if not queries.exists():
        (queries / "modalities").mkdir(parents=True)
        b = np.load(data / "modalities" / "b" / "00000.npy", mmap_mode="r")
        np.save(queries / "modalities" / "b.npy", np.asarray(b[:5], dtype=np.float32))
    cg, peak_file = make_cgroup(int(args.limit_gb * 2**30))
    run, emb = root / "run", root / "emb"
    py = shlex.quote(sys.executable)
    steps = [
        f"{py} -m centrobind.cli train --data {data} --out {run} --epochs {args.epochs} "
        f"--batch-size {args.batch_size} --hidden 128 --quiet",
        f"{py} -m centrobind.cli evaluate --run {run}",
        f"{py} -m centrobind.cli embed --run {run} --data {data} --out {emb}",
        f"{py} -m centrobind.cli index build --run {run} --corpus {data} --target a "
        f"--out {root / 'index'}",
        f"{py} -m centrobind.cli search --run {run} --index {root / 'index'} "
        f"--query-data {queries} --query-modality b -k 5",
    ]
    try:
        for cmd in steps:
            dropped = drop_page_cache()
            rc, dt, peak, tail = run_in(cg, peak_file, cmd)
            verb = cmd.split("centrobind.cli ")[1].split(" --")[0]
            cache = "page cache dropped first" if dropped else "page cache NOT dropped"
            print(
                f"{verb:>12}: exit {rc}, {dt:7.1f} s, peak {peak:.2f} GB ({cache})  [{tail[:300]}]"
            )
    finally:
        try:
            cg.rmdir()
        except OSError:
            pass


if __name__ == "__main__":
    main()
