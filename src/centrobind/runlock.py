"""The run folder's lock: one writer at a time, and it never outlives its process.

:class:`RunLock` is an exclusive ``fcntl.flock`` on ``<run>/.lock`` held for a whole training (or
an evaluation that writes ``metrics.json``); the kernel releases it when the process exits or dies.
A second holder fails at once with one line naming the first (pid, host, start time). POSIX only;
elsewhere the lock is a no-op (documented in docs/reliability.md).
"""

from __future__ import annotations

import datetime as _dt
import errno
import json
import os
import socket
import threading
from pathlib import Path
from typing import Any

from .errors import CentrobindError

try:  # POSIX only; elsewhere the lock is a no-op (documented in docs/reliability.md)
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

__all__ = ["LOCK_NAME", "RunLock", "RunLockedError", "lock_holder"]

LOCK_NAME = ".lock"


class RunLockedError(CentrobindError):
    """Another process holds the run folder's lock."""


_HELD: dict[str, list[Any]] = {}  # realpath -> [fd, depth]; the lock is re-entrant per process
_HELD_GUARD = threading.Lock()


class RunLock:
    """Exclusive, process-wide lock on a run folder (``fcntl.flock`` on ``<run>/.lock``).

    Use as a context manager around everything that writes the folder::

        with RunLock(out, purpose="train"):
            ...

    The folder is created if needed, and removed again at release if nothing but the lock file
    was written into it (a refused run leaves no trace). Otherwise the lock file stays (next to
    ``config.json`` it marks the folder as a run); the lock itself dies with the process, so a
    crash or ``kill -9`` never leaves a folder locked. Re-entrant within one process.
    ``enabled=False`` makes it a no-op (non-zero ranks under ``torchrun``).

    Raises:
        RunLockedError: another process holds the lock; the message names its pid, host and
            start time.
    """

    def __init__(
        self,
        run_dir: str | os.PathLike,
        purpose: str = "train",
        enabled: bool = True,
        name: str = LOCK_NAME,
    ):
        self.run_dir = Path(run_dir)
        self.name = name  # another name: a lock beside the folder's own (e.g. a featurize shard)
        self.purpose = purpose
        self.enabled = enabled and fcntl is not None
        self._key: str | None = None
        self._created = False

    def acquire(self) -> RunLock:
        if not self.enabled or self._key is not None:
            return self
        try:
            self._created = not self.run_dir.exists()
            self.run_dir.mkdir(parents=True, exist_ok=True)
        except FileExistsError:
            raise CentrobindError(f"{self.run_dir} exists and is not a folder") from None
        key = os.path.join(os.path.realpath(self.run_dir), self.name)
        with _HELD_GUARD:
            if key in _HELD:
                _HELD[key][1] += 1
                self._key = key
                return self
            path = Path(key)
            try:
                fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o644)
            except OSError as e:
                raise CentrobindError(
                    f"{path}: cannot open the run lock ({e.strerror or e})"
                ) from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _read_holder(fd)
                os.close(fd)
                raise RunLockedError(
                    f"{self.run_dir} is in use by another process ({holder}); wait for it to "
                    "finish or choose another folder"
                ) from None
            except OSError as e:  # a filesystem without flock (some network mounts): no lock
                os.close(fd)
                if e.errno in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
                    self.enabled = False
                    return self
                raise
            info = {
                "pid": os.getpid(),
                "host": socket.gethostname(),
                "started": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC"),
                "purpose": self.purpose,
            }
            os.ftruncate(fd, 0)
            os.pwrite(fd, (json.dumps(info) + "\n").encode(), 0)
            _HELD[key] = [fd, 1]
            self._key = key
        return self

    def release(self) -> None:
        if self._key is None:
            return
        with _HELD_GUARD:
            entry = _HELD.get(self._key)
            if entry is not None:
                entry[1] -= 1
                if entry[1] == 0:
                    del _HELD[self._key]
                    try:
                        os.ftruncate(entry[0], 0)  # no stale holder info once released
                        folder = os.path.dirname(self._key)
                        if self._created and os.listdir(folder) == [self.name]:
                            os.unlink(self._key)  # still holding it
                            os.rmdir(folder)
                    except OSError:
                        pass
                    os.close(entry[0])  # closing the descriptor releases the flock
        self._key = None

    @property
    def held(self) -> bool:
        return self._key is not None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def lock_holder(run_dir: str | os.PathLike) -> str | None:
    """Who holds ``<run_dir>/.lock`` right now (``"train pid 1234 on host, started ..."``), or
    None when nobody does. Only probes: a shared lock taken and dropped at once, never waited
    for (a process holding the lock itself gets None)."""
    if fcntl is None or os.path.realpath(run_dir) in _HELD:
        return None
    path = Path(run_dir) / LOCK_NAME
    try:
        flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
        fd = os.open(path, flags)  # O_NONBLOCK: a named pipe put there must not block us
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return _read_holder(fd)
    except OSError:
        return None
    finally:
        os.close(fd)  # closing drops the shared lock if it was taken
    return None


def _read_holder(fd: int) -> str:
    try:
        info = json.loads(os.pread(fd, 4096, 0).decode() or "{}")
        return (
            f"{info.get('purpose', 'a run')} pid {int(info['pid'])} on {info['host']}, "
            f"started {info['started']}"
        )
    except (ValueError, KeyError, TypeError, OSError, UnicodeDecodeError):
        return "holder unknown"
