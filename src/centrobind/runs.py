"""Run folders: train a Binder on a dataset, then evaluate it or embed new data with it.

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
- ``.lock``              the run folder's lock (:class:`~centrobind.runfolder.RunLock`), held by
  ``train`` and ``evaluate`` while they write; see docs/reliability.md
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import warnings
from collections.abc import Callable
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
    prefixed,
    save_tensors,
    unprefixed,
)
from .config import LEGACY_DEFAULTS, PER_INVOCATION, TrainConfig, resolve_device
from .data import BUILTINS, MultimodalDataset, Standardizer, load
from .data.digests import data_digest
from .data.ondisk import DiskDataset, open_dataset
from .data.source import TrainSource, make_order
from .data.stream import StreamingSource
from .errors import CentrobindError, CentrobindWarning, ConfigError
from .eval import evaluate, fused_embedding, label_retrieval, to_builtin
from .models import Binder
from .objectives import Objective
from .runfolder import (
    RunLock,
    check_new_run_dir,
    check_output_file,
    check_parameter_memory,
    count_parameters,
    fingerprint,
    is_run_dir,
    memory_capacity,
    non_finite_tensors,
    remove_stale_temp_files,
)
from .train import FitResult, fit, modality_mask, native_leave_one_out

__all__ = [
    "Prepared",
    "Run",
    "Trained",
    "build_and_fit",
    "build_binder",
    "build_models",
    "build_objective",
    "check_split_sizes",
    "fingerprint",
    "init_from_run",
    "is_run_data",
    "make_splits",
    "prepare_data",
    "train_run",
    "load_run",
    "evaluate_run",
    "embed_run",
    "embed_features",
    "embed_dataset",
    "FUSED_KEY",
    "read_config_file",
    "read_run_config",
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

    @property
    def cfg(self) -> TrainConfig:
        """Alias of :attr:`config`."""
        return self.config

    @property
    def std(self) -> Standardizer | None:
        """Alias of :attr:`standardizer`."""
        return self.standardizer


@dataclass
class Prepared:
    """The splits of a dataset ready for training: standardised with statistics of the training
    rows (``std``, None when ``cfg.standardize`` is off); ``val`` is None below 2 rows."""

    train: MultimodalDataset
    val: MultimodalDataset | None
    test: MultimodalDataset | None
    std: Standardizer | None


@dataclass
class Streamed:
    """:class:`Prepared` for data that stays on disk: the training rows as a source, the
    (capped) validation rows in memory, standardised; no test rows (``evaluate`` reads them)."""

    train: TrainSource
    val: MultimodalDataset | None
    std: Standardizer | None


@dataclass
class Trained:
    """A Binder and its objective after :func:`build_and_fit` (``result`` None when untrained)."""

    binder: Binder
    objective: Objective
    result: FitResult | None


def _as_dataset(data: str | Path | MultimodalDataset, min_modalities: int = 2) -> MultimodalDataset:
    if isinstance(data, MultimodalDataset):
        return data
    if min_modalities != 2 and str(data) not in BUILTINS:
        return load(str(data), min_modalities=min_modalities)
    return load(str(data))


#: The in-memory path holds about this many float32 copies of the features at its peak (loaded,
#: split, standardised, on the device): 3.35 GB for 0.8 GB of features in issue 18's measurement.
MEMORY_PATH_COPIES = 4.5

#: ``loader="auto"`` streams when the in-memory path's peak would exceed this share of the
#: memory available (RAM capped by the process's cgroup limit; GPU memory on CUDA).
MEMORY_SHARE = 0.5


def choose_loader(cfg: TrainConfig, disk: DiskDataset) -> str:
    """``"memory"`` or ``"stream"`` for a dataset folder: ``cfg.loader``, or for ``auto`` from the
    features' float32 size against the memory really available (see :data:`MEMORY_SHARE`)."""
    if cfg.loader != "auto":
        return cfg.loader
    need = MEMORY_PATH_COPIES * disk.float32_bytes
    ram = memory_capacity("cpu")
    if ram is not None and need > MEMORY_SHARE * ram:
        return "stream"
    device = torch.device(resolve_device(cfg.device))
    gpu = memory_capacity(device) if device.type == "cuda" else None
    if gpu is not None and disk.float32_bytes > MEMORY_SHARE * gpu:
        return "stream"
    return "memory"


def open_training_data(
    data: str | Path | MultimodalDataset, cfg: TrainConfig
) -> MultimodalDataset | DiskDataset:
    """The data to train on: in memory (a dataset, a builtin, or a folder that fits, see
    :func:`choose_loader`), or a folder opened for streaming (:class:`DiskDataset`)."""
    if isinstance(data, MultimodalDataset):
        if cfg.loader == "stream":
            raise ConfigError("--loader stream needs a dataset folder, not an in-memory dataset")
        return data
    if str(data) in BUILTINS and not Path(data).exists():
        if cfg.loader == "stream":
            raise ConfigError(f"--loader stream needs a dataset folder; {data!r} is builtin")
        return load(str(data))
    disk = open_dataset(data)
    return disk if choose_loader(cfg, disk) == "stream" else load(str(data))


def data_fingerprint(ds: MultimodalDataset | DiskDataset, folder: Path | None = None) -> str:
    """What a run records to refuse other data later: the recorded-digest fingerprint
    (``"d2:"``, cheap to check) when the data's folder has ``digests.json``, else the content
    fingerprint (``"b2:"``, one full read)."""
    root = ds.root if isinstance(ds, DiskDataset) else folder
    digest = data_digest(root) if root is not None else None
    if digest is not None:
        return digest
    if isinstance(ds, DiskDataset):
        fp = ds.scan(fingerprint=True).fingerprint
        assert fp is not None
        return fp
    return fingerprint(ds)


def _folder(data: str | Path | MultimodalDataset) -> Path | None:
    """The dataset folder ``data`` names (None: in memory or builtin)."""
    if isinstance(data, MultimodalDataset):
        return None
    p = Path(data)
    return p if p.is_dir() else None


def cap_rows(rows: Tensor, cap: int, seed: int) -> Tensor:
    """At most ``cap`` of ``rows``: all of them, or a seeded random sample (sorted)."""
    if len(rows) <= cap:
        return rows
    rng = np.random.default_rng([seed, 0xA1])
    pick = np.sort(rng.choice(len(rows), size=cap, replace=False))
    return rows[torch.from_numpy(pick)]


def prepare_stream(disk: DiskDataset, splits: dict[str, Tensor], cfg: TrainConfig) -> Streamed:
    """:func:`prepare_data` without loading the data: one streaming pass (presence, float64
    statistics of the training rows), a :class:`StreamingSource` over the training rows and
    the (capped, :func:`cap_rows`) validation rows in memory, standardised."""
    from tqdm.auto import tqdm

    train_rows = splits["train"].numpy()
    with tqdm(
        total=len(disk) * len(disk.modalities),
        desc="scan",
        unit="row",
        disable=cfg.quiet or _rank() != 0,
        unit_scale=True,
    ) as bar:
        scan = disk.scan(train_rows=train_rows, progress=bar.update)
    std = Standardizer(scan.mean, scan.std) if cfg.standardize else None
    source = StreamingSource(
        disk,
        train_rows,
        scan.mask[:, train_rows],
        disk.modalities,
        mean=std.mean if std is not None else None,
        std=std.std if std is not None else None,
        order=make_order(cfg.row_order, cfg.block_rows, cfg.shuffle_blocks),
        device=resolve_device(cfg.device),
    )
    val = None
    if len(splits["val"]) >= 2:
        v = disk.take(cap_rows(splits["val"], cfg.val_rows, cfg.seed).numpy())
        val = std.apply(v) if std is not None else v
    return Streamed(source, val, std)


def make_splits(ds: MultimodalDataset | DiskDataset, cfg: TrainConfig) -> dict[str, Tensor]:
    """The dataset's own ``train``/``val``/``test`` splits when it has them, else a seeded split
    (stratified on the first label task when there is one)."""
    if ds.splits:
        given = [k for k in ("train", "val", "test") if k in ds.splits]
        if "train" not in given or "test" not in given:
            raise ConfigError(
                f"the dataset's splits/ folder has {sorted(ds.splits)}; it needs "
                "train.npy and test.npy (val.npy optional)"
            )
        empty = torch.empty(0, dtype=torch.long)
        splits = {k: ds.splits.get(k, empty) for k in ("train", "val", "test")}
        seen = torch.zeros(len(ds), dtype=torch.long)
        for idx in splits.values():
            seen[idx] += 1
        if bool((seen > 1).any()):
            raise ConfigError(
                f"the dataset's train/val/test splits overlap in {int((seen > 1).sum())} rows"
            )
    else:
        stratify = next(iter(ds.labels), None)
        splits = ds.split_indices(cfg.split, seed=cfg.seed, stratify=stratify)
    if cfg.early_stopping is not None and len(splits["val"]) < 2:
        raise ConfigError(
            "--early-stopping needs a validation split with >= 2 rows "
            "(splits/val.npy, or a non-zero val fraction)"
        )
    return splits


def _legacy_fingerprint(ds: MultimodalDataset) -> str:
    """The sum-based hash of runs written before the full-content :func:`fingerprint` (kept to
    check their data; it misses row permutations)."""
    h = hashlib.sha256(f"{len(ds)}|{ds.modalities}|{ds.dims}".encode())
    for m in ds.modalities:
        x = ds.features[m].double()
        h.update(f"{float(x.sum()):.10e}|{float((x * x).sum()):.10e}".encode())
    h.update(ds.mask.numpy().tobytes())
    for t, y in ds.labels.items():
        h.update(f"{t}|{int(y.sum())}".encode())
    return h.hexdigest()[:16]


def build_binder(dims: dict[str, int], cfg: TrainConfig) -> Binder:
    bad = [m for m in dims if "." in m or not m]
    if bad:
        raise ConfigError(f"modality names may not contain '.': {bad} (rename the files)")
    init, max_scale = cfg.resolved_logit_scale(len(dims))
    if init > max_scale:
        raise ConfigError(f"logit_scale_init {init} exceeds max_logit_scale {max_scale}")
    return Binder(
        dims,
        embed_dim=cfg.embed_dim,
        hidden=cfg.hidden,
        depth=cfg.depth,
        dropout=cfg.dropout,
        logit_scale_init=init,
        max_logit_scale=max_scale,
        learn_logit_scale=cfg.learn_logit_scale,
    )


def build_objective(cfg: TrainConfig, modalities: list[str]) -> Objective:
    """The objective named in ``cfg`` with its options, completed from what its class declares:
    the anchor index (``takes_anchor``; ``cfg.anchor``, default the first modality),
    ``num_modalities`` (``needs_num_modalities``) and ``chunk_size`` (``supports_chunking``)."""
    cls = cfg.objective_class()
    opts = dict(cfg.objective_options)
    anchor = cfg.anchor_modality(modalities)
    if anchor is not None:
        opts.setdefault("anchor", modalities.index(anchor))
    if cls.needs_num_modalities(opts):
        opts.setdefault("num_modalities", len(modalities))
    if cfg.chunk_size is not None and cls.supports_chunking:
        opts.setdefault("chunk_size", cfg.chunk_size)
    try:
        objective = cls(**opts)
        # a dry run on a tiny batch: bad options fail here, not after minutes of training
        z = torch.nn.functional.normalize(torch.ones(len(modalities), 2, 4), dim=-1)
        objective(z, 10.0)
    except (TypeError, ValueError, IndexError, KeyError) as e:
        raise ConfigError(f"objective {cfg.objective!r}: {' '.join(str(e).split())}") from None
    return objective


def prepare_data(
    ds: MultimodalDataset,
    splits: dict[str, Tensor],
    cfg: TrainConfig,
    train_transform: Callable[[MultimodalDataset], MultimodalDataset] | None = None,
    with_test: bool = False,
) -> Prepared:
    """Split and standardise (``cfg.standardize``) with statistics of the training rows.

    ``train_transform(train_ds) -> train_ds`` alters the training rows only (e.g. drop modalities),
    before the statistics: they may only see what is kept.
    """
    train_raw = ds.subset(splits["train"])
    if train_transform is not None:
        train_raw = train_transform(train_raw)
    std = Standardizer.fit(train_raw) if cfg.standardize else None

    def prep(d: MultimodalDataset) -> MultimodalDataset:
        return std.apply(d) if std is not None else d

    val_rows = cap_rows(splits["val"], cfg.val_rows, cfg.seed)
    val = prep(ds.subset(val_rows)) if len(val_rows) >= 2 else None
    test = prep(ds.subset(splits["test"])) if with_test else None
    return Prepared(prep(train_raw), val, test, std)


def build_models(data: Prepared | Streamed, cfg: TrainConfig) -> tuple[Binder, Objective]:
    """Seed (``cfg.seed``), then build the Binder for ``data.train``'s modalities and the
    objective."""
    torch.manual_seed(cfg.seed)
    binder = build_binder(data.train.dims, cfg)
    return binder, build_objective(cfg, binder.modalities)


def build_and_fit(
    data: Prepared,
    cfg: TrainConfig,
    out: str | Path | None = None,
    resume: bool = False,
    train: bool = True,
) -> Trained:
    """:func:`build_models`, then fit on ``data.train`` (early stopping on ``data.val``): with
    :func:`prepare_data`, the one pipeline of :func:`train_run` and the benchmark. ``train=False``
    returns the seeded, untrained Binder."""
    binder, objective = build_models(data, cfg)
    if not train:
        return Trained(binder, objective, None)
    result = fit(binder, objective, data.train, data.val, cfg, out_dir=out, resume=resume)
    return Trained(binder, objective, result)


#: Below this many test rows (half as many validation rows) a split still runs but its metrics
#: mean little (warned at train time).
MIN_MEANINGFUL_ROWS = 10


def check_split_sizes(splits: dict[str, Tensor]) -> None:
    """Refuse splits that cannot be trained or evaluated (training < 2 rows, empty test); warn
    (:class:`~centrobind.errors.CentrobindWarning`) when one is too small to mean anything (a
    gallery of 1 gives R@1 = 100%)."""
    n = {k: len(v) for k, v in splits.items()}
    if n["train"] < 2:
        raise ConfigError(f"the training split has {n['train']} rows; it needs >= 2")
    if n["test"] == 0:
        raise ConfigError(
            "the test split is empty: evaluate would have nothing to score; give the test split "
            "a non-zero fraction (split) or rows (splits/test.npy)"
        )
    small = []
    if n["test"] < MIN_MEANINGFUL_ROWS:
        small.append(
            f"the test split has only {n['test']} rows: retrieval over a gallery that small "
            f"means little (R@1 is 100% with 1 row); aim for >= {MIN_MEANINGFUL_ROWS}"
        )
    if n["val"] == 1:
        small.append("the validation split has 1 row: it is not used (validation needs >= 2)")
    elif 2 <= n["val"] < MIN_MEANINGFUL_ROWS // 2:
        small.append(f"the validation split has only {n['val']} rows: model selection is noise")
    for msg in small:
        warnings.warn(msg, CentrobindWarning, stacklevel=3)


def check_model_fits(dims: dict[str, int], cfg: TrainConfig, copies: int = 5) -> None:
    """Refuse a Binder whose parameters cannot fit in ``cfg.device``'s memory, counted without
    allocating (``copies`` parameter-sized buffers: 5 to train with AdamW, 2 to load)."""
    n = count_parameters(lambda: build_binder(dims, cfg))
    what = "training" if copies >= 5 else "loading the run"
    check_parameter_memory(n, resolve_device(cfg.device), copies=copies, what=what)


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


def check_saved_config(run_dir: Path, cfg: TrainConfig, dims: dict[str, int], copies: int) -> None:
    """Check a run's saved config against its modalities before building anything (a config.json
    edited by hand: an anchor that is not a modality, a model too large for this machine)."""
    try:
        check_model_fits(dims, cfg, copies=copies)
        build_objective(cfg, list(dims))
    except CentrobindError as e:
        raise CentrobindError(f"{run_dir}/config.json: {e}") from None


def run_device(saved: Any, requested: str | None = None) -> Any:
    """The device to load a run on: ``requested`` if given (``auto``: CUDA when available), else
    the saved one when this machine has it, else CPU (a GPU-trained run on a CPU-only machine)."""
    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
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


def _data_state(fp: str, n_rows: int) -> dict[str, Any]:
    """Saved with the splits: what ``--resume`` and ``evaluate`` check the data against."""
    return {"fingerprint": fp, "n_rows": n_rows}


def _check_same_data(
    run_dir: Path,
    ds: MultimodalDataset | DiskDataset,
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
            raise CentrobindError(
                f"{what}: cannot check this run's old fingerprint without loading"
            )
        now = ds.scan(fingerprint=True).fingerprint or ""
    else:
        now = fingerprint(ds) if saved.startswith("b2:") else _legacy_fingerprint(ds)
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


def read_config_file(path: str | Path) -> dict[str, Any]:
    """Read a TOML or JSON config file into a dict (keys = TrainConfig fields)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such config file")
    text = path.read_text()
    try:
        if path.suffix == ".toml":
            try:
                import tomllib
            except ModuleNotFoundError:  # Python 3.10
                import tomli as tomllib

            return tomllib.loads(text)
        return json.loads(text)
    except Exception as e:  # noqa: BLE001 - any parse error becomes one line
        raise ConfigError(f"{path}: cannot parse config ({e})") from None


def train_run(
    data: str | Path | MultimodalDataset,
    cfg: TrainConfig,
    out: str | Path,
    resume: bool = False,
    extend_to: int | None = None,
    init_from: str | Path | None = None,
) -> tuple[Run, FitResult]:
    """Train on ``data`` (a folder path, a builtin name or a dataset) into run folder ``out``:
    split -> standardise -> build -> fit (:func:`prepare_data`, :func:`build_and_fit`), then write
    ``model.safetensors`` and ``run.json``.

    ``resume`` continues the run in ``out`` with its saved config (of ``cfg`` only the
    :data:`~centrobind.config.PER_INVOCATION` fields are used); ``extend_to`` epochs (more than
    saved) extend it. ``init_from`` (a run folder) warm-starts a
    new run's encoders: :func:`init_from_run`. Under ``torchrun`` rank 0 writes the files.

    The folder is locked for the whole training (:class:`~centrobind.runfolder.RunLock`, rank
    0). A new run needs an absent or empty folder; ``resume`` needs the same data (content
    fingerprint) and starts from step 0 when the run was killed before its first checkpoint.
    """
    cfg.check()
    out = Path(out)
    if resume and init_from is not None:
        raise ConfigError("--init-from starts a new run; drop it when you --resume")
    if not resume:
        check_new_run_dir(out)  # before loading anything: fail fast
    ds = open_training_data(data, cfg)
    splits = None
    if not resume:  # every refusal before the folder is created
        splits = make_splits(ds, cfg)
        check_split_sizes(splits)
    _barrier()  # every rank has checked the folder before rank 0 locks it
    with RunLock(out, "train", enabled=_rank() == 0):
        return _train_locked(ds, data, cfg, out, splits, extend_to, init_from)


def _train_locked(
    ds: MultimodalDataset | DiskDataset,
    data: str | Path | MultimodalDataset,
    cfg: TrainConfig,
    out: Path,
    splits: dict[str, Tensor] | None,
    extend_to: int | None,
    init_from: str | Path | None,
) -> tuple[Run, FitResult]:
    """:func:`train_run` while rank 0 holds the folder's lock (``splits`` None: resume).

    Slightly over 80 lines: the order of its steps (check, write config, fit, write results)
    is what makes a killed run resumable, so it is kept in one place.
    """
    resume = splits is None
    main = _rank() == 0
    if main:
        remove_stale_temp_files(out)  # of writes killed earlier; nobody else writes here now
    has_splits = False
    if resume:
        cfg = _resume_config(out, extend_to, cfg)
        check_saved_config(out, cfg, ds.dims, copies=5)
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
    else:
        prepared = prepare_data(ds, splits, cfg)
    check_model_fits(prepared.train.dims, cfg)  # counted, not allocated
    binder, objective = build_models(prepared, cfg)  # bad options fail before anything is written
    warm = init_from_run(binder, init_from) if init_from is not None else None
    _barrier()  # every rank has checked the folder before rank 0 writes to it
    out.mkdir(parents=True, exist_ok=True)
    if main and resume and extend_to is not None:
        atomic_write_text(out / "config.json", json.dumps(cfg.to_dict(), indent=2))
    if main and not resume:
        atomic_write_text(out / "config.json", json.dumps(cfg.to_dict(), indent=2))
    if main and not has_splits:  # with the data's fingerprint, checked by --resume and evaluate
        fp = data_fingerprint(ds, _folder(data))
        save_tensors(out / "splits.safetensors", dict(splits), _data_state(fp, len(ds)))
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
            "not written; try a lower lr or logit scale"
        )
    if std is not None:
        tensors.update(prefixed("standardizer", std.state_dict()))
    meta = {
        "dataset": ds.name,
        "data": _data_ref(data),
        "fingerprint": _saved_fingerprint(out) if main else None,
        "loader": "stream" if isinstance(ds, DiskDataset) else "memory",
        "modalities": binder.modalities,
        "dims": binder.dims,
        "n_rows": len(ds),
        "splits": {k: len(v) for k, v in splits.items()},
        "best_epoch": result.best_epoch,
        "best_val_metric": result.best_metric,
        "train_seconds": result.train_seconds,
        "steps": result.steps,
        "stopped_early": result.stopped_early,
    }
    meta.update(_training_record(out, cfg, result, warm, resume))
    featurizers = getattr(ds, "meta", {}).get("featurizers")
    if featurizers is not None:  # how raw items were featurised (centrobind.featurize)
        meta["featurizers"] = featurizers
    if main:
        save_tensors(out / "model.safetensors", tensors, meta)
        atomic_write_text(out / "run.json", json.dumps(meta, indent=2))
    run = Run(out, cfg, binder, std, splits, meta)
    return run, result


def _saved_fingerprint(out: Path) -> Any:
    """The data fingerprint the run folder's splits file records."""
    return load_tensors(out / "splits.safetensors")[1].get("fingerprint")


def _rank() -> int:
    """This process's rank under ``torchrun`` (0 otherwise)."""
    dist = torch.distributed
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def _barrier() -> None:
    """Wait for every rank (no-op outside ``torchrun``)."""
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def _resume_config(out: Path, extend_to: int | None, asked: TrainConfig) -> TrainConfig:
    """The saved config of the run in ``out``, with ``extend_to`` epochs when given (at least
    the saved ones: a run is extended, not shortened) and ``asked``'s per-invocation fields."""
    if not (out / "config.json").is_file():
        raise CentrobindError(
            f"--resume: {out}/config.json not found; nothing to resume (drop --resume)"
        )
    cfg = read_run_config(out)  # any defect as one line
    if extend_to is not None and extend_to < cfg.epochs:
        raise ConfigError(
            f"--resume: --epochs {extend_to} is below the saved {cfg.epochs}; a run can be "
            "extended, not shortened"
        )
    cfg = dataclasses.replace(cfg, **{k: getattr(asked, k) for k in PER_INVOCATION})
    return dataclasses.replace(cfg, epochs=extend_to) if extend_to is not None else cfg


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


def load_run(path: str | Path, device: str | None = None) -> Run:
    """Load a run folder written by :func:`train_run` (safetensors + JSON only) onto ``device``
    (default: the saved device when this machine has it, else CPU; see :func:`run_device`)."""
    path = Path(path)
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
    check_saved_config(path, cfg, dims, copies=2)
    try:
        binder = build_binder(dims, cfg)
        binder.load_state_dict(unprefixed("model", tensors))
        std_sd = unprefixed("standardizer", tensors)
        std = Standardizer.from_state_dict(std_sd) if std_sd else None
    except (KeyError, RuntimeError, ValueError) as e:
        raise CentrobindError(
            f"{path}/model.safetensors does not match config.json "
            f"({' '.join(str(e).split())[:200]})"
        ) from None
    binder.to(resolve_device(cfg.device))
    return Run(path, cfg, binder, std, _load_splits(path), meta)


def _check_modalities(run: Run, ds: MultimodalDataset, subset: bool = False) -> None:
    """The data has every modality of the run (``subset``: only run modalities, >= 1)."""
    if subset:
        extra = [m for m in ds.modalities if m not in run.binder.dims]
        if extra:
            raise CentrobindError(
                f"the data has modalities {extra} that the run was not trained on "
                f"(run: {run.binder.modalities}, data: {ds.modalities})"
            )
    for m in run.binder.modalities if not subset else ds.modalities:
        if m not in ds.features:
            raise CentrobindError(
                f"dataset lacks modality {m!r} the run was trained on "
                f"(run: {run.binder.modalities}, data: {ds.modalities})"
            )
        if ds.dims[m] != run.binder.dims[m]:
            raise CentrobindError(
                f"modality {m!r} has dim {ds.dims[m]} in the data but "
                f"{run.binder.dims[m]} in the run"
            )


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
    ds = _as_dataset(ref)
    _check_modalities(run, ds)
    _check_same_data(run.path, ds, str(ref), _folder(ref))
    if len(ds) != run.meta["n_rows"]:
        raise CentrobindError(
            f"the data has {len(ds)} rows but the run's splits were made for {run.meta['n_rows']}"
        )
    if len(run.splits["test"]) == 0:
        raise CentrobindError(f"{run.path}: the run's test split is empty; nothing to evaluate")
    prep = run.standardizer.apply if run.standardizer is not None else (lambda d: d)
    train_ds = prep(ds.subset(run.splits["train"]))
    test_ds = prep(ds.subset(run.splits["test"]))
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
    if write:
        atomic_write_text(Path(path) / "metrics.json", json.dumps(metrics, indent=2))
    return metrics


#: Key of the fused embedding in the ``.npz`` that :func:`embed_run` writes. It contains a ``.``,
#: which no modality name may (see :func:`build_binder`), so it never collides with a modality.
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
    present modalities.
    """
    _check_modalities(run, ds, subset=True)
    mods = [m for m in run.binder.modalities if m in ds.modalities]
    emb, masks = {}, {}
    for m in mods:
        masks[m] = ds.present(m).cpu()
        emb[m] = embed_features(run, m, ds.features[m].cpu(), batch_size)
        emb[m][~masks[m]] = float("nan")
    fused = fused_embedding(emb, torch.stack([masks[m] for m in mods]))
    return emb, masks, fused.float()


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
    any run folder (:func:`~centrobind.runfolder.check_output_file`)."""
    target = check_output_file(out)
    run = load_run(path, device=device)
    emb, _, fused = embed_dataset(run, _as_dataset(data, min_modalities=1))
    arrays = {m: e.numpy() for m, e in emb.items()}
    arrays[FUSED_KEY] = fused.numpy()
    # cast: numpy>=2 stubs type savez's **kwds as its allow_pickle flag; these are arrays
    atomic_write(target, lambda f: np.savez(f, **cast(dict[str, Any], arrays)))
    return arrays
