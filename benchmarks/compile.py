"""torch.compile vs the fused eager kernel: CentroBind forward+backward, M=4, N=1024, D=256 (CPU).

python benchmarks/compile.py
"""

import statistics
import time

import torch
import torch.nn.functional as F

from centrobind.objectives import CentroBind, nce_sym_reference

torch.manual_seed(0)
M, N, D = 4, 1024, 256


def ref_loss(z, s):
    c = z.mean(0).detach()
    return torch.stack([nce_sym_reference(c[None], z[m : m + 1], s).sum() for m in range(M)]).mean()


fused = CentroBind()


def fused_loss(z, s):
    return fused(z, s).loss


def timeit(fn, reps=10):
    z = F.normalize(torch.randn(M, N, D), dim=-1).requires_grad_()
    s = torch.tensor(10.0, requires_grad=True)
    for _ in range(3):
        fn(z, s).backward()
    ts = []
    for _ in range(reps):
        t = time.perf_counter()
        fn(z, s).backward()
        ts.append(time.perf_counter() - t)
    return statistics.median(ts) * 1e3


t0 = time.perf_counter()
comp_ref = torch.compile(ref_loss)
c_ref = timeit(comp_ref)
ct = time.perf_counter() - t0
t1 = time.perf_counter()
comp_fused = torch.compile(fused_loss)
c_f = None
try:
    c_f = timeit(comp_fused)
except Exception as e:
    print("compile fused failed:", type(e).__name__)
ct2 = time.perf_counter() - t1
print(
    f"M={M} N={N} D={D}, threads {torch.get_num_threads()}, ms per forward+backward (median of 10):"
)
print(
    f"  reference eager {timeit(ref_loss):.1f}, reference compiled {c_ref:.1f} "
    f"(compile+warm-up {ct:.0f} s)"
)
fc = "failed" if c_f is None else f"{c_f:.1f}"
print(f"  fused eager {timeit(fused_loss):.1f}, fused compiled {fc} (compile+warm-up {ct2:.0f} s)")
