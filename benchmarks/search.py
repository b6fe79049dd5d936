"""Encode and search timings: ``centrobind.load(...).encode`` throughput, and top-k search time and
peak memory of ``centrobind.Index`` (exact chunked torch vs faiss) at 10^5 and 10^6 corpus rows.

    python benchmarks/search.py [--threads 1] [--sizes 100000 1000000] [--queries 1000] [--k 10]

Every search configuration runs in a fresh child process: ``base MB`` = resident memory once the
corpus (unit vectors, D = 64) and the index are built; then the high-water mark is reset (Linux
``/proc/self/clear_refs``) and ``peak MB`` = the high-water mark (VmHWM) after the batch search;
``search MB`` = the difference, what the search itself needed. ``recall@k`` compares each
backend's ids with the exact backend's. ``naive`` = one ``q x N`` matmul + ``torch.topk`` (what
the chunked search avoids), run only where its ``q x N`` matrix is under 1 GB.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

CHILD = r"""
import json, sys, time
import numpy as np, torch
n, d, q, k, threads, kind, opt, out, data = sys.argv[1:10]
n, d, q, k, threads = int(n), int(d), int(q), int(k), int(threads)
torch.set_num_threads(threads)
from centrobind.search import Index
rng = np.random.default_rng(0)
centers = rng.standard_normal((4096, d), dtype=np.float32) / np.sqrt(d)
def unit(m):
    x = rng.standard_normal((m, d), dtype=np.float32)
    if data == "clustered":  # 4096 clusters, noise norm about 0.5 of the centre's
        x = centers[rng.integers(0, len(centers), m)] + 0.5 * x / np.sqrt(d)
    return x / np.linalg.norm(x, axis=1, keepdims=True)
corpus, queries = unit(n), unit(q)
t = time.perf_counter()
if kind == "naive":
    c, qq = torch.from_numpy(corpus), torch.from_numpy(queries)
elif kind == "exact":
    index = Index(corpus, corpus_chunk=int(opt))
else:
    import faiss
    faiss.omp_set_num_threads(threads)
    fac, _, nprobe = opt.partition("@")
    index = Index(corpus, backend="faiss", faiss_index=fac, nprobe=int(nprobe) if nprobe else None)
build = time.perf_counter() - t
def status(key):  # resident memory (VmRSS) or its high-water mark since the reset (VmHWM), MB
    line = next(x for x in open("/proc/self/status") if x.startswith(key))
    return int(line.split()[1]) / 1024
open("/proc/self/clear_refs", "w").write("5")  # reset the high-water mark to the current RSS
base = status("VmRSS")
times = []
for _ in range(2):
    t = time.perf_counter()
    if kind == "naive":
        ids = torch.topk(qq @ c.T, k, dim=1).indices.numpy()
    else:
        _, ids = index.search(queries, k)
    times.append(time.perf_counter() - t)
peak = status("VmHWM")
t = time.perf_counter()
for i in range(5):  # one query at a time: interactive latency
    if kind == "naive":
        torch.topk(qq[i : i + 1] @ c.T, k, dim=1)
    else:
        index.search(queries[i : i + 1], k)
one = (time.perf_counter() - t) / 5
np.save(out, ids)
print(json.dumps({"build_s": build, "search_s": min(times), "one_s": one, "base_mb": base,
                  "peak_mb": peak}))
"""

ENCODE = r"""
import json, sys, tempfile, time
import numpy as np, torch
threads, rows = int(sys.argv[1]), int(sys.argv[2])
torch.set_num_threads(threads)
import centrobind
from centrobind.runs import train_run
from centrobind.train import TrainConfig
out = tempfile.mkdtemp() + "/run"
train_run("mfeat", TrainConfig(epochs=1, quiet=True), out)
model = centrobind.load(out, device="cpu")
x = np.random.default_rng(0).standard_normal((rows, model.dims["pix"]))
model.encode("pix", x[:1000])
t = time.perf_counter()
z = model.encode("pix", x)
sec = time.perf_counter() - t
print(json.dumps({"rows": rows, "seconds": sec, "rows_per_s": rows / sec, "D": z.shape[1]}))
"""


def child(args: list[str]) -> dict:
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, *args], capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr[-2000:])
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--queries", type=int, default=1000)
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--encode-rows", type=int, default=100_000, help="0: skip the encode timing")
    p.add_argument("--tmp", default="/tmp")
    p.add_argument(
        "--data",
        default="random",
        choices=["random", "clustered"],
        help="corpus: random unit vectors (IVF's worst case) or 4096 noisy clusters",
    )
    a = p.parse_args()
    import numpy as np

    env_threads = str(a.threads)
    if a.encode_rows > 0:
        enc = subprocess.run(
            [sys.executable, "-c", ENCODE, env_threads, str(a.encode_rows)],
            capture_output=True,
            text=True,
            check=True,
        )
        e = json.loads(enc.stdout.strip().splitlines()[-1])
        print(
            f"encode: {e['rows']} rows of pix (240 features) -> D={e['D']} in "
            f"{e['seconds']:.2f} s ({e['rows_per_s']:.0f} rows/s, {a.threads} thread(s))"
        )
    print(
        f"\nsearch: {a.data} corpus, D={a.dim}, {a.queries} queries, k={a.k}, "
        f"{a.threads} thread(s)\n"
        "| N | backend | build s | search s | queries/s | 1 query ms | base MB | peak MB | "
        "search MB | recall@k |\n|---|---|---|---|---|---|---|---|---|---|"
    )
    for n in a.sizes:
        configs = [("exact", "65536"), ("exact", "16384"), ("faiss", "Flat")]
        nlist = 1024 if n >= 500_000 else 256
        configs += [("faiss", f"IVF{nlist},Flat@16"), ("faiss", f"IVF{nlist},Flat@64")]
        if a.queries * n * 4 < 1e9:
            configs.insert(0, ("naive", "-"))
        runs = []
        for kind, opt in configs:
            path = f"{a.tmp}/search_bench_ids.npy"
            r = child(
                [str(n), str(a.dim), str(a.queries), str(a.k), env_threads, kind, opt, path]
                + [a.data]
            )
            runs.append((kind, opt, r, np.load(path)))
        ref = next(ids for kind, _, _, ids in runs if kind == "exact")
        for kind, opt, r, ids in runs:
            recall = np.mean([len(set(x) & set(y)) / a.k for x, y in zip(ids, ref, strict=True)])
            label = {"naive": "naive q x N matmul + topk", "exact": f"exact, chunk {opt}"}.get(
                kind, f"faiss {opt.replace('@', ', nprobe ')}"
            )
            print(
                f"| {n:,} | {label} | {r['build_s']:.2f} | {r['search_s']:.2f} | "
                f"{a.queries / r['search_s']:.0f} | {1000 * r['one_s']:.1f} | {r['base_mb']:.0f} | "
                f"{r['peak_mb']:.0f} | "
                f"{r['peak_mb'] - r['base_mb']:.0f} | {recall:.3f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
