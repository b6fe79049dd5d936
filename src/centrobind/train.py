"""The trainer: ``fit(binder, objective, train_ds, val_ds, config)``.

Read :func:`fit` top to bottom: set up (:func:`_setup`), restore or start a :class:`TrainState`,
then per epoch :func:`_train_epoch` and :func:`_end_epoch` (log, validate, keep the best weights,
checkpoint, early stopping), and finally restore the best epoch's weights. Everything that changes
while training is in :class:`TrainState`; :meth:`TrainState.to_checkpoint` and
:meth:`TrainState.from_checkpoint` name every checkpoint key in one place.

Design for speed on precomputed features: the whole dataset sits in memory (on ``config.device``);
each step is an ``index_select`` of a shuffled index slice, no DataLoader workers, no per-sample
Python. Batch order is a pure function of ``(seed, epoch)``, and the RNG states that remain
(dropout, augmentation noise) are saved in checkpoints, so ``resume`` continues bit-exactly on CPU.

Data parallel: under ``torchrun`` every rank draws the SAME global batch and keeps its contiguous
``1/world`` slice; the model is wrapped in DistributedDataParallel (gradients averaged over ranks)
and the objectives gather embeddings over ranks, so the update equals a single-process step on the
global batch.
"""

from __future__ import annotations

import math
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from .checkpoint import (
    atomic_write_text,
    load_tensors,
    non_finite_tensors,
    optimizer_from_flat,
    optimizer_to_flat,
    prefixed,
    save_tensors,
    unprefixed,
)
from .config import TrainConfig, resume_conflicts
from .data import MultimodalDataset, modality_mask
from .data.source import InMemorySource, TrainSource, epoch_permutation, make_order
from .distributed import (
    peer_lost,
    rank_and_world,
    rank_died,
    resolve_device,
    sigterm_deferred,
    sigterm_received,
)
from .errors import CentrobindError, ConfigError
from .eval import mean_pairwise_mrr, mean_pairwise_r1, native_leave_one_out
from .models import Binder
from .objectives import Objective, resolve_modality, symmetric_infonce

__all__ = [
    "DIVERGENCE_HINT",
    "FitResult",
    "TrainConfig",
    "TrainState",
    "TrainingError",
    "TrainingWarning",
    "Validator",
    "augment",
    "fit",
    "intra_modal_loss",
    "native_validator",
    "pretrain_encoder",
    "warmup_steps",
]

#: ``validator(binder, val_ds) -> score`` (higher is better), e.g. mean cross-modal R@1 (%).
Validator = Callable[[Binder, MultimodalDataset], float]


class TrainingError(CentrobindError):
    """Training cannot go on (e.g. a non-finite loss)."""


class TrainingWarning(UserWarning):
    """Training runs, but probably not as meant (e.g. batches that drop many rows)."""


#: What to try when training diverges (a non-finite loss or weights, an overflowing step): the
#: end of every such message, here and in :mod:`centrobind.runs`.
DIVERGENCE_HINT = "try a lower lr or logit scale"

#: The warm-up is at most this fraction of the steps it precedes (see :func:`warmup_steps`).
WARMUP_MAX_FRACTION = 0.1


@dataclass
class FitResult:
    """What :func:`fit` returns: the per-epoch log, the best epoch and timings."""

    history: list[dict[str, float]]
    best_epoch: int | None
    best_metric: float | None
    train_seconds: float
    steps: int
    stopped_early: bool = False
    device: str = "cpu"  # the device used (``config.device`` may say "auto")
    schedule_start: int = 0  # the step where the last (re-planned) lr schedule began
    val_gallery: int | None = None  # rows of the validation split (the retrieval gallery)
    val_metric: str = "R@1"  # what best_metric measures: "R@1" (%), "MRR" (x 100) or "custom"


@dataclass
class TrainState:
    """Everything that changes while training (besides weights, optimiser and RNG states).

    ``epoch`` is the epoch in progress (= epochs completed at an epoch boundary) and ``batch`` the
    batches of it already done (> 0 only in a mid-epoch checkpoint, whose running sums are in
    ``partial``). ``best_state`` holds the best epoch's ``model.*`` / ``objective.*`` tensors.
    """

    epoch: int = 0
    batch: int = 0
    step: int = 0
    best_metric: float | None = None
    best_epoch: int | None = None
    best_state: dict[str, Tensor] | None = None
    bad_epochs: int = 0
    history: list[dict[str, float]] = field(default_factory=list)
    elapsed: float = 0.0
    stopped_early: bool = False
    partial: dict[str, Any] = field(default_factory=dict)
    schedule_start: int = 0

    def to_checkpoint(
        self,
        weights: Mapping[str, Tensor],
        opt: torch.optim.Optimizer,
        aug_gen: torch.Generator,
        cfg: TrainConfig,
        frozen: list[str],
    ) -> tuple[dict[str, Tensor], dict[str, Any]]:
        """``(tensors, state)`` of ``checkpoints/latest.safetensors``. Tensor keys: ``model.*``,
        ``objective.*`` (``weights``), ``optim.*``, ``rng.torch``, ``rng.aug``, ``rng.cuda`` (when
        CUDA is in use), ``best.model.*`` / ``best.objective.*``; the JSON state below."""
        opt_t, opt_rest = optimizer_to_flat(opt)
        tensors = {**weights, **opt_t, "rng.torch": torch.get_rng_state()}
        tensors["rng.aug"] = aug_gen.get_state()
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            tensors["rng.cuda"] = torch.cuda.get_rng_state()
        if self.best_state is not None:
            tensors.update(prefixed("best", self.best_state))
        state = {
            "epoch": self.epoch,
            "batch": self.batch,
            "step": self.step,
            "optimizer": opt_rest,
            "best_metric": self.best_metric,
            "best_epoch": self.best_epoch,
            "bad_epochs": self.bad_epochs,
            "history": self.history,
            "elapsed": self.elapsed,
            "config": cfg.to_dict(),
            "frozen": frozen,
            "stopped_early": self.stopped_early,
            "partial": self.partial,  # running sums of the epoch in progress
            "schedule_start": self.schedule_start,  # where an extended run re-planned its lr
        }
        return tensors, state

    @classmethod
    def from_checkpoint(cls, tensors: Mapping[str, Tensor], state: Mapping[str, Any]) -> TrainState:
        """The inverse of :meth:`to_checkpoint` for the fields of this class (the weights,
        optimiser and RNG states are restored by the caller)."""
        best = unprefixed("best", tensors)
        return cls(
            epoch=state["epoch"],
            batch=state["batch"],
            step=state["step"],
            best_metric=state["best_metric"],
            best_epoch=state["best_epoch"],
            best_state=best or None,
            bad_epochs=state["bad_epochs"],
            history=state["history"],
            elapsed=state["elapsed"],
            stopped_early=bool(state.get("stopped_early", False)),
            partial=state.get("partial", {}),
            schedule_start=int(state.get("schedule_start", 0)),
        )


# --------------------------------------------------------------------------- pieces


def _epoch_perm(n: int, seed: int, epoch: int) -> Tensor:
    return epoch_permutation(n, seed, epoch)


def augment(x: Tensor, noise: float, mask_frac: float, generator: torch.Generator) -> Tensor:
    """A random view of standardised features ``[N, D]``: zero a ``mask_frac`` of the entries, add
    Gaussian noise of std ``noise``. Random numbers come from ``generator`` (on ``x``'s device)."""
    keep = torch.rand(x.shape, generator=generator, device=x.device) >= mask_frac
    eps = torch.randn(x.shape, generator=generator, device=x.device)
    return x * keep + noise * eps


def intra_modal_loss(
    binder: Binder,
    features: Mapping[str, Tensor],
    mask: Tensor,
    modalities: list[str],
    logit_scale: Tensor,
    cfg: TrainConfig,
    generator: torch.Generator,
) -> Tensor:
    """Mean over ``modalities`` of symmetric InfoNCE between two augmented views of the same
    samples through the same encoder (SimCLR-style), over the rows where the modality is present.
    ``mask`` is ``[M, B]`` in ``binder.modalities`` order."""
    z1, z2, valid = [], [], []
    for m in modalities:
        x = features[m]
        z1.append(binder.encode(m, augment(x, cfg.aug_noise, cfg.aug_mask, generator)))
        z2.append(binder.encode(m, augment(x, cfg.aug_noise, cfg.aug_mask, generator)))
        valid.append(mask[binder.modalities.index(m)])
    losses = symmetric_infonce(
        torch.stack(z1),
        torch.stack(z2),
        logit_scale,
        row_valid=torch.stack(valid),
        chunk_size=cfg.chunk_size,
    )
    return losses.mean()


def warmup_steps(cfg: TrainConfig, steps: int) -> int:
    """The warm-up of a schedule of ``steps`` steps: ``min(cfg.warmup_steps, max(1, floor(0.1 x
    steps)))`` (0 when ``cfg.warmup_steps`` is 0), so a short run still reaches the peak lr and
    decays (30 steps: 3 warm-up steps, not 50)."""
    if cfg.warmup_steps == 0:
        return 0
    return min(cfg.warmup_steps, max(1, int(WARMUP_MAX_FRACTION * steps)))


def _lr_at(step: int, total: int, cfg: TrainConfig, start: int = 0) -> float:
    """The lr of ``step`` in a schedule planned from step ``start`` (0, or where an extended run
    re-planned it) to ``total``: linear warm-up to ``cfg.lr``, then cosine to 0 (or constant)."""
    step, total = step - start, total - start
    warm = warmup_steps(cfg, total)
    if step < warm:
        return cfg.lr * (step + 1) / warm
    if cfg.schedule == "constant":
        return cfg.lr
    t = (step - warm) / max(1, total - warm)
    return cfg.lr * 0.5 * (1 + math.cos(math.pi * min(1.0, t)))


def native_validator(objective: Objective, metric: str = "R@1") -> Validator:
    """The validation score an objective is trained for: mean cross-modal ``metric`` (R@1 in %,
    or MRR x 100) over all ordered modality pairs, or, for objectives that need every modality
    (``requires_all_modalities``: Symile, GRAM), leave-one-out ``metric`` with their own joint
    score on the validation rows where every modality is present (NaN when fewer than 2)."""
    cls = type(objective)
    if metric not in ("R@1", "MRR"):
        raise ConfigError(f"unknown validation metric {metric!r}; use R@1 or MRR")

    def score(binder: Binder, val_ds: MultimodalDataset) -> float:
        if cls.requires_all_modalities:
            res = native_leave_one_out(binder, val_ds, cls, ks=(1,))
            if res is None:
                return float("nan")
            if metric == "R@1":
                return float(res["mean"]["R@1"])
            names = [b for b in res if b != "mean"]
            return 100.0 * sum(float(res[b]["MRR"]) for b in names) / len(names)
        emb = binder.embed_all(val_ds)
        z = torch.nan_to_num(torch.stack([emb[m] for m in binder.modalities]))
        mask = modality_mask(val_ds, binder.modalities)
        if metric == "MRR":
            return 100.0 * mean_pairwise_mrr(z, mask)
        return mean_pairwise_r1(z, mask)

    return score


def pretrain_encoder(
    binder: Binder,
    modality: str,
    train: MultimodalDataset | TrainSource,
    cfg: TrainConfig,
    generator: torch.Generator,
) -> None:
    """Unimodal self-supervised pre-training of one encoder (augmented-view InfoNCE) on the
    training rows where ``modality`` is present."""
    device = resolve_device(cfg.device)
    if isinstance(train, MultimodalDataset):
        train = InMemorySource(train.features, train.mask, train.modalities, device=device)
    if not isinstance(train, InMemorySource):
        _pretrain_streaming(binder, modality, train, cfg, generator, device)
        return
    x_all = train.features[modality].to(device)
    present = train.mask[train.modalities.index(modality)].to(device)
    x_all = x_all[present]
    params = list(binder.encoders[modality].parameters())
    opt = torch.optim.Adam(params, lr=cfg.lr)
    n = x_all.shape[0]
    bs = cfg.batch_rows(n)
    if n < 2:
        raise ConfigError(
            f"cannot pre-train the anchor {modality!r}: it is present in {n} training rows"
        )
    s = torch.tensor(10.0, device=device)
    for epoch in range(cfg.anchor_pretrain_epochs):
        perm = _epoch_perm(n, cfg.seed + 7919, epoch).to(device)
        for b in range(n // bs):
            x = x_all[perm[b * bs : (b + 1) * bs]]
            z1 = binder.encode(modality, augment(x, cfg.aug_noise, cfg.aug_mask, generator))
            z2 = binder.encode(modality, augment(x, cfg.aug_noise, cfg.aug_mask, generator))
            loss = symmetric_infonce(z1[None], z2[None], s).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()


def _pretrain_streaming(
    binder: Binder,
    modality: str,
    source: TrainSource,
    cfg: TrainConfig,
    generator: torch.Generator,
    device: torch.device,
) -> None:
    """:func:`pretrain_encoder` over a streaming source: its batches (epochs counted from
    10**6, so the order differs from training's), rows where ``modality`` is present."""
    opt = torch.optim.Adam(list(binder.encoders[modality].parameters()), lr=cfg.lr)
    s = torch.tensor(10.0, device=device)
    i = source.modalities.index(modality)
    bs = cfg.batch_rows(len(source))
    for epoch in range(cfg.anchor_pretrain_epochs):
        for feats, mask in source.batches(10**6 + epoch, cfg.seed + 7919, bs, True):
            x = feats[modality][mask[i]]
            if x.shape[0] < 2:
                continue
            z1 = binder.encode(modality, augment(x, cfg.aug_noise, cfg.aug_mask, generator))
            z2 = binder.encode(modality, augment(x, cfg.aug_noise, cfg.aug_mask, generator))
            loss = symmetric_infonce(z1[None], z2[None], s).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()


class _StepModule(nn.Module):
    """What DDP wraps: encoders + logit scale (+ the objective's own parameters). The objective
    gets a dict, so its terms are named by modality (``c-fac``, ``fac-pix``)."""

    def __init__(self, binder: Binder, objective: Objective) -> None:
        super().__init__()
        self.binder = binder
        self.objective = objective

    def forward(
        self, features: Mapping[str, Tensor], mask: Tensor
    ) -> tuple[Tensor, dict[str, Tensor]]:
        z = {m: self.binder.encode(m, features[m]) for m in self.binder.modalities}
        out = self.objective(z, self.binder.logit_scale, mask=mask)
        return out.loss, out.terms


# --------------------------------------------------------------------------- setup


@dataclass
class _Run:
    """What stays fixed during :func:`fit` (built by :func:`_setup`)."""

    binder: Binder
    objective: Objective
    cfg: TrainConfig
    device: torch.device
    rank: int
    world: int
    source: TrainSource  # the training rows, batch by batch
    bs: int  # global batch size
    nb: int  # batches per epoch
    step_module: nn.Module
    opt: torch.optim.Optimizer
    aug_gen: torch.Generator
    trainable: list[str]  # modalities whose encoder trains
    validate: Validator
    out: Path | None
    tb: Any = None  # a TensorBoard SummaryWriter (``cfg.tensorboard``, rank 0, with a folder)
    saved_step: int | None = None  # step of the last checkpoint written (finite weights only)

    @property
    def total_steps(self) -> int:
        return self.nb * self.cfg.epochs

    @property
    def latest(self) -> Path | None:
        return self.out / "checkpoints" / "latest.safetensors" if self.out is not None else None

    def weights(self) -> dict[str, Tensor]:
        """``model.*`` + ``objective.*`` tensors (the checkpoint's weights)."""
        return {
            **prefixed("model", self.binder.state_dict()),
            **prefixed("objective", self.objective.state_dict()),
        }

    def load_weights(self, tensors: Mapping[str, Tensor]) -> None:
        self.binder.load_state_dict(unprefixed("model", tensors))
        self.objective.load_state_dict(unprefixed("objective", tensors))

    def save(self, state: TrainState) -> None:
        """Write ``latest.safetensors`` (rank 0, when there is a run folder); never NaN/inf
        weights (:meth:`check_finite`)."""
        if self.latest is None or self.rank != 0:
            return
        weights = self.weights()
        self.check_finite(weights, state.step)
        frozen = [m for m in self.binder.modalities if self.binder.is_frozen(m)]
        tensors, meta = state.to_checkpoint(weights, self.opt, self.aug_gen, self.cfg, frozen)
        save_tensors(self.latest, tensors, meta)
        self.saved_step = state.step

    def kept_checkpoint(self) -> str:
        """Which checkpoint survives a failed step, for the error message."""
        if self.latest is None or self.saved_step is None:
            return "no checkpoint was written"
        return f"kept {self.latest} from step {self.saved_step} (finite weights)"

    def check_finite(self, weights: Mapping[str, Tensor], step: int) -> None:
        """Refuse to checkpoint NaN/inf weights (e.g. after a huge lr): the last finite
        checkpoint stays the one that ``--resume`` and the user find."""
        bad = non_finite_tensors(weights)
        if bad:
            raise TrainingError(
                f"non-finite weights at step {step} ({', '.join(bad[:2])}); not checkpointed; "
                f"{self.kept_checkpoint()}; {DIVERGENCE_HINT}"
            )

    def restore(self) -> TrainState:
        """Load ``latest.safetensors``: weights, frozen encoders, optimiser, RNG, state. The
        config is checked first; any other mismatch (e.g. a hand-edited config.json) is one
        line."""
        if self.latest is None or not self.latest.is_file():
            raise CentrobindError(f"--resume: no checkpoint at {self.latest}")
        tensors, meta = load_tensors(self.latest)
        planned = _check_resumed_config(meta.get("config") or {}, self.cfg, self.latest)
        try:
            self.load_weights(tensors)
            for m in meta.get("frozen", []):
                self.binder.freeze(m)
            optimizer_from_flat(self.opt, tensors, meta["optimizer"])
            torch.set_rng_state(tensors["rng.torch"])
            self.aug_gen.set_state(tensors["rng.aug"])
            if "rng.cuda" in tensors:
                torch.cuda.set_rng_state(tensors["rng.cuda"])
            state = TrainState.from_checkpoint(tensors, meta)
        except (KeyError, RuntimeError, ValueError, TypeError, IndexError) as e:
            why = " ".join(str(e).split())[:200]
            msg = f"--resume: {self.latest} does not match the run ({why})"
            raise CentrobindError(msg) from None
        self.saved_step = state.step
        if planned < self.cfg.epochs:
            self.extend(state, planned)
        return state

    def extend(self, state: TrainState, planned: int) -> None:
        """Continue a run planned for ``planned`` epochs to ``cfg.epochs``: the lr schedule is
        re-planned from this step (warm-up to ``cfg.lr``, then cosine to 0 at the new end) and
        an early-stopped run trains on (patience counted afresh)."""
        state.schedule_start = state.step
        state.stopped_early, state.bad_epochs = False, 0
        left = self.total_steps - state.step
        self.log(
            f"resume: extending the run from {planned} to {self.cfg.epochs} epochs at step "
            f"{state.step}; {self.cfg.schedule} lr schedule re-planned from here: warm-up "
            f"{warmup_steps(self.cfg, left)} steps to {self.cfg.lr:g}, {left} steps in all"
        )

    def log(self, message: str) -> None:
        """One line on stderr (rank 0, unless ``cfg.quiet``)."""
        if self.rank == 0 and not self.cfg.quiet:
            print(message, file=sys.stderr, flush=True)


def _check_resumed_config(saved: Mapping[str, Any], cfg: TrainConfig, path: Path) -> int:
    """The epochs the checkpoint at ``path`` was planned for, after checking its config ``saved``
    against ``cfg`` with the one ``--resume`` rule (:func:`~centrobind.config.resume_conflicts`)."""
    planned = int(saved.get("epochs", cfg.epochs))
    bad = resume_conflicts(saved, cfg)
    if any(k != "epochs" for k in bad):
        raise CentrobindError(
            f"--resume: {path} was written by a different config; start a new run folder instead"
        )
    if bad:
        raise CentrobindError(
            f"--resume: --epochs {cfg.epochs} is below the {planned} the run was planned for; "
            "a run can be extended, not shortened"
        )
    return planned


def _warn_batching(n: int, cfg: TrainConfig) -> None:
    """Warn (:class:`TrainingWarning`) when the batch size exceeds the training split or
    ``drop_last`` leaves out more than a tenth of the training rows every epoch."""
    if cfg.batch_size is None:  # automatic: fits the data by construction
        return
    if cfg.batch_size > n:
        warnings.warn(
            f"batch size {cfg.batch_size} exceeds the {n} training rows; each epoch is one "
            f"batch of {n}",
            TrainingWarning,
            stacklevel=4,
        )
    elif cfg.drop_last and n % cfg.batch_size > 0.1 * n:
        drop = n % cfg.batch_size
        warnings.warn(
            f"drop_last leaves out {drop} of the {n} training rows ({100 * drop / n:.0f}%) every "
            f"epoch (batch size {cfg.batch_size}); use a smaller --batch-size or --no-drop-last",
            TrainingWarning,
            stacklevel=4,
        )


def _open_tensorboard(cfg: TrainConfig, out: Path | None, rank: int) -> Any:
    """A SummaryWriter on ``out/tensorboard`` when ``cfg.tensorboard`` (rank 0), else None."""
    if not cfg.tensorboard or rank != 0:
        return None
    if out is None:
        raise ConfigError("--tensorboard needs a run folder (out_dir) to write to")
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise ConfigError(
            "--tensorboard needs the tensorboard package: pip install 'centrobind[tensorboard]'"
        ) from None
    log_dir = out / "tensorboard"
    try:  # probe first: the writer's own thread would print a traceback on failure
        log_dir.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=log_dir).close()
        return SummaryWriter(log_dir=str(log_dir))
    except OSError as e:
        why = " ".join(str(e.strerror or e).split())
        raise ConfigError(f"--tensorboard: cannot write to {log_dir} ({why})") from None


def _tensorboard_epoch(writer: Any, row: Mapping[str, float]) -> None:
    """One epoch's scalars at its last step: ``loss``, ``loss/<term>`` (named by modality, e.g.
    ``loss/c-fac``), ``lr``, ``logit_scale`` and ``val/R@1`` (%)."""
    step = int(row["step"])
    for key, value in row.items():
        if key in ("loss", "lr", "logit_scale") or key.startswith("loss/"):
            writer.add_scalar(key, value, step)
    if "val_metric" in row and math.isfinite(row["val_metric"]):
        writer.add_scalar("val/R@1", row["val_metric"], step)
    writer.flush()


def _check_distributed(cfg: TrainConfig, n: int, bs: int, world: int) -> None:
    """The conditions for an exact data-parallel step (every rank an equal share)."""
    if world == 1:
        return
    if bs % world:
        raise ConfigError(f"batch size {bs} must be divisible by the world size {world}")
    if not cfg.drop_last and n % bs:
        raise ConfigError("distributed training needs drop_last=True (equal batches on all ranks)")
    if cfg.intra_weight > 0:
        raise ConfigError(
            "the intra-modal term is not gathered across ranks yet; use intra_weight=0 under "
            "torchrun"
        )


def _prepare_anchor(
    binder: Binder,
    objective: Objective,
    train: TrainSource,
    cfg: TrainConfig,
    aug_gen: torch.Generator,
    resume: bool,
) -> None:
    """Objectives with ``pretrains_frozen_anchor`` (ImageBind's pretrained anchor encoder):
    unimodal pre-training of the anchor (not on resume: its weights are in the checkpoint), then
    freeze it."""
    if not (type(objective).pretrains_frozen_anchor and cfg.freeze_anchor):
        return
    spec: int | str = getattr(objective, "anchor")  # noqa: B009 - declared by takes_anchor
    anchor = binder.modalities[resolve_modality(spec, binder.modalities)]
    if not resume and cfg.anchor_init == "ssl" and cfg.anchor_pretrain_epochs > 0:
        pretrain_encoder(binder, anchor, train, cfg, aug_gen)
    binder.freeze(anchor)


def _setup(
    binder: Binder,
    objective: Objective,
    train: TrainSource,
    cfg: TrainConfig,
    out_dir: str | Path | None,
    resume: bool,
    validate: Validator | None,
) -> _Run:
    """Validate, seed, move to the device, check the distributed setting, prepare a fixed
    anchor, wrap for DDP and build the optimiser (in this order: the RNG stream depends on it)."""
    cfg.check()
    rank, world = rank_and_world()
    device = resolve_device(cfg.device)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    torch.manual_seed(cfg.seed)
    binder.to(device)
    objective.to(device)
    mods = binder.modalities
    missing = [m for m in mods if m not in train.modalities]
    if missing:
        raise ConfigError(
            f"the training data lacks modalities {missing}; it has {train.modalities}"
        )
    n = len(train)
    bs = cfg.batch_rows(n)
    _check_distributed(cfg, n, bs, world)
    aug_gen = torch.Generator(device=device).manual_seed(cfg.seed + 1)
    _prepare_anchor(binder, objective, train, cfg, aug_gen, resume)
    step_module: nn.Module = _StepModule(binder, objective)
    if world > 1:
        step_module = nn.parallel.DistributedDataParallel(step_module)
    params = [p for p in [*binder.parameters(), *objective.parameters()] if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return _Run(
        binder=binder,
        objective=objective,
        cfg=cfg,
        device=device,
        rank=rank,
        world=world,
        source=train,
        bs=bs,
        nb=train.num_batches(bs, cfg.drop_last),
        step_module=step_module,
        opt=opt,
        aug_gen=aug_gen,
        trainable=[m for m in mods if not binder.is_frozen(m)],
        validate=validate or native_validator(objective),
        out=Path(out_dir) if out_dir is not None else None,
        tb=_open_tensorboard(cfg, Path(out_dir) if out_dir is not None else None, rank),
    )


# --------------------------------------------------------------------------- the loop


def _step(
    run: _Run, feats: dict[str, Tensor], mask: Tensor, state: TrainState, b: int
) -> tuple[Tensor, dict[str, Tensor]]:
    """One optimiser step on a batch (this rank's share; ``mask`` ``[M, B]`` in model order);
    returns loss and terms."""
    cfg = run.cfg
    for g in run.opt.param_groups:
        g["lr"] = _lr_at(state.step, run.total_steps, cfg, state.schedule_start)
    use_bf16 = cfg.bf16 and run.device.type == "cuda"
    with torch.autocast(run.device.type, dtype=torch.bfloat16, enabled=use_bf16):
        loss, terms = run.step_module(feats, mask)  # inputs unchecked: see the loss check below
        if cfg.intra_weight > 0 and run.trainable:
            intra = intra_modal_loss(
                run.binder, feats, mask, run.trainable, run.binder.logit_scale, cfg, run.aug_gen
            )
            terms = {**terms, "intra": intra}
            loss = loss + cfg.intra_weight * intra
    if not torch.isfinite(loss):  # the step's one host sync for finiteness (NaN/inf inputs too)
        raise TrainingError(
            f"non-finite loss ({loss.item()}) at step {state.step} (epoch {state.epoch}, batch "
            f"{b}); {run.kept_checkpoint()}; {DIVERGENCE_HINT}"
        )
    run.opt.zero_grad(set_to_none=True)
    loss.backward()
    try:
        run.opt.step()
    except RuntimeError as e:  # e.g. lr 1e38: Adam's step size overflows float32
        if "overflow" not in str(e):
            raise
        raise TrainingError(
            f"the optimizer step overflowed at step {state.step} ({e}); "
            f"{run.kept_checkpoint()}; {DIVERGENCE_HINT}"
        ) from None
    return loss, terms


def _train_epoch(run: _Run, state: TrainState, bar: Any) -> dict[str, float]:
    """Train epoch ``state.epoch`` from batch ``state.batch`` (mid-epoch resume) to its end;
    returns the epoch's mean loss and terms (``loss``, ``loss/<term>``)."""
    t0 = time.perf_counter()
    dev = run.device
    loss_sum = torch.zeros((), device=dev)
    term_sums: dict[str, Tensor] = {}
    n_steps = 0
    if state.batch > 0 and state.partial:  # resumed mid-epoch
        loss_sum += state.partial["loss_sum"]
        n_steps = state.partial["n_steps"]
        term_sums = {k: torch.tensor(v, device=dev) for k, v in state.partial["terms"].items()}
    run.step_module.train()
    for m in run.binder.modalities:  # a frozen (anchor) encoder is a fixed function: no dropout
        if run.binder.is_frozen(m):
            run.binder.encoders[m].eval()
    batches = run.source.batches(
        state.epoch,
        run.cfg.seed,
        run.bs,
        run.cfg.drop_last,
        start=state.batch,
        rank=run.rank,
        world=run.world,
    )
    for b, (feats, mask) in enumerate(batches, start=state.batch):
        loss, terms = _step(run, feats, mask, state, b)
        if sigterm_received():  # SIGTERM, and this step's collectives still worked: a clean stop
            raise TrainingError(
                f"stopped by SIGTERM at step {state.step}; {run.kept_checkpoint()}; run the same "
                "command with --resume to continue"
            )
        state.step += 1
        n_steps += 1
        loss_sum += loss.detach()
        for k, v in terms.items():
            term_sums[k] = term_sums.get(k, 0.0) + v.detach()
        bar.update(1)
        if run.cfg.checkpoint_every and state.step % run.cfg.checkpoint_every == 0:
            state.batch = b + 1
            state.partial = {
                "loss_sum": float(loss_sum),
                "n_steps": n_steps,
                "terms": {k: float(v) for k, v in term_sums.items()},
            }
            run.save(state)
    state.batch, state.partial = 0, {}
    state.elapsed += time.perf_counter() - t0
    means = {"loss": float(loss_sum) / max(1, n_steps)}
    means.update({f"loss/{k}": float(v) / max(1, n_steps) for k, v in term_sums.items()})
    return means


def _end_epoch(
    run: _Run, state: TrainState, val_ds: MultimodalDataset | None, losses: dict[str, float]
) -> dict[str, float]:
    """Log the epoch, validate (keeping the best weights), decide early stopping, checkpoint."""
    row: dict[str, float] = {
        "epoch": state.epoch + 1,
        "step": state.step,
        "loss": losses["loss"],
        "lr": run.opt.param_groups[0]["lr"],
        "logit_scale": float(run.binder.logit_scale.detach()),
        "seconds": state.elapsed,
    }
    row.update({k: v for k, v in losses.items() if k != "loss"})
    if val_ds is not None:
        metric = run.validate(run.binder, val_ds)
        row["val_metric"] = metric
        if state.best_metric is None or metric > state.best_metric:
            state.best_metric, state.best_epoch, state.bad_epochs = metric, state.epoch + 1, 0
            state.best_state = {k: v.detach().clone() for k, v in run.weights().items()}
            run.check_finite(state.best_state, state.step)
            if run.out is not None and run.rank == 0:
                save_tensors(
                    run.out / "checkpoints" / "best.safetensors",
                    state.best_state,
                    {"epoch": state.epoch + 1, "val_metric": metric},
                )
        else:
            state.bad_epochs += 1
    state.history.append(row)
    if run.tb is not None:
        _tensorboard_epoch(run.tb, row)
    if run.out is not None and run.rank == 0:
        _write_log(run.out / "log.csv", state.history)
    patience = run.cfg.early_stopping
    state.stopped_early = (
        patience is not None
        and state.bad_epochs >= patience
        and state.step >= run.cfg.min_steps  # a few steps on small data are no verdict
    )
    state.epoch += 1
    run.save(state)
    return row


def fit(
    binder: Binder,
    objective: Objective,
    train_ds: MultimodalDataset | TrainSource,
    val_ds: MultimodalDataset | None = None,
    config: TrainConfig | None = None,
    out_dir: str | Path | None = None,
    resume: bool = False,
    validate: Validator | None = None,
) -> FitResult:
    """Train ``binder`` with ``objective`` on ``train_ds`` (already standardised): a dataset
    (held on ``config.device``) or any :class:`~centrobind.data.source.TrainSource` (e.g. the
    streaming one), which the trainer reads batch by batch.

    Args:
        val_ds: optional validation split; scored after every epoch with ``validate`` (default:
            the objective's own score, :func:`native_validator`). The best epoch's weights are
            kept and restored at the end.
        out_dir: where ``checkpoints/`` and ``log.csv`` go (nothing written when None).
        resume: continue from ``out_dir/checkpoints/latest.safetensors``.

    Returns:
        :class:`FitResult`. ``binder`` is trained in place (best epoch's weights when validating).
    """
    cfg = config or TrainConfig()
    metric = "custom"  # a caller's own validator
    if validate is None:
        metric = cfg.validation_metric(len(val_ds) if val_ds is not None else 0)
        validate = native_validator(objective, metric)
    source = _as_source(train_ds, binder, cfg)
    run = _setup(binder, objective, source, cfg, out_dir, resume, validate)
    _announce(run, cfg, len(source))
    state = run.restore() if resume else TrainState()
    gallery = len(val_ds) if val_ds is not None else None
    from .logbar import progress_bar

    bar = progress_bar(
        total=run.total_steps,
        initial=state.step,
        disable=cfg.quiet or run.rank != 0,
        desc=f"train {cfg.objective}",
        unit="step",
        dynamic_ncols=True,
    )
    try:
        with objective.unchecked_inputs(), sigterm_deferred():  # one finiteness sync per step;
            # under torchrun a dead rank is named, not a silent end
            while state.epoch < cfg.epochs and not state.stopped_early:
                losses = _train_epoch(run, state, bar)
                row = _end_epoch(run, state, val_ds, losses)
                val = {}
                if "val_metric" in row:
                    unit = "%" if metric == "R@1" else ""
                    val = {f"val {metric}": f"{row['val_metric']:.1f}{unit} (gallery {gallery})"}
                bar.set_postfix(epoch=state.epoch, loss=f"{row['loss']:.3f}", **val)
    except RuntimeError as e:
        if run.world == 1 or not peer_lost(e):
            raise
        kept = (
            run.kept_checkpoint()
            if run.rank == 0
            else "the run folder keeps the last checkpoint rank 0 wrote"
        )
        raise rank_died(f" at step {state.step}", kept) from None
    finally:
        bar.close()
        if run.tb is not None:
            run.tb.close()
    return _fit_result(run, state, gallery, metric)


def _as_source(
    train_ds: MultimodalDataset | TrainSource, binder: Binder, cfg: TrainConfig
) -> TrainSource:
    """What :func:`fit` reads batches from: a source as given; a dataset as an
    :class:`InMemorySource` on ``cfg.device`` (rows ordered by ``cfg.row_order``)."""
    if not isinstance(train_ds, MultimodalDataset):
        return train_ds
    device = torch.device(resolve_device(cfg.device))
    mask = modality_mask(train_ds, binder.modalities)
    order = make_order(cfg.row_order, cfg.block_rows, cfg.shuffle_blocks)
    return InMemorySource(train_ds.features, mask, binder.modalities, order, device)


def _announce(run: _Run, cfg: TrainConfig, n_rows: int) -> None:
    """Log what :func:`fit` is about to do; rank 0 warns about batching that does not fit the
    ``n_rows`` training rows."""
    gpu = f" ({torch.cuda.get_device_name(run.device)})" if run.device.type == "cuda" else ""
    run.log(
        f"training {cfg.objective} on {run.device}{gpu} (--device {cfg.device}), world size "
        f"{run.world}: {run.nb} steps/epoch x {cfg.epochs} epochs, warm-up "
        f"{warmup_steps(cfg, run.total_steps)} steps"
    )
    if run.rank == 0:
        _warn_batching(n_rows, cfg)


def _fit_result(run: _Run, state: TrainState, gallery: int | None, metric: str) -> FitResult:
    """Restore the best epoch's weights (when validation kept any) and sum the training up."""
    if state.best_state is not None:
        run.load_weights(state.best_state)
    return FitResult(
        history=state.history,
        best_epoch=state.best_epoch,
        best_metric=state.best_metric,
        train_seconds=state.elapsed,
        steps=state.step,
        stopped_early=state.stopped_early,
        device=str(run.device),
        schedule_start=state.schedule_start,
        val_gallery=gallery,
        val_metric=metric,
    )


def _write_log(path: Path, history: list[dict[str, float]]) -> None:
    keys: list[str] = []
    for row in history:
        keys += [k for k in row if k not in keys]
    lines = [",".join(keys)]
    for row in history:
        lines.append(",".join("" if k not in row else f"{row[k]:.6g}" for k in keys))
    atomic_write_text(path, "\n".join(lines) + "\n")
