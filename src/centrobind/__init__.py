"""centrobind: one unified embedding space for any number of paired modalities.

``centrobind.load(run_dir)`` (a trained run, ready to encode) and ``centrobind.Index`` (top-k
search) are imported on first access, so ``import centrobind`` stays cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from centrobind.inference import load
    from centrobind.search import Index

__version__ = "0.1.0"
__all__ = ["Index", "load"]

_LAZY = {"load": "inference", "Index": "search"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(f"centrobind.{_LAZY[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'centrobind' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
