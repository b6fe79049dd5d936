"""Dataset folders on disk.

Layout (all arrays are ``.npy`` files; only ``modalities/`` is required)::

    <folder>/
      meta.json                 optional: {"name": "...", "modalities": ["a", "b", ...], ...}
      modalities/<name>.npy     float [N, D_m], one file per modality (at least 2)
      labels/<task>.npy         int [N] (integer-valued floats allowed); -1 = unlabelled
      factors/<group>.npy       float [N, k] true latent factors ([N] is read as [N, 1])
      splits/<split>.npy        int indices into [0, N), no duplicates within a split

Modality order: the order listed in ``meta.json`` ``"modalities"`` if present (it must then name
exactly the files in ``modalities/``), otherwise sorted by name (Python string order of the file
stems). Labels, factors and splits are read sorted by name, unless ``meta.json`` lists exactly
those names under ``"labels"``/``"factors"``/``"splits"`` (as :func:`save_dataset` writes). The
dataset name is ``meta.json`` ``"name"`` if present, else the folder name. A row that is entirely
NaN marks that sample's modality missing; any other NaN/inf is an error.

Names: ``<name>`` is any non-empty file stem in UTF-8 that does not start with ``.``. Entries whose
name starts with ``.`` (``.DS_Store``, ``._a.npy``) are skipped; any other entry not ending in
``.npy`` is ignored with a :class:`DatasetWarning` naming it; an entry ending in ``.npy`` that is
not a readable regular file (a folder, a dangling symlink, a symlink loop, a FIFO) is an error.
Other top-level entries (e.g. ``items/``, written by ``centrobind featurize``) are not read.

``meta.json`` keys other than ``format``, ``name``, ``modalities``, ``labels``, ``factors`` and
``splits`` are kept in ``ds.meta`` and written back by :func:`save_dataset`; ``meta.json`` must be a
JSON object, UTF-8, nested at most :data:`~centrobind.data.checks.MAX_META_DEPTH` levels deep.

Every problem raises :class:`~centrobind.errors.DatasetError` with a one-line message naming the
file and the problem.
"""

from __future__ import annotations

import errno
import json
import os
import stat
import unicodedata
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from centrobind.data.checks import (
    RESERVED_META_KEYS,
    check_meta,
    has_surrogate,
    int64_problem,
)
from centrobind.errors import DatasetError

if TYPE_CHECKING:  # torch is imported only once the folder has been checked (fast CLI errors)
    from centrobind.data.dataset import MultimodalDataset

__all__ = ["DatasetWarning", "load_dataset", "save_dataset"]

_SUBDIRS = ("modalities", "labels", "factors", "splits")
FORMAT = "centrobind-dataset/1"


class DatasetWarning(UserWarning):
    """A dataset folder holds something the loader ignores (e.g. ``modalities/notes.csv``)."""


def _one_line(e: BaseException | str) -> str:
    return " ".join(str(e).split())


def printable(text: str) -> str:
    """``text`` with every non-printable character escaped (``\\n``, ``\\x1b``, ``\\u2028``)
    except the space, so that a message naming odd paths stays on one line."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() or c == " " else repr(c)[1:-1] for c in text)


def _control_char(name: str) -> str | None:
    """The first control/line-break character of ``name`` (None if it has none)."""
    for c in name:
        if unicodedata.category(c) in ("Cc", "Zl", "Zp"):
            return c
    return None


def _string_list(meta: dict[str, Any], key: str, path: Path) -> list[str] | None:
    value = meta.get(key)
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(m, str) and m for m in value):
        raise DatasetError(f"{path}: {key!r} must be a list of non-empty names")
    if len(set(value)) != len(value):
        raise DatasetError(f"{path}: {key!r} lists a name twice")
    return value


def _read_meta(root: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(loader keys, other keys)`` of ``root/meta.json`` (both empty if there is none)."""
    path = root / "meta.json"
    if not os.path.lexists(path):
        return {}, {}
    try:
        meta = json.loads(path.read_bytes().decode("utf-8"))
    except RecursionError:
        raise DatasetError(f"{path}: invalid JSON: nested too deeply") from None
    except (OSError, UnicodeDecodeError, ValueError) as e:  # JSONDecodeError is a ValueError
        raise DatasetError(f"{path}: invalid JSON: {_one_line(e)}") from None
    if not isinstance(meta, dict):
        raise DatasetError(f"{path}: expected a JSON object")
    meta = check_meta(meta, str(path))
    for key in ("modalities", "labels", "factors", "splits"):
        _string_list(meta, key, path)
    if meta.get("name") is not None and not isinstance(meta["name"], str):
        raise DatasetError(f"{path}: 'name' must be a string")
    fmt = meta.get("format")
    if fmt is not None and fmt != FORMAT:
        raise DatasetError(f"{path}: unsupported format {fmt!r} (this version reads {FORMAT!r})")
    own = {k: meta[k] for k in RESERVED_META_KEYS if k in meta}
    rest = {k: v for k, v in meta.items() if k not in RESERVED_META_KEYS}
    return own, rest


# --------------------------------------------------------------------------------------------
# folder listing and arrays
# --------------------------------------------------------------------------------------------


def _listing(folder: Path, shard_folders: bool = False) -> tuple[dict[str, Path], list[str]]:
    """``({stem: path} of the .npy files sorted by stem, [ignored entry names]})`` of ``folder``.

    A missing folder lists nothing. Hidden entries (name starting with ``.``) are skipped
    silently; other non-``.npy`` entries are returned as ignored. A ``.npy`` entry that is not a
    regular file (after following symlinks) or whose name is not valid UTF-8 is an error.
    """
    if not os.path.lexists(folder):
        return {}, []
    if not folder.is_dir():
        raise DatasetError(f"{folder}: expected a folder of .npy files, found a file")
    try:
        entries = sorted(folder.iterdir(), key=lambda p: p.name)
    except OSError as e:
        raise DatasetError(f"{folder}: cannot list folder: {_one_line(e.strerror or e)}") from None
    files: dict[str, Path] = {}
    ignored: list[str] = []
    for p in entries:
        if p.name.startswith("."):
            continue
        if shard_folders and p.suffix != ".npy" and (p / "00000.npy").exists():
            files[p.name] = p  # a modality stored as shards (modalities/<name>/00000.npy ...)
            continue
        if p.suffix != ".npy":
            ignored.append(p.name + ("/" if p.is_dir() else ""))
            continue
        if has_surrogate(p.name):
            shown = os.fsencode(p.name).decode("utf-8", "backslashreplace")
            raise DatasetError(f"{folder}: file name {shown!r} is not valid UTF-8; rename it")
        if _control_char(p.name) is not None:
            raise DatasetError(
                f"{folder}: file name {p.name!r} contains the control character "
                f"{_control_char(p.name)!r}; rename it"
            )
        try:
            st = p.stat()
        except OSError as e:
            if e.errno == errno.ELOOP:
                raise DatasetError(f"{p}: symlink loop (expected a .npy file)") from None
            if e.errno == errno.ENOENT and p.is_symlink():
                raise DatasetError(
                    f"{p}: dangling symlink to {os.readlink(p)!r} (expected a .npy file)"
                ) from None
            raise DatasetError(f"{p}: cannot access: {_one_line(e.strerror or e)}") from None
        if stat.S_ISDIR(st.st_mode):
            raise DatasetError(f"{p}: is a folder, expected a .npy file")
        if not stat.S_ISREG(st.st_mode):
            raise DatasetError(f"{p}: not a regular file (FIFO, device or socket?)")
        files[p.stem] = p
    return dict(sorted(files.items())), ignored


def _read_npy(path: Path, mmap: bool) -> np.ndarray[Any, Any]:
    """Read a numeric .npy (memory-mapped if ``mmap``); any failure -> DatasetError."""
    try:
        with open(path, "rb") as f:
            if f.read(6) != b"\x93NUMPY":
                raise DatasetError(f"{path}: not a .npy file (bad magic bytes; corrupt file?)")
            f.seek(0)
            version = np.lib.format.read_magic(f)
            if version == (1, 0):
                dtype = np.lib.format.read_array_header_1_0(f)[2]
            else:
                dtype = np.lib.format.read_array_header_2_0(f)[2]
    except DatasetError:
        raise
    except Exception as e:
        raise DatasetError(
            f"{path}: unreadable .npy file (corrupt or truncated?): {_one_line(e)}"
        ) from None
    if dtype.hasobject:
        raise DatasetError(f"{path}: object arrays are not allowed (numeric arrays only)")
    if dtype.kind not in "biuf":
        raise DatasetError(f"{path}: non-numeric dtype {dtype} (numeric arrays only)")
    try:
        arr: np.ndarray[Any, Any] = np.load(
            path, mmap_mode="r" if mmap else None, allow_pickle=False
        )
    except Exception as e:
        raise DatasetError(
            f"{path}: unreadable .npy file (corrupt or truncated?): {_one_line(e)}"
        ) from None
    return arr


def _integers(arr: np.ndarray[Any, Any], path: Path, what: str) -> np.ndarray[Any, Any]:
    """1-D integer (or integer-valued float) array -> int64, refusing anything inexact."""
    if arr.ndim != 1:
        raise DatasetError(f"{path}: {what} must be a 1-D array, got shape {arr.shape}")
    problem = int64_problem(arr)
    if problem is not None:
        raise DatasetError(f"{path}: {what} must be integers (int64): {problem}")
    return np.array(arr, dtype=np.int64)


def _meta_order(order: list[str] | None, items: dict[str, Any]) -> dict[str, Any]:
    """Reorder ``items`` as listed in ``order`` when that lists exactly the same names."""
    if order is not None and sorted(order) == sorted(items):
        return {k: items[k] for k in order}
    return items


def _folder_name(root: Path) -> str:
    """The folder's name as a printable string (undecodable bytes replaced)."""
    name = root.resolve().name
    return os.fsencode(name).decode("utf-8", "replace") if has_surrogate(name) else name


# --------------------------------------------------------------------------------------------
# load / save
# --------------------------------------------------------------------------------------------


def _check_min_modalities(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise DatasetError(f"min_modalities must be an integer >= 1, got {value!r}")
    return value


class _Shards:
    """A shard folder seen through the array interface :func:`_load_features` needs."""

    def __init__(self, path: Path) -> None:
        from centrobind.data.store import ModalityStore

        self.store = ModalityStore(path)
        self.ndim = 2
        self.shape = (self.store.n_rows, self.store.dim)

    def read(self) -> np.ndarray[Any, Any]:
        return self.store.read(0, self.store.n_rows)


def _shards(path: Path) -> Any:
    return _Shards(path)


def _load_features(
    order: list[str], files: dict[str, Path], mod_dir: Path, mmap: bool
) -> tuple[dict[str, np.ndarray[Any, Any]], np.ndarray[Any, Any]]:
    """Features (float32 ``[N, D_m]``, missing rows 0) and presence mask (bool ``[M, N]``)."""
    feats: dict[str, np.ndarray[Any, Any]] = {}
    present: list[np.ndarray[Any, Any]] = []
    n = -1
    first: Path | None = None
    for m in order:
        p = files[m]
        arr = _read_npy(p, mmap) if not p.is_dir() else _shards(p)
        if arr.ndim != 2:
            raise DatasetError(
                f"{p}: features must be a 2-D array [N, D], got {arr.ndim}-D shape {arr.shape}"
            )
        if first is None:
            n, first = arr.shape[0], p
            if n == 0:
                raise DatasetError(f"{p}: empty dataset (0 rows)")
        elif arr.shape[0] != n:
            raise DatasetError(f"{p}: has {arr.shape[0]} rows but {first} has {n}")
        if arr.shape[1] == 0:
            raise DatasetError(f"{p}: has 0 feature columns")
        with np.errstate(over="ignore", invalid="ignore"):
            x = np.array(arr, dtype=np.float32) if not isinstance(arr, _Shards) else arr.read()
        del arr
        missing = np.isnan(x).all(axis=1)
        bad = ~missing & ~np.isfinite(x).all(axis=1)
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise DatasetError(
                f"{p}: row {row} has NaN/inf (or a value beyond float32 range) in a present "
                "sample (a missing sample must be an all-NaN row)"
            )
        if missing.all():
            raise DatasetError(f"{p}: every row is NaN (modality missing for all samples)")
        x[missing] = 0.0
        feats[m] = x
        present.append(np.asarray(~missing))
    mask = np.stack(present)
    empty = np.flatnonzero(~mask.any(axis=0))
    if len(empty):  # e.g. a manifest row whose every cell was empty or unreadable
        shown = ", ".join(map(str, empty[:5].tolist())) + (", ..." if len(empty) > 5 else "")
        warnings.warn(
            f"{mod_dir}: {len(empty)} sample(s) have no modality present (all-NaN row in every "
            f"file: row {shown}); kept as empty rows, which training and evaluation leave out",
            DatasetWarning,
            stacklevel=4,
        )
    return feats, mask


def load_dataset(
    path: str | os.PathLike[str], mmap: bool = True, min_modalities: int = 2
) -> MultimodalDataset:
    """Load a dataset folder (layout in the module docstring).

    Arrays are memory-mapped (``mmap=True``) while being checked and converted to tensors.
    ``min_modalities`` is the fewest modality files accepted (2 for training; 1 for e.g. a query
    set of a single modality). Ignored entries are reported with :class:`DatasetWarning`.
    """
    try:
        return _load_dataset(path, mmap, min_modalities)
    except DatasetError as e:  # paths may hold newlines etc.: keep the message on one line
        raise DatasetError(printable(str(e))) from None
    except OSError as e:  # e.g. a permission denied on a sub-folder
        raise DatasetError(printable(f"{path}: cannot read dataset: {_one_line(e)}")) from None


def _load_dataset(
    path: str | os.PathLike[str], mmap: bool, min_modalities: int
) -> MultimodalDataset:
    min_modalities = _check_min_modalities(min_modalities)
    root = Path(path)
    if not root.exists():
        raise DatasetError(f"{root}: dataset folder does not exist")
    if not root.is_dir():
        raise DatasetError(f"{root}: not a folder (a dataset is a folder with modalities/*.npy)")
    mod_dir = root / "modalities"
    if not mod_dir.is_dir():
        raise DatasetError(f"{mod_dir}: missing folder (expected one <name>.npy per modality)")
    own, extra = _read_meta(root)
    files, ignored_mods = _listing(mod_dir, shard_folders=True)
    order = _modality_order(root, own.get("modalities"), files, ignored_mods, min_modalities)
    feats, mask = _load_features(order, files, mod_dir, mmap)
    n = int(mask.shape[1])

    ignored = {"modalities": ignored_mods}
    label_files, ignored["labels"] = _listing(root / "labels")
    labels = _load_labels(label_files, n, mmap)
    factor_files, ignored["factors"] = _listing(root / "factors")
    factors = _load_factors(factor_files, n, mmap)
    split_files, ignored["splits"] = _listing(root / "splits")
    splits = _load_splits(split_files, n, mmap)

    labels = _meta_order(own.get("labels"), labels)
    factors = _meta_order(own.get("factors"), factors)
    splits = _meta_order(own.get("splits"), splits)
    name = own.get("name") or _folder_name(root)
    from centrobind.data.dataset import MultimodalDataset

    try:
        ds = MultimodalDataset(
            feats,
            mask=mask,
            labels=labels,
            factors=factors,
            splits=splits,
            name=name,
            meta=extra,
            min_modalities=min_modalities,
            allow_empty_rows=True,  # warned about in _load_features
        )
    except DatasetError as e:  # pragma: no cover - everything is checked above
        raise DatasetError(f"{root}: {e}") from None
    for sub, names in ignored.items():
        if names:
            warnings.warn(
                printable(
                    f"{root / sub}: ignored {', '.join(names)} (not .npy; the dataset reads "
                    f"only {sub}/<name>.npy files)"
                ),
                DatasetWarning,
                stacklevel=2,
            )
    return ds


def _modality_order(
    root: Path,
    listed: list[str] | None,
    files: dict[str, Path],
    ignored_mods: list[str],
    min_modalities: int,
) -> list[str]:
    """The modality order: meta.json's ``modalities`` (``listed``; it must match the .npy files
    exactly), else the files sorted by name; at least ``min_modalities`` of them."""
    mod_dir = root / "modalities"
    if listed is not None:
        for m in listed:
            if m not in files:
                raise DatasetError(f"{mod_dir / (m + '.npy')}: listed in meta.json but missing")
        for m, p in files.items():
            if m not in listed:
                raise DatasetError(f"{p}: not listed in {root / 'meta.json'} 'modalities'")
        order: list[str] = list(listed)
    else:
        order = list(files)
    if len(order) < min_modalities:
        found = ", ".join(p.name for p in files.values()) or "none"
        skipped = f"; ignored (not .npy): {', '.join(ignored_mods)}" if ignored_mods else ""
        raise DatasetError(
            f"{mod_dir}: need at least {min_modalities} modality .npy file"
            f"{'s' if min_modalities > 1 else ''}, found {len(order)} ({found}){skipped}"
        )
    return order


def _load_labels(files: dict[str, Path], n: int, mmap: bool) -> dict[str, np.ndarray[Any, Any]]:
    """int64 ``[N]`` labels per task from ``labels/<task>.npy``."""
    labels: dict[str, np.ndarray[Any, Any]] = {}
    for task, p in files.items():
        y = _integers(_read_npy(p, mmap), p, "labels")
        if y.shape[0] != n:
            raise DatasetError(f"{p}: has {y.shape[0]} labels, expected {n} (number of samples)")
        labels[task] = y
    return labels


def _load_factors(files: dict[str, Path], n: int, mmap: bool) -> dict[str, np.ndarray[Any, Any]]:
    """Finite float32 ``[N, k]`` factors per group from ``factors/<group>.npy`` (1-D -> k = 1)."""
    factors: dict[str, np.ndarray[Any, Any]] = {}
    for group, p in files.items():
        arr = _read_npy(p, mmap)
        if arr.ndim == 1:
            arr = arr.reshape(-1, 1)
        if arr.ndim != 2:
            raise DatasetError(f"{p}: factors must be a 2-D array [N, k], got shape {arr.shape}")
        if arr.shape[0] != n:
            raise DatasetError(f"{p}: has {arr.shape[0]} rows, expected {n} (number of samples)")
        if arr.shape[1] == 0:
            raise DatasetError(f"{p}: has 0 columns")
        with np.errstate(over="ignore", invalid="ignore"):
            f = np.array(arr, dtype=np.float32)
        if not np.isfinite(f).all():
            raise DatasetError(f"{p}: factors contain NaN/inf (or values beyond float32 range)")
        factors[group] = f
    return factors


def _load_splits(files: dict[str, Path], n: int, mmap: bool) -> dict[str, np.ndarray[Any, Any]]:
    """int64 row indices per split from ``splits/<split>.npy`` (in range, no duplicates)."""
    splits: dict[str, np.ndarray[Any, Any]] = {}
    for split, p in files.items():
        s = _integers(_read_npy(p, mmap), p, "split indices")
        out = (s < 0) | (s >= n)
        if out.any():
            raise DatasetError(f"{p}: index {int(s[out][0])} out of range for {n} samples")
        uniq, counts = np.unique(s, return_counts=True)
        if (counts > 1).any():
            raise DatasetError(f"{p}: duplicate index {int(uniq[counts > 1][0])} in split")
        splits[split] = s
    return splits


_NOT_IN_NAMES = {c for c in ("/", "\0", os.sep, os.altsep) if c}


def _check_name(name: str, kind: str) -> None:
    """Refuse a name that cannot be a ``<name>.npy`` file the loader reads back as ``name``."""
    if (
        not name
        or name.startswith(".")
        or any(c in name for c in _NOT_IN_NAMES)
        or has_surrogate(name)
        or _control_char(name) is not None
        or len(name.encode("utf-8")) > 250
    ):
        raise DatasetError(f"cannot save {kind} {name!r}: not usable as a file name")


def save_dataset(
    ds: MultimodalDataset, path: str | os.PathLike[str], overwrite: bool = False
) -> Path:
    """Write ``ds`` as a dataset folder (missing rows as NaN) so that loading it gives ``ds`` back.

    ``ds.meta`` is written into ``meta.json`` beside the loader's own keys. Refuses to write into
    a folder that already holds a dataset unless ``overwrite=True``, in which case its
    ``meta.json`` and ``.npy`` files in the dataset sub-folders are removed first (other entries,
    e.g. ``items/``, are left alone). Returns the folder path.
    """
    try:
        return _save_dataset(ds, Path(path), overwrite)
    except DatasetError as e:  # paths may hold newlines etc.: keep the message on one line
        raise DatasetError(printable(str(e))) from None
    except OSError as e:  # disk full, permission denied, ...
        raise DatasetError(printable(f"{path}: cannot write dataset: {_one_line(e)}")) from None


def _save_dataset(ds: MultimodalDataset, root: Path, overwrite: bool) -> Path:
    if root.exists() and not root.is_dir():
        raise DatasetError(f"{root}: exists and is not a folder")
    for kind, names in (
        ("modality", ds.modalities),
        ("label", list(ds.labels)),
        ("factor", list(ds.factors)),
        ("split", list(ds.splits)),
    ):
        for nm in names:
            _check_name(nm, kind)
    extra = check_meta(ds.meta, "dataset meta")
    clash = sorted(set(extra) & set(RESERVED_META_KEYS))
    if clash:
        raise DatasetError(f"dataset meta: key(s) {clash} are reserved for the loader")
    meta = {
        "format": FORMAT,
        "name": ds.name,
        "modalities": list(ds.modalities),
        "labels": list(ds.labels),
        "factors": list(ds.factors),
        "splits": list(ds.splits),
        **extra,
    }
    try:
        text = json.dumps(meta, indent=2) + "\n"
    except (TypeError, ValueError, RecursionError) as e:
        raise DatasetError(f"dataset meta: not JSON-serialisable: {_one_line(e)}") from None
    existing: list[Path] = [root / "meta.json"] if os.path.lexists(root / "meta.json") else []
    for d in _SUBDIRS:
        if (root / d).is_dir():
            existing += [p for p in (root / d).iterdir() if p.suffix == ".npy"]
    if existing:
        if not overwrite:
            raise DatasetError(
                f"{root}: already contains a dataset ({existing[0].name}); pass overwrite=True"
            )
        for p in existing:
            if p.is_dir() and not p.is_symlink():
                raise DatasetError(f"{p}: is a folder; remove it by hand")
            p.unlink()
    for d in _SUBDIRS:
        (root / d).mkdir(parents=True, exist_ok=True)
    for i, m in enumerate(ds.modalities):
        x = ds.features[m].detach().cpu().float().numpy().copy()
        x[~ds.mask[i].cpu().numpy()] = np.nan
        np.save(root / "modalities" / f"{m}.npy", x)
    for k, v in ds.labels.items():
        np.save(root / "labels" / f"{k}.npy", v.detach().cpu().numpy().astype(np.int64))
    for k, v in ds.factors.items():
        np.save(root / "factors" / f"{k}.npy", v.detach().cpu().numpy().astype(np.float32))
    for k, v in ds.splits.items():
        np.save(root / "splits" / f"{k}.npy", v.detach().cpu().numpy().astype(np.int64))
    (root / "meta.json").write_text(text, encoding="utf-8")
    from centrobind.digests import record_digests

    record_digests(root)
    return root
