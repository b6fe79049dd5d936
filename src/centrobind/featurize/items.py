"""``items/<modality>.jsonl``: the raw item of every row (text, or absolute file path; null where
missing), one JSON value per line in row order."""

from __future__ import annotations

import json
from pathlib import Path

from centrobind.errors import CentrobindError

__all__ = ["read_items", "write_items"]


def write_items(dataset_dir: str | Path, modality: str, items: list[str | None]) -> Path:
    """Write ``items/<modality>.jsonl`` atomically."""
    from centrobind.checkpoint import atomic_write_text

    path = Path(dataset_dir) / "items" / f"{modality}.jsonl"
    text = "".join(json.dumps(v, ensure_ascii=False) + "\n" for v in items)
    atomic_write_text(path, text)
    return path


def read_items(dataset_dir: str | Path, modality: str) -> list[str | None] | None:
    """The raw items of ``modality`` (``None`` entries where missing), or ``None`` if the
    dataset has no ``items/<modality>.jsonl``."""
    path = Path(dataset_dir) / "items" / f"{modality}.jsonl"
    if not path.is_file():
        return None
    out: list[str | None] = []
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, 1):
            try:
                v = json.loads(raw.decode("utf-8"))
            except UnicodeDecodeError:
                raise CentrobindError(f"{path}: line {lineno} is not UTF-8 text") from None
            except (json.JSONDecodeError, RecursionError):
                raise CentrobindError(f"{path}: line {lineno} is not valid JSON") from None
            if v is not None and not isinstance(v, str):
                raise CentrobindError(f"{path}: line {lineno} is not a string or null")
            out.append(v)
    return out
