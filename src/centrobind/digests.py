"""Digests of a dataset folder's data files, recorded when written, checked cheaply, verified fully.

``<folder>/digests.json`` maps every data file (``modalities/<name>.npy``, shards
``modalities/<name>/NNNNN.npy``, ``labels/*.npy``, ``factors/*.npy``) to its size, its SHA-256
and a *sample* digest (BLAKE2b of the size, the first 64 KiB, 16 evenly spaced 64 KiB windows and
the last 64 KiB; the whole file below 1 MiB). ``save_dataset``, ``append_rows`` and ``featurize``
record it as they write.

- :func:`quick_check` (every ``evaluate`` and ``--resume``; milliseconds per file): a listed file
  missing, an unlisted data file (an added shard), a changed size (truncation, appended rows) or
  a change inside the sampled windows (the header, the start, the end, any edit to a small file).
- :func:`verify` (``centrobind verify DATA``; reads everything): any changed byte.

:func:`data_digest` names the data by its recorded SHA-256s (``"d2:..."``): what a run keeps to
refuse other data without re-reading it.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from centrobind.errors import DatasetError

__all__ = [
    "DIGESTS_FILE",
    "data_digest",
    "data_files",
    "quick_check",
    "record_digests",
    "verify",
]

DIGESTS_FILE = "digests.json"
_FORMAT = "centrobind-digests/1"
_WINDOW = 1 << 16
_SAMPLES = 16
_READ = 1 << 24


def data_files(root: Path) -> list[Path]:
    """The data files of a dataset folder that digests cover, sorted."""
    out: list[Path] = []
    for sub in ("modalities", "labels", "factors"):
        d = root / sub
        if not d.is_dir():
            continue
        for p in d.iterdir():
            if p.name.startswith("."):
                continue
            if p.is_dir() and sub == "modalities":
                out += [q for q in p.iterdir() if q.suffix == ".npy" and not q.name.startswith(".")]
            elif p.suffix == ".npy":
                out.append(p)
    return sorted(out)


def _rel(root: Path, p: Path) -> str:
    return p.relative_to(root).as_posix()


def _sample(f: Any, size: int) -> str:
    h = hashlib.blake2b(digest_size=16)
    h.update(f"size={size}".encode())
    if size <= 16 * _WINDOW:
        f.seek(0)
        h.update(f.read())
        return h.hexdigest()
    step = (size - _WINDOW) // (_SAMPLES + 1)
    for pos in [0, *(step * (k + 1) for k in range(_SAMPLES)), size - _WINDOW]:
        f.seek(pos)
        h.update(f.read(_WINDOW))
    return h.hexdigest()


def _digest(path: Path, progress: Callable[[int], None] | None = None) -> dict[str, Any]:
    """Size, SHA-256 (one full read) and sample digest of a file."""
    sha = hashlib.sha256()
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        while chunk := f.read(_READ):
            sha.update(chunk)
            if progress is not None:
                progress(len(chunk))
        sample = _sample(f, size)
    return {"size": size, "sha256": sha.hexdigest(), "sample": sample}


def read_digests(root: Path) -> dict[str, dict[str, Any]] | None:
    """The recorded digests (relative path -> entry), None when the folder has none."""
    path = root / DIGESTS_FILE
    if not path.exists():
        return None
    try:
        doc = json.loads(path.read_bytes().decode("utf-8"))
        files = doc["files"]
        if doc.get("format") != _FORMAT or not isinstance(files, dict):
            raise ValueError("unknown format")
        for entry in files.values():
            int(entry["size"]), str(entry["sha256"]), str(entry["sample"])
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise DatasetError(
            f"{path}: unreadable digests ({' '.join(str(e).split())[:120]}); "
            f"re-record them with `centrobind verify {root} --record`"
        ) from None
    return dict(files)


def record_digests(root: str | os.PathLike[str], files: Iterable[Path] | None = None) -> None:
    """Compute and record the digests of ``files`` (default: every data file) in
    ``digests.json``; entries of files that no longer exist are dropped. Atomic."""
    from centrobind.checkpoint import atomic_write_text

    root = Path(root)
    current = {_rel(root, p) for p in data_files(root)}
    recorded = (read_digests(root) if files is not None else None) or {}
    todo = data_files(root) if files is None else [Path(p) for p in files]
    for p in todo:
        recorded[_rel(root, p)] = _digest(p)
    recorded = {k: v for k, v in sorted(recorded.items()) if k in current}
    doc = {"format": _FORMAT, "files": recorded}
    atomic_write_text(root / DIGESTS_FILE, json.dumps(doc, indent=1) + "\n")


def quick_check(root: str | os.PathLike[str]) -> list[str] | None:
    """Problems found by the cheap check (empty: none), None when no digests are recorded."""
    root = Path(root)
    recorded = read_digests(root)
    if recorded is None:
        return None
    problems = []
    present = {_rel(root, p): p for p in data_files(root)}
    for rel in sorted(set(present) - set(recorded)):
        problems.append(f"{rel}: not in {DIGESTS_FILE} (added after the digests were recorded)")
    for rel, entry in recorded.items():
        p = present.get(rel)
        if p is None:
            problems.append(f"{rel}: missing (listed in {DIGESTS_FILE})")
            continue
        with open(p, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size != entry["size"]:
                problems.append(f"{rel}: {size} bytes, {entry['size']} when recorded")
            elif _sample(f, size) != entry["sample"]:
                problems.append(f"{rel}: content changed since it was recorded")
    return problems


def verify(
    root: str | os.PathLike[str], progress: Callable[[int], None] | None = None
) -> list[str] | None:
    """Re-read every data file and compare its SHA-256 with the record: the problems (empty:
    none), None when no digests are recorded. ``progress(bytes)`` is called as it reads."""
    root = Path(root)
    problems = quick_check(root)
    if problems is None:
        return None
    recorded = read_digests(root) or {}
    bad = {p.split(":")[0] for p in problems}
    for rel, entry in recorded.items():
        p = root / rel
        if rel in bad or not p.is_file():
            continue
        if _digest(p, progress)["sha256"] != entry["sha256"]:
            problems.append(f"{rel}: content changed since it was recorded (SHA-256 differs)")
    return problems


def data_digest(root: str | os.PathLike[str]) -> str | None:
    """``"d2:" + 32 hex`` naming the data by its recorded SHA-256s (files, sizes), or None when
    the folder has no digests. Raises DatasetError when the cheap check finds a problem."""
    root = Path(root)
    problems = quick_check(root)
    if problems is None:
        return None
    if problems:
        raise DatasetError(
            f"{root}: the data changed since its digests were recorded: {problems[0]}"
            + (f" (and {len(problems) - 1} more)" if len(problems) > 1 else "")
        )
    h = hashlib.blake2b(digest_size=16)
    for rel, entry in sorted((read_digests(root) or {}).items()):
        h.update(f"{rel}|{entry['size']}|{entry['sha256']}\n".encode())
    return "d2:" + h.hexdigest()
