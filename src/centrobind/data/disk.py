"""Dataset folders on disk.

Layout (all arrays are ``.npy`` files; only ``modalities/`` is required)::

    <folder>/
      meta.json                 optional: {"name": "...", "modalities": ["a", "b", ...]}
      modalities/<name>.npy     float [N, D_m], one file per modality (at least 2)
      labels/<task>.npy         int [N] (floats allowed if every value is an integer)
      factors/<group>.npy       float [N, k] true latent factors ([N] is read as [N, 1])
      splits/<split>.npy        int indices into [0, N), no duplicates within a split

Modality order: the order listed in ``meta.json`` ``"modalities"`` if present (it must then name
exactly the files in ``modalities/``), otherwise sorted by name (Python string order of the file
stems). Labels, factors and splits are read sorted by name, unless ``meta.json`` lists exactly
those names under ``"labels"``/``"factors"``/``"splits"`` (as :func:`save_dataset` writes). The
dataset name is ``meta.json`` ``"name"`` if present, else the folder name. A row that is entirely
NaN marks that sample's modality missing; any other NaN/inf is an error. Files not ending in
``.npy`` are ignored.

Every problem raises :class:`~centrobind.errors.DatasetError` with a one-line message naming the
file and the problem.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from centrobind.errors import DatasetError

if TYPE_CHECKING:  # torch is imported only once the folder has been checked (fast CLI errors)
    from centrobind.data.dataset import MultimodalDataset

__all__ = ["load_dataset", "save_dataset"]

_SUBDIRS = ("modalities", "labels", "factors", "splits")
FORMAT = "centrobind-dataset/1"


def _one_line(e: BaseException | str) -> str:
    return " ".join(str(e).split())


def _read_npy(path: Path, mmap: bool) -> np.ndarray:
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
        arr = np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except Exception as e:
        raise DatasetError(
            f"{path}: unreadable .npy file (corrupt or truncated?): {_one_line(e)}"
        ) from None
    return arr


def _npy_files(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    files = (p for p in folder.iterdir() if p.suffix == ".npy" and p.is_file())
    return sorted(files, key=lambda p: p.stem)


def _read_meta(root: Path) -> dict[str, Any]:
    path = root / "meta.json"
    if not path.exists():
        return {}
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DatasetError(f"{path}: invalid JSON: {_one_line(e)}") from None
    if not isinstance(meta, dict):
        raise DatasetError(f"{path}: expected a JSON object")
    mods = meta.get("modalities")
    if mods is not None and (
        not isinstance(mods, list) or not all(isinstance(m, str) and m for m in mods)
    ):
        raise DatasetError(f"{path}: 'modalities' must be a list of modality names")
    if mods is not None and len(set(mods)) != len(mods):
        raise DatasetError(f"{path}: 'modalities' lists a name twice")
    if meta.get("name") is not None and not isinstance(meta["name"], str):
        raise DatasetError(f"{path}: 'name' must be a string")
    return meta


def _integers(arr: np.ndarray, path: Path, what: str) -> np.ndarray:
    """1-D integer (or integer-valued float) array -> int64."""
    if arr.ndim != 1:
        raise DatasetError(f"{path}: {what} must be a 1-D array, got shape {arr.shape}")
    if arr.dtype.kind == "f":
        a = np.asarray(arr, dtype=np.float64)
        if not np.isfinite(a).all():
            raise DatasetError(f"{path}: {what} contain NaN/inf; integers are required")
        frac = a != np.round(a)
        if frac.any():
            i = int(np.flatnonzero(frac)[0])
            raise DatasetError(
                f"{path}: float {what} with non-integer values "
                f"(e.g. {float(a[i])!r} at position {i}); integers are required"
            )
    return np.array(arr, dtype=np.int64)


def _meta_order(meta: dict[str, Any], key: str, items: dict[str, Any]) -> dict[str, Any]:
    """Reorder ``items`` as listed in ``meta[key]`` when that lists exactly the same names."""
    order = meta.get(key)
    if isinstance(order, list) and sorted(map(str, order)) == sorted(items):
        return {k: items[k] for k in order}
    return items


def load_dataset(
    path: str | os.PathLike[str], mmap: bool = True, min_modalities: int = 2
) -> MultimodalDataset:
    """Load a dataset folder (layout in the module docstring).

    ``min_modalities=1`` accepts a folder with one modality (for embedding/search queries).

    Arrays are memory-mapped (``mmap=True``) while being checked and converted to tensors.
    """
    root = Path(path)
    if not root.exists():
        raise DatasetError(f"{root}: dataset folder does not exist")
    if not root.is_dir():
        raise DatasetError(f"{root}: not a folder (a dataset is a folder with modalities/*.npy)")
    mod_dir = root / "modalities"
    if not mod_dir.is_dir():
        raise DatasetError(f"{mod_dir}: missing folder (expected one <name>.npy per modality)")
    meta = _read_meta(root)
    files = {p.stem: p for p in _npy_files(mod_dir)}
    order = meta.get("modalities")
    if order is not None:
        for m in order:
            if m not in files:
                raise DatasetError(f"{mod_dir / (m + '.npy')}: listed in meta.json but missing")
        for m, p in files.items():
            if m not in order:
                raise DatasetError(f"{p}: not listed in {root / 'meta.json'} 'modalities'")
    else:
        order = list(files)
    if len(order) < max(min_modalities, 1):
        found = ", ".join(p.name for p in files.values()) or "none"
        raise DatasetError(
            f"{mod_dir}: need at least {min_modalities} modality .npy files, "
            f"found {len(order)} ({found})"
        )

    feats: dict[str, np.ndarray] = {}
    present: list[np.ndarray] = []
    n = -1
    first: Path | None = None
    for m in order:
        p = files[m]
        arr = _read_npy(p, mmap)
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
            x = np.array(arr, dtype=np.float32)
        del arr
        missing = np.isnan(x).all(axis=1)
        bad = ~missing & ~np.isfinite(x).all(axis=1)
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise DatasetError(
                f"{p}: row {row} has NaN/inf in a present sample "
                "(a missing sample must be an all-NaN row)"
            )
        if missing.all():
            raise DatasetError(f"{p}: every row is NaN (modality missing for all samples)")
        x[missing] = 0.0
        feats[m] = x
        present.append(~missing)
    mask = np.stack(present)
    empty = ~mask.any(axis=0)
    if empty.any():
        row = int(np.flatnonzero(empty)[0])
        raise DatasetError(
            f"{mod_dir}: sample {row} has no modality present (all-NaN row in every file)"
        )

    labels: dict[str, np.ndarray] = {}
    for p in _npy_files(root / "labels"):
        y = _integers(_read_npy(p, mmap), p, "labels")
        if y.shape[0] != n:
            raise DatasetError(f"{p}: has {y.shape[0]} labels, expected {n} (number of samples)")
        labels[p.stem] = y
    factors: dict[str, np.ndarray] = {}
    for p in _npy_files(root / "factors"):
        arr = _read_npy(p, mmap)
        if arr.ndim == 1:
            arr = arr.reshape(-1, 1)
        if arr.ndim != 2:
            raise DatasetError(f"{p}: factors must be a 2-D array [N, k], got shape {arr.shape}")
        if arr.shape[0] != n:
            raise DatasetError(f"{p}: has {arr.shape[0]} rows, expected {n} (number of samples)")
        with np.errstate(over="ignore", invalid="ignore"):
            f = np.array(arr, dtype=np.float32)
        if not np.isfinite(f).all():
            raise DatasetError(f"{p}: factors contain NaN/inf")
        factors[p.stem] = f
    splits: dict[str, np.ndarray] = {}
    for p in _npy_files(root / "splits"):
        s = _integers(_read_npy(p, mmap), p, "split indices")
        out = (s < 0) | (s >= n)
        if out.any():
            raise DatasetError(f"{p}: index {int(s[out][0])} out of range for {n} samples")
        uniq, counts = np.unique(s, return_counts=True)
        if (counts > 1).any():
            raise DatasetError(f"{p}: duplicate index {int(uniq[counts > 1][0])} in split")
        splits[p.stem] = s

    labels = _meta_order(meta, "labels", labels)
    factors = _meta_order(meta, "factors", factors)
    splits = _meta_order(meta, "splits", splits)
    name = meta.get("name") or root.resolve().name
    from centrobind.data.dataset import MultimodalDataset

    try:
        return MultimodalDataset(
            feats,
            mask=mask,
            labels=labels,
            factors=factors,
            splits=splits,
            name=name,
            min_modalities=min_modalities,
        )
    except DatasetError as e:  # pragma: no cover - everything is checked above
        raise DatasetError(f"{root}: {e}") from None


def _check_name(name: str, kind: str) -> None:
    if not name or name.startswith(".") or any(c in name for c in "/\\\0"):
        raise DatasetError(f"cannot save {kind} {name!r}: not usable as a file name")


def save_dataset(
    ds: MultimodalDataset, path: str | os.PathLike[str], overwrite: bool = False
) -> Path:
    """Write ``ds`` as a dataset folder (missing rows as NaN) so that loading it gives ``ds`` back.

    Refuses to write into a folder that already holds a dataset unless ``overwrite=True``, in
    which case its ``meta.json`` and ``.npy`` files in the dataset sub-folders are removed first.
    Returns the folder path.
    """
    root = Path(path)
    if root.exists() and not root.is_dir():
        raise DatasetError(f"{root}: exists and is not a folder")
    for kind, names in (
        ("modality", ds.modalities),
        ("label", ds.labels),
        ("factor", ds.factors),
        ("split", ds.splits),
    ):
        for nm in names:
            _check_name(nm, kind)
    existing = [root / "meta.json"] + [p for d in _SUBDIRS for p in _npy_files(root / d)]
    existing = [p for p in existing if p.exists()]
    if existing:
        if not overwrite:
            raise DatasetError(
                f"{root}: already contains a dataset ({existing[0].name}); pass overwrite=True"
            )
        for p in existing:
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
    meta = {
        "format": FORMAT,
        "name": ds.name,
        "modalities": list(ds.modalities),
        "labels": list(ds.labels),
        "factors": list(ds.factors),
        "splits": list(ds.splits),
    }
    (root / "meta.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    return root
