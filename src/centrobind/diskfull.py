"""Disk full: "No space left on device" (from ``OSError`` or from safetensors' own error type)
becomes one :class:`DiskFullError` line, after the write's temporary file is cleaned up."""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from contextlib import contextmanager

from .errors import CentrobindError

__all__ = ["DiskFullError", "disk_full_errors", "is_disk_full"]


class DiskFullError(CentrobindError):
    """A write failed because the disk (or quota) is full; nothing was replaced."""


_FULL_ERRNOS = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)}
_FULL_TEXT = ("no space left on device", "disk quota exceeded", "storagefull", "quota exceeded")


def is_disk_full(exc: BaseException) -> bool:
    """True for ``ENOSPC``/``EDQUOT`` errors, whether an ``OSError`` or a library error that
    wraps one in its message (safetensors raises its own error type)."""
    if isinstance(exc, OSError) and exc.errno in _FULL_ERRNOS:
        return True
    text = str(exc).lower()
    return any(t in text for t in _FULL_TEXT)


@contextmanager
def disk_full_errors(path: str | os.PathLike) -> Iterator[None]:
    """Turn a disk-full failure while writing ``path`` into one :class:`DiskFullError` line.

    Wrap the write AND the cleanup of its temporary file inside it: the caller's own
    ``except``/``finally`` removes the temporary file first, then this raises.
    """
    try:
        yield
    except DiskFullError:
        raise
    except Exception as e:  # noqa: BLE001 - only disk-full errors are converted
        if not is_disk_full(e):
            raise
        raise DiskFullError(
            f"no space left on device while writing {path}; nothing was replaced "
            "(free some space and run again; a training run continues with --resume)",
        ) from None
