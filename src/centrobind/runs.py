"""Run folders: train a Binder on a dataset into one, then evaluate it or embed new data with it.

The training itself is :mod:`centrobind.pipeline` (shared with the benchmark, which writes no run
folder); this module is the folder format around it and owns the ``--resume`` contract
(:func:`resume_config`).

Layout of ``runs/<name>/`` (stable):

- ``config.json``        the :class:`~centrobind.train.TrainConfig` of the run
- ``run.json``           dataset name, modalities and dims, split sizes, fit summary
- ``model.safetensors``  final weights (``model.*``), normalisation statistics (``standardizer.*``),
  objective parameters (``objective.*``)
- ``splits.safetensors`` the row indices of ``train``/``val``/``test`` used (so ``evaluate`` scores
  the same held-out rows)
- ``checkpoints/``       ``latest.safetensors`` (resumable) and ``best.safetensors`` (best epoch)
- ``log.csv``            per-epoch losses and validation metric
- ``metrics.json``       written by :func:`evaluate_run`
- ``.lock``              the run folder's lock (:class:`~centrobind.runlock.RunLock`), held by
  ``train`` and ``evaluate`` while they write; see docs/reliability.md
"""

from __future__ import annotations

import dataclasses
import json
import os
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from torch import Tensor

from .checkpoint import (
    atomic_write,
    atomic_write_text,
    load_tensors,
    non_finite_tensors,
    prefixed,
    save_tensors,
    unprefixed,
)
from .config import LEGACY_DEFAULTS, PER_INVOCATION, TrainConfig, resume_conflicts
from .data import MultimodalDataset, Standardizer, as_dataset, modality_mask
from .data.fingerprint import fingerprint, legacy_fingerprint
from .data.npywriter import NpyWriter
from .data.ondisk import DiskDataset, open_dataset
from .data.raw import RawData
from .digests import data_digest
from .distributed import barrier, is_main_process, resolve_device
from .errors import CentrobindError, CentrobindWarning, ConfigError
from .eval import evaluate, fused_embedding, label_retrieval, native_leave_one_out, to_builtin
from .memory import check_parameter_memory
from .models import Binder
from .pipeline import (
    Prepared,
    Streamed,
    build_binder,
    build_models,
    build_objective,
    cap_rows,
    check_model_fits,
    check_split_sizes,
    data_fingerprint,
    make_splits,
    open_training_data,
    prepare_data,
    prepare_stream,
)
from .rawruns import (
    is_manifest,
    load_manifest_dataset,
    manifest_fingerprint,
    open_manifest,
    prepare_raw_stream,
)
from .runfolder import (
    check_new_run_dir,
    check_output_file,
    is_run_dir,
    remove_stale_temp_files,
)
from .runlock import RunLock, lock_holder
from .train import DIVERGENCE_HINT, FitResult, fit

__all__ = [
    "Run",
    "init_from_run",
    "is_run_data",
    "train_run",
    "load_run",
    "evaluate_run",
    "embed_run",
    "embed_features",
    "embed_dataset",
    "FUSED_KEY",
    "read_run_config",
    "resume_config",
    "resume_flags",
    "run_device",
]


@dataclass
class Run:
    """A trained run loaded from its folder."""

    path: Path
    config: TrainConfig
    binder: Binder
    standardizer: Standardizer | None
    splits: dict[str, Tensor]
    meta: dict[str, Any]


def read_run_config(
    path: str | Path, device: str | None = None, portable: bool = False
) -> TrainConfig:
    """The :class:`TrainConfig` in ``<run>/config.json``, any defect as one line. ``portable``:
    run on :func:`run_device` (``device``, else the saved device when this machine has it, else
    CPU), e.g. a run trained on ``cuda`` evaluated on a CPU-only machine."""
    file = Path(path) / "config.json"
    if not file.is_file():
        raise CentrobindError(f"{file}: not found (not a run folder?)")
    try:
        raw = json.loads(file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError, OSError) as e:
        why = " ".join(str(e).split())[:160] or type(e).__name__
        raise CentrobindError(f"{file}: not valid JSON ({why})") from None
    if not isinstance(raw, dict):
        raise CentrobindError(f"{file}: expected a JSON object of TrainConfig fields")
    if portable:
        raw["device"] = run_device(raw.get("device", "cpu"), device)
    raw = {**LEGACY_DEFAULTS, **raw}  # a run saved before a field existed trained without it
    try:
        return TrainConfig.from_dict(raw)
    except CentrobindError as e:
        raise CentrobindError(f"{file}: {e}") from None
    except (TypeError, ValueError, KeyError, RecursionError) as e:
        why = " ".join(str(e).split())[:160] or type(e).__name__
        raise CentrobindError(f"{file}: not a valid run config ({why})") from None


def _check_resumed_config(
    run_dir: Path, cfg: TrainConfig, dims: dict[str, int], shapes: dict[str, Any] | None = None
) -> None:
    """Check a resumed run's saved config against its modalities before building anything (a
    config.json edited by hand: an anchor that is not a modality, bad objective options, a model
    too large for this machine), each defect one line naming the file."""
    try:
        check_model_fits(dims, cfg, shapes)
        build_objective(cfg, list(dims))
    except CentrobindError as e:
        raise CentrobindError(f"{run_dir}/config.json: {e}") from None


def run_device(saved: Any, requested: str | None = None) -> Any:
    """The device to load a run on: ``requested`` if given (``auto``: CUDA when available), else
    the saved one when this machine has it, else CPU (a GPU-trained run on a CPU-only machine)."""
    if requested == "auto":
        return str(resolve_device("auto"))
    if requested is not None:
        return requested
    try:
        dev = torch.device(saved)
    except (RuntimeError, TypeError):
        return saved  # not a device: validation names it
    if dev.type == "cuda":
        ok = torch.cuda.is_available() and (dev.index or 0) < torch.cuda.device_count()
        return saved if ok else "cpu"
    if dev.type == "mps":
        return saved if torch.backends.mps.is_available() else "cpu"
    return saved


def _data_state(fp: str, n_rows: int, ds: Any = None) -> dict[str, Any]:
    """Saved with the splits: what ``--resume`` and ``evaluate`` check the data against (for a
    raw-item manifest also its sha256, checked first: one clear line when it changed)."""
    state: dict[str, Any] = {"fingerprint": fp, "n_rows": n_rows}
    raw = (getattr(ds, "meta", None) or {}).get("raw")
    if isinstance(raw, dict):
        state["manifest_sha256"] = raw.get("sha256")
    return state


def _folder(data: str | Path | MultimodalDataset) -> Path | None:
    """The dataset folder ``data`` names (None: in memory or builtin)."""
    if isinstance(data, MultimodalDataset):
        return None
    p = Path(data)
    return p if p.is_dir() else None


def _check_same_data(
    run_dir: Path,
    ds: MultimodalDataset | DiskDataset | RawData,
    what: str,
    folder: Path | None = None,
) -> None:
    """Refuse ``ds`` unless it is the data the run was started on (fingerprint saved with the
    splits: ``d2:`` recorded digests, checked cheaply, or ``b2:`` content; runs of older
    versions: the sum-based one in ``run.json``). ``folder``: where ``ds`` was loaded from."""
    saved: Any = None
    if (run_dir / "splits.safetensors").is_file():
        saved = load_tensors(run_dir / "splits.safetensors")[1].get("fingerprint")
    if saved is None and (run_dir / "run.json").is_file():
        try:
            saved = json.loads((run_dir / "run.json").read_text()).get("fingerprint")
        except (ValueError, RecursionError, AttributeError):
            saved = None
    if not isinstance(saved, str):
        return
    if saved.startswith("m2:"):  # a raw-item manifest: its sha256 (checked when it was opened)
        if manifest_fingerprint(ds) != saved:
            raise CentrobindError(f"{what}: not the manifest this run was trained on")
        return
    root = ds.root if isinstance(ds, DiskDataset) else folder
    if saved.startswith("d2:"):
        now = data_digest(root) if root is not None else None
        if now is None:
            raise CentrobindError(
                f"{what}: the run recorded its data by digests (digests.json), which this data "
                "lacks; record them with `centrobind verify DATA --record` if it is the same data"
            )
    elif isinstance(ds, DiskDataset):
        if not saved.startswith("b2:"):
            raise CentrobindError(f"{what}: this run's old fingerprint needs --loader memory")
        now = ds.scan(fingerprint=True, allow_empty_rows=True).fingerprint or ""
    else:
        now = fingerprint(ds) if saved.startswith("b2:") else legacy_fingerprint(ds)
    if now != saved:
        raise CentrobindError(
            f"{what}: not the data this run was trained on (content fingerprint {now} != "
            f"{saved}: other rows, row order, features, masks or labels)"
        )


def is_run_data(run: Run, ds: MultimodalDataset, folder: Path | None = None) -> bool:
    """True when ``ds`` (loaded from ``folder``, if any) is the dataset ``run`` was trained on
    (same rows, same content: the fingerprint saved with the splits), so ``run.splits`` index
    its rows."""
    if len(ds) != run.meta.get("n_rows"):
        return False
    try:  # (a run so old that it saved no fingerprint passes on its row count alone)
        _check_same_data(run.path, ds, "corpus", folder)
    except CentrobindError:
        return False
    return True


def train_run(
    data: str | Path | MultimodalDataset,
    cfg: TrainConfig,
    out: str | Path,
    resume: bool = False,
    extend_to: int | None = None,
    init_from: str | Path | None = None,
    *,
    labels: Sequence[str] = (),
    encoders: dict[str, torch.nn.Module] | None = None,
) -> tuple[Run, FitResult]:
    """Train on ``data`` (a folder path, a builtin name, a raw-item manifest or a dataset) into
    run folder ``out``:
    split -> standardise -> build -> fit (:func:`~centrobind.pipeline.prepare_data`,
    :func:`~centrobind.pipeline.build_models`, :func:`~centrobind.train.fit`), then write
    ``model.safetensors`` and ``run.json``.

    ``resume`` continues the run in ``out`` with its saved config (of ``cfg`` only the
    :data:`~centrobind.config.PER_INVOCATION` fields are used); ``extend_to`` epochs (more than
    saved) extend it. ``init_from`` (a run folder) warm-starts a
    new run's encoders: :func:`init_from_run`. Under ``torchrun`` rank 0 writes the files.

    A manifest (``.csv``/``.tsv``/``.jsonl``/``.parquet``) is read as its towers need
    (:mod:`centrobind.rawruns`); ``labels`` names its label columns. ``encoders`` gives towers as
    modules (``{"imu": MyConv1d()}``); the config records their specs
    (:func:`~centrobind.towers.tower_spec_of`), so the run loads again where their module imports.

    The folder is locked for the whole training (:class:`~centrobind.runlock.RunLock`, rank
    0). A new run needs an absent or empty folder; ``resume`` needs the same data (content
    fingerprint) and starts from step 0 when the run was killed before its first checkpoint.
    """
    cfg.check()
    out = Path(out)
    if resume and init_from is not None:
        raise ConfigError("--init-from starts a new run; drop it when you --resume")
    if not resume:
        check_new_run_dir(out)  # before loading anything: fail fast
    if encoders:
        cfg = dataclasses.replace(cfg, towers={**cfg.towers, **_module_specs(encoders)})
    if resume and is_manifest(data) and (out / "config.json").is_file():
        cfg = dataclasses.replace(cfg, towers=read_run_config(out).towers)
    ds = _open_data(data, cfg, labels, _saved_manifest(out) if resume else None)
    splits = None
    if not resume:  # every refusal before the folder is created
        splits = make_splits(ds, cfg)
        check_split_sizes(splits)
    barrier()  # every rank has checked the folder before rank 0 locks it
    with RunLock(out, "train", enabled=is_main_process()):
        return _train_locked(ds, data, cfg, out, splits, extend_to, init_from, encoders)


def _module_specs(encoders: dict[str, torch.nn.Module]) -> dict[str, str]:
    """The specs of towers given as modules; warns about one that cannot be imported again."""
    from .towers import tower_spec_of

    specs = {m: tower_spec_of(t) for m, t in encoders.items()}
    for m, spec in specs.items():
        if spec.startswith("module:__main__:") or "<locals>" in spec:
            warnings.warn(
                f"the tower of {m!r} ({spec}) is defined in a script or function: the run trains, "
                "but loading it needs the class in an importable module",
                CentrobindWarning,
                stacklevel=3,
            )
    return specs


def _saved_manifest(out: Path) -> dict[str, Any] | None:
    """The manifest state a raw-item run recorded when it started (None otherwise)."""
    if not (out / "splits.safetensors").is_file():
        return None
    sha = load_tensors(out / "splits.safetensors")[1].get("manifest_sha256")
    return {"sha256": sha} if isinstance(sha, str) else None


def _open_data(
    data: str | Path | MultimodalDataset,
    cfg: TrainConfig,
    labels: Sequence[str] = (),
    saved: dict[str, Any] | None = None,
) -> MultimodalDataset | DiskDataset | RawData:
    """``data`` as training data: a manifest is decoded as ``cfg.towers`` need (``saved``: the
    manifest must be unchanged since the run started), anything else as
    :func:`~centrobind.pipeline.open_training_data`."""
    if is_manifest(data):
        assert isinstance(data, (str, Path))
        if cfg.loader == "stream":
            return open_manifest(data, cfg.towers, labels, saved=saved)
        return cast(MultimodalDataset, load_manifest_dataset(data, cfg.towers, labels, saved=saved))
    if labels:
        raise ConfigError("--label names label columns of a manifest; this data is not one")
    return open_training_data(data, cfg)


def _train_locked(
    ds: MultimodalDataset | DiskDataset | RawData,
    data: str | Path | MultimodalDataset,
    cfg: TrainConfig,
    out: Path,
    splits: dict[str, Tensor] | None,
    extend_to: int | None,
    init_from: str | Path | None,
    encoders: dict[str, torch.nn.Module] | None = None,
) -> tuple[Run, FitResult]:
    """:func:`train_run` while rank 0 holds the folder's lock (``splits`` None: resume).

    The order of its steps (check, write config, fit, write results) is what makes a killed
    run resumable, so it is kept in one place.
    """
    resume = splits is None
    main = is_main_process()
    if main:
        remove_stale_temp_files(out)  # of writes killed earlier; nobody else writes here now
    has_splits = False
    if resume:
        cfg = resume_config(out, extend_to, cfg)
        _check_resumed_config(out, cfg, ds.dims, getattr(ds, "meta", {}).get("shapes") or None)
        _check_same_data(out, ds, str(_data_ref(data) or "the data"), _folder(data))
        has_splits = (out / "splits.safetensors").is_file()
        splits = _load_splits(out) if has_splits else make_splits(ds, cfg)
        check_split_sizes(splits)
    elif main:
        check_new_run_dir(out)  # again under the lock: another run may have started meanwhile
    assert splits is not None
    from_checkpoint = resume and (out / "checkpoints" / "latest.safetensors").is_file()
    if resume and not from_checkpoint:  # killed before its first checkpoint
        warnings.warn(
            f"{out} has no checkpoint yet: training from step 0", CentrobindWarning, stacklevel=3
        )
    prepared: Prepared | Streamed
    if isinstance(ds, DiskDataset):
        prepared = prepare_stream(ds, splits, cfg)
    elif isinstance(ds, RawData):
        prepared = prepare_raw_stream(ds, splits, cfg)
    else:
        prepared = prepare_data(ds, splits, cfg)
    shapes = getattr(ds, "meta", {}).get("shapes") or None
    if not resume:  # (checked above on resume)
        check_model_fits(prepared.train.dims, cfg, shapes)  # counted, not allocated
    binder, objective = build_models(prepared, cfg, encoders, shapes)  # fails before any write
    warm = init_from_run(binder, init_from) if init_from is not None else None
    barrier()  # every rank has checked the folder before rank 0 writes to it
    out.mkdir(parents=True, exist_ok=True)
    if main and resume and extend_to is not None:
        atomic_write_text(out / "config.json", json.dumps(cfg.to_dict(), indent=2))
    if main and not resume:
        atomic_write_text(out / "config.json", json.dumps(cfg.to_dict(), indent=2))
    if main and not has_splits:  # with the data's fingerprint, checked by --resume and evaluate
        fp = manifest_fingerprint(ds) or data_fingerprint(ds, _folder(data))  # type: ignore[arg-type]
        save_tensors(out / "splits.safetensors", dict(splits), _data_state(fp, len(ds), ds))
    result = fit(
        binder, objective, prepared.train, prepared.val, cfg, out_dir=out, resume=from_checkpoint
    )
    std = prepared.std
    tensors = {
        **prefixed("model", binder.state_dict()),
        **prefixed("objective", objective.state_dict()),
    }
    bad = non_finite_tensors(tensors)
    if bad:
        raise CentrobindError(
            f"training ended with non-finite weights ({', '.join(bad[:2])}); model.safetensors "
            f"not written; {DIVERGENCE_HINT}"
        )
    if std is not None:
        tensors.update(prefixed("standardizer", std.state_dict()))
    meta = _run_meta(ds, data, binder, splits, result, out if main else None)
    meta.update(_training_record(out, cfg, result, warm, resume))
    if main:
        save_tensors(out / "model.safetensors", tensors, meta)
        atomic_write_text(out / "run.json", json.dumps(meta, indent=2))
    run = Run(out, cfg, binder, std, splits, meta)
    return run, result


def _run_meta(
    ds: MultimodalDataset | DiskDataset | RawData,
    data: str | Path | MultimodalDataset,
    binder: Binder,
    splits: dict[str, Tensor],
    result: FitResult,
    out: Path | None,
) -> dict[str, Any]:
    """``run.json`` (and ``model.safetensors`` metadata): the data, the model's modalities,
    widths and towers, the fit summary, and for featurized or raw-item data how to read items
    again (``featurizers``, ``shapes``, ``raw``, ``skipped_items``). ``out``: the run folder on
    the rank that writes it (its recorded fingerprint), else None."""
    meta: dict[str, Any] = {
        "dataset": ds.name,
        "data": _data_ref(data),
        "fingerprint": _saved_fingerprint(out) if out is not None else None,
        "loader": "stream" if isinstance(ds, DiskDataset | RawData) else "memory",
        "modalities": binder.modalities,
        "dims": binder.dims,
        "towers": binder.towers,
        "n_rows": len(ds),
        "splits": {k: len(v) for k, v in splits.items()},
        "best_epoch": result.best_epoch,
        "best_val_metric": result.best_metric,
        "train_seconds": result.train_seconds,
        "steps": result.steps,
        "stopped_early": result.stopped_early,
    }
    extra = getattr(ds, "meta", {})
    for key in ("featurizers", "shapes", "raw", "skipped_items"):
        if extra.get(key) or (key == "featurizers" and extra.get(key) is not None):
            meta[key] = extra[key]
    return meta


def _saved_fingerprint(out: Path) -> Any:
    """The data fingerprint the run folder's splits file records."""
    return load_tensors(out / "splits.safetensors")[1].get("fingerprint")


def resume_flags(out: str | Path, given: Mapping[str, Any]) -> int | None:
    """Check the config fields a resuming command line sets (``given``, e.g. the original command
    plus ``--resume``) against the run in ``out`` (:func:`~centrobind.config.resume_conflicts`):
    flags equal to the saved config are fine, a conflicting one is refused, named. Returns the
    epochs to extend the run to (``--epochs`` above the saved ones), else None. Nothing to check
    without ``out/config.json`` (:func:`resume_config` refuses that)."""
    path = Path(out) / "config.json"
    if not path.is_file():
        return None
    saved = read_run_config(out)  # any defect of config.json as one line
    asked = TrainConfig.from_dict({**saved.to_dict(), **given})
    bad = set(resume_conflicts(saved.to_dict(), asked))
    conflicts = [
        f"--{k.replace('_', '-')} ({getattr(asked, k)!r}, saved {getattr(saved, k)!r})"
        for k in given
        if k in bad
    ]
    if conflicts:
        raise CentrobindError(
            f"--resume continues the run exactly as configured in {path}; "
            f"drop {', '.join(conflicts)} (only a larger --epochs, to extend it, may differ)"
        )
    return asked.epochs if asked.epochs > saved.epochs else None


def resume_config(out: Path, extend_to: int | None, asked: TrainConfig) -> TrainConfig:
    """The config a resumed run trains with: the saved one in ``out/config.json``, with
    ``extend_to`` epochs when given (at least the saved ones: a run is extended, not shortened)
    and ``asked``'s :data:`~centrobind.config.PER_INVOCATION` fields."""
    if not (out / "config.json").is_file():
        raise CentrobindError(
            f"--resume: {out}/config.json not found; nothing to resume (drop --resume)"
        )
    saved = read_run_config(out)  # any defect as one line
    cfg = dataclasses.replace(saved, **{k: getattr(asked, k) for k in PER_INVOCATION})
    cfg = dataclasses.replace(cfg, epochs=extend_to) if extend_to is not None else cfg
    if resume_conflicts(saved.to_dict(), cfg):  # only a smaller extend_to can break the rule
        raise ConfigError(
            f"--resume: --epochs {extend_to} is below the saved {saved.epochs}; a run can be "
            "extended, not shortened"
        )
    return cfg


def _training_record(
    out: Path, cfg: TrainConfig, result: FitResult, warm: dict[str, Any] | None, resume: bool
) -> dict[str, Any]:
    """The ``run.json`` keys about how the run trained: ``device`` used, ``val_gallery`` (rows
    the validation R@1 searched), ``init_from`` and ``extended`` (kept across resumes)."""
    before: dict[str, Any] = {}
    if resume and (out / "run.json").is_file():
        try:
            before = dict(json.loads((out / "run.json").read_text()))
        except (ValueError, TypeError, RecursionError):
            before = {}  # unreadable: rewritten below
    rec: dict[str, Any] = {"device": result.device, "val_gallery": result.val_gallery}
    rec["val_metric"] = result.val_metric  # what best_val_metric measures (R@1 or MRR x 100)
    if warm is not None or "init_from" in before:
        rec["init_from"] = warm if warm is not None else before["init_from"]
    extended = list(before.get("extended", []))
    if result.schedule_start and all(e["at_step"] != result.schedule_start for e in extended):
        extended.append({"at_step": result.schedule_start, "epochs": cfg.epochs})
    if extended:
        rec["extended"] = extended
    return rec


def init_from_run(binder: Binder, source: str | Path) -> dict[str, Any]:
    """Warm-start ``binder`` from the run folder ``source``: every modality both have gets that
    run's encoder weights (same input width and encoder shape, else a one-line error); the
    others stay freshly initialised. Returns ``{"run", "loaded", "fresh"}`` for ``run.json``."""
    src = load_run(source)
    loaded = [m for m in binder.modalities if m in src.binder.modalities]
    if not loaded:
        raise ConfigError(
            f"--init-from {source}: no modality in common (that run: "
            f"{src.binder.modalities}, this data: {binder.modalities})"
        )
    for m in loaded:
        if src.binder.dims[m] != binder.dims[m]:
            raise ConfigError(
                f"--init-from {source}: modality {m!r} has width {binder.dims[m]} here but "
                f"{src.binder.dims[m]} in that run"
            )
        theirs, ours = src.binder.encoders[m].state_dict(), binder.encoders[m].state_dict()
        bad = [k for k in ours if k not in theirs or theirs[k].shape != ours[k].shape]
        if bad or len(theirs) != len(ours):
            raise ConfigError(
                f"--init-from {source}: the encoder of {m!r} has another shape there "
                "(use that run's --embed-dim, --hidden and --depth)"
            )
        binder.encoders[m].load_state_dict(theirs)
    fresh = [m for m in binder.modalities if m not in loaded]
    return {"run": str(Path(source).resolve()), "loaded": loaded, "fresh": fresh}


def _data_ref(data: str | Path | MultimodalDataset) -> str | None:
    """How ``evaluate`` finds the training data again: a builtin name or an absolute path."""
    if isinstance(data, MultimodalDataset):
        return None
    p = Path(data)
    return str(p.resolve()) if p.exists() else str(data)


def _load_splits(path: Path) -> dict[str, Tensor]:
    tensors, _ = load_tensors(path / "splits.safetensors")
    return {k: tensors.get(k, torch.empty(0, dtype=torch.long)) for k in ("train", "val", "test")}


def _refuse_unfinished(path: Path) -> None:
    """A run folder without its final model: still training (its lock is held), or stopped
    before the end (continue it with ``--resume``)."""
    holder = lock_holder(path)
    if holder is not None:
        doing = "is still training" if holder.startswith("train ") else "is in use"
        raise CentrobindError(f"{path} {doing} ({holder}); its model is written when training ends")
    if is_run_dir(path):
        raise CentrobindError(
            f"{path}: training did not finish (no model.safetensors yet); continue it with "
            f"centrobind train --out {path} --resume (and its --data)"
        )


def load_run(path: str | Path, device: str | None = None) -> Run:
    """Load a run folder written by :func:`train_run` (safetensors + JSON only) onto ``device``
    (default: the saved device when this machine has it, else CPU; see :func:`run_device`)."""
    path = Path(path)
    if (path / "config.json").is_file() and not (path / "model.safetensors").is_file():
        _refuse_unfinished(path)
    if not (path / "config.json").is_file() or not (path / "model.safetensors").is_file():
        raise CentrobindError(f"{path}: not a run folder (needs config.json and model.safetensors)")
    cfg = read_run_config(path, device, portable=True)
    tensors, meta = load_tensors(path / "model.safetensors")
    try:
        dims = {str(m): int(d) for m, d in meta["dims"].items()}
    except (KeyError, TypeError, ValueError, AttributeError):
        raise CentrobindError(
            f"{path}/model.safetensors: no valid 'dims' in its metadata"
        ) from None
    shapes = meta.get("shapes") if isinstance(meta.get("shapes"), dict) else None
    binder = _load_binder(path, cfg, dims, unprefixed("model", tensors), shapes)
    try:
        std_sd = unprefixed("standardizer", tensors)
        std = Standardizer.from_state_dict(std_sd) if std_sd else None
    except (KeyError, RuntimeError, ValueError) as e:
        raise CentrobindError(f"{path}/model.safetensors {_mismatch(e)}") from None
    return Run(path, cfg, binder, std, _load_splits(path), meta)


def _load_binder(
    path: Path,
    cfg: TrainConfig,
    dims: dict[str, int],
    weights: dict[str, Tensor],
    shapes: dict[str, Any] | None = None,
) -> Binder:
    """The run's Binder, built once: on the ``meta`` device (nothing allocated) to check the saved
    config (the anchor that evaluation needs, the memory for 2 copies of the weights; no objective
    is built to load a model), then materialised on the run's device and filled with
    ``weights``. Towers that load a network (``backbone:``, ``module:``) are built on the CPU
    instead: their constructors may run the network once."""
    device = resolve_device(cfg.device)
    heavy = any(str(t).split(":")[0] in ("backbone", "module") for t in cfg.towers.values())
    try:
        cfg.anchor_modality(list(dims))
        with torch.device("cpu" if heavy else "meta"):
            binder = build_binder(dims, cfg, shapes)
        n = sum(p.numel() for p in binder.parameters())
        check_parameter_memory(n, device, copies=2, what="loading the run")
    except CentrobindError as e:
        raise CentrobindError(f"{path}/config.json: {e}") from None
    if heavy:
        binder.to(device)
    else:
        binder.to_empty(device=device)
    try:
        binder.load_state_dict(weights)  # strict: every parameter and buffer is overwritten
    except (KeyError, RuntimeError, ValueError) as e:
        raise CentrobindError(f"{path}/model.safetensors {_mismatch(e)}") from None
    return binder


def _mismatch(e: BaseException) -> str:
    return f"does not match config.json ({' '.join(str(e).split())[:200]})"


def _check_modalities(run: Run, ds: MultimodalDataset | DiskDataset, subset: bool = False) -> None:
    """The data has every modality of the run (``subset``: only run modalities, >= 1)."""
    if subset:
        extra = [m for m in ds.modalities if m not in run.binder.dims]
        if extra:
            raise CentrobindError(
                f"the data has modalities {extra} that the run was not trained on "
                f"(run: {run.binder.modalities}, data: {ds.modalities})"
            )
    for m in run.binder.modalities if not subset else ds.modalities:
        if m not in ds.modalities:
            raise CentrobindError(
                f"dataset lacks modality {m!r} the run was trained on "
                f"(run: {run.binder.modalities}, data: {ds.modalities})"
            )
        if ds.dims[m] != run.binder.dims[m]:
            raise CentrobindError(
                f"modality {m!r} has dim {ds.dims[m]} in the data but "
                f"{run.binder.dims[m]} in the run"
            )


#: ``evaluate`` scores at most this many test rows (the retrieval gallery) and fits its probes on
#: at most this many training rows: seeded samples (:func:`~centrobind.pipeline.cap_rows`) when a
#: split is larger, so a run on 10**7 rows is evaluated at bounded memory and time.
EVAL_TEST_ROWS = 10_000
EVAL_TRAIN_ROWS = 100_000


def _rows(ds: MultimodalDataset | DiskDataset, rows: Tensor) -> MultimodalDataset:
    """Rows of ``ds`` in memory (read from disk for a :class:`DiskDataset`)."""
    if isinstance(ds, DiskDataset):
        out: MultimodalDataset = ds.take(rows.numpy())
        return out
    return ds.subset(rows)


def evaluate_run(
    path: str | Path,
    data: str | Path | MultimodalDataset | None = None,
    write: bool = True,
    device: str | None = None,
) -> dict[str, Any]:
    """Evaluate a run on its held-out ``test`` split (probes fit on ``train``); writes
    ``metrics.json``. ``data`` defaults to the dataset the run was trained on (the builtin name
    or absolute folder path recorded in ``run.json``); other data must be the same rows (checked
    by content fingerprint).

    For objectives that need every modality (Symile, GRAM),
    ``metrics["retrieval"]["native_leave_one_out"]`` adds retrieval with their own joint scores
    (multilinear product / volume) on the test rows with every modality.

    With ``write``, the run folder is locked meanwhile (refused while a training writes it).
    ``device``: see :func:`load_run`.
    """
    with RunLock(path, "evaluate", enabled=write and is_run_dir(path)):  # never other folders
        return _evaluate(path, data, write, device)


def _evaluate(
    path: str | Path,
    data: str | Path | MultimodalDataset | None,
    write: bool,
    device: str | None,
) -> dict[str, Any]:
    run = load_run(path, device=device)
    ref = data if data is not None else run.meta.get("data")
    if ref is None:
        raise CentrobindError("this run was trained on an in-memory dataset; pass --data")
    folder = _folder(ref)
    raw = run.meta.get("raw") if isinstance(run.meta.get("raw"), dict) else None
    ds: MultimodalDataset | DiskDataset
    if raw is not None and is_manifest(ref):
        labels = list(raw.get("labels") or [])
        ds = load_manifest_dataset(str(ref), run.config.towers, labels, saved=raw)
    else:
        ds = open_dataset(folder) if folder is not None else as_dataset(ref)
    _check_modalities(run, ds)
    _check_same_data(run.path, ds, str(ref), folder)
    if len(ds) != run.meta["n_rows"]:
        raise CentrobindError(
            f"the data has {len(ds)} rows but the run's splits were made for {run.meta['n_rows']}"
        )
    if len(run.splits["test"]) == 0:
        raise CentrobindError(f"{run.path}: the run's test split is empty; nothing to evaluate")
    prep = run.standardizer.apply if run.standardizer is not None else (lambda d: d)
    seed = run.config.seed
    train_rows = cap_rows(run.splits["train"], EVAL_TRAIN_ROWS, seed)
    test_rows = cap_rows(run.splits["test"], EVAL_TEST_ROWS, seed)
    train_ds = prep(_rows(ds, train_rows))
    test_ds = prep(_rows(ds, test_rows))
    mods = run.binder.modalities
    cls = run.config.objective_class()
    anchor = run.config.anchor_modality(mods) if cls.pretrains_frozen_anchor else None
    test_emb = run.binder.embed_all(test_ds)
    metrics = evaluate(
        run.binder.embed_all(train_ds),
        modality_mask(train_ds, mods),
        train_ds.labels,
        test_emb,
        modality_mask(test_ds, mods),
        test_ds.labels,
        train_factors=train_ds.factors or None,
        test_factors=test_ds.factors or None,
        anchor=anchor,
        seed=run.config.seed,
    )
    if test_ds.labels:  # same class, not the paired item: what a user's search usually wants
        metrics["label_retrieval"] = to_builtin(
            label_retrieval(test_emb, modality_mask(test_ds, mods), test_ds.labels)
        )
    native = native_leave_one_out(run.binder, test_ds, cls, ks=(1, 5, 10))
    if native is not None:
        metrics["retrieval"]["native_leave_one_out"] = to_builtin(native)
    # R@1 depends on how many rows it searches: the test and validation galleries differ in size
    metrics["gallery"] = {"test": len(test_ds), "validation": run.meta.get("val_gallery")}
    if len(test_rows) < len(run.splits["test"]):
        metrics["gallery"]["test_split"] = len(run.splits["test"])
    if write:
        atomic_write_text(Path(path) / "metrics.json", json.dumps(metrics, indent=2))
    return metrics


#: Key of the fused embedding in the ``.npz`` that :func:`embed_run` writes. It contains a ``.``,
#: which no modality name may (see :func:`~centrobind.pipeline.build_binder`), so it never
#: collides with a modality.
FUSED_KEY = "fused.mean"


@torch.no_grad()
def embed_features(run: Run, modality: str, x: Tensor, batch_size: int = 8192) -> Tensor:
    """Input features as stored in the data, ``[N, D_m]`` -> float32 ``[N, D]`` on CPU: the run's
    standardisation, then :meth:`Binder.embed` (eval mode), batch by batch. The single code path
    of ``centrobind embed`` and ``centrobind.load(...).encode``."""
    std = run.standardizer
    out = []
    for i in range(0, x.shape[0], batch_size):
        xb = x[i : i + batch_size].float()
        out.append(run.binder.embed(modality, std.transform(modality, xb) if std else xb))
    return torch.cat(out) if out else torch.empty(0, run.binder.embed_dim)


def embed_dataset(
    run: Run, ds: MultimodalDataset, batch_size: int = 8192
) -> tuple[dict[str, Tensor], dict[str, Tensor], Tensor]:
    """Embed each modality ``ds`` holds (any non-empty subset of the run's, in run order).

    Returns ``(emb, masks, fused)``: ``emb[m]`` float32 ``[N, D]`` with NaN rows where ``m`` is
    missing, ``masks[m]`` bool ``[N]``, ``fused`` ``[N, D]`` the normalised mean of each row's
    present modalities (NaN where none is present).
    """
    _check_modalities(run, ds, subset=True)
    mods = [m for m in run.binder.modalities if m in ds.modalities]
    emb, masks = {}, {}
    for m in mods:
        masks[m] = ds.present(m).cpu()
        emb[m] = embed_features(run, m, ds.features[m].cpu(), batch_size)
        emb[m][~masks[m]] = float("nan")
    present = torch.stack([masks[m] for m in mods])
    fused = fused_embedding(emb, present).float()
    fused[~present.any(dim=0)] = float("nan")  # a row with none of them: missing, like emb[m]
    return emb, masks, fused


#: Rows embedded per block when streaming (:func:`embed_to_folder`).
EMBED_ROWS = 1 << 16


def _new_npy(path: Path, dim: int) -> NpyWriter:
    """A new float32 ``.npy`` file of ``[n, dim]`` rows written sequentially: not a memory map,
    whose writes to a full disk end in a SIGBUS at a page fault instead of an OSError."""
    return NpyWriter(path, np.float32, (dim,))


def embed_to_folder(
    path: str | Path,
    data: str | Path,
    out: str | Path,
    device: str | None = None,
    progress: bool = True,
) -> dict[str, np.ndarray]:
    """Embed a dataset folder block by block into ``out/<modality>.npy`` and
    ``out/fused.mean.npy`` (float32 ``[N, D]``, NaN rows where a modality is missing), at
    bounded memory whatever ``N``. Written into a temporary sibling folder renamed at the end;
    ``out`` must not exist or be empty; a full disk is one line and leaves nothing."""
    import shutil

    from tqdm.auto import tqdm

    from .diskfull import disk_full_errors

    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise CentrobindError(f"{out}: exists and is not an empty folder; choose a new --out")
    inside = next((d for d in [out, *out.parents] if d.exists() and is_run_dir(d)), None)
    if inside is not None:
        raise CentrobindError(
            f"{out}: lies inside the run folder {inside}; refusing to write there; choose a "
            "path outside the run"
        )
    folder = _folder(data)
    if folder is None:
        raise CentrobindError(f"{data}: embedding into a folder needs a dataset folder")
    run = load_run(path, device=device)
    disk = open_dataset(folder, min_modalities=1)
    _check_modalities(run, disk, subset=True)
    mods = [m for m in run.binder.modalities if m in disk.modalities]
    n, d = len(disk), run.binder.embed_dim
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    try:
        with disk_full_errors(out):
            tmp.mkdir(parents=True)
            writers: dict[str, NpyWriter] = {}
            try:
                for k in [*mods, FUSED_KEY]:
                    writers[k] = _new_npy(tmp / f"{k}.npy", d)
                with tqdm(total=n, desc="embed", unit="row", disable=not progress) as bar:
                    for a in range(0, n, EMBED_ROWS):
                        block = disk.take(np.arange(a, min(n, a + EMBED_ROWS)))
                        emb, _, fused = embed_dataset(run, block)
                        for m in mods:
                            writers[m].write(emb[m].numpy())
                        writers[FUSED_KEY].write(fused.numpy())
                        bar.update(len(block))
                for w in writers.values():
                    w.close()
            finally:
                for w in writers.values():
                    w.abort()
            if out.exists():
                out.rmdir()
            os.replace(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return {
        k: np.load(out / f"{k}.npy", mmap_mode="r", allow_pickle=False) for k in [*mods, FUSED_KEY]
    }


def embed_run(
    path: str | Path,
    data: str | Path | MultimodalDataset,
    out: str | Path,
    device: str | None = None,
) -> dict[str, np.ndarray]:
    """Embed every row of ``data`` (a dataset holding any non-empty subset of the run's
    modalities) with a trained run; writes ``out`` (``.npz``): one ``[N, D]`` float32 array per
    modality the data holds (NaN rows where it is missing) plus the fused embedding under
    :data:`FUSED_KEY` (``"fused.mean"``). ``out`` must be a regular ``.npz`` file (or new) outside
    any run folder (:func:`~centrobind.runfolder.check_output_file`).

    An ``out`` with no suffix (or an existing folder not named ``*.npz``) is a folder: rows
    stream through in blocks (the data is never loaded whole) into memory-mapped
    ``<modality>.npy`` files and ``fused.mean.npy`` (:func:`embed_to_folder`); the arrays
    returned are those memory maps. Any other suffix (``emb.npy``, ``model.safetensors``) is
    refused."""
    o = Path(out)
    to_folder = not o.name.lower().endswith(".npz") and (
        (o.is_dir() and not o.is_symlink()) or (o.suffix == "" and not os.path.lexists(o))
    )
    if to_folder and not isinstance(data, MultimodalDataset):
        return embed_to_folder(path, data, out, device=device)
    target = check_output_file(out)
    run = load_run(path, device=device)
    emb, _, fused = embed_dataset(run, as_dataset(data, min_modalities=1))
    arrays = {m: e.numpy() for m, e in emb.items()}
    arrays[FUSED_KEY] = fused.numpy()
    # cast: numpy>=2 stubs type savez's **kwds as its allow_pickle flag; these are arrays
    atomic_write(target, lambda f: np.savez(f, **cast(dict[str, Any], arrays)))
    return arrays
