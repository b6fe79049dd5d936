"""Benchmark of the binding objectives: forward+backward time vs the matmul floor, and peak memory.

Usage::

    python benchmarks/objectives.py            # M in {2,4,8}, N in {1024,4096}, D in {256,512}
    python benchmarks/objectives.py --quick    # M in {2,4,8}, N=1024, D=256 (a few minutes)
    python benchmarks/objectives.py --chunk    # + CentroBind M=4, N=32768, D=512, chunk_size=4096
    python benchmarks/objectives.py --case 4,4096,512 --methods centrobind,centrobind_loo

Every (case, method) runs in its own child process (float32, CPU, ``--threads`` threads, default 2)
which

1. builds ``z [M, N, D]`` (L2-normalised, requires grad) and ``s = 1/0.07`` (requires grad);
2. times the *matmul floor unit*: the three ``[N, N, D]`` products one InfoNCE term cannot avoid
   (forward ``a b^T``, backward ``G b`` and ``G^T a``), median of the repeats; the method's floor is
   ``unit x`` its number of such terms (CentroBind ``M``, fixed anchor ``M-1``, all pairs
   ``M(M-1)/2``, Symile ``M``, GRAM ``M-1``: GRAM's forward is one ``[(M-1)N, D] x [D, N]``
   product);
3. frees everything but the inputs, records the resident set (``VmRSS``) and resets the
   high-water mark (``echo 5 > /proc/self/clear_refs``; ``tracemalloc`` does not see torch's CPU
   allocations); then times forward+backward of the method (1 warm-up, median of the repeats) and
   reports ``peak = VmHWM - baseline`` (falls back to ``getrusage`` max RSS where ``clear_refs`` is
   not writable, then the number includes the floor's buffers).

Methods: the library objectives (``CentroBind`` with its default detached anchor, with the
leave-one-out centroid (``centrobind_loo``, detached) and with ``detach_anchor=False``;
``FixedAnchor``; ``AllPairs``; ``Symile`` in ``"n"`` mode; ``Gram``), the
straightforward versions (``*_ref``: the same losses through ``F.cross_entropy`` + autograd, i.e.
:func:`centrobind.objectives.nce_sym_reference`; ``gram_ref`` = explicit ``[N, N, M, M]`` Gram
matrices + ``torch.linalg.det``) and the ``symile`` package (``symile_pkg``, ``"n"`` mode). A
case whose estimated memory exceeds ``--max-gb`` or estimated time per iteration exceeds
``--max-s`` is skipped (shown as ``-``). Not part of the test suite.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

METHODS = [
    "centrobind",
    "centrobind_loo",
    "centrobind_nodetach",
    "centrobind_ref",
    "fixed_anchor",
    "fixed_anchor_ref",
    "all_pairs",
    "all_pairs_ref",
    "symile",
    "symile_pkg",
    "gram",
    "gram_ref",
]


def n_terms(method: str, M: int) -> int:
    """Number of ``[N, N, D]`` InfoNCE-like terms (the floor is this many floor units)."""
    base = method.removesuffix("_ref").removesuffix("_pkg").removesuffix("_nodetach")
    base = base.removesuffix("_loo")
    return {
        "centrobind": M,
        "fixed_anchor": M - 1,
        "all_pairs": M * (M - 1) // 2,
        "symile": M,
        "gram": M - 1,
    }[base]


def estimate(method: str, M: int, N: int) -> tuple[float, float]:
    """Rough (GB, relative cost) of a method, to skip cases that would not fit / take minutes."""
    T = n_terms(method, M)
    nn_ = N * N * 4 / 1e9
    if method == "gram_ref":
        return 8 * N * N * M * M * 4 / 1e9, 5.0 * T
    if method == "gram":
        return (4 * (M - 1) + 8) * nn_, 2.0 * T
    if method.endswith("_ref") or method == "symile_pkg":
        return 7 * T * nn_, 4.0 * T
    return (T + 3) * nn_, 1.5 * T


# ---------------------------------------------------------------------------------------------
# child: one (case, method)


def _rss_kb(field: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def _reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _make_method(method: str, M: int, chunk: int | None):
    import torch
    import torch.nn.functional as F

    from centrobind.objectives import (
        AllPairs,
        CentroBind,
        FixedAnchor,
        Gram,
        Symile,
        nce_sym_reference,
    )

    def pairs_ref(z, s, pairs):
        a = z[[i for i, _ in pairs]]
        b = z[[j for _, j in pairs]]
        return nce_sym_reference(a, b, s).mean()

    def gram_ref(z, s, eps=1e-6):
        N = z.shape[1]
        zk, zo = z[0], z[1:]
        top = torch.einsum("id,ljd->ijl", zk, zo)  # [N, N, M-1]
        blk = torch.einsum("ljd,mjd->jlm", zo, zo)  # [N, M-1, M-1]
        uu = (zk * zk).sum(-1)
        G = torch.cat(
            [
                torch.cat([uu[:, None, None, None].expand(N, N, 1, 1), top[:, :, None, :]], 3),
                torch.cat([top[:, :, :, None], blk[None].expand(N, N, M - 1, M - 1)], 3),
            ],
            2,
        )  # [N, N, M, M]
        logits = -s * torch.linalg.det(G).clamp_min(eps).sqrt()
        lab = torch.arange(N)
        return (F.cross_entropy(logits, lab) + F.cross_entropy(logits.T, lab)) / 2

    if method == "centrobind":
        obj = CentroBind(chunk_size=chunk)
        return lambda z, s: obj(z, s).loss
    if method == "centrobind_loo":
        obj = CentroBind(centroid="leave_one_out", chunk_size=chunk)
        return lambda z, s: obj(z, s).loss
    if method == "centrobind_nodetach":
        obj = CentroBind(detach_anchor=False, chunk_size=chunk)
        return lambda z, s: obj(z, s).loss
    if method == "centrobind_ref":
        return lambda z, s: nce_sym_reference(z.detach().mean(0, keepdim=True), z, s).mean()
    if method == "fixed_anchor":
        obj = FixedAnchor()
        return lambda z, s: obj(z, s).loss
    if method == "fixed_anchor_ref":
        return lambda z, s: pairs_ref(z, s, [(0, m) for m in range(1, M)])
    if method == "all_pairs":
        obj = AllPairs()
        return lambda z, s: obj(z, s).loss
    if method == "all_pairs_ref":
        return lambda z, s: pairs_ref(z, s, [(a, b) for a in range(M) for b in range(a + 1, M)])
    if method == "symile":
        obj = Symile("n")
        return lambda z, s: obj(z, s).loss
    if method == "symile_pkg":
        from symile import Symile as SymilePackage

        pkg = SymilePackage("n")
        return lambda z, s: pkg(list(z), s)
    if method == "gram":
        obj = Gram()
        return lambda z, s: obj(z, s).loss
    if method == "gram_ref":
        return gram_ref
    raise ValueError(method)


def _floor_unit(z):
    """The three [N, N, D] products of one term (forward a b^T; backward G b, G^T a)."""
    import torch

    N, D = z.shape[1], z.shape[2]
    a, b = z[0].detach().clone(), z[1].detach().clone()
    G = torch.randn(N, N) / N
    L = torch.empty(N, N)
    out = torch.empty(N, D)

    def unit():
        torch.mm(a, b.t(), out=L)
        torch.mm(G, b, out=out)
        torch.mm(G.t(), a, out=out)

    return unit


def child(spec: dict) -> dict:
    import torch
    import torch.nn.functional as F

    torch.set_num_threads(spec["threads"])
    torch.manual_seed(0)
    M, N, D, reps = spec["M"], spec["N"], spec["D"], spec["repeats"]
    z = F.normalize(torch.randn(M, N, D), dim=-1).requires_grad_()
    s = torch.tensor(1 / 0.07, requires_grad=True)

    # the floor's buffers exist before the baseline is taken, so they do not count as peak
    unit = _floor_unit(z) if spec.get("chunk") is None else _floor_unit(z[:, :4096])
    unit_scale = 1.0 if spec.get("chunk") is None else (N / 4096) ** 2
    fn = _make_method(spec["method"], M, spec.get("chunk"))
    unit()
    base_kb = _rss_kb("VmRSS")
    reset = _reset_peak()

    def step():
        z.grad = None
        s.grad = None
        fn(z, s).backward()

    step()  # warm-up
    ts, us = [], []
    for _ in range(reps):  # interleaved, so load changes hit floor and method alike
        t0 = time.perf_counter()
        unit()
        t1 = time.perf_counter()
        step()
        t2 = time.perf_counter()
        us.append((t1 - t0) * unit_scale)
        ts.append(t2 - t1)
    if reset and base_kb is not None:
        peak_mb = (_rss_kb("VmHWM") - base_kb) / 1024
        mem_method = "VmHWM-VmRSS"
    else:
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        mem_method = "maxrss"
    return {
        "time_s": statistics.median(ts),
        "unit_s": statistics.median(us),
        "ratio_unit": statistics.median(t / u for t, u in zip(ts, us, strict=True)),
        "peak_mb": peak_mb,
        "mem": mem_method,
        "times": ts,
    }


# ---------------------------------------------------------------------------------------------
# parent


def run_child(spec: dict, timeout: float) -> dict | None:
    cmd = [sys.executable, os.path.abspath(__file__), "--child", json.dumps(spec)]
    # (threads are set with torch.set_num_threads; an OMP_NUM_THREADS variable made libgomp
    # spin-wait very badly here whenever another process shared the cores)
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        print(f"  timeout: {spec}", file=sys.stderr)
        return None
    if p.returncode != 0:
        print(f"  failed: {spec}\n{p.stderr[-2000:]}", file=sys.stderr)
        return None
    return json.loads(p.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="small subset of the grid")
    ap.add_argument("--chunk", action="store_true", help="add the N=32768 chunked CentroBind case")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--max-gb", type=float, default=6.0, help="skip cases estimated above this")
    ap.add_argument(
        "--max-s",
        type=float,
        default=20.0,
        help="skip cases estimated slower than this per forward+backward",
    )
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument(
        "--case",
        action="append",
        default=[],
        metavar="M,N,D",
        help="run only these cases (repeatable), instead of the grid",
    )
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(json.loads(args.child))))
        return

    methods = args.methods.split(",")
    load_start = os.getloadavg()
    if args.case:
        grid = [tuple(int(x) for x in c.split(",")) for c in args.case]
    elif args.quick:
        grid = [(M, 1024, 256) for M in (2, 4, 8)]
    else:
        grid = [(M, N, D) for N in (1024, 4096) for D in (256, 512) for M in (2, 4, 8)]
    # floor unit of [N, N, D] on this machine, roughly (for the skip rule): 6 N^2 D flop at 100 GF/s
    print(
        f"# Binding objectives, forward+backward, float32 CPU, {args.threads} threads, "
        f"median of {args.repeats} (3 for slow cases)\n"
    )
    print(
        "floor = (number of [N,N,D] terms) x (one forward a b^T + backward G b, G^T a); "
        "ratio = median over repeats of time / floor (floor timed right before each repeat);"
    )
    print(
        "peak = peak resident memory of the method above the inputs (child process, "
        "VmHWM after clear_refs).\n"
    )
    hdr = (
        f"{'M':>2} {'N':>5} {'D':>4} {'method':<20} {'terms':>5} {'floor ms':>9} "
        f"{'time ms':>9} {'ratio':>6} {'peak MB':>8}"
    )
    print(hdr)
    print("-" * len(hdr), flush=True)
    results: dict = {}
    for M, N, D in grid:
        for method in methods:
            T = n_terms(method, M)
            gb, rel = estimate(method, M, N)
            est_s = rel * 6 * N * N * D / 100e9
            r = None
            if gb > args.max_gb or est_s > args.max_s:
                print(
                    f"skip {method} M={M} N={N} D={D} (~{gb:.1f} GB, ~{est_s:.0f} s)",
                    file=sys.stderr,
                )
            else:
                reps = args.repeats if est_s < 2 else 3
                spec = {
                    "method": method,
                    "M": M,
                    "N": N,
                    "D": D,
                    "repeats": reps,
                    "threads": args.threads,
                }
                print(f"run {method} M={M} N={N} D={D}", file=sys.stderr, flush=True)
                r = run_child(spec, timeout=max(120.0, 20 * est_s * (reps + 2)))
            if r is None:
                print(
                    f"{M:>2} {N:>5} {D:>4} {method:<20} {T:>5} {'-':>9} {'-':>9} {'-':>6} {'-':>8}",
                    flush=True,
                )
                continue
            results[(M, N, D, method)] = r
            print(
                f"{M:>2} {N:>5} {D:>4} {method:<20} {T:>5} {T * r['unit_s'] * 1e3:>9.1f} "
                f"{r['time_s'] * 1e3:>9.1f} {r['ratio_unit'] / T:>6.2f} {r['peak_mb']:>8.0f}",
                flush=True,
            )
        print()
    print(
        f"load average (1 min) at start {load_start[0]:.2f}, at end {os.getloadavg()[0]:.2f} "
        f"on {os.cpu_count()} CPUs (other processes make the timings noisy)."
    )

    # ratio matrix
    cols = [c for c in grid if any((*c, m) in results for m in methods)]
    print("\n## ratio to the matmul floor (rows: method; columns: M/N/D)\n")
    head = f"{'method':<20} " + " ".join(f"{f'{M}/{N}/{D}':>12}" for M, N, D in cols)
    print(head)
    print("-" * len(head))
    for method in methods:
        cells = []
        for M, N, D in cols:
            r = results.get((M, N, D, method))
            cells.append(f"{r['ratio_unit'] / n_terms(method, M):>12.2f}" if r else f"{'-':>12}")
        print(f"{method:<20} " + " ".join(cells))

    # scaling with M
    for N, D in sorted({(N, D) for _, N, D in grid}):
        Ms = sorted({M for M, n, d in grid if (n, d) == (N, D)})
        print(f"\n## cost vs M (N={N}, D={D}): time ms (x time at M={Ms[0]})\n")
        print(f"{'method':<20} " + " ".join(f"{f'M={M}':>16}" for M in Ms))
        for method in methods:
            r0 = results.get((Ms[0], N, D, method))
            cells = []
            for M in Ms:
                r = results.get((M, N, D, method))
                if r is None:
                    cells.append(f"{'-':>16}")
                elif r0 is None:
                    cells.append(f"{r['time_s'] * 1e3:>16.1f}")
                else:
                    cell = f"{r['time_s'] * 1e3:.1f} ({r['time_s'] / r0['time_s']:.1f}x)"
                    cells.append(f"{cell:>16}")
            print(f"{method:<20} " + " ".join(cells))

    if args.chunk:
        spec = {
            "method": "centrobind",
            "M": 4,
            "N": 32768,
            "D": 512,
            "repeats": 1,
            "threads": args.threads,
            "chunk": 4096,
        }
        print(
            "\n## chunked CentroBind: M=4, N=32768, D=512, chunk_size=4096 "
            "(N x N float32 alone would be 4.3 GB)\n",
            flush=True,
        )
        print("run chunk case", file=sys.stderr, flush=True)
        r = run_child(spec, timeout=3000)
        if r is None:
            print("failed")
        else:
            floor = 4 * r["unit_s"]
            print(
                f"time {r['time_s']:.1f} s (floor {floor:.1f} s, estimated from N=4096 x 64; "
                f"ratio {r['ratio_unit'] / 4:.2f}), peak memory above inputs "
                f"{r['peak_mb'] / 1024:.2f} GB (includes z.grad; z itself is "
                f"{4 * 32768 * 512 * 4 / 2**30:.2f} GB)"
            )


if __name__ == "__main__":
    main()
