"""One benchmark cell: train (or fit) one method on one split of one dataset, and score it.

Every binding method gets the same encoders, embedding size, optimiser, epoch budget and early
stopping (``base`` config); only the objective (and what it requires: a frozen, pre-trained anchor
for FixedAnchor) and the logit scale differ: every binding method gets its own scale, chosen on the
validation split from one grid (:func:`centrobind.bench.suites.choose_scale`).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
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

__all__ = ["Method", "run_method"]


@dataclass(frozen=True)
class Method:
    """A method to compare. ``kind``: "binder" (trained with ``objective``), "gcca" (closed form),
    "raw" (standardised input features; classification/latent recovery only), "untrained" (a
    randomly initialised Binder: the reference for how much intra-modal information training
    keeps).

    Logit scale: a "binder" method's scale is chosen by the benchmark's protocol and applied with
    :meth:`with_scale`. ``learn_scale``: a learnable scale initialised at the scale chosen for
    the method named ``scale_from`` (same objective and options), clamped to at most twice it.
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

    @property
    def tuned(self) -> bool:
        """Whether the protocol chooses its logit scale (binder methods)."""
        return self.kind == "binder"

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


def _fit_method(
    method: Method, data: Prepared, cfg: TrainConfig
) -> tuple[Any, type[Objective] | None, dict[str, float]]:
    """Train/fit ``method`` on ``data.train``: returns the model (a Binder, a GCCA or None for
    raw features), the objective class that scores it (None: cosine) and extra metrics."""
    from .gcca import GCCA

    if method.kind in ("binder", "untrained"):
        trained = build_and_fit(data, cfg, train=method.kind == "binder")
        extra: dict[str, float] = {"epochs": 0.0}
        if trained.result is None:
            return trained.binder, None, extra
        extra["epochs"] = float(len(trained.result.history))
        if trained.result.best_metric is not None:
            extra["val_metric"] = float(trained.result.best_metric)  # the scale's criterion
        if cfg.learn_logit_scale:
            extra["logit_scale_final"] = float(trained.binder.logit_scale.detach())
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
) -> dict[str, float | None]:
    """Train/fit ``method`` on the training split (early stopping on ``val``), score on ``test``.

    The split and standardisation follow the run's config (``cfg.split``, ``cfg.standardize``,
    seeded with ``seed``), through the same pipeline as :func:`centrobind.runs.train_run`
    (:func:`~centrobind.runs.prepare_data`, :func:`~centrobind.runs.build_and_fit`).
    ``train_transform(train_ds) -> train_ds`` alters the training rows only (e.g. drop
    modalities). ``probe_tasks``: fused linear probes for the first that many label tasks;
    ``per_view_probes``: also one probe per modality for the first task; ``loo``: leave-one-out
    retrieval (probes dominate evaluation time, so sweeps switch them off). Returns a flat dict of
    metrics (see :mod:`centrobind.bench.report`).
    """
    t0 = time.perf_counter()
    cfg = _config(method, base, seed)
    data = prepare_data(ds, make_splits(ds, cfg), cfg, train_transform, with_test=True)
    model, scorer, extra = _fit_method(method, data, cfg)
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
