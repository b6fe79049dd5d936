"""Streaming, resumable output: memory-mapped ``.npy`` per modality and a progress file.

``<out>/featurize.json`` records the input fingerprint, the chunks already written per modality
and the rows that could not be read (row, reason). A re-run of the same command with the same
fingerprint skips the finished chunks; any other featurization into the same folder is refused.
"""

from __future__ import annotations

import hashlib
import json
import re
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

    def __init__(self, out: Path, fingerprint: str, name: str = STATE) -> None:
        self.out = out
        self.path = out / name
        self.fingerprint = fingerprint
        self.data: dict[str, Any] = {
            "format": STATE_FORMAT,
            "fingerprint": fingerprint,
            "complete": False,
            "modalities": {},
        }

    @classmethod
    def open(cls, out: Path, fingerprint: str, name: str = STATE) -> ProgressState:
        """Resume the state ``name`` in ``out`` (same fingerprint), or start one in a new/empty
        folder, or (a shard's state, ``featurize-shard-*.json``) in a folder that holds only the
        other shards of the same featurization."""
        st = cls(out, fingerprint, name)
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
            if name == STATE or not out.is_dir():
                raise CentrobindError(
                    f"{out} exists and is not a featurize output; choose another --out"
                )
            _check_sibling_shards(out, fingerprint)
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


SHARD_STATE = re.compile(r"^featurize-shard-\d{5}-of-\d{5}\.json$")
#: what a folder of shards holds besides their states (the last shard to finish adds the rest)
_SHARD_OUTPUTS = {"modalities", "labels", "items", "meta.json", "digests.json", ".finalize.lock"}


def _check_sibling_shards(out: Path, fingerprint: str) -> None:
    """A shard may start in ``out`` when all it holds are other shards of the same
    featurization (same manifest, encoders, labels, chunk size, dtype and shard count)."""
    for name in _content(out):
        if name in _SHARD_OUTPUTS:
            continue
        if not SHARD_STATE.match(name):
            raise CentrobindError(
                f"{out} exists and is not a featurize output ({name}); choose another --out"
            )
        try:
            fp = json.loads((out / name).read_text(encoding="utf-8")).get("fingerprint")
        except (OSError, ValueError, AttributeError):
            fp = None
        if fp != fingerprint:
            raise CentrobindError(
                f"{out} holds shards of another featurization ({name}: another manifest, other "
                "settings or another shard count); choose another --out or delete that folder"
            )


def _content(out: Path) -> list[str]:
    """Entries of ``out`` other than a lock file and the temporary files of killed writes."""
    from centrobind.runfolder import is_temp_file_name
    from centrobind.runlock import LOCK_NAME

    def ours(name: str) -> bool:  # the folder's lock, a shard's lock, a killed write's temp file
        lock = name == LOCK_NAME or (name.startswith(".") and name.endswith(".lock"))
        return lock or is_temp_file_name(name)

    return [p.name for p in out.iterdir() if not ours(p.name)]


def open_features(path: Path, n: int, dim: int, fresh: bool, dtype: str = "float32") -> np.memmap:
    """A ``dtype`` (float32 or float16) ``[n, dim]`` memory-mapped ``.npy``; a fresh one is
    filled with NaN (= missing) in blocks, so nothing of size ``n x dim`` is ever held in RAM."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if not fresh and path.is_file():
        mm = np.lib.format.open_memmap(path, mode="r+")
        if mm.shape != (n, dim) or mm.dtype != np.dtype(dtype):
            raise CentrobindError(
                f"{path}: has shape {mm.shape} {mm.dtype}, expected ({n}, {dim}) {dtype}; "
                "delete the output folder and start again"
            )
        return mm
    mm = np.lib.format.open_memmap(path, mode="w+", dtype=np.dtype(dtype), shape=(n, dim))
    step = max(1, (1 << 24) // max(dim, 1))
    for i in range(0, n, step):
        mm[i : i + step] = np.nan
    mm.flush()
    return mm
