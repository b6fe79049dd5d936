"""Write a ``.npy`` file row block by row block, with plain ``write`` calls (no memory map).

A memory-mapped output (``np.lib.format.open_memmap``) is a sparse file: when the disk fills up,
the write happens at a page fault and the process dies of ``SIGBUS`` instead of getting an
error. :class:`NpyWriter` writes sequentially, so a full disk is an ``OSError`` (``ENOSPC``)
that the caller can turn into one line (:func:`centrobind.diskfull.disk_full_errors`); the number
of rows need not be known in advance (the header is rewritten with the final shape at
:meth:`NpyWriter.close`).
"""

from __future__ import annotations

import os
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np

__all__ = ["NpyWriter", "npy_header"]

#: Bytes of the header (magic, version, length, dict, padding): room for any 2-D shape.
HEADER_BYTES = 128


def npy_header(dtype: np.dtype[Any], shape: tuple[int, ...]) -> bytes:
    """A version 1.0 ``.npy`` header of exactly :data:`HEADER_BYTES` bytes (C order)."""
    descr = np.lib.format.dtype_to_descr(np.dtype(dtype))
    text = f"{{'descr': {descr!r}, 'fortran_order': False, 'shape': {tuple(shape)!r}, }}"
    body = text.encode("latin1")
    pad = HEADER_BYTES - 10 - len(body) - 1
    if pad < 0:  # pragma: no cover - needs a shape of more than ~3 dimensions
        raise ValueError(f"shape {shape} does not fit a {HEADER_BYTES}-byte .npy header")
    body += b" " * pad + b"\n"
    return b"\x93NUMPY\x01\x00" + len(body).to_bytes(2, "little") + body


class NpyWriter:
    """Append rows ``[n, *row_shape]`` of one dtype to a new ``.npy`` file at ``path``.

    ``close()`` (or leaving the ``with`` block without an error) writes the final header,
    flushes and ``fsync``s. After an error the file is left incomplete: write into a temporary
    folder and rename it once everything is closed.
    """

    def __init__(
        self, path: str | os.PathLike[str], dtype: Any, row_shape: tuple[int, ...] = ()
    ) -> None:
        self.path = Path(path)
        self.dtype = np.dtype(dtype)
        self.row_shape = tuple(int(s) for s in row_shape)
        self.rows = 0
        self._f = open(self.path, "wb")  # noqa: SIM115 - closed in close()
        self._f.write(npy_header(self.dtype, (0, *self.row_shape)))

    def write(self, rows: np.ndarray[Any, Any]) -> None:
        """Append ``rows`` (cast to the writer's dtype; shape ``[n, *row_shape]``)."""
        arr = np.ascontiguousarray(rows, dtype=self.dtype)
        if arr.shape[1:] != self.row_shape:
            raise ValueError(f"rows of shape {arr.shape[1:]}, expected {self.row_shape}")
        if arr.size:
            self._f.write(arr.data.cast("B"))
        self.rows += arr.shape[0]

    def close(self) -> None:
        """Write the header with the final row count, flush and fsync, close."""
        if self._f.closed:
            return
        try:
            self._f.flush()
            self._f.seek(0)
            self._f.write(npy_header(self.dtype, (self.rows, *self.row_shape)))
            self._f.flush()
            os.fsync(self._f.fileno())
        finally:
            self._f.close()

    def abort(self) -> None:
        """Close without finishing (after an error); the file stays incomplete."""
        try:
            self._f.close()
        except OSError:
            pass

    def __enter__(self) -> NpyWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()
