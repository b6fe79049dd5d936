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
from ..eval.retrieval import cross_modal_retrieval, leave_one_out_retrieval, retrieval_metrics
from ..models import Binder
from ..runs import build_binder, build_objective
from ..train import TrainConfig, fit

__all__ = ["Method", "run_method", "symile_logit_scale"]


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


def symile_logit_scale(n_modalities: int, embed_dim: int, base: float = 10.0) -> float:
    """Symile's initial logit scale.

    A multilinear inner product of M unit vectors is tiny: an aligned tuple spread evenly over D
    coordinates scores ``D * D^(-M/2) = D^(1 - M/2)`` (2.4e-4 for M=6, D=64), so CLIP's scale would
    leave every logit near 0 and nothing would train. We rescale so that such a tuple gets the same
    logit a cosine of 1 gets with scale ``base``: ``s = base * D^(M/2 - 1)`` (``= base`` for M=2).
    """
    return base * embed_dim ** (n_modalities / 2 - 1)


def _mip_loo(emb: dict[str, Tensor]) -> dict[str, Any]:
    """Symile's own leave-one-out retrieval: query = elementwise product of the other modalities,
    score = multilinear inner product with the candidate."""
    names = list(emb)
    out: dict[str, Any] = {}
    for b in names:
        q = torch.ones_like(emb[b])
        for m in names:
            if m != b:
                q = q * emb[m]
        out[b] = retrieval_metrics(q, emb[b], ks=(1, 5))
    out["mean"] = {k: sum(out[b][k] for b in names) / len(names) for k in ("R@1", "R@5")}
    return out


def _gram_pair_scores(q: Tensor, g: Tensor) -> Tensor:
    """GRAM's pairwise score: minus the area spanned by two unit vectors, ``-sqrt(1 - cos^2)``,
    ranks exactly as ``cos^2``."""
    return (q @ g.T) ** 2


def _gram_loo(emb: dict[str, Tensor]) -> dict[str, Any]:
    """GRAM's own leave-one-out retrieval: the candidate whose parallelotope with the query's other
    M-1 embeddings has the smallest volume. ``det G = det(B) (1 - ||P z||^2)`` with ``B`` the
    query vectors' Gram matrix and ``P`` the projection onto their span, so per query the ranking
    is by ``||P z_j||^2 = sum_k (q_k . z_j)^2`` over an orthonormal basis ``q_k`` of that span."""
    names = list(emb)
    out: dict[str, Any] = {}
    for b in names:
        others = torch.stack([emb[m] for m in names if m != b], dim=2)  # [N, D, M-1]
        basis = torch.linalg.qr(others.double())[0].float()  # [N, D, M-1]
        k = basis.shape[2]
        queries = basis.transpose(1, 2).reshape(basis.shape[0], -1)  # [N, (M-1) D]

        def score(qb: Tensor, g: Tensor, k: int = k) -> Tensor:
            return (torch.einsum("ckd,gd->ckg", qb.view(qb.shape[0], k, -1), g) ** 2).sum(1)

        out[b] = retrieval_metrics(queries, emb[b], ks=(1, 5), score_fn=score)
    out["mean"] = {k: sum(out[b][k] for b in names) / len(names) for k in ("R@1", "R@5")}
    return out


def _validate_symile(binder: Binder, val_ds: MultimodalDataset) -> float:
    return float(_mip_loo(binder.embed_all(val_ds))["mean"]["R@1"])


def _validate_gram(binder: Binder, val_ds: MultimodalDataset) -> float:
    return float(_gram_loo(binder.embed_all(val_ds))["mean"]["R@1"])


def _config(method: Method, base: TrainConfig, seed: int, n_modalities: int) -> TrainConfig:
    cfg = dataclasses.replace(
        base,
        objective=method.objective,
        objective_options=dict(method.options),
        anchor=method.anchor,
        intra_weight=method.intra_weight,
        seed=seed,
        quiet=True,
    )
    if method.objective == "symile":
        s = symile_logit_scale(n_modalities, base.embed_dim)
        cfg = dataclasses.replace(cfg, logit_scale_init=s, max_logit_scale=100 * s / 10)
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
    std = Standardizer.fit(train_raw)
    train_ds = std.apply(train_raw)
    if train_transform is not None:
        train_ds = train_transform(train_ds)
    val_ds = std.apply(ds.subset(splits["val"])) if len(splits["val"]) >= 2 else None
    test_ds = std.apply(ds.subset(splits["test"]))
    mods = ds.modalities
    binder = gcca = None
    epochs_run = 0
    learned: dict[str, float] = {}
    if method.kind in ("binder", "untrained"):
        cfg = _config(method, base, seed, len(mods))
        torch.manual_seed(seed)
        binder = build_binder(train_ds.dims, cfg)
        if method.kind == "binder":
            objective = build_objective(cfg, mods)
            validate = {"symile": _validate_symile, "gram": _validate_gram}.get(method.objective)
            res = fit(binder, objective, train_ds, val_ds, cfg, validate=validate)
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
            emb_te, test_ds.mask, ks=(1, 5), score_fn=_gram_pair_scores if is_gram else None
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
            res_loo = _mip_loo(emb_te)
        elif is_gram:
            res_loo = _gram_loo(emb_te)
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
