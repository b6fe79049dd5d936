"""Search at scale with a saved index (``centrobind index build`` / ``search --index DIR``).

Two parts:

``latency``: a saved index of N rows (D = 64, unit vectors around 4,096 noisy cluster centres,
synthesised straight into ``embeddings.npy``; the latency and memory of the exact search do not
depend on what the vectors mean) is searched by the exact streamed backend
(:meth:`centrobind.saved_index.SavedIndex.search`), and, side by side where it fits, by the
in-memory :class:`centrobind.Index` over the same vectors loaded as float32. Every configuration
runs in a fresh child process: ``load MB`` = resident memory after opening the index (VmRSS),
then the high-water mark is reset (``/proc/self/clear_refs``) and ``peak MB`` = VmHWM after the
searches (it counts file-backed pages too: library code, the in-memory path's memory map);
``anon MB`` = RssAnon after the searches (the process's own memory). ``1 query ms``: the
median of 5 single-query searches after one warm-up (the file is in
the page cache); ``batch s``: one search of ``--queries`` queries.

    python benchmarks/scale_search.py latency --rows 1000000 10000000 --dtype float16

``recall``: a run trained on a structured synthetic dataset (``make_synthetic``, 3 modalities x 64
features, saved with ``save_dataset``), an exact float32 index of the rows' ``m2`` embeddings,
then faiss IVF and HNSW indexes built by ``build_index(faiss=...)`` on the same run and corpus.
Queries: the ``m1`` embeddings of ``--queries`` rows (cross-modal search). recall@10 = overlap
of each faiss index's top 10 with the exact top 10, averaged over queries.

    python benchmarks/scale_search.py recall --rows 200000 --epochs 3
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

CHILD = r"""
import json, sys, time
import numpy as np, torch
path, mode, q, k, threads, qfile = sys.argv[1:7]
q, k, threads = int(q), int(k), int(threads)
torch.set_num_threads(threads)
import centrobind
from centrobind import saved_index  # import time is not search time
def status(key):
    line = next(x for x in open("/proc/self/status") if x.startswith(key))
    return int(line.split()[1]) / 1024
queries = np.load(qfile)[:q]
t = time.perf_counter()
saved = centrobind.load_index(path, check=False)
if mode == "memory":
    index = centrobind.Index(np.asarray(saved.embeddings, dtype=np.float32))
else:
    index = saved
load_s = time.perf_counter() - t
load_mb = status("VmRSS")
open("/proc/self/clear_refs", "w").write("5")
index.search(queries[:1], k)  # warm-up: the page cache, the allocator
ones = []
for i in range(5):
    t = time.perf_counter()
    index.search(queries[i + 1 : i + 2], k)
    ones.append(time.perf_counter() - t)
t = time.perf_counter()
_, ids = index.search(queries, k)
batch = time.perf_counter() - t
peak, anon = status("VmHWM"), status("RssAnon")
np.save(qfile.replace(".npy", f"-{mode}-ids.npy"), ids)
print(json.dumps({"load_s": load_s, "one_s": float(np.median(ones)), "batch_s": batch,
                  "load_mb": load_mb, "peak_mb": peak, "anon_mb": anon}))
"""


def _child(args: list[str]) -> dict:
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, *args], capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr[-2000:])
    return json.loads(proc.stdout.strip().splitlines()[-1])


def synthesise_index(out: Path, n: int, dim: int, dtype: str, seed: int = 0) -> None:
    """An index folder of ``n`` clustered unit vectors, written block by block (no run)."""
    import numpy as np

    from centrobind.data.npywriter import NpyWriter
    from centrobind.saved_index import INDEX_FORMAT

    meta_path = out / "index.json"
    if meta_path.is_file() and json.loads(meta_path.read_text())["count"] == n:
        return  # reuse: synthesising 10^7 rows takes a while
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((4096, dim), dtype=np.float32) / np.sqrt(dim)
    with (
        NpyWriter(out / "embeddings.npy", dtype, (dim,)) as e,
        NpyWriter(out / "ids.npy", np.int64) as ids,
    ):
        for a in range(0, n, 1 << 18):
            b = min(n, a + (1 << 18))
            x = centres[rng.integers(0, 4096, b - a)]
            x += 0.5 * rng.standard_normal((b - a, dim), dtype=np.float32) / np.sqrt(dim)
            e.write(x / np.linalg.norm(x, axis=1, keepdims=True))
            ids.write(np.arange(a, b))
    meta = {
        "format": INDEX_FORMAT,
        "run": {"path": "(synthetic)", "weights_sha256": "-"},
        "corpus": {"path": "(synthetic)", "digest": "-", "rows": n, "items": None},
        "target": "x",
        "dtype": dtype,
        "dim": dim,
        "count": n,
        "faiss": None,
        "created": "-",
        "centrobind": "-",
    }
    meta_path.write_text(json.dumps(meta))


def latency(a: argparse.Namespace) -> None:
    import numpy as np

    print(
        f"exact search of a saved index, D = {a.dim}, {a.dtype}, k = {a.k}, {a.threads} "
        f"thread(s), batch = {a.queries} queries\n\n"
        "| N | search | open s | load MB | 1 query ms | batch s | queries/s | peak MB | anon MB | "
        "same ids |\n|---|---|---|---|---|---|---|---|---|---|",
        flush=True,
    )
    for n in a.rows:
        folder = Path(a.dir) / f"latency-{n}-{a.dtype}"
        synthesise_index(folder, n, a.dim, a.dtype)
        rng = np.random.default_rng(1)
        qv = rng.standard_normal((a.queries + 6, a.dim)).astype(np.float32)
        qfile = str(Path(a.dir) / "queries.npy")
        np.save(qfile, qv / np.linalg.norm(qv, axis=1, keepdims=True))
        modes = ["saved"] + (["memory"] if n <= a.memory_max else [])
        results = {}
        for mode in modes:
            r = _child([str(folder), mode, str(a.queries), str(a.k), str(a.threads), qfile])
            results[mode] = r
            ids = np.load(qfile.replace(".npy", f"-{mode}-ids.npy"))
            same = "-"
            if mode == "memory":
                ref = np.load(qfile.replace(".npy", "-saved-ids.npy"))
                same = f"{np.mean(ids == ref):.4f}"
            label = "saved, streamed (exact)" if mode == "saved" else "in-memory Index (exact)"
            print(
                f"| {n:,} | {label} | {r['load_s']:.2f} | {r['load_mb']:.0f} | "
                f"{1000 * r['one_s']:.0f} | {r['batch_s']:.1f} | "
                f"{a.queries / r['batch_s']:.1f} | {r['peak_mb']:.0f} | {r['anon_mb']:.0f} | "
                f"{same} |",
                flush=True,
            )


def _recall(ids, ref) -> float:
    import numpy as np

    return float(
        np.mean([len(set(x) & set(y)) / ref.shape[1] for x, y in zip(ids, ref, strict=True)])
    )


def recall(a: argparse.Namespace) -> None:
    import numpy as np
    import torch

    torch.set_num_threads(a.threads)
    import faiss

    faiss.omp_set_num_threads(a.threads)
    import centrobind
    from centrobind.data import make_synthetic, save_dataset
    from centrobind.runs import train_run
    from centrobind.train import TrainConfig

    root = Path(a.dir) / f"recall-{a.rows}"
    data, run = root / "data", root / "run"
    t = time.perf_counter()
    if not (run / "model.safetensors").is_file():
        ds = make_synthetic(n_samples=a.rows, n_modalities=3, dims=64, seed=0)
        save_dataset(ds, data, overwrite=True)
        cfg = TrainConfig(epochs=a.epochs, batch_size=512, embed_dim=64, seed=0, quiet=True)
        train_run(data, cfg, run)
    print(f"data + run ready in {time.perf_counter() - t:.0f} s ({a.rows:,} rows, {run})")
    model = centrobind.load(run, device="cpu")
    x = np.load(data / "modalities" / "m1.npy", mmap_mode="r")
    queries = model.encode("m1", np.asarray(x[: a.queries]))
    t = time.perf_counter()
    exact = model.build_index(data, "m2", root / "exact", dtype="float32")
    build = time.perf_counter() - t
    t = time.perf_counter()
    ref_s, ref = exact.search(queries, a.k)
    ex_s = time.perf_counter() - t
    own = float(np.mean(ref[:, 0] == np.arange(a.queries)))
    print(
        f"\nrecall@{a.k} against exact search, {a.queries} m1 queries -> {a.rows:,} m2 rows, "
        f"{a.threads} thread(s); exact top-1 is the query's own row for {own:.3f}\n\n"
        "| index | build s | params | batch s | ms/query | recall@10 | speed-up |\n"
        "|---|---|---|---|---|---|---|\n"
        f"| exact (saved, streamed) | {build:.1f} | - | {ex_s:.2f} | "
        f"{1000 * ex_s / a.queries:.2f} | 1.000 | 1.0x |",
        flush=True,
    )
    nlist = a.nlist
    specs = [
        (f"IVF{nlist},Flat", ["nprobe=4", "nprobe=16", "nprobe=64"]),
        ("HNSW32", ["efSearch=16", "efSearch=64", "efSearch=256"]),
    ]
    for spec, params in specs:
        t = time.perf_counter()
        name = spec.replace(",", "_")
        idx = model.build_index(data, "m2", root / name, faiss=spec)
        build = time.perf_counter() - t
        for p in params:
            idx.search(queries[:10], a.k, faiss_params=p)  # warm-up
            t = time.perf_counter()
            _, ids = idx.search(queries, a.k, faiss_params=p)
            sec = time.perf_counter() - t
            print(
                f"| {spec} | {build:.1f} | {p} | {sec:.2f} | {1000 * sec / a.queries:.2f} | "
                f"{_recall(ids, ref):.3f} | {ex_s / sec:.0f}x |",
                flush=True,
            )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("part", choices=["latency", "recall"])
    p.add_argument("--rows", type=int, nargs="+", default=None)
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--dtype", default="float16", choices=["float16", "float32"])
    p.add_argument("--queries", type=int, default=None, help="latency 100, recall 1000")
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--memory-max", type=int, default=1_000_000, help="in-memory Index up to N")
    p.add_argument("--epochs", type=int, default=3, help="recall: training epochs")
    p.add_argument("--nlist", type=int, default=1024, help="recall: IVF lists")
    p.add_argument("--dir", default=os.environ.get("TMPDIR", "/tmp") + "/cb-scale-search")
    a = p.parse_args()
    Path(a.dir).mkdir(parents=True, exist_ok=True)
    if a.part == "latency":
        a.rows = a.rows or [1_000_000, 10_000_000]
        a.queries = a.queries or 100
        latency(a)
    else:
        a.rows = (a.rows or [200_000])[0]
        a.queries = a.queries or 1000
        recall(a)


if __name__ == "__main__":
    main()
