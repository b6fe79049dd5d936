"""Content fingerprints of datasets: what ``--resume`` and ``evaluate`` check the data against."""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np
import torch
from torch import Tensor

__all__ = ["FINGERPRINT_PREFIX", "fingerprint", "legacy_fingerprint"]

FINGERPRINT_PREFIX = "b2:"
_CHUNK = 1 << 24  # bytes per hash update (keeps memory-mapped reads streaming)


def _hash_array(h: Any, tag: str, value: Tensor | np.ndarray) -> None:
    if isinstance(value, Tensor):
        value = value.detach().cpu()
        if value.dtype == torch.bfloat16:
            value = value.view(torch.int16)
        arr = value.contiguous().numpy()
    else:
        arr = np.ascontiguousarray(value)
    h.update(f"|{tag}|{arr.dtype.str}|{arr.shape}|".encode())
    flat = arr.reshape(-1).view(np.uint8)
    for i in range(0, flat.shape[0], _CHUNK):
        h.update(flat[i : i + _CHUNK])


def fingerprint(ds: Any) -> str:
    """Content hash of a dataset: ``"b2:" + 32 hex digits`` (BLAKE2b, 128 bits).

    Covers the raw bytes (with dtype and shape) of every modality's features, its presence-mask
    row, every label task and every latent-factor group, in row order; modalities, tasks and
    groups by name. Any permutation of rows, of one modality's rows or of the labels changes it;
    the dataset's name, its modality order and its stored splits do not. Reads the arrays once
    (memory-mapped data streams through; no copy of contiguous CPU tensors).

    Args:
        ds: a :class:`~centrobind.data.MultimodalDataset` (``features`` ``{m: [N, D_m]}``,
            ``mask`` ``[M, N]``, ``labels`` ``{task: [N]}``, optional ``factors``).
    """
    h = hashlib.blake2b(digest_size=16)
    n = int(ds.mask.shape[1])
    h.update(f"rows={n}".encode())
    for m in sorted(ds.features):
        _hash_array(h, f"features/{m}", ds.features[m])
        _hash_array(h, f"mask/{m}", ds.mask[ds.modalities.index(m)])
    for t in sorted(ds.labels):
        _hash_array(h, f"labels/{t}", ds.labels[t])
    for g in sorted(getattr(ds, "factors", None) or {}):
        _hash_array(h, f"factors/{g}", ds.factors[g])
    return FINGERPRINT_PREFIX + h.hexdigest()


def legacy_fingerprint(ds: Any) -> str:
    """The sum-based hash of runs written before the full-content :func:`fingerprint` (kept to
    check their data; it misses row permutations)."""
    h = hashlib.sha256(f"{len(ds)}|{ds.modalities}|{ds.dims}".encode())
    for m in ds.modalities:
        x = ds.features[m].double()
        h.update(f"{float(x.sum()):.10e}|{float((x * x).sum()):.10e}".encode())
    h.update(ds.mask.numpy().tobytes())
    for t, y in ds.labels.items():
        h.update(f"{t}|{int(y.sum())}".encode())
    return h.hexdigest()[:16]
