"""Safety of run folders and output files: nothing a user owns is lost, overwritten or mixed.

One job: decide whether a path may be written, and keep a run folder consistent while it is.

- :class:`RunLock`: an exclusive ``fcntl.flock`` on ``<run>/.lock`` held for a whole training (or an
  evaluation that writes ``metrics.json``); the kernel releases it when the process exits or dies.
  A second holder fails at once with one line naming the first (pid, host, start time).
- :func:`check_new_run_dir`: ``train --out`` may create a folder or reuse an empty one, never
  write into a non-empty folder that is not a run.
- :func:`check_output_file`: an output file (``embed --out``) must be a regular ``.npz`` file (or
  not exist yet) and must not lie inside a run folder.
- :func:`remove_stale_temp_files`: the temporary files of atomic writes that a kill left behind.
- :func:`fingerprint`: a content hash of a dataset that covers row order and every array.
- :func:`non_finite_tensors`: which tensors of a state dict hold NaN/inf.
- :func:`check_parameter_memory` / :func:`count_parameters`: refuse a model that cannot fit before
  allocating it.
- :func:`disk_full_errors`: "No space left on device" (from ``OSError`` or from safetensors'
  own error type) becomes one :class:`DiskFullError` line.

Lower layers only: imports ``errors``, ``torch`` and ``numpy``, never ``train``/``runs``.
"""

from __future__ import annotations

import datetime as _dt
import errno
import hashlib
import json
import os
import re
import socket
import stat
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from .errors import CentrobindError, ConfigError

try:  # POSIX only; elsewhere the lock is a no-op (documented in docs/reliability.md)
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

__all__ = [
    "LOCK_NAME",
    "RunLock",
    "RunLockedError",
    "lock_holder",
    "DiskFullError",
    "is_run_dir",
    "check_new_run_dir",
    "check_output_file",
    "find_run_dir",
    "remove_stale_temp_files",
    "is_temp_file_name",
    "fingerprint",
    "non_finite_tensors",
    "all_finite",
    "count_parameters",
    "memory_capacity",
    "check_parameter_memory",
    "is_disk_full",
    "disk_full_errors",
]

LOCK_NAME = ".lock"
#: Files/folders that only a run folder holds (with ``config.json``).
RUN_MARKERS = ("run.json", "model.safetensors", "splits.safetensors", "checkpoints")
#: ``tempfile.mkstemp(prefix=".<name>.", suffix=".tmp")``: 8 random characters.
_TEMP_RE = re.compile(r"^\..+\.[a-z0-9_]{8}\.tmp$")


class RunLockedError(CentrobindError):
    """Another process holds the run folder's lock."""


class DiskFullError(CentrobindError):
    """A write failed because the disk (or quota) is full; nothing was replaced."""


# --------------------------------------------------------------------------------------------
# run folders
# --------------------------------------------------------------------------------------------


def is_run_dir(path: str | os.PathLike) -> bool:
    """True if ``path`` is (or was being made into) a run folder: a ``config.json`` next to our
    ``.lock`` or one of :data:`RUN_MARKERS`."""
    p = Path(path)
    if not (p / "config.json").is_file():
        return False
    return any((p / m).exists() for m in (LOCK_NAME, *RUN_MARKERS))


def is_temp_file_name(name: str) -> bool:
    """True for the temporary names of :mod:`centrobind.checkpoint` atomic writes
    (``.<target>.<8 random chars>.tmp``)."""
    return bool(_TEMP_RE.match(name))


def check_new_run_dir(path: str | os.PathLike) -> None:
    """Refuse ``path`` as the folder of a NEW run unless it is absent or empty (and not inside
    another run folder).

    Our own ``.lock`` and stale temporary files do not count as content. A folder that already
    holds a run gets a message pointing at ``--resume``; any other non-empty folder is refused
    (its files would be overwritten: ``log.csv``, ``metrics.json``, ...). A folder whose lock
    another process holds is refused naming that process.

    Raises:
        RunLockedError: another process holds the folder's lock.
        CentrobindError: one line naming the folder and what is in it.
    """
    p = Path(path)
    outer = next((d for d in Path(os.path.abspath(p)).parents if is_run_dir(d)), None)
    if outer is not None:
        raise CentrobindError(
            f"{p} lies inside the run folder {outer}; choose a --out outside any run"
        )
    if not p.exists() and not p.is_symlink():
        return
    if not p.is_dir():
        raise CentrobindError(f"{p} exists and is not a folder; choose another --out")
    if (p / LOCK_NAME).is_file():  # ours: is another process making this run right now?
        RunLock(p, purpose="check").acquire().release()
    if is_run_dir(p):
        raise CentrobindError(
            f"{p} already holds a run; use --resume to continue it or choose another --out"
        )
    try:
        entries = sorted(e.name for e in os.scandir(p))
    except OSError as e:
        raise CentrobindError(f"{p}: cannot list the folder ({e.strerror or e})") from None
    content = [n for n in entries if n != LOCK_NAME and not is_temp_file_name(n)]
    if content:
        shown = ", ".join(content[:5]) + (", ..." if len(content) > 5 else "")
        raise CentrobindError(
            f"{p} is not empty and not a run folder ({len(content)} entries: {shown}); "
            "refusing to overwrite its files; choose a new or empty --out"
        )


def find_run_dir(path: str | os.PathLike) -> Path | None:
    """The run folder that contains ``path`` (``path`` itself or an ancestor), or None.
    Symlinks are resolved first, so a link into a run folder is found too."""
    p = Path(path)
    try:
        p = p.resolve()
    except (OSError, RuntimeError):
        return None
    for d in (p, *p.parents):
        if is_run_dir(d):
            return d
    return None


_KINDS = (
    (stat.S_ISDIR, "a folder"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISFIFO, "a named pipe"),
    (stat.S_ISSOCK, "a socket"),
)


def _kind(mode: int) -> str:
    return next((name for test, name in _KINDS if test(mode)), "not a regular file")


def check_output_file(path: str | os.PathLike, suffix: str = ".npz") -> Path:
    """Check that ``path`` may be (over)written with a ``suffix`` file; return the path to write.

    Refused: names not ending in ``suffix``; existing targets that are not regular files (folders,
    device nodes such as ``/dev/null``, pipes, sockets), also through a symlink; dangling or
    looping symlinks; anything inside a run folder (its model, checkpoints, ...). A symlink to a
    regular file is followed: the returned path is its target, which is replaced atomically.

    Raises:
        CentrobindError: one line naming the path and the reason.
    """
    p = Path(path)
    target = p
    try:
        lst = os.lstat(p)
    except FileNotFoundError:
        lst = None
    except OSError as e:
        raise CentrobindError(f"{p}: cannot check the output path ({e.strerror or e})") from None
    if lst is not None and stat.S_ISLNK(lst.st_mode):
        try:
            target = p.resolve(strict=True)
        except (OSError, RuntimeError):
            raise CentrobindError(
                f"{p}: a dangling or looping symlink; give a regular output file"
            ) from None
        lst = os.stat(target)
    if lst is not None and not stat.S_ISREG(lst.st_mode):
        raise CentrobindError(
            f"{p}: is {_kind(lst.st_mode)}, not a regular file; refusing to replace it"
        )
    if not p.name.lower().endswith(suffix.lower()) or p.name.lower() == suffix.lower():
        raise CentrobindError(f"{p}: the output must be a {suffix} file name (e.g. out{suffix})")
    run = find_run_dir(target.parent if lst is None else target)
    if run is None and lst is None:  # a new file inside a not yet existing folder of a run?
        run = next((d for d in target.parents if d.exists() and is_run_dir(d)), None)
    if run is not None:
        raise CentrobindError(
            f"{p}: lies inside the run folder {run}; refusing to write there (it would "
            "replace or mix with the run's own files); choose a path outside the run"
        )
    return target


def remove_stale_temp_files(run_dir: str | os.PathLike) -> list[Path]:
    """Remove the temporary files that killed atomic writes left in ``run_dir`` (recursively,
    symlinks not followed). Call it while holding the run's :class:`RunLock`, so that no live
    writer's temporary file is taken. Returns the removed paths."""
    removed: list[Path] = []
    root = Path(run_dir)
    if not root.is_dir():
        return removed
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames[:] = [d for d in dirnames if not os.path.islink(os.path.join(dirpath, d))]
        for name in filenames:
            if not is_temp_file_name(name):
                continue
            f = Path(dirpath) / name
            try:
                if stat.S_ISREG(os.lstat(f).st_mode):
                    f.unlink()
                    removed.append(f)
            except FileNotFoundError:
                pass
    return removed


# --------------------------------------------------------------------------------------------
# the lock
# --------------------------------------------------------------------------------------------

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

    def __init__(self, run_dir: str | os.PathLike, purpose: str = "train", enabled: bool = True):
        self.run_dir = Path(run_dir)
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
        key = os.path.realpath(self.run_dir)
        with _HELD_GUARD:
            if key in _HELD:
                _HELD[key][1] += 1
                self._key = key
                return self
            path = Path(key) / LOCK_NAME
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
                        if self._created and os.listdir(self._key) == [LOCK_NAME]:
                            os.unlink(os.path.join(self._key, LOCK_NAME))  # still holding it
                            os.rmdir(self._key)
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


# --------------------------------------------------------------------------------------------
# data fingerprint
# --------------------------------------------------------------------------------------------

FINGERPRINT_PREFIX = "b2:"
_CHUNK = 1 << 24  # bytes per hash update (keeps memory-mapped reads streaming)


def _hash_array(h: Any, tag: str, value: Tensor | np.ndarray) -> None:
    if isinstance(value, Tensor):
        value = value.detach().cpu()
        if value.dtype == torch.bfloat16:
            value = value.view(torch.int16)
        arr = value.contiguous().numpy()
    else:
        arr = np.ascontiguousarray(value)
    h.update(f"|{tag}|{arr.dtype.str}|{arr.shape}|".encode())
    flat = arr.reshape(-1).view(np.uint8)
    for i in range(0, flat.shape[0], _CHUNK):
        h.update(flat[i : i + _CHUNK])


def fingerprint(ds: Any) -> str:
    """Content hash of a dataset: ``"b2:" + 32 hex digits`` (BLAKE2b, 128 bits).

    Covers the raw bytes (with dtype and shape) of every modality's features, its presence-mask
    row, every label task and every latent-factor group, in row order; modalities, tasks and
    groups by name. Any permutation of rows, of one modality's rows or of the labels changes it;
    the dataset's name, its modality order and its stored splits do not. Reads the arrays once
    (memory-mapped data streams through; no copy of contiguous CPU tensors).

    Args:
        ds: a :class:`~centrobind.data.MultimodalDataset` (``features`` ``{m: [N, D_m]}``,
            ``mask`` ``[M, N]``, ``labels`` ``{task: [N]}``, optional ``factors``).
    """
    h = hashlib.blake2b(digest_size=16)
    n = int(ds.mask.shape[1])
    h.update(f"rows={n}".encode())
    for m in sorted(ds.features):
        _hash_array(h, f"features/{m}", ds.features[m])
        _hash_array(h, f"mask/{m}", ds.mask[ds.modalities.index(m)])
    for t in sorted(ds.labels):
        _hash_array(h, f"labels/{t}", ds.labels[t])
    for g in sorted(getattr(ds, "factors", None) or {}):
        _hash_array(h, f"factors/{g}", ds.factors[g])
    return FINGERPRINT_PREFIX + h.hexdigest()


# --------------------------------------------------------------------------------------------
# finite weights
# --------------------------------------------------------------------------------------------


def non_finite_tensors(tensors: Mapping[str, Tensor]) -> list[str]:
    """Names of the floating-point tensors in ``tensors`` that hold NaN or inf (sorted)."""
    bad = [
        k
        for k, v in tensors.items()
        if isinstance(v, Tensor)
        and (v.is_floating_point() or v.is_complex())
        and not bool(torch.isfinite(v).all())
    ]
    return sorted(bad)


def all_finite(tensors: Mapping[str, Tensor]) -> bool:
    """True when every floating-point tensor of ``tensors`` is finite."""
    return not non_finite_tensors(tensors)


# --------------------------------------------------------------------------------------------
# memory estimate
# --------------------------------------------------------------------------------------------


def count_parameters(factory: Callable[[], nn.Module]) -> int:
    """Number of parameter elements of the module that ``factory()`` builds, counted on the
    ``meta`` device: no memory is allocated, whatever the size."""
    with torch.device("meta"):
        module = factory()
    return sum(p.numel() for p in module.parameters())


def _cgroup_limit() -> int | None:
    for f in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            text = Path(f).read_text().strip()
        except OSError:
            continue
        if text.isdigit() and int(text) < 1 << 60:
            return int(text)
    return None


def memory_capacity(device: str | torch.device = "cpu") -> int | None:
    """Total memory in bytes that ``device`` can hold (GPU memory for CUDA; physical RAM, capped
    by a cgroup limit, otherwise); None when unknown."""
    dev = torch.device(device)
    if dev.type == "cuda" and torch.cuda.is_available():
        index = dev.index if dev.index is not None else torch.cuda.current_device()
        return int(torch.cuda.get_device_properties(index).total_memory)
    try:
        ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        ram = None
    limit = _cgroup_limit()
    if ram is None:
        return limit
    return min(ram, limit) if limit is not None else int(ram)


def _gib(n: float) -> str:
    return f"{n / 2**30:,.1f} GiB"


def check_parameter_memory(
    n_params: int,
    device: str | torch.device = "cpu",
    *,
    bytes_per_param: int = 4,
    copies: int = 5,
    what: str = "training",
    hint: str = "lower --embed-dim / hidden / depth",
) -> int:
    """Refuse a model whose parameters cannot fit in ``device``'s memory.

    ``copies`` is how many parameter-sized buffers the job needs: training with AdamW holds
    weights, gradients, two moment buffers and the best epoch's copy (5); inference 1-2.

    Returns:
        the estimated bytes.

    Raises:
        ConfigError: one line with the parameter count, the estimate and the capacity.
    """
    need = int(n_params) * bytes_per_param * copies
    cap = memory_capacity(device)
    if cap is not None and need > cap:
        raise ConfigError(
            f"the model has {n_params:,} parameters: {what} needs about {_gib(need)} but "
            f"{torch.device(device).type} memory is {_gib(cap)}; {hint}"
        )
    return need


# --------------------------------------------------------------------------------------------
# disk full
# --------------------------------------------------------------------------------------------

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
