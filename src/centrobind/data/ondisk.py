"""A dataset folder opened without loading its features: the out-of-core view.

:func:`open_dataset` reads only the small parts (``meta.json``, labels, factors, splits) and
memory-maps every modality (:class:`~centrobind.data.store.ModalityStore`). Features are read
when needed: :meth:`DiskDataset.scan` makes one streaming pass (presence mask, checks, float64
statistics of the training rows, and the content fingerprint when the folder records no
digests), :meth:`DiskDataset.take` materialises chosen rows as a small in-memory
:class:`~centrobind.data.dataset.MultimodalDataset` (validation and test subsets).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from centrobind.data.disk import (
    _folder_name,
    _listing,
    _load_factors,
    _load_labels,
    _load_splits,
    _meta_order,
    _modality_order,
    _read_meta,
    printable,
)
from centrobind.data.store import ModalityStore
from centrobind.digests import data_digest
from centrobind.errors import DatasetError

__all__ = ["DiskDataset", "Scan", "open_dataset"]

#: Rows read per step of a streaming pass (per modality).
SCAN_ROWS = 1 << 16


@dataclass
class Scan:
    """What one streaming pass over a :class:`DiskDataset` found.

    ``mask``: bool ``[M, N]`` (modality order); ``mean``/``std``: float32 ``[D_m]`` per modality
    over the present training rows (population std floored at ``eps``; 0 / 1 when a modality has
    no present training row); ``fingerprint``: the content fingerprint (``"b2:..."``, the same as
    :func:`centrobind.runfolder.fingerprint` of the loaded dataset) when it was asked for.
    """

    mask: np.ndarray[Any, Any]
    mean: dict[str, torch.Tensor]
    std: dict[str, torch.Tensor]
    fingerprint: str | None


class DiskDataset:
    """A dataset folder with memory-mapped features (see the module docstring).

    Attributes: ``root``, ``name``, ``modalities`` (order), ``stores`` (modality ->
    :class:`ModalityStore`), ``labels`` (task -> int64 tensor ``[N]``), ``factors`` (group ->
    float32 ``[N, k]``), ``splits`` (name -> int64 indices), ``meta`` (other ``meta.json``
    keys): the small parts, in memory as in a :class:`MultimodalDataset`.
    """

    def __init__(
        self,
        root: Path,
        name: str,
        stores: dict[str, ModalityStore],
        labels: dict[str, torch.Tensor],
        factors: dict[str, torch.Tensor],
        splits: dict[str, torch.Tensor],
        meta: dict[str, Any],
    ) -> None:
        self.root, self.name, self.stores = root, name, stores
        self.modalities = list(stores)
        self.labels, self.factors, self.splits, self.meta = labels, factors, splits, meta
        self._scan: Scan | None = None

    def __len__(self) -> int:
        return self.stores[self.modalities[0]].n_rows

    @property
    def dims(self) -> dict[str, int]:
        """Modality -> ``D_m``."""
        return {m: s.dim for m, s in self.stores.items()}

    @property
    def nbytes(self) -> int:
        """Bytes of the features as stored on disk."""
        return sum(s.nbytes for s in self.stores.values())

    @property
    def float32_bytes(self) -> int:
        """Bytes of the features as float32 (what the in-memory path holds per copy)."""
        return sum(s.n_rows * s.dim * 4 for s in self.stores.values())

    def __repr__(self) -> str:
        dims = ", ".join(f"{m}={d}" for m, d in self.dims.items())
        return f"DiskDataset({str(self.root)!r}, N={len(self)}, modalities=[{dims}])"

    def split_indices(
        self, fractions: Any = (0.7, 0.1, 0.2), seed: int = 0, stratify: str | None = None
    ) -> dict[str, torch.Tensor]:
        """As :meth:`MultimodalDataset.split_indices` (same rows for the same labels)."""
        from centrobind.data.dataset import split_rows

        return split_rows(len(self), self.labels, fractions, seed, stratify)

    def data_digest(self) -> str | None:
        """The recorded-digest fingerprint (``"d2:..."``), None without ``digests.json``."""
        return data_digest(self.root)

    def scan(
        self,
        train_rows: np.ndarray[Any, Any] | None = None,
        fingerprint: bool = False,
        eps: float = 1e-6,
        progress: Any = None,
        allow_empty_rows: bool = False,
    ) -> Scan:
        """One streaming pass over every modality (module docstring). ``train_rows``: the rows
        whose statistics to compute (default all). ``progress(rows)`` is called per block.
        A row with no modality present is refused unless ``allow_empty_rows`` (a fingerprint
        only: the streaming trainer cannot leave such rows out of its splits)."""
        n = len(self)
        in_train = np.zeros(n, dtype=bool)
        in_train[np.arange(n) if train_rows is None else train_rows] = True
        h = hashlib.blake2b(digest_size=16) if fingerprint else None
        if h is not None:
            h.update(f"rows={n}".encode())
        masks: dict[str, np.ndarray[Any, Any]] = {}
        mean: dict[str, torch.Tensor] = {}
        std: dict[str, torch.Tensor] = {}
        for m in sorted(self.modalities):  # the fingerprint's order
            masks[m], mean[m], std[m] = self._scan_modality(m, in_train, h, eps, progress)
        mask = np.stack([masks[m] for m in self.modalities])
        empty = ~mask.any(axis=0)
        if empty.any() and not allow_empty_rows:
            row = int(np.flatnonzero(empty)[0])
            raise DatasetError(
                f"{self.root}: sample {row} has no modality present (the streaming loader "
                "cannot leave such rows out; use --loader memory)"
            )
        fp = None
        if h is not None:
            from centrobind.data.fingerprint import FINGERPRINT_PREFIX, _hash_array

            for t in sorted(self.labels):
                _hash_array(h, f"labels/{t}", self.labels[t])
            for g in sorted(self.factors):
                _hash_array(h, f"factors/{g}", self.factors[g])
            fp = FINGERPRINT_PREFIX + h.hexdigest()
        self._scan = Scan(mask, mean, std, fp)
        return self._scan

    def _scan_modality(
        self,
        m: str,
        in_train: np.ndarray[Any, Any],
        h: Any,
        eps: float,
        progress: Any,
    ) -> tuple[np.ndarray[Any, Any], torch.Tensor, torch.Tensor]:
        """Presence, mean and std (float64 sums over the present training rows) of one
        modality; its bytes as loaded (float32, missing rows 0) go into ``h``."""
        store, n = self.stores[m], len(self)
        present = np.zeros(n, dtype=bool)
        total = np.zeros(store.dim, dtype=np.float64)
        count = 0
        if h is not None:
            h.update(f"|features/{m}|<f4|{(n, store.dim)}|".encode())
        for a in range(0, n, SCAN_ROWS):
            x = store.read(a, min(n, a + SCAN_ROWS))
            missing = np.isnan(x).all(axis=1)
            bad = ~missing & ~np.isfinite(x).all(axis=1)
            if bad.any():
                raise DatasetError(
                    f"{store.path}: row {a + int(np.flatnonzero(bad)[0])} has NaN/inf (or a value "
                    "beyond float32 range) in a present sample (a missing sample must be an "
                    "all-NaN row)"
                )
            x[missing] = 0.0
            present[a : a + x.shape[0]] = ~missing
            if h is not None:
                h.update(x.reshape(-1).view(np.uint8))
            sel = ~missing & in_train[a : a + x.shape[0]]
            total += x[sel].sum(axis=0, dtype=np.float64)
            count += int(sel.sum())
            if progress is not None:
                progress(x.shape[0])
        if not present.any():
            raise DatasetError(f"{store.path}: every row is NaN (modality missing for all samples)")
        if h is not None:
            h.update(f"|mask/{m}||b1|{(n,)}|".encode())
            h.update(present.view(np.uint8))
        if count == 0:
            return present, torch.zeros(store.dim), torch.ones(store.dim)
        mu = total / count
        sq = np.zeros(store.dim, dtype=np.float64)  # second pass over the training rows only
        for a in range(0, n, SCAN_ROWS):
            sel = present[a : a + SCAN_ROWS] & in_train[a : a + SCAN_ROWS]
            if sel.any():
                x = store.read(a, min(n, a + SCAN_ROWS))[sel].astype(np.float64)
                sq += ((x - mu) ** 2).sum(axis=0)
        sd = np.maximum(np.sqrt(sq / count), eps)
        return present, torch.from_numpy(mu).float(), torch.from_numpy(sd).float()

    def take(self, rows: np.ndarray[Any, Any] | torch.Tensor) -> Any:
        """Rows ``rows`` (any order; read sorted) as an in-memory
        :class:`~centrobind.data.dataset.MultimodalDataset` (no splits; missing rows 0.0)."""
        from centrobind.data.dataset import MultimodalDataset

        idx = np.asarray(rows, dtype=np.int64)
        order = np.argsort(idx, kind="stable")
        sorted_idx = idx[order]
        inverse = np.empty_like(order)
        inverse[order] = np.arange(order.shape[0])
        feats, present = {}, []
        for m in self.modalities:
            x = self.stores[m].take(sorted_idx)[inverse]
            missing = np.isnan(x).all(axis=1)
            if (~missing & ~np.isfinite(x).all(axis=1)).any():
                raise DatasetError(f"{self.stores[m].path}: NaN/inf in a present sample")
            x[missing] = 0.0
            feats[m] = torch.from_numpy(x)
            present.append(torch.from_numpy(~missing))
        return MultimodalDataset._trusted(
            feats,
            torch.stack(present),
            {k: v[torch.from_numpy(idx)] for k, v in self.labels.items()},
            {k: v[torch.from_numpy(idx)] for k, v in self.factors.items()},
            {},
            self.name,
            self.meta,
        )


def open_dataset(path: str | os.PathLike[str], min_modalities: int = 2) -> DiskDataset:
    """Open a dataset folder without reading its features (module docstring)."""
    try:
        return _open(Path(path), min_modalities)
    except DatasetError as e:
        raise DatasetError(printable(str(e))) from None
    except OSError as e:
        raise DatasetError(printable(f"{path}: cannot read dataset: {e}")) from None


def _open(root: Path, min_modalities: int) -> DiskDataset:
    if not root.is_dir():
        raise DatasetError(f"{root}: dataset folder does not exist")
    mod_dir = root / "modalities"
    if not mod_dir.is_dir():
        raise DatasetError(f"{mod_dir}: missing folder (expected one <name>.npy per modality)")
    own, extra = _read_meta(root)
    files, ignored = _listing(mod_dir, shard_folders=True)
    order = _modality_order(root, own.get("modalities"), files, ignored, min_modalities)
    stores = {m: ModalityStore(files[m]) for m in order}
    first = stores[order[0]]
    if first.n_rows == 0:
        raise DatasetError(f"{first.path}: empty dataset (0 rows)")
    for m in order[1:]:
        if stores[m].n_rows != first.n_rows:
            raise DatasetError(
                f"{stores[m].path}: has {stores[m].n_rows} rows but {first.path} has {first.n_rows}"
            )
    n = first.n_rows
    labels = _meta_order(own.get("labels"), _load_labels(_listing(root / "labels")[0], n, True))
    factors = _meta_order(own.get("factors"), _load_factors(_listing(root / "factors")[0], n, True))
    splits = _meta_order(own.get("splits"), _load_splits(_listing(root / "splits")[0], n, True))
    name = own.get("name") or _folder_name(root)

    def tensors(d: dict[str, np.ndarray[Any, Any]]) -> dict[str, torch.Tensor]:
        return {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in d.items()}

    return DiskDataset(
        root, name, stores, tensors(labels), tensors(factors), tensors(splits), extra
    )
