"""In-memory multimodal dataset: per-modality features, presence mask, labels and latent factors.

Conventions (shared by the whole library):

* ``features[m]`` is a float32 tensor ``[N, D_m]``; rows of a missing modality hold 0.0 (never NaN).
* ``mask`` is a bool tensor ``[M, N]`` (modality-major, in ``modalities`` order); True = present.
* ``labels[task]`` is int64 ``[N]``, -1 = unlabelled (:data:`UNLABELLED`); ``factors[group]`` is
  float32 ``[N, k]`` (true latents, only for synthetic data); ``splits[name]`` is an int64 index
  tensor (from disk, may be empty).
* ``meta`` is a JSON-like dict of free-form dataset information (``meta.json`` keys other than the
  loader's own, e.g. ``"featurizers"``), carried by every derived dataset.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from centrobind.data.checks import RESERVED_META_KEYS, check_meta, int64_problem
from centrobind.errors import ConfigError, DatasetError

__all__ = ["UNLABELLED", "MultimodalDataset", "Standardizer", "modality_mask", "split_rows"]

#: Label value meaning "no label for this sample" (excluded from probes and from stratification).
UNLABELLED = -1


# --------------------------------------------------------------------------------------------
# conversion / validation helpers
# --------------------------------------------------------------------------------------------


def _raw_tensor(value: Any, what: str) -> Tensor:
    """Any array-like -> tensor (no dtype change beyond making numpy data torch-compatible)."""
    if isinstance(value, Tensor):
        if value.is_complex() or value.dtype in (torch.quint8, torch.qint8, torch.qint32):
            raise DatasetError(f"{what}: non-numeric dtype {value.dtype}")
        if value.dtype != torch.uint64:
            return value.detach()
        value = value.detach().cpu().numpy()  # checked for int64 overflow below
    try:
        arr = np.asarray(value)
    except (ValueError, TypeError) as e:  # ragged lists etc.
        raise DatasetError(f"{what}: cannot convert to an array ({_one_line(e)})") from None
    if arr.dtype.hasobject:
        raise DatasetError(f"{what}: object arrays are not allowed")
    if arr.dtype.kind not in "biuf":
        raise DatasetError(f"{what}: non-numeric dtype {arr.dtype}")
    if arr.dtype.kind == "u" and arr.dtype.itemsize == 8 and arr.size and arr.max() >= 2**63:
        arr = arr.astype(np.float64)  # beyond int64: keep the magnitude (labels then refuse it)
    if arr.dtype.kind == "f":
        with np.errstate(over="ignore", invalid="ignore"):
            arr = np.ascontiguousarray(arr, dtype=np.float64 if arr.itemsize > 4 else np.float32)
    else:
        arr = np.ascontiguousarray(arr, dtype=np.int64 if arr.dtype.kind != "b" else np.bool_)
    if not arr.flags.writeable:
        arr = arr.copy()
    return torch.from_numpy(arr)


def _one_line(e: BaseException | str) -> str:
    return " ".join(str(e).split())


def _float_matrix(value: Any, what: str, allow_1d: bool = False) -> Tensor:
    t = _raw_tensor(value, what)
    if allow_1d and t.dim() == 1:
        t = t.unsqueeze(1)
    if t.dim() != 2:
        raise DatasetError(f"{what}: expected a 2-D array [N, D], got shape {tuple(t.shape)}")
    if t.shape[1] == 0:
        raise DatasetError(f"{what}: has 0 columns")
    return t.to(torch.float32)


def _int_vector(value: Any, what: str) -> Tensor:
    """1-D integer array -> int64; floats are accepted only if exactly representable as int64."""
    t = _raw_tensor(value, what)
    if t.dim() != 1:
        raise DatasetError(f"{what}: expected a 1-D array, got shape {tuple(t.shape)}")
    if t.dtype == torch.bool:
        return t.to(torch.int64)
    if t.is_floating_point():
        problem = int64_problem(t.detach().cpu().double().numpy())
        if problem is not None:
            raise DatasetError(f"{what}: must be integers (int64): {problem}")
    return t.to(torch.int64)


def _index_tensor(idx: Any, n: int, what: str = "index") -> Tensor:
    """Index array / bool mask / list / range -> int64 tensor, checked to lie in [0, n)."""
    if isinstance(idx, range):
        idx = list(idx)
    if isinstance(idx, Tensor):
        t = idx.detach().cpu()
    else:
        arr = np.asarray(idx)
        if arr.size == 0:
            arr = arr.astype(np.int64)
        if arr.dtype.kind not in "biu":
            raise DatasetError(f"{what}: expected integer indices or a bool mask, got {arr.dtype}")
        t = torch.from_numpy(np.ascontiguousarray(arr))
    if t.dtype == torch.bool:
        if t.shape != (n,):
            raise DatasetError(f"{what}: bool mask of shape {tuple(t.shape)}, expected ({n},)")
        return t.nonzero().flatten()
    if t.is_floating_point() or t.is_complex():
        raise DatasetError(f"{what}: expected integer indices, got {t.dtype}")
    t = t.to(torch.int64).flatten()
    if t.numel() and (int(t.min()) < 0 or int(t.max()) >= n):
        bad = int(t[(t < 0) | (t >= n)][0])
        raise DatasetError(f"{what}: index {bad} out of range for {n} samples")
    return t


def _checked_meta(meta: Mapping[str, Any] | None) -> dict[str, Any]:
    """A validated copy of the user's ``meta`` (JSON-able, no key the loader reserves)."""
    if isinstance(meta, Mapping):
        meta = dict(meta)
    meta_copy = {} if meta is None else check_meta(meta, "meta")
    reserved = sorted(set(meta_copy) & set(RESERVED_META_KEYS))
    if reserved:
        raise DatasetError(f"meta: key(s) {reserved} are reserved for the loader")
    return meta_copy


def _checked_features(
    features: Mapping[str, Tensor | np.ndarray[Any, Any]],
) -> dict[str, Tensor]:
    """Float ``[N, D_m]`` tensors per modality, same ``N > 0``, on the first one's device."""
    feats: dict[str, Tensor] = {}
    for key, value in features.items():
        if not isinstance(key, str) or not key:
            raise DatasetError(f"modality names must be non-empty strings, got {key!r}")
        feats[key] = _float_matrix(value, f"modality {key!r}")
    names = list(feats)
    n = int(feats[names[0]].shape[0])
    for key in names[1:]:
        if feats[key].shape[0] != n:
            raise DatasetError(
                f"modality {key!r} has {feats[key].shape[0]} rows but modality {names[0]!r} has {n}"
            )
    if n == 0:
        raise DatasetError("dataset is empty (0 samples)")
    device = feats[names[0]].device
    return {k: v.to(device) for k, v in feats.items()}


def _checked_mask(
    mask: Tensor | np.ndarray[Any, Any] | None,
    feats: dict[str, Tensor],
    allow_empty_rows: bool = False,
) -> Tensor:
    """The ``[M, N]`` bool presence mask (given, or all-NaN rows = absent), checked against the
    features: present rows finite, every modality present somewhere, and every sample (unless
    ``allow_empty_rows``). Absent rows of ``feats`` are zeroed in place."""
    names = list(feats)
    n = int(feats[names[0]].shape[0])
    device = feats[names[0]].device
    if mask is None:
        present = torch.stack([~torch.isnan(x).all(dim=1) for x in feats.values()])
    else:
        present = _raw_tensor(mask, "mask").to(device)
        if present.shape != (len(names), n):
            raise DatasetError(
                f"mask: shape {tuple(present.shape)}, expected [M, N] = ({len(names)}, {n})"
            )
        if present.dtype != torch.bool:
            if bool(((present != 0) & (present != 1)).any()):
                raise DatasetError("mask: values must be booleans (or 0/1)")
            present = present != 0

    for i, key in enumerate(names):
        x, p = feats[key], present[i]
        bad = p & ~torch.isfinite(x).all(dim=1)
        if bool(bad.any()):
            row = int(bad.nonzero()[0, 0])
            raise DatasetError(
                f"modality {key!r}: row {row} has NaN/inf in a present sample "
                "(a missing sample must be an all-NaN row or be masked out)"
            )
        if not bool(p.any()):
            raise DatasetError(f"modality {key!r} is missing for every sample")
        if not bool(p.all()):
            feats[key] = x.masked_fill(~p.unsqueeze(1), 0.0)
    empty = ~present.any(dim=0)
    if bool(empty.any()) and not allow_empty_rows:
        row = int(empty.nonzero()[0, 0])
        raise DatasetError(f"sample {row} has no modality present")
    return present


def _checked_labels(
    labels: Mapping[str, Tensor | np.ndarray[Any, Any]] | None, n: int, device: torch.device
) -> dict[str, Tensor]:
    """Integer ``[N]`` label vectors per task on ``device``."""
    labs: dict[str, Tensor] = {}
    for task, value in (labels or {}).items():
        t = _int_vector(value, f"label {task!r}")
        if t.shape[0] != n:
            raise DatasetError(f"label {task!r}: has {t.shape[0]} entries, expected {n}")
        labs[str(task)] = t.to(device)
    return labs


def _checked_factors(
    factors: Mapping[str, Tensor | np.ndarray[Any, Any]] | None, n: int, device: torch.device
) -> dict[str, Tensor]:
    """Finite float ``[N, K]`` (or ``[N]``) latent factors per group on ``device``."""
    facs: dict[str, Tensor] = {}
    for group, value in (factors or {}).items():
        t = _float_matrix(value, f"factor {group!r}", allow_1d=True)
        if t.shape[0] != n:
            raise DatasetError(f"factor {group!r}: has {t.shape[0]} rows, expected {n}")
        if not bool(torch.isfinite(t).all()):
            raise DatasetError(f"factor {group!r}: contains NaN/inf")
        facs[str(group)] = t.to(device)
    return facs


def _checked_splits(
    splits: Mapping[str, Tensor | np.ndarray[Any, Any]] | None, n: int, device: torch.device
) -> dict[str, Tensor]:
    """Row-index vectors per split (in range, no duplicates) on ``device``."""
    spl: dict[str, Tensor] = {}
    for split, value in (splits or {}).items():
        t = _int_vector(value, f"split {split!r}")
        if t.numel():
            bad = (t < 0) | (t >= n)
            if bool(bad.any()):
                raise DatasetError(
                    f"split {split!r}: index {int(t[bad][0])} out of range for {n} samples"
                )
            uniq, counts = torch.unique(t, return_counts=True)
            if bool((counts > 1).any()):
                raise DatasetError(f"split {split!r}: duplicate index {int(uniq[counts > 1][0])}")
        spl[str(split)] = t.to(device)
    return spl


# --------------------------------------------------------------------------------------------
# MultimodalDataset
# --------------------------------------------------------------------------------------------


class MultimodalDataset:
    """N samples observed through M modalities, some of which may be missing per sample.

    Args:
        features: name -> ``[N, D_m]`` array (insertion order = modality order). Rows of a missing
            modality may hold anything when ``mask`` is given; otherwise an all-NaN row marks the
            modality missing for that sample. Missing rows are stored as 0.0.
        mask: bool ``[M, N]``, True = present; inferred from all-NaN rows when None.
        labels: task -> integer ``[N]`` (floats allowed if exactly representable as int64);
            -1 (:data:`UNLABELLED`) marks a sample without a label for that task.
        factors: group -> float ``[N, k]`` true latent factors (``[N]`` is read as ``[N, 1]``).
        splits: split name -> integer index array (in range, no duplicates).
        name: dataset name (for display).
        meta: free-form JSON-like information (str keys; dict, list, str, int, float, bool,
            None values), copied; kept by every derived dataset and by save/load.
        min_modalities: fewest modalities accepted (2 for training, 1 for e.g. a query set).

    Raises:
        DatasetError: on malformed input (one-line message naming the modality and problem).
    """

    modalities: list[str]
    features: dict[str, Tensor]
    mask: Tensor
    labels: dict[str, Tensor]
    factors: dict[str, Tensor]
    splits: dict[str, Tensor]
    name: str | None
    meta: dict[str, Any]

    def __init__(
        self,
        features: Mapping[str, Tensor | np.ndarray[Any, Any]],
        mask: Tensor | np.ndarray[Any, Any] | None = None,
        labels: Mapping[str, Tensor | np.ndarray[Any, Any]] | None = None,
        factors: Mapping[str, Tensor | np.ndarray[Any, Any]] | None = None,
        splits: Mapping[str, Tensor | np.ndarray[Any, Any]] | None = None,
        name: str | None = None,
        meta: Mapping[str, Any] | None = None,
        min_modalities: int = 2,
        allow_empty_rows: bool = False,
    ) -> None:
        if not isinstance(features, Mapping):
            raise DatasetError("features: expected a dict modality name -> [N, D] array")
        if isinstance(min_modalities, bool) or not isinstance(min_modalities, int):
            raise DatasetError(f"min_modalities must be an integer, got {min_modalities!r}")
        if len(features) < max(1, min_modalities):
            raise DatasetError(
                f"need at least {max(1, min_modalities)} modalities, got {len(features)}"
            )
        if name is not None and not isinstance(name, str):
            raise DatasetError(f"name must be a string or None, got {type(name).__name__}")
        meta_copy = _checked_meta(meta)
        feats = _checked_features(features)
        names = list(feats)
        n = int(feats[names[0]].shape[0])
        device = feats[names[0]].device
        present = _checked_mask(mask, feats, allow_empty_rows)
        labs = _checked_labels(labels, n, device)
        facs = _checked_factors(factors, n, device)
        spl = _checked_splits(splits, n, device)
        self._set(names, feats, present, labs, facs, spl, name, meta_copy)

    # -- construction without validation (for internal, already-valid data) --------------------

    def _set(
        self,
        modalities: list[str],
        features: dict[str, Tensor],
        mask: Tensor,
        labels: dict[str, Tensor],
        factors: dict[str, Tensor],
        splits: dict[str, Tensor],
        name: str | None,
        meta: dict[str, Any],
    ) -> None:
        self.modalities = list(modalities)
        self.features = features
        self.mask = mask
        self.labels = labels
        self.factors = factors
        self.splits = splits
        self.name = name
        self.meta = meta

    @classmethod
    def _trusted(
        cls,
        features: dict[str, Tensor],
        mask: Tensor,
        labels: dict[str, Tensor],
        factors: dict[str, Tensor],
        splits: dict[str, Tensor],
        name: str | None,
        meta: dict[str, Any],
    ) -> MultimodalDataset:
        """A dataset from already-valid parts (``meta`` is deep-copied, nothing else checked)."""
        obj = cls.__new__(cls)
        obj._set(list(features), features, mask, labels, factors, splits, name, copy.deepcopy(meta))
        return obj

    # -- basic properties ----------------------------------------------------------------------

    def __len__(self) -> int:
        return int(self.mask.shape[1])

    @property
    def num_modalities(self) -> int:
        """M, the number of modalities."""
        return len(self.modalities)

    @property
    def dims(self) -> dict[str, int]:
        """Modality name -> feature dimension D_m."""
        return {m: int(self.features[m].shape[1]) for m in self.modalities}

    @property
    def device(self) -> torch.device:
        """Device holding the tensors."""
        return self.mask.device

    def present(self, modality: str) -> Tensor:
        """Bool ``[N]``: which samples have ``modality``."""
        return self.mask[self.modalities.index(modality)]

    def __repr__(self) -> str:
        dims = ", ".join(f"{m}={d}" for m, d in self.dims.items())
        return (
            f"MultimodalDataset(name={self.name!r}, N={len(self)}, modalities=[{dims}], "
            f"labels={list(self.labels)}, factors={list(self.factors)}, splits={list(self.splits)})"
        )

    # -- subsets and splits --------------------------------------------------------------------

    def subset(self, idx: Tensor | np.ndarray | Sequence[int]) -> MultimodalDataset:
        """Rows ``idx`` (int indices or bool mask ``[N]``) as a new dataset; splits are dropped,
        ``meta`` is kept.

        The result may be empty or have a modality absent for all its rows (no re-validation).
        """
        i = _index_tensor(idx, len(self), "subset").to(self.device)
        return MultimodalDataset._trusted(
            {m: x.index_select(0, i) for m, x in self.features.items()},
            self.mask.index_select(1, i),
            {k: v.index_select(0, i) for k, v in self.labels.items()},
            {k: v.index_select(0, i) for k, v in self.factors.items()},
            {},
            self.name,
            self.meta,
        )

    def split_indices(
        self,
        fractions: Sequence[float] = (0.7, 0.1, 0.2),
        seed: int = 0,
        stratify: str | None = None,
    ) -> dict[str, Tensor]:
        """Random disjoint ``train``/``val``/``test`` sorted int64 index tensors covering all rows.

        Sizes follow ``fractions`` (largest-remainder rounding, so a 0 fraction gives an empty
        split). With ``stratify=<label task>`` each class is split in proportion separately; rows
        labelled -1 (unlabelled) are not a class: they are split in proportion as one random pool.
        Deterministic in ``seed`` (numpy ``default_rng``).
        """
        return split_rows(len(self), self.labels, fractions, seed, stratify)

    def split(
        self,
        fractions: Sequence[float] = (0.7, 0.1, 0.2),
        seed: int = 0,
        stratify: str | None = None,
    ) -> dict[str, MultimodalDataset]:
        """Like :meth:`split_indices` but returns ``{"train": ds, "val": ds, "test": ds}``."""
        return {k: self.subset(v) for k, v in self.split_indices(fractions, seed, stratify).items()}

    # -- transforms ----------------------------------------------------------------------------

    def with_missing(self, rate: float, seed: int = 0) -> MultimodalDataset:
        """Drop each (modality, sample) independently with probability ``rate``.

        A sample that would lose all its modalities keeps one random modality among those it had,
        so the effective missing rate is slightly below ``rate`` (by about ``rate**M / M``).
        Already-missing entries stay missing. Deterministic in ``seed``. Splits are kept.
        """
        rate = float(rate)
        if not 0.0 <= rate <= 1.0:
            raise ConfigError(f"missing rate must be in [0, 1], got {rate}")
        rng = np.random.default_rng(seed)
        old = self.mask.cpu().numpy()
        drop = rng.random(old.shape) < rate
        scores = rng.random(old.shape)
        new = old & ~drop
        empty = ~new.any(axis=0) & old.any(axis=0)  # a row that had nothing keeps nothing
        if empty.any():
            keep = np.where(old[:, empty], scores[:, empty], -1.0).argmax(axis=0)
            new[keep, np.flatnonzero(empty)] = True
        mask = torch.from_numpy(new).to(self.device)
        feats = {
            m: x.masked_fill(~mask[i].unsqueeze(1), 0.0)
            for i, (m, x) in enumerate(self.features.items())
        }
        return MultimodalDataset._trusted(
            feats,
            mask,
            dict(self.labels),
            dict(self.factors),
            dict(self.splits),
            self.name,
            self.meta,
        )

    def to(self, device: str | torch.device) -> MultimodalDataset:
        """Copy of the dataset on ``device``."""
        return MultimodalDataset._trusted(
            {m: x.to(device) for m, x in self.features.items()},
            self.mask.to(device),
            {k: v.to(device) for k, v in self.labels.items()},
            {k: v.to(device) for k, v in self.factors.items()},
            {k: v.to(device) for k, v in self.splits.items()},
            self.name,
            self.meta,
        )


def split_rows(
    n: int,
    labels: Mapping[str, Tensor],
    fractions: Sequence[float] = (0.7, 0.1, 0.2),
    seed: int = 0,
    stratify: str | None = None,
) -> dict[str, Tensor]:
    """:meth:`MultimodalDataset.split_indices` of ``n`` rows labelled ``labels`` (shared with
    datasets that are not in memory)."""
    fr = [float(f) for f in fractions]
    if len(fr) != 3 or any(not math.isfinite(f) or f < 0 for f in fr):
        raise ConfigError(f"split fractions must be 3 non-negative numbers, got {fractions}")
    if abs(sum(fr) - 1.0) > 1e-6:
        raise ConfigError(f"split fractions must sum to 1, got {fractions} (sum {sum(fr)})")
    rng = np.random.default_rng(seed)
    if stratify is None:
        groups = [np.arange(n)]
    else:
        if stratify not in labels:
            raise ConfigError(
                f"cannot stratify on unknown label task {stratify!r} "
                f"(available: {', '.join(labels) or 'none'})"
            )
        y = labels[stratify].cpu().numpy()
        groups = [np.flatnonzero(y == c) for c in np.unique(y[y != UNLABELLED])]
        if (y == UNLABELLED).any():  # unlabelled rows: not a class, split at random
            groups.append(np.flatnonzero(y == UNLABELLED))
    parts: list[list[np.ndarray]] = [[], [], []]
    for g in groups:
        perm = g[rng.permutation(len(g))]
        counts = _allocate(len(g), fr)
        start = 0
        for k, c in enumerate(counts):
            parts[k].append(perm[start : start + c])
            start += c
    return {
        name: torch.from_numpy(np.sort(np.concatenate(p)).astype(np.int64))
        for name, p in zip(("train", "val", "test"), parts, strict=True)
    }


def _allocate(n: int, fractions: Sequence[float]) -> list[int]:
    """Split ``n`` items into integer counts proportional to ``fractions`` (largest remainder)."""
    raw = [f * n for f in fractions]
    counts = [math.floor(r) for r in raw]
    order = sorted(range(len(raw)), key=lambda k: (-(raw[k] - counts[k]), k))
    for k in order[: n - sum(counts)]:
        counts[k] += 1
    return counts


# --------------------------------------------------------------------------------------------
# Standardizer
# --------------------------------------------------------------------------------------------


class Standardizer:
    """Per-modality, per-feature z-scoring fit on the present rows of a (training) dataset.

    ``mean[m]`` and ``std[m]`` are float32 ``[D_m]``; std is the population std (ddof=0),
    floored at ``eps`` (default 1e-6) for constant features. A modality with no present rows
    gets mean 0 and std 1.
    """

    def __init__(self, mean: Mapping[str, Tensor], std: Mapping[str, Tensor]) -> None:
        if list(mean) != list(std):
            raise ValueError("Standardizer: mean and std must have the same modalities")
        self.mean = {k: v.detach().to(torch.float32) for k, v in mean.items()}
        self.std = {k: v.detach().to(torch.float32) for k, v in std.items()}

    @property
    def modalities(self) -> list[str]:
        """Modalities the standardizer knows."""
        return list(self.mean)

    @classmethod
    def fit(cls, ds: MultimodalDataset, eps: float = 1e-6) -> Standardizer:
        """Mean/std per feature over the rows of ``ds`` where each modality is present."""
        mean, std = {}, {}
        for i, m in enumerate(ds.modalities):
            x = ds.features[m][ds.mask[i]].to(torch.float64)
            if x.shape[0] == 0:
                mean[m] = torch.zeros(x.shape[1])
                std[m] = torch.ones(x.shape[1])
                continue
            mu = x.mean(dim=0)
            mean[m] = mu.cpu()
            std[m] = ((x - mu) ** 2).mean(dim=0).sqrt().clamp_min(eps).cpu()
        return cls(mean, std)

    def transform(self, modality: str, x: Tensor) -> Tensor:
        """``(x - mean) / std`` for ``x`` of shape ``[N, D_m]`` (no masking)."""
        if modality not in self.mean:
            raise DatasetError(f"standardizer has no statistics for modality {modality!r}")
        mu = self.mean[modality].to(device=x.device, dtype=x.dtype)
        sd = self.std[modality].to(device=x.device, dtype=x.dtype)
        return (x - mu) / sd

    def apply(self, ds: MultimodalDataset) -> MultimodalDataset:
        """New dataset with every modality standardized; missing rows stay 0."""
        unknown = [m for m in ds.modalities if m not in self.mean]
        if unknown:
            raise DatasetError(
                f"standardizer was fit on modalities {self.modalities}, "
                f"dataset has {ds.modalities} (no statistics for {unknown})"
            )
        feats = {
            m: self.transform(m, ds.features[m]).masked_fill(~ds.mask[i].unsqueeze(1), 0.0)
            for i, m in enumerate(ds.modalities)
        }
        return MultimodalDataset._trusted(
            feats, ds.mask, dict(ds.labels), dict(ds.factors), dict(ds.splits), ds.name, ds.meta
        )

    def state_dict(self) -> dict[str, Tensor]:
        """Flat ``{"<modality>.mean": [D], "<modality>.std": [D]}`` (safetensors-compatible)."""
        out: dict[str, Tensor] = {}
        for m in self.mean:
            out[f"{m}.mean"] = self.mean[m].contiguous()
            out[f"{m}.std"] = self.std[m].contiguous()
        return out

    @classmethod
    def from_state_dict(cls, state: Mapping[str, Tensor]) -> Standardizer:
        """Inverse of :meth:`state_dict`."""
        mean: dict[str, Tensor] = {}
        std: dict[str, Tensor] = {}
        for key, value in state.items():
            m, _, kind = key.rpartition(".")
            if not m or kind not in ("mean", "std"):
                raise ValueError(f"Standardizer state: unexpected key {key!r}")
            (mean if kind == "mean" else std)[m] = torch.as_tensor(value)
        if set(mean) != set(std):
            raise ValueError(f"Standardizer state: mean/std keys disagree: {sorted(mean)}")
        return cls(mean, {m: std[m] for m in mean})


def modality_mask(ds: MultimodalDataset, modalities: Sequence[str]) -> Tensor:
    """The presence mask ``[M, N]`` of ``ds`` in the order of ``modalities`` (a model's order)."""
    missing = [m for m in modalities if m not in ds.modalities]
    if missing:
        raise ConfigError(f"dataset lacks modalities {missing}; it has {ds.modalities}")
    return ds.mask[[ds.modalities.index(m) for m in modalities]]
