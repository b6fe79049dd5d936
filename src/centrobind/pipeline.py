"""The training pipeline, without a run folder: split -> standardise -> build -> fit.

:func:`make_splits`, :func:`prepare_data`, :func:`build_binder`, :func:`build_objective` and
:func:`build_and_fit` are the one path that both :func:`centrobind.runs.train_run` (which adds the
run folder around it) and the benchmark (which never writes one) train through.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from .config import TrainConfig
from .data import BUILTINS, MultimodalDataset, Standardizer, load
from .data.fingerprint import fingerprint
from .data.ondisk import DiskDataset, open_dataset
from .data.raw import RawData
from .data.source import TrainSource, make_order
from .data.stream import StreamingSource
from .digests import data_digest
from .distributed import is_main_process, resolve_device
from .errors import CentrobindWarning, ConfigError
from .memory import check_parameter_memory, count_parameters, memory_capacity
from .models import Binder
from .objectives import Objective
from .train import FitResult, fit

__all__ = [
    "MIN_MEANINGFUL_ROWS",
    "Prepared",
    "Streamed",
    "Trained",
    "cap_rows",
    "choose_loader",
    "data_fingerprint",
    "open_training_data",
    "prepare_stream",
    "build_and_fit",
    "build_binder",
    "build_models",
    "build_objective",
    "check_model_fits",
    "check_split_sizes",
    "check_towers",
    "make_splits",
    "prepare_data",
]


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
    device = resolve_device(cfg.device)
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
        disable=cfg.quiet or not is_main_process(),
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


def make_splits(
    ds: MultimodalDataset | DiskDataset | RawData, cfg: TrainConfig
) -> dict[str, Tensor]:
    """The dataset's own ``train``/``val``/``test`` splits when it has them, else a seeded split
    (stratified on the first label task when there is one). Rows with no modality present (a
    featurized row whose every item was empty or unreadable) are in no split (in memory; the
    streaming loader refuses them when it scans)."""
    if not isinstance(ds, MultimodalDataset) or bool(ds.mask.any(dim=0).all()):
        return _make_splits(ds, cfg)
    filled = ds.mask.any(dim=0).cpu()
    if ds.splits:  # the given splits, checked, then without the empty rows
        return {k: v[filled[v]] for k, v in _make_splits(ds, cfg).items()}
    keep = filled.nonzero().squeeze(1)
    return {k: keep[v] for k, v in _make_splits(ds.subset(keep), cfg).items()}


def _make_splits(
    ds: MultimodalDataset | DiskDataset | RawData, cfg: TrainConfig
) -> dict[str, Tensor]:
    """:func:`make_splits` of a dataset whose every row has a modality."""
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
        if stratify is not None and len(splits["test"]) == 0 and cfg.split[2] > 0:
            _refuse_stratified(ds.labels[stratify], stratify, cfg.split)
    if cfg.early_stopping is not None and len(splits["val"]) < 2:
        raise ConfigError(
            "--early-stopping needs a validation split with >= 2 rows "
            "(splits/val.npy, or a non-zero val fraction)"
        )
    return splits


def _refuse_stratified(labels: Tensor | np.ndarray[Any, Any], task: str, split: Any) -> None:
    """The test split came out empty only because the split is stratified on ``task``: say so
    (each class is split in proportion, so a class of one row always goes to training)."""
    y = labels.cpu().numpy() if isinstance(labels, Tensor) else np.asarray(labels)
    _, counts = np.unique(y[y >= 0], return_counts=True)
    most = int(counts.max()) if len(counts) else 0
    shares = "/".join(f"{float(f):g}" for f in split)
    raise ConfigError(
        f"the test split is empty because the split is stratified on label {task!r}: its "
        f"{len(counts)} classes have at most {most} row{'s' if most != 1 else ''} each "
        f"({int((counts == 1).sum())} have a single row), and each class is split {shares} on "
        "its own, so classes that small land in training only; give the classes more rows, "
        "drop that label, or give splits/test.npy"
    )


def build_binder(
    dims: dict[str, int],
    cfg: TrainConfig,
    shapes: dict[str, Any] | None = None,
    encoders: dict[str, torch.nn.Module] | None = None,
) -> Binder:
    """The Binder ``cfg`` describes for modalities ``dims`` (the objective's default logit scale
    when ``cfg`` leaves it automatic): each modality's tower from ``cfg.towers`` (default
    ``mlp``) or ``encoders`` (modules, which win), raw-item towers shaped by ``shapes``
    (modality -> item shape); the Binder's own checks become one
    :class:`~centrobind.errors.ConfigError` line."""
    bad = [m for m in dims if "." in m or not m]
    if bad:
        raise ConfigError(f"modality names may not contain '.': {bad} (rename the files)")
    unknown = [m for m in [*cfg.towers, *(encoders or {})] if m not in dims]
    if unknown:
        raise ConfigError(
            f"a tower is given for {unknown[0]!r}, which is not a modality of the data "
            f"({', '.join(dims)})"
        )
    init, max_scale = cfg.resolved_logit_scale(len(dims))
    try:
        return Binder(
            dims,
            embed_dim=cfg.embed_dim,
            hidden=cfg.hidden,
            depth=cfg.depth,
            dropout=cfg.dropout,
            logit_scale_init=init,
            max_logit_scale=max_scale,
            learn_logit_scale=cfg.learn_logit_scale,
            encoders={**cfg.towers, **(encoders or {})},
            shapes=shapes,
        )
    except ConfigError:
        raise
    except ValueError as e:
        raise ConfigError(str(e)) from None


def check_towers(binder: Binder) -> None:
    """Run two zero rows through every tower (eval mode, no grad): a tower whose output is not
    ``[N, embed_dim]`` fails here, in one line, before any training."""
    was = binder.training
    binder.eval()
    try:
        with torch.no_grad():
            dev = binder.log_logit_scale.device
            for m in binder.modalities:
                if binder.dims[m] > 0:
                    binder.encode(m, torch.zeros(2, binder.dims[m], device=dev))
    finally:
        binder.train(was)


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
    if std is not None:
        for m in ds.meta.get("shapes") or {}:
            std.mean[m].zero_()  # raw items are fed as decoded (their towers normalise inside)
            std.std[m].fill_(1.0)

    def prep(d: MultimodalDataset) -> MultimodalDataset:
        return std.apply(d) if std is not None else d

    val_rows = cap_rows(splits["val"], cfg.val_rows, cfg.seed)
    val = prep(ds.subset(val_rows)) if len(val_rows) >= 2 else None
    test = prep(ds.subset(splits["test"])) if with_test else None
    return Prepared(prep(train_raw), val, test, std)


def build_models(
    data: Prepared | Streamed,
    cfg: TrainConfig,
    encoders: dict[str, torch.nn.Module] | None = None,
    shapes: dict[str, Any] | None = None,
) -> tuple[Binder, Objective]:
    """Seed (``cfg.seed``), then build the Binder for ``data.train``'s modalities (towers:
    ``cfg.towers``, then the modules in ``encoders``; raw-item ``shapes``, default from the
    training data's ``meta``) and the objective; every tower's output width is checked."""
    torch.manual_seed(cfg.seed)
    if shapes is None and isinstance(data.train, MultimodalDataset):
        shapes = data.train.meta.get("shapes") or None
    binder = build_binder(data.train.dims, cfg, shapes, encoders)
    check_towers(binder)
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


def check_model_fits(
    dims: dict[str, int], cfg: TrainConfig, shapes: dict[str, Any] | None = None
) -> None:
    """Refuse a Binder whose training cannot fit in ``cfg.device``'s memory (weights, gradients,
    two AdamW moments and the best epoch's copy), counted on the ``meta`` device without
    allocating. Towers that load a network (``backbone:``, ``module:``) are not counted (their
    library sizes them)."""
    heavy = {m for m, t in cfg.towers.items() if str(t).split(":")[0] in ("backbone", "module")}
    light = dataclasses.replace(cfg, towers={m: t for m, t in cfg.towers.items() if m not in heavy})
    n = count_parameters(lambda: build_binder(dims, light, shapes))
    check_parameter_memory(n, resolve_device(cfg.device), copies=5, what="training")
