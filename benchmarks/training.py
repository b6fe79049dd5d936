"""Training-step benchmark on mfeat: where a step's time goes, and the trainer's overhead.

    python benchmarks/training.py [--objective centrobind] [--steps 300] [--batch-size 256]

1. A hand-written loop (no trainer) timed phase by phase with the same shapes as `fit`:
   data (index_select of the batch), encoders (forward), loss (objective), backward, optimizer.
2. `centrobind.train.fit` on the same data/config (no validation, no checkpoints, quiet), time
   per step. Overhead = fit's time per step / the bare loop's time per step - 1.
Both are measured in the same process, alternating, median of repeats.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from centrobind.data import Standardizer, load_builtin
from centrobind.models import Binder
from centrobind.objectives import make_objective
from centrobind.train import TrainConfig, fit


def bare_loop(ds, cfg: TrainConfig, steps: int) -> dict[str, float]:
    torch.manual_seed(0)
    binder = Binder(ds.dims, embed_dim=cfg.embed_dim, hidden=cfg.hidden, depth=cfg.depth)
    obj = make_objective(cfg.objective)
    opt = torch.optim.AdamW(list(binder.parameters()), lr=cfg.lr)
    feats = {m: ds.features[m] for m in binder.modalities}
    n, bs = len(ds), cfg.batch_size
    phases = dict(data=0.0, encoders=0.0, loss=0.0, backward=0.0, optimizer=0.0)
    perm = torch.randperm(n)
    nb = n // bs
    t_all = time.perf_counter()
    for i in range(steps):
        b = i % nb
        t0 = time.perf_counter()
        idx = perm[b * bs : (b + 1) * bs]
        fb = {m: feats[m].index_select(0, idx) for m in binder.modalities}
        mask = ds.mask[:, idx]
        t1 = time.perf_counter()
        z = binder(fb)
        t2 = time.perf_counter()
        loss = obj(z, binder.logit_scale, mask=mask).loss
        t3 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        t4 = time.perf_counter()
        opt.step()
        t5 = time.perf_counter()
        for k, dt in zip(phases, (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4), strict=True):
            phases[k] += dt
    total = time.perf_counter() - t_all
    return {k: v / steps * 1e3 for k, v in phases.items()} | {"total": total / steps * 1e3}


def trainer_ms_per_step(ds, cfg: TrainConfig) -> float:
    torch.manual_seed(0)
    binder = Binder(ds.dims, embed_dim=cfg.embed_dim, hidden=cfg.hidden, depth=cfg.depth)
    res = fit(binder, make_objective(cfg.objective), ds, None, cfg)
    return res.train_seconds / res.steps * 1e3


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--objective", default="centrobind")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--epochs", type=int, default=40)
    p.add_argument("--repeats", type=int, default=5)
    a = p.parse_args()
    ds = load_builtin("mfeat")
    ds = Standardizer.fit(ds).apply(ds)
    cfg = TrainConfig(
        objective=a.objective, batch_size=a.batch_size, epochs=a.epochs, quiet=True, warmup_steps=10
    )
    steps = (len(ds) // a.batch_size) * a.epochs
    bare_runs, fit_runs = [], []
    bare_loop(ds, cfg, 20)  # warm-up
    for _ in range(a.repeats):
        bare_runs.append(bare_loop(ds, cfg, steps))
        fit_runs.append(trainer_ms_per_step(ds, cfg))
    bare = {k: statistics.median(r[k] for r in bare_runs) for k in bare_runs[0]}
    fit_ms = statistics.median(fit_runs)
    print(
        f"mfeat ({len(ds)} rows, 6 views), {a.objective}, batch {a.batch_size}, "
        f"{steps} steps x {a.repeats} repeats, torch threads {torch.get_num_threads()}"
    )
    print("bare loop, ms per step: " + ", ".join(f"{k} {v:.2f}" for k, v in bare.items()))
    print(
        f"fit(), ms per step: {fit_ms:.2f}  -> trainer overhead "
        f"{100 * (fit_ms / bare['total'] - 1):+.1f}%"
    )


if __name__ == "__main__":
    main()
