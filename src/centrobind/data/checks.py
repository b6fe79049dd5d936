"""Value checks shared by the in-memory dataset (:mod:`centrobind.data.dataset`) and the folder
reader (:mod:`centrobind.data.disk`): ``meta`` (``meta.json``) contents and exact int64 labels.

No torch here: the folder reader checks a dataset before torch is imported (fast CLI errors).
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np

from centrobind.errors import DatasetError

__all__ = ["MAX_META_DEPTH", "RESERVED_META_KEYS", "check_meta", "has_surrogate", "int64_problem"]

#: meta.json keys the loader reads itself (never part of ``ds.meta``).
RESERVED_META_KEYS: tuple[str, ...] = (
    "format",
    "name",
    "modalities",
    "labels",
    "factors",
    "splits",
)

#: Deepest nesting of lists/objects accepted in meta.json (and in ``ds.meta``).
MAX_META_DEPTH = 100

_INT64_MIN = -(2**63)
_INT64_LIMIT = 2**63  # exclusive upper bound


def has_surrogate(s: str) -> bool:
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def check_meta(meta: Any, what: str) -> dict[str, Any]:
    """Check that ``meta`` is a JSON object that round-trips exactly; return a deep copy.

    Allowed values: dict (str keys), list, str (valid Unicode), int, float, bool, None, nested at
    most :data:`MAX_META_DEPTH` levels. Raises DatasetError naming ``what`` otherwise.
    """
    if not isinstance(meta, dict):
        raise DatasetError(f"{what}: expected a JSON object (dict), got {type(meta).__name__}")
    stack: list[tuple[Any, int]] = [(meta, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, dict):
            if depth > MAX_META_DEPTH:
                raise DatasetError(f"{what}: nested deeper than {MAX_META_DEPTH} levels")
            for k, v in value.items():
                if not isinstance(k, str):
                    raise DatasetError(f"{what}: object keys must be strings, got {k!r}")
                if has_surrogate(k):
                    raise DatasetError(f"{what}: key {k!r} is not valid Unicode")
                stack.append((v, depth + 1))
        elif isinstance(value, list):
            if depth > MAX_META_DEPTH:
                raise DatasetError(f"{what}: nested deeper than {MAX_META_DEPTH} levels")
            stack.extend((v, depth + 1) for v in value)
        elif isinstance(value, str):
            if has_surrogate(value):
                raise DatasetError(f"{what}: string {value[:40]!r} is not valid Unicode")
        elif isinstance(value, int):  # bool included
            if value.bit_length() > 10_000:
                raise DatasetError(f"{what}: integer with {value.bit_length()} bits is too large")
        elif not (value is None or isinstance(value, float)):
            raise DatasetError(
                f"{what}: values must be JSON types (dict, list, str, int, float, bool, None), "
                f"got {type(value).__name__}"
            )
    return copy.deepcopy(meta)


def int64_problem(arr: np.ndarray[Any, Any]) -> str | None:
    """Why a numeric array cannot be converted to int64 exactly (None if it can).

    Floats must be finite, integer-valued and in ``[-2**63, 2**63)``; unsigned integers must be
    below ``2**63``.
    """
    if arr.size == 0:
        return None
    if arr.dtype.kind == "f":
        a = np.asarray(arr, dtype=np.float64)
        bad = ~np.isfinite(a)
        if bad.any():
            return f"NaN/inf at position {int(np.flatnonzero(bad)[0])}"
        bad = a != np.round(a)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            return f"non-integer value {float(a[i])!r} at position {i}"
        bad = (a < _INT64_MIN) | (a >= _INT64_LIMIT)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            return f"value {float(a[i])!r} at position {i} is outside the int64 range"
    elif arr.dtype.kind == "u" and arr.dtype.itemsize == 8:
        bad = arr >= np.uint64(_INT64_LIMIT)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            return f"value {int(arr.reshape(-1)[i])} at position {i} is outside the int64 range"
    return None
