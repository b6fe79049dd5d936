"""Data layer: multimodal datasets in memory and on disk, builtins, batching, standardisation.

See :mod:`centrobind.data.dataset` for the in-memory conventions and :mod:`centrobind.data.disk`
for the folder format.
"""

from centrobind.data.builtin import BUILTINS, load, load_builtin
from centrobind.data.dataset import Batch, MultimodalDataset, Standardizer, describe
from centrobind.data.disk import load_dataset, save_dataset
from centrobind.data.synthetic import make_synthetic

__all__ = [
    "BUILTINS",
    "Batch",
    "MultimodalDataset",
    "Standardizer",
    "describe",
    "load",
    "load_builtin",
    "load_dataset",
    "make_synthetic",
    "save_dataset",
]
