"""Streaming, resumable output: memory-mapped ``.npy`` per modality and a progress file.

``<out>/featurize.json`` records the input fingerprint, the chunks already written per modality
and the rows that could not be read (row, reason). A re-run of the same command with the same
fingerprint skips the finished chunks; any other featurization into the same folder is refused.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np

from centrobind.errors import CentrobindError

STATE = "featurize.json"
STATE_FORMAT = "centrobind-featurize/1"


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


class ProgressState:
    """The progress file of one output folder (written atomically after every chunk)."""

    def __init__(self, out: Path, fingerprint: str) -> None:
        self.out = out
        self.path = out / STATE
        self.fingerprint = fingerprint
        self.data: dict[str, Any] = {
            "format": STATE_FORMAT,
            "fingerprint": fingerprint,
            "complete": False,
            "modalities": {},
        }

    @classmethod
    def open(cls, out: Path, fingerprint: str) -> ProgressState:
        """Resume the state in ``out`` (same fingerprint), or start one in a new/empty folder."""
        st = cls(out, fingerprint)
        if st.path.is_file():
            try:
                old = json.loads(st.path.read_text(encoding="utf-8"))
            except (OSError, ValueError, RecursionError):  # ValueError: JSON, UTF-8
                raise CentrobindError(
                    f"{st.path}: unreadable progress file; delete {out}"
                ) from None
            if not _valid_state(old):
                raise CentrobindError(
                    f"{st.path}: not a progress file that featurize wrote (edited?); delete {out} "
                    "and featurize again"
                )
            if old.get("fingerprint") != fingerprint:
                raise CentrobindError(
                    f"{out} holds a featurization of another manifest or other settings; "
                    "choose another --out or delete that folder"
                )
            st.data = old
        elif out.exists() and (not out.is_dir() or any(_content(out))):
            raise CentrobindError(
                f"{out} exists and is not a featurize output; choose another --out"
            )
        return st

    def modality(self, name: str) -> dict[str, Any]:
        return self.data["modalities"].setdefault(name, {"entry": None, "done": [], "failed": {}})

    def save(self) -> None:
        from centrobind.checkpoint import atomic_write_text

        atomic_write_text(self.path, json.dumps(self.data, indent=1) + "\n")


def _valid_state(data: Any) -> bool:
    """The shape of a ``featurize.json`` this module writes (each modality: its encoder entry,
    finished chunk numbers without repeats, failed rows, file stamps per chunk)."""

    def str_map(x: Any) -> bool:
        return isinstance(x, dict) and all(isinstance(v, str) for v in x.values())

    if not isinstance(data, dict) or not isinstance(data.get("modalities"), dict):
        return False
    for ms in data["modalities"].values():
        if not isinstance(ms, dict):
            return False
        entry, done = ms.get("entry"), ms.get("done")
        if entry is not None and not (
            isinstance(entry, dict)
            and isinstance(entry.get("kind"), str)
            and isinstance(entry.get("dim"), int)
        ):
            return False
        if not isinstance(done, list) or len(set(map(repr, done))) != len(done):
            return False
        if not all(isinstance(c, int) and not isinstance(c, bool) and c >= 0 for c in done):
            return False
        if not str_map(ms.get("failed")) or not str_map(ms.get("stamps", {})):
            return False
    return True


def _content(out: Path) -> list[str]:
    """Entries of ``out`` other than a lock file and the temporary files of killed writes."""
    from centrobind.runfolder import is_temp_file_name
    from centrobind.runlock import LOCK_NAME

    return [p.name for p in out.iterdir() if p.name != LOCK_NAME and not is_temp_file_name(p.name)]


def open_features(path: Path, n: int, dim: int, fresh: bool) -> np.memmap:
    """A float32 ``[n, dim]`` memory-mapped ``.npy``; a fresh one is filled with NaN (= missing)
    in blocks, so nothing of size ``n x dim`` is ever held in RAM."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if not fresh and path.is_file():
        mm = np.lib.format.open_memmap(path, mode="r+")
        if mm.shape != (n, dim) or mm.dtype != np.float32:
            raise CentrobindError(
                f"{path}: has shape {mm.shape} {mm.dtype}, expected ({n}, {dim}) float32; "
                "delete the output folder and start again"
            )
        return mm
    mm = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(n, dim))
    step = max(1, (1 << 24) // max(dim, 1))
    for i in range(0, n, step):
        mm[i : i + step] = np.nan
    mm.flush()
    return mm
