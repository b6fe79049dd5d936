"""Built-in datasets, the ``load`` entry point (builtin name or dataset folder) and ``describe``.

This module and :mod:`centrobind.data.disk` import torch only when a dataset is actually built, so
``centrobind inspect`` reports a malformed folder without paying for the torch import.
"""

from __future__ import annotations

import inspect
import os
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from centrobind.data.disk import load_dataset
from centrobind.errors import DatasetError

if TYPE_CHECKING:
    from centrobind.data.dataset import MultimodalDataset

__all__ = ["BUILTINS", "MFEAT_VIEWS", "as_dataset", "describe", "load", "load_builtin"]

#: Names accepted by :func:`load_builtin` (and by :func:`load` instead of a folder path).
BUILTINS: tuple[str, ...] = ("mfeat", "synthetic")

#: mfeat modality order (UCI Multiple Features views).
MFEAT_VIEWS: tuple[str, ...] = ("fac", "fou", "kar", "mor", "pix", "zer")

_FOLDER_PARAMS = ("mmap", "min_modalities")


def _load_mfeat() -> MultimodalDataset:
    """UCI Multiple Features: 2000 digits (10 x 200, class order), six views, task ``digit``."""
    from centrobind.data.dataset import MultimodalDataset

    res = resources.files("centrobind.data").joinpath("mfeat.npz")
    try:
        with res.open("rb") as f, np.load(f, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in (*MFEAT_VIEWS, "digit")}
    except (OSError, KeyError, ValueError) as e:
        raise DatasetError(f"mfeat.npz (package data): cannot read: {e}") from None
    return MultimodalDataset(
        {v: arrays[v] for v in MFEAT_VIEWS}, labels={"digit": arrays["digit"]}, name="mfeat"
    )


def load_builtin(name: str, **params: Any) -> MultimodalDataset:
    """Load builtin dataset ``name`` (one of :data:`BUILTINS`).

    ``mfeat`` takes no parameters; ``synthetic`` forwards ``params`` to
    :func:`~centrobind.data.synthetic.make_synthetic`.
    """
    if name == "mfeat":
        if params:
            raise DatasetError(f"mfeat: takes no parameters, got {', '.join(sorted(params))}")
        return _load_mfeat()
    if name == "synthetic":
        from centrobind.data.synthetic import make_synthetic

        allowed = list(inspect.signature(make_synthetic).parameters)
        unknown = sorted(set(params) - set(allowed))
        if unknown:
            raise DatasetError(
                f"synthetic: unknown parameter(s) {', '.join(unknown)} "
                f"(allowed: {', '.join(allowed)})"
            )
        return make_synthetic(**params)
    raise DatasetError(f"unknown builtin dataset {name!r} (builtins: {', '.join(BUILTINS)})")


def load(path_or_builtin: str | os.PathLike[str], **params: Any) -> MultimodalDataset:
    """Load a builtin by name, or else a dataset folder (``params`` go to ``load_dataset``).

    A builtin name wins over a folder of the same name; write ``./mfeat`` to load such a folder.
    The folder options ``mmap`` and ``min_modalities`` are accepted (and have no effect) for a
    builtin, which always has several modalities.
    """
    if isinstance(path_or_builtin, str) and path_or_builtin in BUILTINS:
        params = {k: v for k, v in params.items() if k not in _FOLDER_PARAMS}
        return load_builtin(path_or_builtin, **params)
    path = Path(path_or_builtin)
    if not path.exists():
        raise DatasetError(
            f"{path_or_builtin}: does not exist (not a dataset folder, and not a builtin: "
            f"{', '.join(BUILTINS)})"
        )
    unknown = sorted(set(params) - set(_FOLDER_PARAMS))
    if unknown:
        raise DatasetError(
            f"{path}: unknown load parameter(s) {', '.join(unknown)} "
            f"(allowed: {', '.join(_FOLDER_PARAMS)})"
        )
    return load_dataset(path, **params)


def as_dataset(
    data: str | os.PathLike[str] | MultimodalDataset, min_modalities: int = 2
) -> MultimodalDataset:
    """``data`` itself when it is a dataset already, else :func:`load` it (a builtin name or a
    folder holding at least ``min_modalities`` modalities; 1 for data to embed or search)."""
    from centrobind.data.dataset import MultimodalDataset

    if isinstance(data, MultimodalDataset):
        return data
    return load(str(data), min_modalities=min_modalities)


def _table(rows: list[list[str]], right: set[int]) -> list[str]:
    widths = [max(len(r[c]) for r in rows) for c in range(len(rows[0]))]
    return [
        "  "
        + "  ".join(
            cell.rjust(widths[c]) if c in right else cell.ljust(widths[c])
            for c, cell in enumerate(r)
        ).rstrip()
        for r in rows
    ]


def _label_names(meta: dict[str, Any], task: str) -> dict[int, str]:
    """``{label id: original value}`` from ``meta["label_maps"][task]`` (written by featurize);
    {} when absent or malformed."""
    maps = meta.get("label_maps")
    mapping = maps.get(task) if isinstance(maps, dict) else None
    if not isinstance(mapping, dict):
        return {}
    return {
        v: " ".join(str(k).split()) or repr(k)
        for k, v in mapping.items()
        if isinstance(v, int) and not isinstance(v, bool)
    }


def describe(ds: MultimodalDataset) -> str:
    """Plain-text summary: name, N, modalities (dim, present, missing), labels (classes,
    unlabelled rows, counts), factors, splits and the ``meta`` keys."""
    n = len(ds)
    pct = 100.0 / max(n, 1)
    mask = ds.mask.cpu().numpy()
    lines = [
        f"dataset: {ds.name or '(unnamed)'}",
        f"samples: {n}",
        f"modalities: {ds.num_modalities}",
    ]
    rows = [["name", "dim", "present", "missing"]]
    for i, m in enumerate(ds.modalities):
        p = int(mask[i].sum())
        rows.append([m, str(ds.dims[m]), str(p), f"{(n - p) * pct:.1f}%"])
    lines += _table(rows, {1, 2, 3})
    complete = int(mask.all(axis=0).sum())
    lines.append(f"  samples with all modalities: {complete} ({complete * pct:.1f}%)")
    empty = int((~mask.any(axis=0)).sum())
    if empty:
        lines.append(f"  samples with no modality: {empty} (training and evaluation skip them)")
    if ds.labels:
        lines.append(f"labels: {len(ds.labels)}")
        rows = [["task", "classes", "unlabelled", "counts"]]
        for task, y in ds.labels.items():
            yy = y.cpu().numpy()
            unlabelled = int((yy == -1).sum())
            vals, counts = np.unique(yy[yy != -1], return_counts=True)
            if len(vals) == 0:
                cnt = "-"
            elif len(vals) <= 12:
                names = _label_names(ds.meta, task)
                cnt = " ".join(
                    f"{names.get(int(v), int(v))}:{int(c)}"
                    for v, c in zip(vals, counts, strict=True)
                )
            else:
                cnt = f"min {int(counts.min())}, max {int(counts.max())} per class"
            rows.append([task, str(len(vals)), str(unlabelled), cnt])
        lines += _table(rows, {1, 2})
    if ds.factors:
        lines.append(f"factors: {len(ds.factors)}")
        rows = [["group", "dim"]] + [[g, str(f.shape[1])] for g, f in ds.factors.items()]
        lines += _table(rows, {1})
    if ds.splits:
        lines.append(f"splits: {len(ds.splits)}")
        rows = [["split", "size"]] + [[s, str(v.numel())] for s, v in ds.splits.items()]
        lines += _table(rows, {1})
    if ds.meta:
        lines.append(f"meta: {', '.join(ds.meta)}")
    return "\n".join(lines)
