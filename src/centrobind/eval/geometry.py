"""Embedding-space geometry: alignment and uniformity (Wang & Isola, 2020), modality gap.

Conventions:
    * ``uniformity`` averages over unordered pairs ``i < j`` and is computed in row chunks with a
      log-sum-exp (numerically stable, no ``N x N`` matrix). Above ``max_n`` rows (default
      10 000) it is computed on a random subsample of ``max_n`` rows drawn without replacement by
      ``torch.randperm`` with a ``torch.Generator`` seeded by ``seed`` (deterministic).
    * In :func:`geometry_metrics`, uniformity of modality m uses the rows where m is present;
      alignment and modality gap of a pair use the rows where both are present.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from ._common import ArrayLike, as_2d, check_present_finite, mean_or_none, modality_masks

__all__ = ["alignment", "geometry_metrics", "modality_gap", "uniformity"]


def _pair(x: ArrayLike, y: ArrayLike) -> tuple[Tensor, Tensor]:
    xt, yt = as_2d(x, "x"), as_2d(y, "y")
    if xt.shape != yt.shape:
        raise ValueError(f"x, y shapes differ: {tuple(xt.shape)} vs {tuple(yt.shape)}")
    if xt.shape[0] == 0:
        raise ValueError("need at least one row")
    dtype = torch.promote_types(xt.dtype, yt.dtype)
    return xt.to(dtype), yt.to(device=xt.device, dtype=dtype)


def alignment(x: ArrayLike, y: ArrayLike, alpha: float = 2.0) -> float:
    """``mean_i ||x_i - y_i||^alpha`` over positive pairs, ``x, y: [N, D]``. Lower = better."""
    xt, yt = _pair(x, y)
    with torch.no_grad():
        return float((xt - yt).norm(dim=1).double().pow(alpha).mean())


def modality_gap(x: ArrayLike, y: ArrayLike) -> float:
    """``||mean(x) - mean(y)||`` (distance between the modality centroids); ``x, y: [N, D]``."""
    xt, yt = _pair(x, y)
    with torch.no_grad():
        return float((xt.double().mean(dim=0) - yt.double().mean(dim=0)).norm())


def uniformity(
    x: ArrayLike,
    t: float = 2.0,
    max_n: int | None = 10_000,
    seed: int = 0,
    chunk_size: int = 1024,
) -> float:
    """``log mean_{i<j} exp(-t ||x_i - x_j||^2)`` for ``x: Tensor[N, D]`` (N >= 2). Lower = better.

    Above ``max_n`` rows a seeded subsample is used (see module doc); ``max_n=None`` disables it.
    """
    xt = as_2d(x, "x")
    n = xt.shape[0]
    if n < 2:
        raise ValueError(f"uniformity needs at least 2 rows, got {n}")
    if max_n is not None and n > max_n:
        if max_n < 2:
            raise ValueError(f"max_n must be >= 2, got {max_n}")
        gen = torch.Generator().manual_seed(seed)
        idx = torch.randperm(n, generator=gen)[:max_n]
        xt = xt[idx.to(xt.device)]
        n = max_n
    xt = xt.double()
    sq = (xt * xt).sum(dim=1)
    parts = []
    with torch.no_grad():
        for s in range(0, n - 1, chunk_size):
            e = min(s + chunk_size, n)
            # squared distances of rows s:e to columns s: (only j > i is kept)
            d2 = (sq[s:e, None] + sq[None, s:] - 2.0 * xt[s:e] @ xt[s:].T).clamp_min(0.0)
            rows = torch.arange(s, e, device=xt.device)[:, None]
            cols = torch.arange(s, n, device=xt.device)[None, :]
            logits = (-t * d2).masked_fill(cols <= rows, -math.inf)
            parts.append(torch.logsumexp(logits.flatten(), dim=0))
        lse = torch.logsumexp(torch.stack(parts), dim=0)
    return float(lse) - math.log(n * (n - 1) / 2)


def geometry_metrics(
    emb: Mapping[str, ArrayLike],
    mask: ArrayLike | None = None,
    t: float = 2.0,
    alpha: float = 2.0,
    max_n: int | None = 10_000,
    seed: int = 0,
) -> dict[str, dict[str, float | None]]:
    """Uniformity per modality; alignment and modality gap per unordered pair.

    Args:
        emb: ``{name: Tensor[N, D]}``, L2-normalised; rows of missing modalities are ignored.
        mask: ``BoolTensor[M, N]`` in dict order, or None (all present).

    Returns:
        ``{"uniformity": {m: float}, "alignment": {"a-b": float, ..., "mean": float},
        "modality_gap": {"a-b": float, ..., "mean": float}}`` (pairs in dict order, ``a`` before
        ``b``); None where too few rows exist (uniformity < 2 rows, pairs 0 shared rows, mean
        without pairs).
    """
    names = list(emb)
    masks = modality_masks(emb, mask)
    xs = {m: as_2d(x, f"emb[{m!r}]") for m, x in emb.items()}
    for m in names:
        check_present_finite(xs[m], masks[m], m)
    unif: dict[str, float | None] = {}
    for m in names:
        rows = xs[m][masks[m].to(xs[m].device)]
        unif[m] = uniformity(rows, t=t, max_n=max_n, seed=seed) if rows.shape[0] >= 2 else None
    align: dict[str, Any] = {}
    gap: dict[str, Any] = {}
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            both = masks[a] & masks[b]
            if not bool(both.any()):
                align[f"{a}-{b}"] = gap[f"{a}-{b}"] = None
                continue
            xa = xs[a][both.to(xs[a].device)]
            xb = xs[b][both.to(xs[b].device)]
            align[f"{a}-{b}"] = alignment(xa, xb, alpha=alpha)
            gap[f"{a}-{b}"] = modality_gap(xa, xb)
    align["mean"] = mean_or_none(list(align.values()))
    gap["mean"] = mean_or_none(list(gap.values()))
    return {"uniformity": unif, "alignment": align, "modality_gap": gap}
