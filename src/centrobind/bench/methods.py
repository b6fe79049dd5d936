"""One benchmark cell: train (or fit) one method on one split of one dataset, and score it.

Every binding method gets the same encoders, embedding size, optimiser, epoch budget and early
stopping (``base`` config); only the objective (and what it requires: a frozen, pre-trained anchor
for FixedAnchor) and the logit scale differ: every binding method gets its own scale, chosen on the
validation split from one grid (:func:`centrobind.bench.suites.choose_scale`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from ..config import TrainConfig
from ..data import MultimodalDataset
from ..eval import fused_embedding, latent_recovery, linear_probe
from ..eval.retrieval import cross_modal_retrieval, joint_leave_one_out, leave_one_out_retrieval
from ..models import Binder
from ..objectives import Objective
from ..pipeline import Prepared, build_and_fit, make_splits, prepare_data

__all__ = ["Method", "run_method", "step_cost"]


@dataclass(frozen=True)
class Method:
    """A method to compare. ``kind``: "binder" (trained with ``objective``), "gcca" (closed form),
    "raw" (standardised input features; classification/latent recovery only), "untrained" (a
    randomly initialised Binder: the reference for how much intra-modal information training
    keeps).

    Logit scale: a "binder" method's scale is chosen by the benchmark's protocol and applied with
    :meth:`with_scale`. ``learn_scale``: a learnable scale initialised at the scale chosen for
    the method named ``scale_from`` (same objective and options), clamped to at most twice it.
    ``own_scale``: the objective learns its own temperature (e.g. ``Gram[official]``), so no
    scale is chosen for it.
    """

    name: str
    kind: str = "binder"
    objective: str = "centrobind"
    options: tuple[tuple[str, Any], ...] = ()
    anchor: str | None = None
    intra_weight: float = 0.0
    overrides: tuple[tuple[str, Any], ...] = field(default=())
    learn_scale: bool = False
    scale_from: str | None = None
    own_scale: bool = False

    @property
    def tuned(self) -> bool:
        """Whether the protocol chooses its logit scale (binder methods, except those whose
        objective learns its own temperature: ``own_scale``)."""
        return self.kind == "binder" and not self.own_scale

    def tuning_method(self) -> Method:
        """The method whose validation grid sets this one's scale (itself, or for a
        ``learn_scale`` variant the fixed-scale method it starts from)."""
        if not self.learn_scale:
            return self
        assert self.scale_from is not None
        return dataclasses.replace(self, name=self.scale_from, learn_scale=False, scale_from=None)

    def with_scale(self, s: float) -> Method:
        """This method trained at logit scale ``s`` (learnable from ``s`` up to ``2 s`` with
        ``learn_scale``; the Binder clamps only from above)."""
        extra: tuple[tuple[str, Any], ...] = (("logit_scale_init", float(s)),)
        if self.learn_scale:
            extra += (("learn_logit_scale", True), ("max_logit_scale", 2.0 * float(s)))
        return dataclasses.replace(self, overrides=self.overrides + extra)

    @property
    def logit_scale(self) -> float | None:
        """The scale set by :meth:`with_scale`, None if none."""
        return dict(self.overrides).get("logit_scale_init")


def _config(method: Method, base: TrainConfig, seed: int) -> TrainConfig:
    cfg = dataclasses.replace(
        base,
        objective=method.objective,
        objective_options=dict(method.options),
        anchor=method.anchor,
        intra_weight=method.intra_weight,
        seed=seed,
        quiet=True,
    )
    if method.overrides:
        cfg = dataclasses.replace(cfg, **dict(method.overrides))
    return cfg


@contextlib.contextmanager
def _stderr_silenced() -> Iterator[None]:
    """File descriptor 2 to /dev/null: the profiler's C++ side prints a line per start and stop
    that no setting turns off."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def step_cost(
    binder: Binder,
    objective: Objective,
    train: MultimodalDataset,
    cfg: TrainConfig,
    steps: int = 5,
) -> dict[str, float]:
    """The cost of a training step on the first ``cfg.batch_size`` training rows, measured on
    copies of ``binder`` and ``objective`` (the trained model is left as it is):

    * ``step_cpu_ms``: the median CPU time of ``steps`` training steps (forward, backward and
      AdamW update; after two warm-up steps) on this thread. Torch runs single-threaded here, so
      this is the step's compute, and unlike wall time it hardly moves when other processes
      share the cores.
    * ``peak_mib``: the peak tensor memory of one step's forward and backward pass: the largest
      running total of the CPU allocations minus frees that torch's profiler records during it,
      i.e. what the step needs beyond the weights and the optimiser state.
    """
    import copy

    from torch.profiler import ProfilerActivity, profile

    binder, objective = copy.deepcopy(binder), copy.deepcopy(objective)
    n = cfg.batch_rows(len(train))
    feats = {m: train.features[m][:n] for m in binder.modalities}
    mask = torch.stack([train.present(m)[:n] for m in binder.modalities])
    binder.train()
    for m in binder.modalities:
        if binder.is_frozen(m):
            binder.encoders[m].eval()
    params = [p for p in [*binder.parameters(), *objective.parameters()] if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr)

    def step() -> None:
        z = {m: binder.encode(m, feats[m]) for m in binder.modalities}
        loss = objective(z, binder.logit_scale, mask=mask).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    times = []
    for i in range(2 + steps):
        t0 = time.thread_time()
        step()
        if i >= 2:
            times.append(time.thread_time() - t0)
    opt.zero_grad(set_to_none=True)
    with (
        _stderr_silenced(),
        profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof,
    ):
        z = {m: binder.encode(m, feats[m]) for m in binder.modalities}
        objective(z, binder.logit_scale, mask=mask).loss.backward()
    live = peak = 0
    for e in sorted(prof.events(), key=lambda e: e.time_range.start):
        live += e.self_cpu_memory_usage
        peak = max(peak, live)
    return {"step_cpu_ms": 1000.0 * statistics.median(times), "peak_mib": peak / 2**20}


def _fit_method(
    method: Method, data: Prepared, cfg: TrainConfig, memory: bool = False
) -> tuple[Any, type[Objective] | None, dict[str, float]]:
    """Train/fit ``method`` on ``data.train``: returns the model (a Binder, a GCCA or None for
    raw features), the objective class that scores it (None: cosine) and extra metrics
    (``step_ms``: mean wall time of a training step; with ``memory``, :func:`step_cost`)."""
    from .gcca import GCCA

    if method.kind in ("binder", "untrained"):
        trained = build_and_fit(data, cfg, train=method.kind == "binder")
        extra: dict[str, float] = {"epochs": 0.0}
        if trained.result is None:
            return trained.binder, None, extra
        extra["epochs"] = float(len(trained.result.history))
        if trained.result.steps:
            extra["step_ms"] = 1000.0 * trained.result.train_seconds / trained.result.steps
        if trained.result.best_metric is not None:
            extra["val_metric"] = float(trained.result.best_metric)  # the scale's criterion
        if cfg.learn_logit_scale:
            extra["logit_scale_final"] = float(trained.binder.logit_scale.detach())
        own = getattr(trained.objective, "learned_logit_scale", None)
        if callable(own) and own() is not None:
            extra["logit_scale_final"] = float(own())
        if memory:
            extra.update(step_cost(trained.binder, trained.objective, data.train, cfg))
        weights = getattr(trained.objective, "modality_weights", None)
        if getattr(trained.objective, "learned_weights", False) and weights is not None:
            mods = trained.binder.modalities
            w = weights(len(mods)).detach()
            extra.update({f"w/{m}": float(x) for m, x in zip(mods, w, strict=True)})
        return trained.binder, type(trained.objective), extra
    if method.kind == "gcca":
        return GCCA(k=cfg.embed_dim).fit(data.train.features), None, {"epochs": 0.0}
    if method.kind == "raw":
        return None, None, {"epochs": 0.0}
    raise ValueError(f"unknown method kind {method.kind!r}")


def _embed(method: Method, model: Any, ds: MultimodalDataset) -> dict[str, Tensor]:
    if method.kind == "gcca":
        return model.transform(ds.features)
    if method.kind == "raw":
        return dict(ds.features)
    assert isinstance(model, Binder)
    return model.embed_all(ds)


def run_method(
    method: Method,
    ds: MultimodalDataset,
    base: TrainConfig,
    seed: int,
    train_transform: Callable[[MultimodalDataset], MultimodalDataset] | None = None,
    probe_tasks: int = 99,
    per_view_probes: bool = True,
    loo: bool = True,
    memory: bool = False,
    train: bool = True,
) -> dict[str, float | None]:
    """Train/fit ``method`` on the training split (early stopping on ``val``), score on ``test``.

    The split and standardisation follow the run's config (``cfg.split``, ``cfg.standardize``,
    seeded with ``seed``), through the same pipeline as :func:`centrobind.runs.train_run`
    (:func:`~centrobind.pipeline.prepare_data`, :func:`~centrobind.pipeline.build_and_fit`).
    ``train_transform(train_ds) -> train_ds`` alters the training rows only (e.g. drop
    modalities). ``probe_tasks``: fused linear probes for the first that many label tasks;
    ``per_view_probes``: also one probe per modality for the first task; ``loo``: leave-one-out
    retrieval (probes dominate evaluation time, so sweeps switch them off); ``memory``: also the
    CPU time and peak memory of a training step (:func:`step_cost`); ``train=False``: only that
    cost, measured on the untrained model (no training, no evaluation). Returns a flat dict of
    metrics (see :mod:`centrobind.bench.stats`).
    """
    t0 = time.perf_counter()
    cfg = _config(method, base, seed)
    data = prepare_data(ds, make_splits(ds, cfg), cfg, train_transform, with_test=True)
    if not train:
        if method.kind != "binder":
            raise ValueError(f"a cost-only job needs a binding method, not {method.kind!r}")
        untrained = build_and_fit(data, cfg, train=False)
        cost = step_cost(untrained.binder, untrained.objective, data.train, cfg)
        return {"seconds": time.perf_counter() - t0, "epochs": 0.0, **cost}
    model, scorer, extra = _fit_method(method, data, cfg, memory)
    seconds = time.perf_counter() - t0
    train_ds, test_ds = data.train, data.test
    assert test_ds is not None
    emb_tr = _embed(method, model, train_ds)
    emb_te = _embed(method, model, test_ds)
    r: dict[str, float | None] = {"seconds": seconds, **extra}
    if method.kind != "raw":
        r.update(_retrieval(emb_te, test_ds, scorer, loo))
    r.update(_probes(method, emb_tr, emb_te, train_ds, test_ds, seed, probe_tasks, per_view_probes))
    if ds.factors:
        lat = latent_recovery(
            emb_tr,
            train_ds.mask,
            train_ds.factors,
            emb_te,
            test_ds.mask,
            test_ds.factors,
            include_fused=method.kind != "raw",
        )
        for src, groups in lat.items():
            for g, v in groups.items():
                r[f"r2/{g}/{src}"] = v  # None where not computable (kept in results.json)
    return r


def _retrieval(
    emb_te: dict[str, Tensor],
    test_ds: MultimodalDataset,
    scorer: type[Objective] | None,
    loo: bool,
) -> dict[str, float]:
    """Cross-modal retrieval (the objective's pair score) and leave-one-out retrieval (its joint
    score when it needs every modality, else the fused other modalities)."""
    mods = list(emb_te)
    score_fn = scorer.pair_score_fn() if scorer is not None else None
    ret = cross_modal_retrieval(emb_te, test_ds.mask, ks=(1, 5), score_fn=score_fn)
    r: dict[str, float] = {"R@1": ret["mean"]["R@1"], "R@5": ret["mean"]["R@5"]}
    for k, v in ret["mean_excluding"].items():
        if v is not None:
            r[f"R@1_excl/{k}"] = v["R@1"]
    for a in mods:
        for b in mods:
            if a != b:
                r[f"pair/{a}->{b}"] = ret[f"{a}->{b}"]["R@1"]
    if loo:
        if scorer is not None and scorer.requires_all_modalities:
            res_loo = joint_leave_one_out(emb_te, scorer.leave_one_out_query)
        else:
            res_loo = leave_one_out_retrieval(emb_te, test_ds.mask, ks=(1, 5))
        r["loo_R@1"] = res_loo["mean"]["R@1"]
        for b in mods:
            r[f"loo/{b}"] = res_loo[b]["R@1"]
    return r


def _probes(
    method: Method,
    emb_tr: dict[str, Tensor],
    emb_te: dict[str, Tensor],
    train_ds: MultimodalDataset,
    test_ds: MultimodalDataset,
    seed: int,
    probe_tasks: int,
    per_view_probes: bool,
) -> dict[str, float]:
    """Linear probes: fused embedding per task, and per modality for the first task."""
    r: dict[str, float] = {}
    mods = list(emb_tr)
    for t, task in enumerate(list(train_ds.labels)[:probe_tasks]):
        y_tr, y_te = train_ds.labels[task], test_ds.labels[task]
        if method.kind == "raw":
            fused_tr = torch.cat([emb_tr[m] for m in mods], 1)
            fused_te = torch.cat([emb_te[m] for m in mods], 1)
        else:
            fused_tr = fused_embedding(emb_tr, train_ds.mask)
            fused_te = fused_embedding(emb_te, test_ds.mask)
        r[f"probe/{task}/fused"] = linear_probe(fused_tr, y_tr, fused_te, y_te, seed=seed)
        if t == 0 and per_view_probes:  # main task only: each probe is one lbfgs fit
            for m in mods:
                ptr, pte = train_ds.present(m), test_ds.present(m)
                r[f"probe/{task}/{m}"] = linear_probe(
                    emb_tr[m][ptr], y_tr[ptr], emb_te[m][pte], y_te[pte], seed=seed
                )
    return r
