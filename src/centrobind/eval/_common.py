"""Shared helpers of the evaluation package: input coercion, presence masks, fusion.

Internal to the eval package; its public names (``fused_embedding``, ``to_builtin``) are
re-exported by :mod:`centrobind.eval`, which other packages import them from.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import Tensor

ArrayLike = Tensor | np.ndarray

__all__ = [
    "ArrayLike",
    "as_2d",
    "as_labels",
    "check_present_finite",
    "fused_embedding",
    "l2_normalize",
    "mean_or_none",
    "modality_masks",
    "to_builtin",
    "to_numpy",
]


def as_2d(x: Any, name: str) -> Tensor:
    """Coerce ``x`` to a floating ``Tensor[N, D]`` (numpy accepted; integers -> float32)."""
    t = torch.as_tensor(x)
    if not t.is_floating_point():
        t = t.float()
    if t.dim() != 2:
        raise ValueError(f"{name} must be 2-D [N, D], got shape {tuple(t.shape)}")
    return t


def as_labels(y: Any, n: int, name: str) -> Tensor:
    """Coerce ``y`` to a ``LongTensor[n]`` on the CPU."""
    t = torch.as_tensor(y).detach().cpu()
    if t.dim() != 1 or t.shape[0] != n:
        raise ValueError(f"{name} must have shape [{n}], got {tuple(t.shape)}")
    if t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
        raise ValueError(f"{name} must hold integer class labels, got dtype {t.dtype}")
    return t.long()


def to_numpy(x: Any) -> np.ndarray:
    """Tensor/array -> numpy array on the CPU (no gradient)."""
    if isinstance(x, Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def l2_normalize(x: Tensor, eps: float = 1e-12) -> Tensor:
    """Row-wise L2 normalisation of ``Tensor[N, D]``; all-zero rows stay zero."""
    out: Tensor = x / x.norm(dim=-1, keepdim=True).clamp_min(eps)
    return out


def modality_masks(emb: Mapping[str, Any], mask: Any | None) -> dict[str, Tensor]:
    """Split a presence mask ``Tensor[M, N]`` (dict order) into ``{name: BoolTensor[N]}`` (CPU).

    ``mask=None`` means every modality is present in every row. All embeddings must share N.
    """
    if len(emb) == 0:
        raise ValueError("embedding dict is empty")
    ns = {name: int(torch.as_tensor(x).shape[0]) for name, x in emb.items()}
    n = next(iter(ns.values()))
    if any(v != n for v in ns.values()):
        raise ValueError(f"all modalities must have the same number of rows, got {ns}")
    names = list(emb)
    if mask is None:
        return {name: torch.ones(n, dtype=torch.bool) for name in names}
    m = torch.as_tensor(mask).detach().cpu()
    if m.dim() != 2 or tuple(m.shape) != (len(names), n):
        raise ValueError(
            f"mask must have shape [M={len(names)}, N={n}] (modality order {names}), "
            f"got {tuple(m.shape)}"
        )
    m = m.bool()
    return {name: m[i] for i, name in enumerate(names)}


def check_present_finite(x: Tensor, present: Tensor, name: str) -> None:
    """Raise ``ValueError`` if a present row of ``x`` holds NaN/inf (missing rows are ignored)."""
    rows = x[present.to(x.device)]
    if rows.numel() and not bool(torch.isfinite(rows).all()):
        bad = int((~torch.isfinite(rows).all(dim=1)).sum())
        raise ValueError(f"modality {name!r}: {bad} present row(s) hold NaN/inf values")


def fused_embedding(emb: Mapping[str, ArrayLike], mask: ArrayLike | None = None) -> Tensor:
    """Mean of the present modalities' embeddings per row, L2-normalised.

    Args:
        emb: ``{name: Tensor[N, D]}`` (same D for all); rows of missing modalities are ignored
            (they may hold NaN).
        mask: ``BoolTensor[M, N]`` in dict order, or None (all present).

    Returns:
        ``Tensor[N, D]``; rows where no modality is present are all zeros.
    """
    masks = modality_masks(emb, mask)
    xs = {name: as_2d(x, f"emb[{name!r}]") for name, x in emb.items()}
    dims = {name: x.shape[1] for name, x in xs.items()}
    if len(set(dims.values())) != 1:
        raise ValueError(f"fusion needs a common embedding dimension, got {dims}")
    first = next(iter(xs.values()))
    dtype = torch.promote_types(first.dtype, torch.float32)
    for x in xs.values():
        dtype = torch.promote_types(dtype, x.dtype)
    total = torch.zeros(first.shape, dtype=dtype, device=first.device)
    for name, x in xs.items():
        present = masks[name].to(x.device)
        total = total + torch.where(present[:, None], x.to(dtype), torch.zeros((), dtype=dtype))
    return l2_normalize(total)


def mean_or_none(values: list[float | None]) -> float | None:
    """Mean of the non-None values, or None when there are none."""
    vals = [v for v in values if v is not None]
    return float(sum(vals) / len(vals)) if vals else None


def to_builtin(obj: Any) -> Any:
    """Recursively turn tensors / numpy scalars into plain Python ints/floats/lists."""
    if isinstance(obj, Mapping):
        return {str(k): to_builtin(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_builtin(v) for v in obj]
    if isinstance(obj, Tensor):
        obj = obj.detach().cpu()
        return obj.item() if obj.dim() == 0 else to_builtin(obj.tolist())
    if isinstance(obj, np.ndarray):
        return to_builtin(obj.tolist())
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return float(obj)
    return obj
