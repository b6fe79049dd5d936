"""Raw inputs -> dataset folders: ``featurize(manifest, out)`` and the encoder registry.

``featurize`` reads a manifest (CSV/TSV/JSONL/Parquet, one row per paired sample, one column per
modality), encodes every column with its encoder (text ``minilm``/``st:PATH``/``hf:PATH``, image
``pixels``/``timm:``/``torchvision:``/``open_clip:``, audio ``logmel``/``hf:PATH``) and writes
the dataset folder format with ``meta.json`` ``featurizers`` so queries can be featurized the
same way later (:func:`encoder_from_meta`). Heavy packages are imported only when used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .encoders import Encoder, EncoderError, encoder_from_meta, load_encoder, register_encoder
from .items import read_items
from .manifest import read_manifest

if TYPE_CHECKING:
    from .core import FeaturizeSummary

__all__ = [
    "Encoder",
    "EncoderError",
    "FeaturizeSummary",
    "encoder_from_meta",
    "featurize",
    "load_encoder",
    "read_items",
    "read_manifest",
    "register_encoder",
]


def featurize(*args: Any, **kwargs: Any) -> FeaturizeSummary:
    """See :func:`centrobind.featurize.core.featurize`."""
    from .core import featurize as _featurize

    return _featurize(*args, **kwargs)


def __getattr__(name: str) -> Any:
    if name == "FeaturizeSummary":
        from .core import FeaturizeSummary

        return FeaturizeSummary
    raise AttributeError(name)
