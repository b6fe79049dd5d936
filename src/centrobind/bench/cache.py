"""Resume an interrupted benchmark: every finished run is appended to ``<out>/runs.jsonl``.

A run is reused only when its key matches exactly: the job (method, seed, data, evaluation
asked for, logit scale), the training budget, and a digest of the installed ``centrobind`` code
that computes a number and torch's version. Editing the library therefore starts the affected
runs afresh instead of mixing numbers from two versions of the code; a line cut short by a crash
is ignored. Inside ``bench/`` only the modules that run a job are in the digest
(:data:`_COMPUTE`): the suites, the scale protocol and the report only decide which jobs exist,
and a job's identity is its ``repr``. Every record carries a
checksum of its key and result: a record edited by hand (or not UTF-8) is never used, its run is
redone, with a warning.

:func:`check_output_folder` keeps ``--out`` from overwriting a user's files: the benchmark
writes only into a new or empty folder or into one of its own.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import warnings
from functools import cache
from pathlib import Path
from typing import Any

from ..errors import CentrobindError, CentrobindWarning
from ..eval import to_builtin

__all__ = ["RunCache", "check_output_folder", "code_digest"]

#: Files outside ``bench/`` that only present results; editing them keeps the cached runs valid.
_PRESENTATION = {"cli.py", "__main__.py"}
#: The ``bench/`` modules that compute a job's numbers (the rest of ``bench/`` is not digested).
_COMPUTE = {"jobs.py", "methods.py", "gcca.py"}


@cache
def code_digest() -> str:
    """sha256 over the package's files that can change a number (sources and bundled data) and
    torch's version."""
    import torch

    root = Path(__file__).resolve().parent.parent
    h = hashlib.sha256(torch.__version__.encode())
    for p in sorted(root.rglob("*")):
        if not p.is_file() or p.name in _PRESENTATION or "__pycache__" in p.parts:
            continue
        if p.parent.name == "bench" and p.parent.parent == root and p.name not in _COMPUTE:
            continue
        h.update(str(p.relative_to(root)).encode())
        h.update(p.read_bytes())
    return h.hexdigest()


class RunCache:
    """Append-only record of finished runs in ``path`` (JSON lines ``{"key", "result"}``).

    Example:
        >>> import tempfile
        >>> c = RunCache(Path(tempfile.mkdtemp()) / "runs.jsonl")
        >>> c.put(("job", 1), {"R@1": 50.0})
        >>> RunCache(c.path).get(("job", 1)), RunCache(c.path).get(("job", 2))
        ({'R@1': 50.0}, None)
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._done: dict[str, dict[str, Any]] = {}
        self._torn = False  # the file ends inside a line: the next entry starts a new one
        if not self.path.exists():
            return
        if not _is_regular(self.path):
            raise CentrobindError(f"{self.path}: not a regular file; move it away or use --fresh")
        try:
            data = self.path.read_bytes()
        except OSError as e:
            raise CentrobindError(f"{self.path}: cannot read ({e.strerror or e})") from None
        self._torn = bool(data) and not data.endswith(b"\n")
        bad = []
        for lineno, raw in enumerate(data.split(b"\n"), 1):
            ok = _parse(raw)
            if ok is None:
                bad.append(lineno)  # not UTF-8, or a record edited by hand: its run is redone
            elif ok:
                self._done[ok[0]] = ok[1]
        if bad:
            shown = ", ".join(map(str, bad[:5])) + (", ..." if len(bad) > 5 else "")
            warnings.warn(
                f"{self.path}: {len(bad)} line(s) are not records the benchmark wrote (edited, "
                f"or not UTF-8; line {shown}); their runs are redone",
                CentrobindWarning,
                stacklevel=2,
            )

    @staticmethod
    def key(obj: Any) -> str:
        """The cache key of ``obj`` (a job and its budget: their ``repr``) under this code."""
        return hashlib.sha256((code_digest() + repr(obj)).encode()).hexdigest()

    def __len__(self) -> int:
        return len(self._done)

    def get(self, obj: Any) -> dict[str, Any] | None:
        return self._done.get(self.key(obj))

    def put(self, obj: Any, result: dict[str, Any]) -> None:
        """Record ``result`` and flush it to disk before returning."""
        k = self.key(obj)
        result = to_builtin(result)
        self._done[k] = result
        self.path.parent.mkdir(parents=True, exist_ok=True)
        line = json.dumps({"key": k, "result": result, "check": _check(k, result)})
        with self.path.open("a", encoding="utf-8") as f:
            f.write(("\n" if self._torn else "") + line + "\n")
            self._torn = False
            f.flush()
            os.fsync(f.fileno())


def _check(key: str, result: dict[str, Any]) -> str:
    """Checksum of one record: its key and its result as canonical JSON."""
    blob = json.dumps([key, result], sort_keys=True, allow_nan=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


def _parse(raw: bytes) -> tuple[str, dict[str, Any]] | tuple[()] | None:
    """One line of ``runs.jsonl``: ``(key, result)``; ``()`` for a blank line or one cut short
    by a crash (not JSON: skipped quietly); None for a line that is not UTF-8 or a record whose
    checksum, key or result does not hold (edited)."""
    if not raw.strip():
        return ()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return None
    try:
        entry = json.loads(text)
    except json.JSONDecodeError:
        return ()
    except RecursionError:
        return None
    if not isinstance(entry, dict):
        return None
    key, result = entry.get("key"), entry.get("result")
    if not isinstance(key, str) or not isinstance(result, dict):
        return None
    if entry.get("check") != _check(key, result):
        return None
    return key, result


def _is_regular(path: Path) -> bool:
    """True for a regular file (through symlinks); opening a named pipe would block."""
    try:
        return stat.S_ISREG(os.stat(path).st_mode)
    except OSError:
        return False


def _is_benchmark_folder(path: Path) -> bool:
    """A folder the benchmark wrote: ``results.json`` whose ``meta.command`` is a benchmark
    command, or a ``runs.jsonl`` whose first record is one of its records."""
    try:
        if not _is_regular(path / "results.json"):
            raise OSError
        meta = json.loads((path / "results.json").read_text(encoding="utf-8")).get("meta", {})
        if str(meta.get("command", "")).startswith("centrobind benchmark"):
            return True
    except (OSError, ValueError, AttributeError, RecursionError):
        pass
    if not _is_regular(path / "runs.jsonl"):
        return False
    try:
        with (path / "runs.jsonl").open("rb") as f:
            first = f.readline(1 << 20)
    except OSError:
        return False
    # a first record cut short by a crash (the benchmark was killed while writing it)
    return bool(_parse(first)) or (b"\n" not in first and first.startswith(b'{"key": "'))


def check_output_folder(out: str | os.PathLike[str]) -> None:
    """Refuse ``out`` as the benchmark's output folder unless it is absent, empty, or a folder
    the benchmark wrote before (its report and record are then updated). Never overwrite the
    ``report.md`` or ``results.csv`` of someone else.

    Raises:
        CentrobindError: one line naming the folder and what is in it.
    """
    p = Path(out)
    if not p.exists() and not p.is_symlink():
        return
    if not p.is_dir():
        raise CentrobindError(f"{p} exists and is not a folder; choose another --out")
    try:
        entries = sorted(e.name for e in os.scandir(p))
    except OSError as e:
        raise CentrobindError(f"{p}: cannot list the folder ({e.strerror or e})") from None
    if entries and not _is_benchmark_folder(p):
        shown = ", ".join(entries[:5]) + (", ..." if len(entries) > 5 else "")
        raise CentrobindError(
            f"{p} is not empty and not a benchmark output folder ({len(entries)} entries: "
            f"{shown}); refusing to overwrite its files; choose a new or empty --out"
        )
