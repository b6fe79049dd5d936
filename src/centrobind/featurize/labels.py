"""Label columns -> int arrays ``[N]`` (-1 where the cell is empty) and their value mapping."""

from __future__ import annotations

import re

import numpy as np

from centrobind.errors import CentrobindError

_INT = re.compile(r"^[+-]?\d+$")


def encode_labels(name: str, cells: list[str | None]) -> tuple[np.ndarray, dict[str, int]]:
    """Map the distinct values of a label column to ``0..K-1`` (numeric order when every value
    is an integer, else string order). Returns (int64 ``[N]`` with -1 = unlabelled, mapping)."""
    values = sorted({c for c in cells if c is not None})
    if not values:
        raise CentrobindError(f"label column {name!r} is empty (every cell is missing)")
    if all(_INT.match(v) for v in values):
        values = sorted(values, key=int)
    mapping = {v: i for i, v in enumerate(values)}
    arr = np.array([mapping[c] if c is not None else -1 for c in cells], dtype=np.int64)
    return arr, mapping
