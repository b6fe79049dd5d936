"""One benchmark cell: train (or fit) one method on one split of one dataset, and score it.

Every binding method gets the same encoders, embedding size, optimiser, epoch budget and early
stopping (``base`` config); only the objective (and what it requires: a frozen, pre-trained anchor
for FixedAnchor, a larger logit scale for Symile) differs.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from ..data import MultimodalDataset, Standardizer
from ..eval import fused_embedding, latent_recovery, linear_probe
from ..eval.retrieval import (
    cross_modal_retrieval,
    gram_leave_one_out,
    gram_pair_scores,
    leave_one_out_retrieval,
    symile_leave_one_out,
)
from ..models import Binder
from ..runs import build_binder, build_objective
from ..train import TrainConfig, fit

__all__ = ["Method", "run_method"]


@dataclass(frozen=True)
class Method:
    """A method to compare. ``kind``: "binder" (trained with ``objective``), "gcca" (closed form),
    "raw" (standardised input features; classification/latent recovery only), "untrained" (a
    randomly initialised Binder: the reference for how much intra-modal information training
    keeps)."""

    name: str
    kind: str = "binder"
    objective: str = "centrobind"
    options: tuple[tuple[str, Any], ...] = ()
    anchor: str | None = None
    intra_weight: float = 0.0
    overrides: tuple[tuple[str, Any], ...] = field(default=())


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


def _embed(method: Method, binder: Binder | None, gcca, ds: MultimodalDataset) -> dict[str, Tensor]:
    if method.kind == "gcca":
        return gcca.transform(ds.features)
    if method.kind == "raw":
        return dict(ds.features)
    return binder.embed_all(ds)


def run_method(
    method: Method,
    ds: MultimodalDataset,
    splits: dict[str, Tensor],
    base: TrainConfig,
    seed: int,
    train_transform=None,
    probe_tasks: int = 99,
    per_view_probes: bool = True,
    loo: bool = True,
) -> dict[str, float]:
    """Train/fit ``method`` on ``splits['train']`` (early stopping on ``val``), score on ``test``.

    ``train_transform(train_ds) -> train_ds`` alters the training rows only (e.g. drop
    modalities). ``probe_tasks``: fused linear probes for the first that many label tasks;
    ``per_view_probes``: also one probe per modality for the first task; ``loo``: leave-one-out
    retrieval (probes dominate evaluation time, so sweeps switch them off). Returns a flat dict of
    metrics (see :mod:`centrobind.bench.report`).
    """
    from .gcca import GCCA

    t0 = time.perf_counter()
    train_raw = ds.subset(splits["train"])
    if train_transform is not None:  # before the statistics: they may only see what is kept
        train_raw = train_transform(train_raw)
    std = Standardizer.fit(train_raw)
    train_ds = std.apply(train_raw)
    val_ds = std.apply(ds.subset(splits["val"])) if len(splits["val"]) >= 2 else None
    test_ds = std.apply(ds.subset(splits["test"]))
    mods = ds.modalities
    binder = gcca = None
    epochs_run = 0
    learned: dict[str, float] = {}
    if method.kind in ("binder", "untrained"):
        cfg = _config(method, base, seed)
        torch.manual_seed(seed)
        binder = build_binder(train_ds.dims, cfg)
        if method.kind == "binder":
            objective = build_objective(cfg, mods)
            res = fit(binder, objective, train_ds, val_ds, cfg)
            epochs_run = len(res.history)
            weights = getattr(objective, "modality_weights", None)
            if getattr(objective, "learned_weights", False) and weights is not None:
                learned = {
                    f"w/{m}": float(w)
                    for m, w in zip(mods, weights(len(mods)).detach(), strict=True)
                }
    elif method.kind == "gcca":
        gcca = GCCA(k=base.embed_dim).fit(train_ds.features)
    elif method.kind != "raw":
        raise ValueError(f"unknown method kind {method.kind!r}")
    seconds = time.perf_counter() - t0

    emb_tr = _embed(method, binder, gcca, train_ds)
    emb_te = _embed(method, binder, gcca, test_ds)
    r: dict[str, float] = {"seconds": seconds, "epochs": float(epochs_run), **learned}
    if method.kind != "raw":
        is_gram = method.kind == "binder" and method.objective == "gram"
        ret = cross_modal_retrieval(
            emb_te, test_ds.mask, ks=(1, 5), score_fn=gram_pair_scores if is_gram else None
        )
        r["R@1"], r["R@5"] = ret["mean"]["R@1"], ret["mean"]["R@5"]
        for k, v in ret["mean_excluding"].items():
            if v is not None:
                r[f"R@1_excl/{k}"] = v["R@1"]
        for a in mods:
            for b in mods:
                if a != b:
                    r[f"pair/{a}->{b}"] = ret[f"{a}->{b}"]["R@1"]
    if loo and method.kind != "raw":
        if method.kind == "binder" and method.objective == "symile":
            res_loo = symile_leave_one_out(emb_te)
        elif is_gram:
            res_loo = gram_leave_one_out(emb_te)
        else:
            res_loo = leave_one_out_retrieval(emb_te, test_ds.mask, ks=(1, 5))
        r["loo_R@1"] = res_loo["mean"]["R@1"]
        for b in mods:
            r[f"loo/{b}"] = res_loo[b]["R@1"]
    for t, task in enumerate(list(ds.labels)[:probe_tasks]):
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
                r[f"r2/{g}/{src}"] = v
    return r
