"""centrobind: one unified embedding space for any number of paired modalities.

``centrobind.load(run_dir)`` (a trained run, ready to encode), ``centrobind.Index`` (top-k
search), ``centrobind.build_index`` / ``centrobind.load_index`` (a saved index folder) are
imported on first access, so ``import centrobind`` stays cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from centrobind.inference import load
    from centrobind.saved_index import build_index, load_index
    from centrobind.search import Index

__version__ = "0.1.0"
__all__ = ["Index", "build_index", "load", "load_index"]

_LAZY = {
    "load": "inference",
    "Index": "search",
    "build_index": "saved_index",
    "load_index": "saved_index",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(f"centrobind.{_LAZY[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'centrobind' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
