"""Raw-item manifests as run data: which column is decoded how, given the run's towers.

``centrobind train --data manifest.csv`` trains on a featurize manifest directly. Each modality
column is read according to its tower (:func:`column_plan`):

- a raw-item tower (``conv1d``, ``cnn``, ``bow``, ``module:...``) gets the column's decoded items
  (images, WAV, per-item ``.npy`` arrays, hashed words; :mod:`centrobind.data.raw`);
- ``backbone:SPEC`` frozen (the default) gets the encoder's features, computed once; trainable
  (``freeze=false`` / ``train_last=K``) gets the encoder's own preprocessing of each item
  (images; texts tokenised to ids + mask, ``length``; audio clips of ``seconds``);
- ``mlp`` / ``identity`` (and no tower named) get features of the column's default featurize
  encoder (text ``minilm``, images ``imstats``, audio ``logmel``), or the flattened array of a
  ``.npy`` column: what ``centrobind featurize`` + ``train`` would give.

``--loader memory``/``auto`` decodes every item once into memory (:func:`load_manifest_dataset`);
``--loader stream`` streams them, decoded with augmentation by ``--workers`` processes while
the model trains (:func:`open_manifest`, :func:`prepare_raw_stream`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from torch import Tensor

from .config import TrainConfig
from .data.raw import ColumnPlan, RawData, RawSource, check_manifest, load_raw, open_raw
from .data.source import make_order
from .distributed import resolve_device
from .errors import CentrobindError, ConfigError
from .towers import DATA_OPTIONS, parse_tower_spec

if TYPE_CHECKING:
    from .pipeline import Streamed

__all__ = [
    "MANIFEST_SUFFIXES",
    "column_plan",
    "is_manifest",
    "load_manifest_dataset",
    "manifest_fingerprint",
    "open_manifest",
    "plans_for",
    "prepare_raw_stream",
]

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
        return ColumnPlan(
            "backbone", {**data_opts, "random": bool(s.options.get("random"))}, spec=s.arg
        )
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


def open_manifest(
    manifest: str | Path,
    towers: Mapping[str, Any],
    labels: Sequence[str] = (),
    saved: Mapping[str, Any] | None = None,
) -> RawData:
    """The manifest opened for streaming (:func:`centrobind.data.raw.open_raw`), read as the
    towers need; ``saved`` as in :func:`load_manifest_dataset`."""
    if saved is not None and "sha256" in saved:
        check_manifest(saved, manifest)
    if not Path(manifest).is_file():
        raise CentrobindError(f"{manifest}: manifest not found")
    return open_raw(manifest, plans_for(manifest, towers, labels), labels)


def prepare_raw_stream(raw: RawData, splits: dict[str, Tensor], cfg: TrainConfig) -> Streamed:
    """Training rows streamed from raw items (:class:`~centrobind.data.raw.RawSource`: decoded
    with augmentation by ``cfg.workers`` worker processes), the (capped) validation rows decoded
    once into memory. Not standardised: raw items go to their towers as decoded, and features of
    frozen encoders as computed."""
    from .pipeline import Streamed, cap_rows

    source = RawSource(
        raw,
        rows=splits["train"].numpy(),
        order=make_order(cfg.row_order, cfg.block_rows, cfg.shuffle_blocks),
        workers=cfg.workers,
        device=resolve_device(cfg.device),
    )
    val_rows = cap_rows(splits["val"], cfg.val_rows, cfg.seed)
    val = raw.take(val_rows.numpy()) if len(val_rows) >= 2 else None
    return Streamed(source, val, None)


def manifest_fingerprint(ds: Any) -> str | None:
    """``"m2:" + sha256`` of the manifest behind raw-item data (None for other data)."""
    raw = (getattr(ds, "meta", None) or {}).get("raw")
    return f"m2:{raw['sha256']}" if isinstance(raw, dict) and raw.get("sha256") else None
