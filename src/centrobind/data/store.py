"""Feature storage on disk: one modality as a ``.npy`` file or a folder of shards, memory-mapped.

A modality of a dataset folder is either ``modalities/<name>.npy`` or a folder
``modalities/<name>/`` of shards ``00000.npy``, ``00001.npy``, ... (numbered from 0 with no gap;
rows in shard order). Every shard is a 2-D numeric array of the same width and dtype; float16
storage is accepted everywhere (half the disk and the reads) and read as float32. An all-NaN row
marks the modality missing for that sample, as in a single file.

:class:`ModalityStore` reads rows without loading the modality: contiguous ranges
(:meth:`ModalityStore.read`) and sorted row sets (:meth:`ModalityStore.take`), across shard
boundaries. :func:`append_rows` adds one shard to every modality of a dataset folder (and rows to
its labels), recording digests (:mod:`centrobind.digests`) of what it wrote.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from centrobind.errors import DatasetError

__all__ = ["SHARD_DIGITS", "ModalityStore", "append_rows", "shard_name", "write_npy_atomic"]

#: Shard file names are this many digits (``00000.npy``); more digits are accepted when needed.
SHARD_DIGITS = 5
_SHARD_RE = re.compile(r"^\d{5,}\.npy$")


def shard_name(i: int) -> str:
    """The file name of shard ``i`` (``00000.npy``)."""
    return f"{i:0{SHARD_DIGITS}d}.npy"


def _one_line(e: BaseException | str) -> str:
    return " ".join(str(e).split())


def _open_npy(path: Path) -> np.ndarray[Any, Any]:
    """A read-only memory map of a numeric 2-D ``.npy``; any defect is one DatasetError line."""
    try:
        with open(path, "rb") as f:
            if f.read(6) != b"\x93NUMPY":
                raise DatasetError(f"{path}: not a .npy file (bad magic bytes; corrupt file?)")
        arr: np.ndarray[Any, Any] = np.load(path, mmap_mode="r", allow_pickle=False)
    except DatasetError:
        raise
    except ValueError as e:  # a truncated file: "mmap length is greater than file size"
        raise DatasetError(f"{path}: truncated or corrupt .npy file ({_one_line(e)})") from None
    except OSError as e:
        raise DatasetError(f"{path}: cannot read: {_one_line(e.strerror or e)}") from None
    if arr.dtype.hasobject or arr.dtype.kind not in "biuf":
        raise DatasetError(f"{path}: non-numeric dtype {arr.dtype} (numeric arrays only)")
    if arr.ndim != 2:
        raise DatasetError(f"{path}: features must be a 2-D array [N, D], got shape {arr.shape}")
    if arr.shape[1] == 0:
        raise DatasetError(f"{path}: has 0 feature columns")
    return arr


def shard_files(folder: Path) -> list[Path]:
    """The shards of a modality folder in order (``00000.npy`` ...), checked to be numbered
    from 0 without gaps; other entries (hidden ones aside) are an error."""
    try:
        names = sorted(p.name for p in folder.iterdir() if not p.name.startswith("."))
    except OSError as e:
        raise DatasetError(f"{folder}: cannot list shards: {_one_line(e.strerror or e)}") from None
    bad = [n for n in names if not _SHARD_RE.match(n)]
    if bad:
        raise DatasetError(
            f"{folder}: {bad[0]!r} is not a shard name (shards are 00000.npy, 00001.npy, ...)"
        )
    numbers = sorted(int(n[:-4]) for n in names)
    if not numbers:
        raise DatasetError(f"{folder}: shard folder is empty (expected 00000.npy, ...)")
    for i, k in enumerate(numbers):
        if k != i:
            raise DatasetError(f"{folder}: shard {shard_name(i)} is missing (found {k:05d}.npy)")
    return [folder / shard_name(i) for i in numbers]


class ModalityStore:
    """One modality's rows on disk (a ``.npy`` file or a shard folder), memory-mapped.

    Attributes:
        path: the file or folder; ``files``: its shards in order (one for a file).
        n_rows, dim: ``N`` and ``D_m``; ``dtype``: the storage dtype (e.g. float16).
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.files = shard_files(self.path) if self.path.is_dir() else [self.path]
        self.arrays = [_open_npy(p) for p in self.files]
        first = self.arrays[0]
        for p, a in zip(self.files[1:], self.arrays[1:], strict=True):
            if a.shape[1] != first.shape[1]:
                raise DatasetError(
                    f"{p}: has {a.shape[1]} columns but {self.files[0].name} has {first.shape[1]}"
                )
            if a.dtype != first.dtype:
                raise DatasetError(
                    f"{p}: dtype {a.dtype} but {self.files[0].name} is {first.dtype} "
                    "(every shard of a modality has one dtype)"
                )
        self.dim = int(first.shape[1])
        self.dtype = first.dtype
        self.offsets = np.cumsum([0] + [a.shape[0] for a in self.arrays])
        self.n_rows = int(self.offsets[-1])

    @property
    def nbytes(self) -> int:
        """Bytes on disk of the rows (headers aside)."""
        return int(self.n_rows * self.dim * self.dtype.itemsize)

    def __len__(self) -> int:
        return int(self.n_rows)

    def read(
        self, start: int, stop: int, out: np.ndarray[Any, Any] | None = None
    ) -> np.ndarray[Any, Any]:
        """Rows ``[start, stop)`` as float32 ``[stop - start, D]`` (contiguous reads, across shard
        boundaries), into ``out`` when given (a float32 array of that shape), else a new one."""
        if out is None:
            out = np.empty((max(0, stop - start), self.dim), dtype=np.float32)
        first = int(np.searchsorted(self.offsets, start, side="right")) - 1
        pos = start
        for s in range(max(first, 0), len(self.arrays)):
            if pos >= stop:
                break
            lo, hi = int(self.offsets[s]), int(self.offsets[s + 1])
            end = min(stop, hi)
            if end > pos:
                self._copy(s, out[pos - start : end - start], self.arrays[s][pos - lo : end - lo])
                pos = end
        return out

    def take(self, rows: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
        """The rows ``rows`` (sorted ascending, in range) as float32 ``[len(rows), D]``."""
        out = np.empty((rows.shape[0], self.dim), dtype=np.float32)
        shard = np.searchsorted(self.offsets, rows, side="right") - 1
        bounds = np.searchsorted(shard, np.arange(len(self.arrays) + 1))
        for s in range(len(self.arrays)):
            a, b = int(bounds[s]), int(bounds[s + 1])
            if b > a:
                local = rows[a:b] - self.offsets[s]
                self._copy(s, out[a:b], self.arrays[s][local])
        return out

    def _copy(self, s: int, dst: np.ndarray[Any, Any], src: np.ndarray[Any, Any]) -> None:
        try:
            with np.errstate(over="ignore", invalid="ignore"):
                dst[...] = src
        except OSError as e:  # pragma: no cover - an I/O error under the memory map
            raise DatasetError(f"{self.files[s]}: read failed: {_one_line(e)}") from None


def write_npy_atomic(path: Path, array: np.ndarray[Any, Any]) -> None:
    """Write ``array`` to ``path`` through a temporary file and a rename (never half a file)."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            np.save(f, array, allow_pickle=False)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _as_shard(name: str, value: Any, dim: int | None, dtype: np.dtype[Any] | None) -> Any:
    arr = np.asarray(value)
    if arr.ndim != 2 or arr.shape[0] == 0:
        raise DatasetError(f"append: modality {name!r} must be a non-empty 2-D array [n, D]")
    if dim is not None and arr.shape[1] != dim:
        raise DatasetError(
            f"append: modality {name!r} has {arr.shape[1]} columns, the dataset has {dim}"
        )
    if arr.dtype.kind != "f":
        raise DatasetError(f"append: modality {name!r} must be floating point, got {arr.dtype}")
    return np.ascontiguousarray(arr, dtype=dtype if dtype is not None else arr.dtype)


def append_rows(
    root: str | os.PathLike[str],
    features: Mapping[str, Any],
    labels: Mapping[str, Any] | None = None,
) -> int:
    """Append rows to a dataset folder: one new shard per modality (a single ``<name>.npy`` is
    first moved to ``<name>/00000.npy``), and the rows' labels. Every modality (and every label
    task) of the folder must be given, with the same row count; a shard keeps the modality's
    storage dtype. Digests of the new files are recorded. Returns the new row count.

    Refused when the folder stores ``splits/`` or ``factors/`` (which the rows would lack).
    """
    from centrobind.digests import record_digests

    root = Path(root)
    mod_dir = root / "modalities"
    for sub, why in (("splits", "in no split"), ("factors", "without latent factors")):
        if any((root / sub).glob("*.npy")):
            raise DatasetError(f"{root}: stores {sub}/; appended rows would be {why}")
    present = sorted(p.stem if p.suffix == ".npy" else p.name for p in _entries(mod_dir))
    if sorted(features) != present:
        raise DatasetError(
            f"append: give every modality of {root} ({present}), got {sorted(features)}"
        )
    stores = {m: ModalityStore(_modality_path(mod_dir, m)) for m in present}
    n_old = {s.n_rows for s in stores.values()}
    rows = {np.asarray(v).shape[0] for v in features.values()}
    if len(rows) != 1 or len(n_old) != 1:
        raise DatasetError(f"append: modalities have different row counts ({sorted(rows)})")
    arrays = {m: _as_shard(m, features[m], stores[m].dim, stores[m].dtype) for m in present}
    new_labels = _appended_labels(root, labels or {}, n_old.pop(), rows.pop())
    written: list[Path] = []
    for m, arr in arrays.items():
        folder = mod_dir / m
        if not folder.is_dir():  # a single file becomes shard 0 of a folder
            folder.mkdir()
            os.replace(mod_dir / f"{m}.npy", folder / shard_name(0))
            written.append(folder / shard_name(0))
        target = folder / shard_name(len(shard_files(folder)))
        write_npy_atomic(target, arr)
        written.append(target)
    for task, y in new_labels.items():
        write_npy_atomic(root / "labels" / f"{task}.npy", y)
        written.append(root / "labels" / f"{task}.npy")
    record_digests(root, written)
    return int(next(iter(stores.values())).n_rows + next(iter(arrays.values())).shape[0])


def _entries(folder: Path) -> list[Path]:
    if not folder.is_dir():
        raise DatasetError(f"{folder}: missing folder")
    return [p for p in folder.iterdir() if not p.name.startswith(".")]


def _modality_path(mod_dir: Path, name: str) -> Path:
    return mod_dir / name if (mod_dir / name).is_dir() else mod_dir / f"{name}.npy"


def _appended_labels(
    root: Path, labels: Mapping[str, Any], n_old: int, n_new: int
) -> dict[str, np.ndarray[Any, Any]]:
    """Each stored label task extended by the given ``[n_new]`` labels (every task required)."""
    label_dir = root / "labels"
    tasks = sorted(p.stem for p in label_dir.glob("*.npy")) if label_dir.is_dir() else []
    if sorted(labels) != tasks:
        raise DatasetError(
            f"append: give labels for exactly the tasks {tasks}, got {sorted(labels)}"
        )
    out = {}
    for t in tasks:
        old = np.load(label_dir / f"{t}.npy", allow_pickle=False)
        new = np.asarray(labels[t])
        if new.shape != (n_new,) or new.dtype.kind not in "iu":
            raise DatasetError(f"append: labels {t!r} must be integers of shape ({n_new},)")
        if old.shape[0] != n_old:
            raise DatasetError(
                f"{label_dir / (t + '.npy')}: has {old.shape[0]} rows, expected {n_old}"
            )
        out[t] = np.concatenate([old.astype(np.int64), new.astype(np.int64)])
    return out


def _atomic_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and a rename."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
