"""Retrieval evaluation at scale: time and peak memory of chunked R@k/MRR over N x N, D = 256.

    python benchmarks/retrieval.py [--n 100000] [--dim 256] [--chunk 1024]

Runs the measurement in a fresh child process and reports its peak resident memory (ru_maxrss),
next to the child's baseline RSS after importing torch and allocating the inputs, plus a brute-force
check on a small case that the chunked ranks equal a full argsort.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

CHILD = r"""
import json, resource, sys, time, torch, torch.nn.functional as F
from centrobind.eval.retrieval import retrieval_metrics
n, d, chunk = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
g = torch.Generator().manual_seed(0)
shared = torch.randn(n, d, generator=g)
q = F.normalize(shared + 0.9 * torch.randn(n, d, generator=g), dim=-1)
gal = F.normalize(shared + 0.9 * torch.randn(n, d, generator=g), dim=-1)
del shared
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
t = time.perf_counter()
m = retrieval_metrics(q, gal, chunk_size=chunk)
sec = time.perf_counter() - t
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"seconds": sec, "peak_mb": peak, "baseline_mb": base, "metrics": m}))
"""


def brute_force_check() -> bool:
    import torch

    from centrobind.eval.retrieval import retrieval_ranks

    g = torch.Generator().manual_seed(1)
    q, gal = torch.randn(300, 16, generator=g), torch.randn(300, 16, generator=g)
    scores = q @ gal.T
    ref = (scores > scores.diagonal()[:, None]).sum(1) + 1
    return bool(torch.equal(retrieval_ranks(q, gal, chunk_size=37).long(), ref.long()))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--n", type=int, default=100_000)
    p.add_argument("--dim", type=int, default=256)
    p.add_argument("--chunk", type=int, default=1024)
    a = p.parse_args()
    t = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-c", CHILD, str(a.n), str(a.dim), str(a.chunk)],
        capture_output=True,
        text=True,
        check=True,
    )
    r = json.loads(out.stdout.strip().splitlines()[-1])
    flops = 2 * a.n * a.n * a.dim
    print(
        f"retrieval {a.n} x {a.n}, D={a.dim}, chunk={a.chunk}: {r['seconds']:.1f} s "
        f"({flops / r['seconds'] / 1e9:.0f} GFLOP/s), peak RSS {r['peak_mb']:.0f} MB "
        f"(inputs + torch baseline {r['baseline_mb']:.0f} MB, so "
        f"{r['peak_mb'] - r['baseline_mb']:.0f}"
        f" MB for the metric), R@1 {r['metrics']['R@1']:.2f}"
    )
    print(f"chunked ranks == full argsort on 300 x 300: {brute_force_check()}")
    print(f"(child wall {time.perf_counter() - t:.1f} s)")


if __name__ == "__main__":
    main()
