"""Built-in datasets and the ``load`` entry point (builtin name or dataset folder)."""

from __future__ import annotations

import inspect
import os
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from centrobind.data.dataset import MultimodalDataset
from centrobind.data.disk import load_dataset
from centrobind.data.synthetic import make_synthetic
from centrobind.errors import DatasetError

__all__ = ["BUILTINS", "load", "load_builtin"]

#: Names accepted by :func:`load_builtin` (and by :func:`load` instead of a folder path).
BUILTINS: tuple[str, ...] = ("mfeat", "synthetic")

MFEAT_VIEWS: tuple[str, ...] = ("fac", "fou", "kar", "mor", "pix", "zer")


def _load_mfeat() -> MultimodalDataset:
    """UCI Multiple Features: 2000 digits (10 x 200, class order), six views, task ``digit``."""
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
    """
    if isinstance(path_or_builtin, str) and path_or_builtin in BUILTINS:
        return load_builtin(path_or_builtin, **params)
    path = Path(path_or_builtin)
    if not path.exists():
        raise DatasetError(
            f"{path_or_builtin}: does not exist (not a dataset folder, and not a builtin: "
            f"{', '.join(BUILTINS)})"
        )
    unknown = sorted(set(params) - {"mmap"})
    if unknown:
        raise DatasetError(
            f"{path}: unknown load parameter(s) {', '.join(unknown)} (allowed: mmap)"
        )
    return load_dataset(path, **params)
