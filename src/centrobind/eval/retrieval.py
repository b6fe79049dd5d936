"""Retrieval metrics: R@k, MRR and median rank, computed block by block.

Rank convention (used everywhere, including the tests' brute-force reference):
``rank = 1 + #{gallery items other than the target whose score is STRICTLY higher than the
target's score}``. Ties are therefore counted optimistically: a gallery item that scores exactly
the same as the target does not push it down. Caveats: ties are decided on the computed float
scores (the target's score comes from its own ``score_fn`` call, so a near-duplicate may land a
rounding error above or below it); fully collapsed embeddings (all scores exactly equal) get
R@1 = 100, so check the uniformity metric for collapse. NaN scores of non-target items never
outrank the target; a NaN target score is an error.

Memory: queries are processed in blocks of ``chunk_size`` rows and, within a block, the gallery
in slices of ``max(1, 2**24 // chunk_size)`` rows, so at most ~2**24 scores (64 MB in float32)
plus a boolean mask of the same shape exist at once; the full ``Nq x Ng`` matrix never does.
100k x 100k with D=256 needs ~0.3 GB on top of the inputs.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ._common import (
    ArrayLike,
    as_2d,
    as_labels,
    check_present_finite,
    fused_embedding,
    mean_or_none,
    modality_masks,
)

__all__ = [
    "ScoreFn",
    "JointQuery",
    "cross_modal_retrieval",
    "joint_leave_one_out",
    "label_precision",
    "label_retrieval",
    "leave_one_out_retrieval",
    "mean_pairwise_mrr",
    "mean_pairwise_r1",
    "metrics_from_ranks",
    "retrieval_metrics",
    "retrieval_ranks",
]

ScoreFn = Callable[[Tensor, Tensor], Tensor]
"""``score_fn(q_block: Tensor[c, D], gallery_block: Tensor[g, D]) -> Tensor[c, g]``."""

_BLOCK_ELEMS = 1 << 24  # max scores held at once per (query block x gallery slice)
_TARGET_ROWS = 256  # queries per call when scoring each query against its own target


def _dot_scores(q: Tensor, g: Tensor) -> Tensor:
    return q @ g.T


def _check_shape(scores: Tensor, shape: tuple[int, int]) -> None:
    if tuple(scores.shape) != shape:
        raise ValueError(f"score_fn returned shape {tuple(scores.shape)}, expected {shape}")


def _target_indices(targets: ArrayLike | None, nq: int, ng: int) -> Tensor:
    """``LongTensor[nq]`` gallery row of each query's positive (default ``arange(nq)``)."""
    if targets is None:
        if nq > ng:
            raise ValueError(f"default targets arange(Nq) need Nq <= Ng, got Nq={nq}, Ng={ng}")
        return torch.arange(nq)
    tgt_idx = torch.as_tensor(targets).detach().cpu()
    if tgt_idx.dim() != 1 or tgt_idx.shape[0] != nq:
        raise ValueError(f"targets must have shape [{nq}], got {tuple(tgt_idx.shape)}")
    if tgt_idx.is_floating_point():
        raise ValueError(f"targets must be integer indices, got dtype {tgt_idx.dtype}")
    tgt_idx = tgt_idx.long()
    if bool((tgt_idx < 0).any()) or bool((tgt_idx >= ng).any()):
        raise ValueError(f"targets must lie in [0, {ng})")
    return tgt_idx


def retrieval_ranks(
    queries: ArrayLike,
    gallery: ArrayLike,
    targets: ArrayLike | None = None,
    chunk_size: int = 4096,
    score_fn: ScoreFn | None = None,
) -> Tensor:
    """1-based rank of each query's target in the gallery (optimistic ties, see module doc).

    Args:
        queries: ``Tensor[Nq, D]``.
        gallery: ``Tensor[Ng, D]``.
        targets: ``LongTensor[Nq]``, gallery row of each query's positive; default ``arange(Nq)``
            (then ``Nq <= Ng`` is required).
        chunk_size: queries scored per block.
        score_fn: ``(Tensor[c, D], Tensor[g, D]) -> Tensor[c, g]``, the score of every query
            row against every given gallery row; it is called on gallery slices (and on each
            query's own target), so a score must depend only on its (query, gallery) row pair.
            Extra per-query inputs (e.g. Symile's third modality) can ride along as extra
            query columns. Default: dot product (cosine for L2-normalised inputs).

    Returns:
        ``LongTensor[Nq]`` on the CPU, values in ``[1, Ng]``.
    """
    q = as_2d(queries, "queries")
    g = as_2d(gallery, "gallery")
    nq, ng = q.shape[0], g.shape[0]
    if nq == 0 or ng == 0:
        raise ValueError(f"retrieval needs non-empty queries and gallery, got Nq={nq}, Ng={ng}")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    tgt_idx = _target_indices(targets, nq, ng)
    if score_fn is None:
        if q.shape[1] != g.shape[1]:
            raise ValueError(f"dimension mismatch: queries D={q.shape[1]}, gallery D={g.shape[1]}")
        if not bool(torch.isfinite(q).all()) or not bool(torch.isfinite(g).all()):
            raise ValueError("queries/gallery hold NaN/inf values")
        g = g.to(device=q.device, dtype=torch.promote_types(q.dtype, g.dtype))
        q = q.to(g.dtype)
        score_fn = _dot_scores

    ranks = torch.empty(nq, dtype=torch.long)
    with torch.no_grad():
        for start in range(0, nq, chunk_size):
            stop = min(start + chunk_size, nq)
            qb = q[start:stop]
            c = stop - start
            tb = tgt_idx[start:stop].to(g.device)
            # score of each query against its own target: diagonal of small [r, r] blocks
            tgt_parts = []
            for r0 in range(0, c, _TARGET_ROWS):
                r1 = min(r0 + _TARGET_ROWS, c)
                s_t = score_fn(qb[r0:r1], g[tb[r0:r1]])
                _check_shape(s_t, (r1 - r0, r1 - r0))
                tgt_parts.append(s_t.diagonal())
            tgt_scores = torch.cat(tgt_parts)[:, None]  # [c, 1]
            if bool(torch.isnan(tgt_scores).any()):
                raise ValueError("score of a query's target is NaN")
            higher = torch.zeros(c, dtype=torch.long, device=tgt_scores.device)
            step = max(1, _BLOCK_ELEMS // c)
            for j0 in range(0, ng, step):
                j1 = min(j0 + step, ng)
                scores = score_fn(qb, g[j0:j1])
                _check_shape(scores, (c, j1 - j0))
                above = scores > tgt_scores
                del scores
                inside = ((tb >= j0) & (tb < j1)).nonzero().squeeze(1)
                if inside.numel():  # the target never outranks itself
                    above[inside, tb[inside] - j0] = False
                higher += above.sum(dim=1)
            ranks[start:stop] = higher.cpu() + 1
    return ranks


def metrics_from_ranks(ranks: Tensor, ks: Sequence[int] = (1, 5, 10)) -> dict[str, float | int]:
    """R@k (percent), MRR (0-1), median rank and query count from 1-based ranks ``LongTensor[Nq]``.

    ``median_rank`` follows numpy: the mean of the two middle ranks when Nq is even.
    """
    r = torch.as_tensor(ranks).detach().cpu().long()
    if r.numel() == 0:
        raise ValueError("no ranks")
    out: dict[str, float | int] = {}
    for k in ks:
        if int(k) < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        out[f"R@{int(k)}"] = 100.0 * float((r <= int(k)).double().mean())
    out["MRR"] = float((1.0 / r.double()).mean())
    out["median_rank"] = float(np.median(r.numpy()))
    out["n_queries"] = int(r.numel())
    return out


def retrieval_metrics(
    queries: ArrayLike,
    gallery: ArrayLike,
    targets: ArrayLike | None = None,
    ks: Sequence[int] = (1, 5, 10),
    chunk_size: int = 4096,
    score_fn: ScoreFn | None = None,
) -> dict[str, float | int]:
    """Retrieval of gallery row ``targets[i]`` (default ``i``) for each query ``i``.

    Args: see :func:`retrieval_ranks` (``queries: Tensor[Nq, D]``, ``gallery: Tensor[Ng, D]``).

    Returns:
        ``{"R@k": percent 0-100 for each k, "MRR": 0-1, "median_rank": 1-based float,
        "n_queries": Nq}``.
    """
    ranks = retrieval_ranks(queries, gallery, targets, chunk_size=chunk_size, score_fn=score_fn)
    return metrics_from_ranks(ranks, ks)


def _empty_metrics(ks: Sequence[int]) -> dict[str, Any]:
    out: dict[str, Any] = {f"R@{int(k)}": None for k in ks}
    out.update(MRR=None, median_rank=None, n_queries=0)
    return out


def _mean_metrics(results: list[dict[str, Any]], ks: Sequence[int]) -> dict[str, Any] | None:
    """Unweighted mean of each metric over the given results that have queries."""
    valid = [r for r in results if r["n_queries"] > 0]
    if not valid:
        return None
    keys = [f"R@{int(k)}" for k in ks] + ["MRR", "median_rank"]
    out: dict[str, Any] = {key: mean_or_none([r[key] for r in valid]) for key in keys}
    out["n_pairs"] = len(valid)
    return out


def cross_modal_retrieval(
    emb: Mapping[str, ArrayLike],
    mask: ArrayLike | None = None,
    ks: Sequence[int] = (1, 5, 10),
    chunk_size: int = 4096,
    score_fn: ScoreFn | None = None,
) -> dict[str, Any]:
    """Retrieval for every ordered modality pair ``a->b`` (``a != b``).

    Only rows where both ``a`` and ``b`` are present take part (queries: those rows of ``a``,
    gallery: the same rows of ``b``, target of the i-th query = the i-th gallery row).

    Args:
        emb: ``{name: Tensor[N, D]}``, L2-normalised; rows of missing modalities are ignored.
        mask: ``BoolTensor[M, N]`` in dict order, or None (all present).
        score_fn: pairwise score (see :func:`retrieval_ranks`); default dot product. GRAM, for
            one, ranks by the area spanned by two unit vectors, i.e. by ``cos^2``.

    Returns:
        ``{"a->b": metrics (see :func:`retrieval_metrics`), ...,
        "mean": {metric: unweighted mean over pairs, "n_pairs": int} | None,
        "mean_excluding": {k: mean over the pairs involving neither a == k nor b == k, or None
        when that set is empty (always for M = 2)}}``. A pair without shared rows has
        ``n_queries = 0``, ``None`` metrics, and is left out of the means.
    """
    names = list(emb)
    if len(names) < 2:
        raise ValueError(f"cross-modal retrieval needs >= 2 modalities, got {names}")
    masks = modality_masks(emb, mask)
    xs = {name: as_2d(x, f"emb[{name!r}]") for name, x in emb.items()}
    for name in names:
        check_present_finite(xs[name], masks[name], name)
    out: dict[str, Any] = {}
    for a in names:
        for b in names:
            if a == b:
                continue
            both = masks[a] & masks[b]
            if not bool(both.any()):
                out[f"{a}->{b}"] = _empty_metrics(ks)
                continue
            qa = xs[a][both.to(xs[a].device)]
            gb = xs[b][both.to(xs[b].device)]
            out[f"{a}->{b}"] = retrieval_metrics(
                qa, gb, ks=ks, chunk_size=chunk_size, score_fn=score_fn
            )
    pairs = [(a, b) for a in names for b in names if a != b]
    out["mean"] = _mean_metrics([out[f"{a}->{b}"] for a, b in pairs], ks)
    out["mean_excluding"] = {
        k: _mean_metrics([out[f"{a}->{b}"] for a, b in pairs if k not in (a, b)], ks) for k in names
    }
    return out


def leave_one_out_retrieval(
    emb: Mapping[str, ArrayLike],
    mask: ArrayLike | None = None,
    ks: Sequence[int] = (1, 5, 10),
    chunk_size: int = 4096,
) -> dict[str, Any]:
    """Per modality ``b``: query = normalised mean of the other present modalities, gallery = b.

    Rows take part where ``b`` and at least one other modality are present.

    Returns:
        ``{b: metrics (see :func:`retrieval_metrics`), ..., "mean": {...} | None}``.
    """
    names = list(emb)
    if len(names) < 2:
        raise ValueError(f"leave-one-out retrieval needs >= 2 modalities, got {names}")
    masks = modality_masks(emb, mask)
    xs = {name: as_2d(x, f"emb[{name!r}]") for name, x in emb.items()}
    for name in names:
        check_present_finite(xs[name], masks[name], name)
    out: dict[str, Any] = {}
    for b in names:
        others = [m for m in names if m != b]
        any_other = torch.stack([masks[m] for m in others]).any(dim=0)
        rows = masks[b] & any_other
        if not bool(rows.any()):
            out[b] = _empty_metrics(ks)
            continue
        query = fused_embedding({m: xs[m] for m in others}, torch.stack([masks[m] for m in others]))
        q = query[rows.to(query.device)]
        g = xs[b][rows.to(xs[b].device)]
        out[b] = retrieval_metrics(q, g, ks=ks, chunk_size=chunk_size)
    out["mean"] = _mean_metrics([out[b] for b in names], ks)
    return out


def _mean_pairwise(z: Tensor, mask: Tensor | None, max_elements: int, metric: str) -> float:
    """Mean over ordered modality pairs of ``metric`` (``"R@1"`` in %, ``"MRR"`` in 0-1): the
    rank of each row's own pair among the rows where both modalities are present (optimistic
    ties), from one ``[M, M, N, N]`` score tensor, or :func:`cross_modal_retrieval` when that
    tensor would exceed ``max_elements``."""
    M, N, _ = z.shape
    present = (
        torch.ones(M, N, dtype=torch.bool, device=z.device)
        if mask is None
        else (mask.to(device=z.device, dtype=torch.bool))
    )
    if M * M * N * N > max_elements:
        emb = {str(i): z[i] for i in range(M)}
        mean = cross_modal_retrieval(emb, present, ks=(1,))["mean"]
        return float("nan") if mean is None else float(mean[metric])
    z = torch.where(present[..., None], z, torch.zeros((), dtype=z.dtype, device=z.device))
    with torch.no_grad():
        scores = torch.einsum("and,bmd->abnm", z, z)  # [M, M, N, N]
        pos = scores.diagonal(dim1=2, dim2=3)  # [M, M, N]
        valid = present[:, None, :] & present[None, :, :]  # [M, M, N]
        scores = scores.masked_fill(~valid[:, :, None, :], float("-inf"))
        rank = 1 + (scores > pos[..., None]).sum(-1)  # [M, M, N]
        per_row = (rank == 1).double() * 100.0 if metric == "R@1" else 1.0 / rank.double()
        per_row = torch.where(valid, per_row, torch.zeros((), dtype=torch.float64))
        count = valid.sum(-1)
        off = ~torch.eye(M, dtype=torch.bool, device=z.device) & (count > 0)
        value = per_row.sum(-1)[off] / count[off].double()
    return float(value.mean()) if value.numel() else float("nan")


def mean_pairwise_r1(z: Tensor, mask: Tensor | None = None, max_elements: int = 2**26) -> float:
    """Mean R@1 (%) over all ordered modality pairs, all pairs scored in one batched product.

    The fast path of the trainer's validation: same value as
    ``cross_modal_retrieval(...)["mean"]["R@1"]`` (same optimistic tie rule, rows where both
    modalities are present), computed from one ``[M, M, N, N]`` score tensor; falls back to the
    chunked :func:`cross_modal_retrieval` when that tensor would exceed ``max_elements``.

    Args:
        z: ``[M, N, D]`` L2-normalised embeddings (absent rows may hold anything finite or NaN).
        mask: ``[M, N]`` bool, or None (all present).
    """
    return _mean_pairwise(z, mask, max_elements, "R@1")


def mean_pairwise_mrr(z: Tensor, mask: Tensor | None = None, max_elements: int = 2**26) -> float:
    """Mean reciprocal rank (0-1) averaged over all ordered modality pairs: like
    :func:`mean_pairwise_r1` (same rows, same optimistic tie rule), but every rank counts, not
    only rank 1, so it moves less from one query on a small gallery.

    Args:
        z: ``[M, N, D]`` L2-normalised embeddings (absent rows may hold anything finite or NaN).
        mask: ``[M, N]`` bool, or None (all present).
    """
    return _mean_pairwise(z, mask, max_elements, "MRR")


#: ``others [M-1, N, D] -> (queries [N, K], score_fn or None)``: an objective's joint query; see
#: :meth:`centrobind.objectives.Objective.leave_one_out_query`.
JointQuery = Callable[[Tensor], "tuple[Tensor, ScoreFn | None] | None"]


def joint_leave_one_out(
    emb: Mapping[str, Tensor], query: JointQuery, ks: Sequence[int] = (1, 5)
) -> dict[str, Any]:
    """Leave-one-out retrieval with an objective's own joint score: for each modality ``b``, the
    query built from the other modalities' embeddings by ``query`` ranks ``emb[b]``. All rows must
    be present (pass the complete rows). Returns ``{b: metrics, ..., "mean": {R@k: ...}}``.

    Example:
        >>> import torch.nn.functional as F
        >>> from centrobind.objectives import Symile
        >>> emb = {m: F.normalize(torch.randn(6, 4), dim=-1) for m in "abc"}
        >>> out = joint_leave_one_out(emb, Symile.leave_one_out_query, ks=(1,))
        >>> sorted(out), 0 <= out["mean"]["R@1"] <= 100
        (['a', 'b', 'c', 'mean'], True)
    """
    names = list(emb)
    out: dict[str, Any] = {}
    for b in names:
        built = query(torch.stack([emb[m] for m in names if m != b]))
        if built is None:
            raise ValueError("this query function has no joint score (pairwise objective)")
        q, score_fn = built
        out[b] = retrieval_metrics(q, emb[b], ks=ks, score_fn=score_fn)
    out["mean"] = {f"R@{k}": sum(out[b][f"R@{k}"] for b in names) / len(names) for k in ks}
    return out


def label_precision(
    queries: ArrayLike,
    query_labels: ArrayLike,
    gallery: ArrayLike,
    gallery_labels: ArrayLike,
    ks: Sequence[int] = (1, 5, 10),
    chunk_size: int = 1024,
) -> dict[str, float | int]:
    """Label-level retrieval: a gallery item is relevant to a query when it has the query's label.

    Each query ranks the whole gallery by dot product (ties: ascending gallery row). P@k is the
    fraction of the top ``k`` that is relevant (``k`` capped at the gallery size); AP the mean of
    the precision at the rank of each relevant item (0 when none is relevant); both averaged over
    the queries. Unlike R@k it asks "same class?", not "the paired item?".

    Args:
        queries: ``Tensor[Nq, D]``; query_labels: ``LongTensor[Nq]``.
        gallery: ``Tensor[Ng, D]``; gallery_labels: ``LongTensor[Ng]``.
        chunk_size: queries ranked at once (memory: ``chunk_size x Ng`` scores).

    Returns:
        ``{"P@k": percent for each k, "mAP": percent, "n_queries": Nq}``.
    """
    q, g = as_2d(queries, "queries"), as_2d(gallery, "gallery")
    yq, yg = (
        as_labels(query_labels, q.shape[0], "query_labels"),
        as_labels(gallery_labels, g.shape[0], "gallery_labels"),
    )
    nq, ng = q.shape[0], g.shape[0]
    if nq == 0 or ng == 0:
        raise ValueError(f"label retrieval needs non-empty queries and gallery, got {nq}, {ng}")
    if q.shape[1] != g.shape[1]:
        raise ValueError(f"dimension mismatch: queries D={q.shape[1]}, gallery D={g.shape[1]}")
    dtype = torch.promote_types(q.dtype, g.dtype)
    q, g = q.to(dtype), g.to(dtype)
    prec = {int(k): 0.0 for k in ks}
    ap_sum = 0.0
    ranks = torch.arange(1, ng + 1, dtype=torch.float64)
    with torch.no_grad():
        for s in range(0, nq, chunk_size):
            scores = q[s : s + chunk_size] @ g.T  # [c, Ng]
            order = torch.argsort(scores, dim=1, descending=True, stable=True)
            rel = (yg[order] == yq[s : s + chunk_size, None]).double()  # [c, Ng], rank order
            hits = rel.cumsum(1)
            for k in prec:
                kk = min(k, ng)
                prec[k] += float((hits[:, kk - 1] / kk).sum())
            n_rel = rel.sum(1)
            ap = (rel * hits / ranks).sum(1) / n_rel.clamp_min(1)
            ap_sum += float(ap.sum())
    out: dict[str, float | int] = {f"P@{k}": 100.0 * v / nq for k, v in prec.items()}
    out["mAP"] = 100.0 * ap_sum / nq
    out["n_queries"] = int(nq)
    return out


def label_retrieval(
    emb: Mapping[str, ArrayLike],
    mask: ArrayLike | None,
    labels: Mapping[str, ArrayLike],
    ks: Sequence[int] = (1, 5, 10),
) -> dict[str, Any]:
    """:func:`label_precision` for every label task and ordered modality pair ``a->b``.

    Queries: the rows where ``a`` is present and labelled; gallery: the rows where ``b`` is
    present and labelled (so a query's own paired item is in the gallery, and relevant).

    Returns:
        ``{task: {"a->b": {"P@k", "mAP", "n_queries"}, ..., "mean": {"P@k", "mAP",
        "n_pairs"} | None}}``; a pair without labelled rows has ``n_queries = 0`` and None
        metrics.
    """
    names = list(emb)
    masks = modality_masks(emb, mask)
    xs = {name: as_2d(x, f"emb[{name!r}]") for name, x in emb.items()}
    n = next(iter(xs.values())).shape[0]
    out: dict[str, Any] = {}
    for task, y in labels.items():
        yy = as_labels(y, n, f"labels[{task!r}]")
        res: dict[str, Any] = {}
        for a in names:
            for b in names:
                if a == b:
                    continue
                qa, gb = masks[a] & (yy >= 0), masks[b] & (yy >= 0)
                if not bool(qa.any()) or not bool(gb.any()):
                    res[f"{a}->{b}"] = {
                        **{f"P@{int(k)}": None for k in ks},
                        "mAP": None,
                        "n_queries": 0,
                    }
                    continue
                res[f"{a}->{b}"] = label_precision(xs[a][qa], yy[qa], xs[b][gb], yy[gb], ks)
        valid = [r for r in res.values() if r["n_queries"] > 0]
        keys = [f"P@{int(k)}" for k in ks] + ["mAP"]
        mean: dict[str, Any] | None = None
        if valid:
            mean = {key: mean_or_none([r[key] for r in valid]) for key in keys}
            mean["n_pairs"] = len(valid)
        res["mean"] = mean
        out[task] = res
    return out
