"""Path rules of run folders and output files: nothing a user owns is overwritten or mixed.

- :func:`is_run_dir` / :func:`find_run_dir`: what counts as a run folder.
- :func:`check_new_run_dir`: ``train --out`` may create a folder or reuse an empty one, never
  write into a non-empty folder that is not a run.
- :func:`check_output_file`: an output file (``embed --out``) must be a regular ``.npz`` file (or
  not exist yet) and must not lie inside a run folder.
- :func:`remove_stale_temp_files`: the temporary files of atomic writes that a kill left behind.

The other safety pieces live one job per module: the folder's lock in
:mod:`centrobind.runlock`, disk-full errors in :mod:`centrobind.diskfull`, the memory estimate in
:mod:`centrobind.memory`, finite-weight checks in :mod:`centrobind.checkpoint` and the dataset
fingerprint in :mod:`centrobind.data.fingerprint`. Lower layers only: imports ``errors`` and
``runlock``, never ``train``/``runs``.
"""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path

from .errors import CentrobindError
from .runlock import LOCK_NAME, RunLock

__all__ = [
    "RUN_MARKERS",
    "is_run_dir",
    "check_new_run_dir",
    "check_output_file",
    "find_run_dir",
    "remove_stale_temp_files",
    "is_temp_file_name",
]

#: Files/folders that only a run folder holds (with ``config.json``).
RUN_MARKERS = ("run.json", "model.safetensors", "splits.safetensors", "checkpoints")
#: ``tempfile.mkstemp(prefix=".<name>.", suffix=".tmp")``: 8 random characters.
_TEMP_RE = re.compile(r"^\..+\.[a-z0-9_]{8}\.tmp$")


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
