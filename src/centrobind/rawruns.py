"""Raw-item manifests as run data: which column is decoded how, given the run's towers.

``centrobind train --data manifest.csv`` trains on a featurize manifest directly. Each modality
column is read according to its tower (:func:`column_plan`):

- a raw-item tower (``conv1d``, ``cnn``, ``bow``, ``module:...``) gets the column's decoded items
  (images, WAV, per-item ``.npy`` arrays, hashed words; :mod:`centrobind.data.raw`);
- ``backbone:SPEC`` frozen (the default) gets the encoder's features, computed once; trainable
  (``freeze=false`` / ``train_last=K``) gets the encoder's own preprocessing of each item;
- ``mlp`` / ``identity`` (and no tower named) get features of the column's default featurize
  encoder (text ``minilm``, images ``pixels``, audio ``logmel``), or the flattened array of a
  ``.npy`` column: what ``centrobind featurize`` + ``train`` would give.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .data.raw import ColumnPlan, check_manifest, load_raw
from .errors import CentrobindError, ConfigError
from .towers import DATA_OPTIONS, parse_tower_spec

__all__ = ["MANIFEST_SUFFIXES", "column_plan", "is_manifest", "load_manifest_dataset", "plans_for"]

MANIFEST_SUFFIXES = (".csv", ".tsv", ".jsonl", ".ndjson", ".parquet", ".pq")
_RAW_KIND = {"text": "text", "image": "image", "audio": "audio", "array": "array"}


def is_manifest(data: Any) -> bool:
    """Whether ``data`` names a manifest file (by suffix) rather than a dataset folder."""
    return isinstance(data, (str, Path)) and Path(data).suffix.lower() in MANIFEST_SUFFIXES


def column_kind(cells: Sequence[str | None]) -> str:
    """``array`` for a column of ``.npy`` files, else featurize's kind (image, audio, text)."""
    from .featurize.manifest import column_kind as featurize_kind

    present = [c for c in cells if c is not None]
    if present and all(Path(c).suffix.lower() == ".npy" for c in present):
        return "array"
    return featurize_kind(list(cells))


def column_plan(spec: str | None, kind: str) -> ColumnPlan:
    """How a column of ``kind`` (text, image, audio, array) is read for tower ``spec``."""
    from .featurize.core import DEFAULT_ENCODERS

    s = parse_tower_spec(spec or "mlp")
    data_opts = {k: v for k, v in s.options.items() if k in (*DATA_OPTIONS, "vocab")}
    data_opts.pop("augment", None)
    if s.name == "backbone":
        if s.freeze:
            return ColumnPlan("features", spec=s.arg)
        return ColumnPlan("backbone", {"random": bool(s.options.get("random"))}, spec=s.arg)
    if s.name in ("mlp", "identity") and kind != "array":
        return ColumnPlan("features", spec=DEFAULT_ENCODERS[kind])
    if s.name == "bow" and kind != "text":
        raise ConfigError(f"tower {spec!r} reads texts, but the column holds {kind} items")
    if s.name in ("conv1d", "cnn") and kind == "text":
        raise ConfigError(f"tower {spec!r} reads {kind} files or arrays, not texts")
    return ColumnPlan(_RAW_KIND[kind], data_opts)


def plans_for(
    manifest: str | Path, towers: Mapping[str, Any], labels: Sequence[str]
) -> dict[str, ColumnPlan]:
    """The plan of every modality column (every column that is not a label)."""
    from .featurize.manifest import read_manifest

    man = read_manifest(manifest)
    unknown = [m for m in towers if m not in man.columns]
    if unknown:
        raise ConfigError(
            f"towers name {unknown[0]!r}, which is not a column of {man.path} "
            f"(columns: {', '.join(man.columns)})"
        )
    mods = [c for c in man.columns if c not in labels]
    return {m: column_plan(towers.get(m), column_kind(man.columns[m])) for m in mods}


def load_manifest_dataset(
    manifest: str | Path,
    towers: Mapping[str, Any],
    labels: Sequence[str] = (),
    device: str = "cpu",
    saved: Mapping[str, Any] | None = None,
) -> Any:
    """The manifest's rows as an in-memory dataset (:func:`centrobind.data.raw.load_raw`),
    read as the towers need. ``saved``: the ``raw`` record of an existing run: the manifest
    must not have changed since it started (one line otherwise)."""
    if saved is not None and "sha256" in saved:
        check_manifest(saved, manifest)
    if not Path(manifest).is_file():
        raise CentrobindError(f"{manifest}: manifest not found")
    return load_raw(manifest, plans_for(manifest, towers, labels), labels, device=device)
