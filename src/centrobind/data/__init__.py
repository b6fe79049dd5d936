"""Data layer: multimodal datasets in memory and on disk, builtins, standardisation.

See :mod:`centrobind.data.dataset` for the in-memory conventions and :mod:`centrobind.data.disk`
for the folder format. ``MultimodalDataset``, ``Standardizer``, ``UNLABELLED``,
``modality_mask`` and ``make_synthetic`` are imported on first access (they need torch), so that
loading code paths that fail early, such as ``centrobind inspect`` on a malformed folder, stay
fast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from centrobind.data.builtin import BUILTINS, as_dataset, describe, load, load_builtin
from centrobind.data.disk import DatasetWarning, load_dataset, save_dataset

if TYPE_CHECKING:
    from centrobind.data.dataset import UNLABELLED, MultimodalDataset, Standardizer, modality_mask
    from centrobind.data.synthetic import make_synthetic

__all__ = [
    "BUILTINS",
    "UNLABELLED",
    "DatasetWarning",
    "MultimodalDataset",
    "Standardizer",
    "describe",
    "load",
    "load_builtin",
    "load_dataset",
    "as_dataset",
    "make_synthetic",
    "modality_mask",
    "save_dataset",
]

_LAZY = {
    "UNLABELLED": "dataset",
    "MultimodalDataset": "dataset",
    "Standardizer": "dataset",
    "modality_mask": "dataset",
    "make_synthetic": "synthetic",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(f"centrobind.data.{_LAZY[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'centrobind.data' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
