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


#: Column names that usually hold a label (compared lower-case, without ``_``/``-``/spaces).
LABEL_NAMES = frozenset(
    {
        "label",
        "labels",
        "class",
        "classes",
        "category",
        "categories",
        "target",
        "y",
        "cls",
        "classid",
        "labelid",
        "tag",
        "tags",
        "genre",
        "species",
    }  # fmt: skip
)


def label_like(name: str, cells: list[str | None]) -> str | None:
    """Why a text column looks like a label rather than content, or None.

    Either its name is a usual label name (:data:`LABEL_NAMES`), or it holds few distinct short
    values: at most 20 distinct values of at most 3 words each, every value repeated on
    average at least 3 times (a caption column is nearly all distinct).
    """
    key = re.sub(r"[\s_\-]", "", name.lower())
    present = [c for c in cells if c is not None]
    distinct = sorted(set(present))
    examples = ", ".join(repr(v) for v in distinct[:3]) + (", ..." if len(distinct) > 3 else "")
    if key in LABEL_NAMES:
        return f"its name is {name!r}; {len(distinct)} distinct values ({examples})"
    short = all(len(v.split()) <= 3 and len(v) <= 40 for v in distinct)
    if present and short and len(distinct) <= 20 and 3 * len(distinct) <= len(present):
        return f"only {len(distinct)} distinct short values in {len(present)} rows ({examples})"
    return None
