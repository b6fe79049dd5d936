"""The trainer: ``fit(binder, objective, train_ds, val_ds, config)``.

Design for speed on precomputed features: the whole dataset sits in memory (on ``config.device``);
each step is an ``index_select`` of a shuffled index slice, no DataLoader workers, no per-sample
Python. Batch order is a pure function of ``(seed, epoch)``, and the RNG states that remain
(dropout,augmentation noise) are saved in checkpoints, so ``resume`` continues bit-exactly on CPU.

Data parallel: under ``torchrun`` every rank draws the SAME global batch and keeps its contiguous
``1/world`` slice; the model is wrapped in DistributedDataParallel (gradients averaged over ranks)
and the objectives gather embeddings over ranks, so the update equals a single-process step on the
global batch.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

from .checkpoint import (
    atomic_write_text,
    load_tensors,
    optimizer_from_flat,
    optimizer_to_flat,
    save_tensors,
)
from .errors import CentrobindError, ConfigError
from .models import Binder
from .objectives import FixedAnchor, symmetric_infonce
from .objectives.base import NonFiniteInputError

__all__ = ["TrainConfig", "FitResult", "TrainingError", "fit", "augment", "intra_modal_loss"]


class TrainingError(CentrobindError):
    """Training cannot go on (e.g. a non-finite loss)."""


@dataclass
class TrainConfig:
    """Everything a run needs; saved as ``config.json`` in the run folder.

    Model: ``embed_dim``, ``hidden``, ``depth``, ``dropout``, ``logit_scale_init``,
    ``learn_logit_scale``. Objective: ``objective`` (a registry name), ``objective_options``
    (keyword arguments), ``anchor`` (modality name for ``fixed_anchor``; default the first).
    Fixed anchor: the anchor encoder is frozen (``freeze_anchor``) after a unimodal pre-training
    ``anchor_init`` ("ssl": ``anchor_pretrain_epochs`` of augmented-view InfoNCE on the anchor
    alone,
    the stand-in for ImageBind's pretrained anchor encoder; "none": a random frozen encoder).
    Logit scale: ``logit_scale_init=None`` means automatic: ``s = 10`` (temperature 0.1),
    except for Symile, whose multilinear scores need ``10 * D^(M/2 - 1)`` (see
    :func:`symile_logit_scale`); ``max_logit_scale=None`` means 10x the initial scale. The Binder
    supports CLIP's learnable scale (``logit_scale_init=1/0.07, learn_logit_scale=True``), but on
    mfeat it measured worse for every objective (mean R@1, 2 seeds, benchmark budget: CentroBind
    38.1 vs 41.9, FixedAnchor(pix) 34.7 vs 37.0, AllPairs 42.3 vs 43.5): with a few thousand
    samples a learnable scale grows and overfits.
    Intra-modal term: ``intra_weight`` x InfoNCE between two augmented views (Gaussian noise
    ``aug_noise`` + ``aug_mask`` feature masking) of each modality through its own encoder.
    """

    objective: str = "centrobind"
    objective_options: dict[str, Any] = field(default_factory=dict)
    anchor: str | None = None
    freeze_anchor: bool = True
    anchor_init: str = "ssl"
    anchor_pretrain_epochs: int = 20
    intra_weight: float = 0.0
    aug_noise: float = 0.3
    aug_mask: float = 0.2
    embed_dim: int = 64
    hidden: int = 256
    depth: int = 2
    dropout: float = 0.0
    logit_scale_init: float | None = None
    max_logit_scale: float | None = None
    learn_logit_scale: bool = False
    epochs: int = 100
    batch_size: int = 256
    lr: float = 1e-3
    weight_decay: float = 0.0
    warmup_steps: int = 50
    schedule: str = "cosine"
    chunk_size: int | None = None
    seed: int = 0
    device: str = "cpu"
    bf16: bool = True
    early_stopping: int | None = None
    checkpoint_every: int | None = None
    split: tuple[float, float, float] = (0.7, 0.1, 0.2)
    standardize: bool = True
    drop_last: bool = True
    quiet: bool = False

    def validate(self) -> None:
        ints = (
            "anchor_pretrain_epochs",
            "embed_dim",
            "hidden",
            "depth",
            "epochs",
            "batch_size",
            "warmup_steps",
            "seed",
        )
        for name in ints + ("chunk_size", "early_stopping", "checkpoint_every"):
            v = getattr(self, name)
            if (v is not None or name in ints) and (isinstance(v, bool) or not isinstance(v, int)):
                raise ConfigError(f"{name} must be an integer, got {v!r}")
        floats = ("intra_weight", "aug_noise", "aug_mask", "dropout", "lr", "weight_decay")
        for name in floats + ("logit_scale_init", "max_logit_scale"):
            v = getattr(self, name)
            if (v is not None or name in floats) and (
                isinstance(v, bool) or not isinstance(v, int | float)
            ):
                raise ConfigError(f"{name} must be a number, got {v!r}")
        if not isinstance(self.objective_options, dict):
            raise ConfigError("objective_options must be a table/dict of keyword arguments")
        if "anchor" in self.objective_options:
            raise ConfigError("give the anchor modality with --anchor NAME, not as an option")
        for name in (
            "embed_dim",
            "hidden",
            "depth",
            "anchor_pretrain_epochs",
            "seed",
            "warmup_steps",
        ):
            if getattr(self, name) < (1 if name in ("embed_dim", "hidden", "depth") else 0):
                raise ConfigError(
                    f"{name} must be >= "
                    f"{1 if name in ('embed_dim', 'hidden', 'depth') else 0}, "
                    f"got {getattr(self, name)}"
                )
        if not 0 <= self.dropout < 1 or not 0 <= self.aug_mask < 1 or self.aug_noise < 0:
            raise ConfigError("dropout and aug_mask must be in [0, 1), aug_noise >= 0")
        if self.weight_decay < 0:
            raise ConfigError(f"weight_decay must be >= 0, got {self.weight_decay}")
        if self.logit_scale_init is not None and self.logit_scale_init <= 0:
            raise ConfigError(f"logit_scale_init must be > 0, got {self.logit_scale_init}")
        if self.max_logit_scale is not None and self.max_logit_scale <= 0:
            raise ConfigError(f"max_logit_scale must be > 0, got {self.max_logit_scale}")
        if self.chunk_size is not None and self.chunk_size < 1:
            raise ConfigError(f"chunk_size must be >= 1, got {self.chunk_size}")
        try:
            dev = torch.device(self.device)
        except (RuntimeError, TypeError) as e:
            raise ConfigError(f"device {self.device!r}: {e}") from None
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise ConfigError(f"device {self.device!r}: CUDA is not available on this machine")
        if dev.type == "mps" and not torch.backends.mps.is_available():
            raise ConfigError(f"device {self.device!r}: MPS is not available on this machine")
        if self.epochs < 1:
            raise ConfigError(f"epochs must be >= 1, got {self.epochs}")
        if self.batch_size < 2:
            raise ConfigError(f"batch_size must be >= 2, got {self.batch_size}")
        if self.lr <= 0:
            raise ConfigError(f"lr must be > 0, got {self.lr}")
        if self.schedule not in ("cosine", "constant"):
            raise ConfigError(f"schedule must be 'cosine' or 'constant', got {self.schedule!r}")
        if self.anchor_init not in ("ssl", "none"):
            raise ConfigError(f"anchor_init must be 'ssl' or 'none', got {self.anchor_init!r}")
        if self.intra_weight < 0:
            raise ConfigError("intra_weight must be >= 0")
        if (
            not isinstance(self.split, tuple | list)
            or len(self.split) != 3
            or not all(isinstance(f, int | float) for f in self.split)
            or any(f < 0 for f in self.split)
            or abs(sum(self.split) - 1) > 1e-6
        ):
            raise ConfigError(f"split must be 3 non-negative fractions summing to 1: {self.split}")
        if self.early_stopping is not None and self.early_stopping < 1:
            raise ConfigError("early_stopping (patience) must be >= 1")
        if self.checkpoint_every is not None and self.checkpoint_every < 1:
            raise ConfigError("checkpoint_every must be >= 1")

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["split"] = list(self.split)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TrainConfig:
        if not isinstance(d, Mapping):
            raise ConfigError(
                f"a config must be a table of TrainConfig fields, got {type(d).__name__}"
            )
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ConfigError(f"unknown config keys: {', '.join(unknown)}")
        d = dict(d)
        if isinstance(d.get("split"), list | tuple):
            d["split"] = tuple(d["split"])
        cfg = cls(**d)
        cfg.validate()
        return cfg

    def resolved_logit_scale(self, n_modalities: int) -> tuple[float, float]:
        """``(initial, max)`` logit scale after applying the automatic defaults."""
        init = self.logit_scale_init
        if init is None:
            init = (
                symile_logit_scale(n_modalities, self.embed_dim)
                if self.objective == "symile"
                else 10.0
            )
        return init, self.max_logit_scale if self.max_logit_scale is not None else 10.0 * init


@dataclass
class FitResult:
    """What :func:`fit` returns: the per-epoch log, the best epoch and timings."""

    history: list[dict[str, float]]
    best_epoch: int | None
    best_metric: float | None
    train_seconds: float
    steps: int
    stopped_early: bool = False


def symile_logit_scale(n_modalities: int, embed_dim: int, base: float = 10.0) -> float:
    """Symile's initial logit scale.

    A multilinear inner product of M unit vectors is tiny: an aligned tuple spread evenly over D
    coordinates scores ``D * D^(-M/2) = D^(1 - M/2)`` (2.4e-4 for M=6, D=64), so CLIP's scale would
    leave every logit near 0 and nothing would train. We rescale so that such a tuple gets the
    logit a cosine of 1 gets with scale ``base``: ``s = base * D^(M/2 - 1)`` (``= base`` for M=2).
    """
    return base * embed_dim ** (n_modalities / 2 - 1)


def _dist() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _epoch_perm(n: int, seed: int, epoch: int) -> Tensor:
    g = torch.Generator().manual_seed(seed * 100_003 + epoch)
    return torch.randperm(n, generator=g)


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


def _lr_at(step: int, total: int, cfg: TrainConfig) -> float:
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    if cfg.schedule == "constant":
        return cfg.lr
    t = (step - cfg.warmup_steps) / max(1, total - cfg.warmup_steps)
    return cfg.lr * 0.5 * (1 + math.cos(math.pi * min(1.0, t)))


def _reordered_mask(ds, modalities: list[str]) -> Tensor:
    missing = [m for m in modalities if m not in ds.modalities]
    if missing:
        raise ConfigError(f"dataset lacks modalities {missing}; it has {ds.modalities}")
    return ds.mask[[ds.modalities.index(m) for m in modalities]]


def default_validate(binder: Binder, val_ds) -> float:
    """Mean cross-modal R@1 over all ordered modality pairs on ``val_ds`` (early stopping)."""
    from .eval.retrieval import mean_pairwise_r1

    emb = binder.embed_all(val_ds)
    z = torch.stack([emb[m] for m in binder.modalities])
    return mean_pairwise_r1(torch.nan_to_num(z), _reordered_mask(val_ds, binder.modalities))


def native_validator(objective: nn.Module) -> Callable[[Binder, Any], float]:
    """The validation score an objective is trained for: Symile and GRAM score all modalities
    jointly (leave-one-out R@1 with their own multilinear / volume scores, on the validation rows
    where every modality is present); the pairwise objectives use :func:`default_validate`."""
    from .eval.retrieval import gram_leave_one_out, symile_leave_one_out
    from .objectives import Gram, Symile

    joint = {Symile: symile_leave_one_out, Gram: gram_leave_one_out}.get(type(objective))
    if joint is None:
        return default_validate

    def validate(binder: Binder, val_ds) -> float:
        full = _reordered_mask(val_ds, binder.modalities).all(0)
        if int(full.sum()) < 2:
            return float("nan")
        emb = binder.embed_all(val_ds.subset(full.nonzero().squeeze(1)))
        return float(joint(emb)["mean"]["R@1"])

    return validate


def pretrain_encoder(
    binder: Binder, modality: str, train_ds, cfg: TrainConfig, generator: torch.Generator
) -> None:
    """Unimodal self-supervised pre-training of one encoder (augmented-view InfoNCE)."""
    device = torch.device(cfg.device)
    x_all = train_ds.features[modality].to(device)
    present = train_ds.mask[train_ds.modalities.index(modality)].to(device)
    x_all = x_all[present]
    params = list(binder.encoders[modality].parameters())
    opt = torch.optim.Adam(params, lr=cfg.lr)
    n = x_all.shape[0]
    bs = min(cfg.batch_size, n)
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


class _StepModule(nn.Module):
    """What DDP wraps: encoders + logit scale (+ the objective's own parameters)."""

    def __init__(self, binder: Binder, objective: nn.Module) -> None:
        super().__init__()
        self.binder = binder
        self.objective = objective

    def forward(self, features: Mapping[str, Tensor], mask: Tensor) -> tuple[Tensor, dict]:
        z = self.binder(features)
        out = self.objective(z, self.binder.logit_scale, mask=mask)
        return out.loss, out.terms


def _rng_tensors(aug_gen: torch.Generator) -> dict[str, Tensor]:
    t = {"rng.torch": torch.get_rng_state(), "rng.aug": aug_gen.get_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        t["rng.cuda"] = torch.cuda.get_rng_state()
    return t


def fit(
    binder: Binder,
    objective: nn.Module,
    train_ds,
    val_ds=None,
    config: TrainConfig | None = None,
    out_dir: str | Path | None = None,
    resume: bool = False,
    validate: Callable[[Binder, Any], float] | None = None,
) -> FitResult:
    """Train ``binder`` with ``objective`` on ``train_ds`` (a MultimodalDataset, already
    standardised).

    Args:
        val_ds: optional validation split; scored after every epoch with ``validate`` (default:
            mean cross-modal R@1). The best epoch's weights are kept and restored at the end.
        out_dir: where ``checkpoints/`` and ``log.csv`` go (nothing written when None).
        resume: continue from ``out_dir/checkpoints/latest.safetensors``.

    Returns:
        :class:`FitResult`. ``binder`` is trained in place (best epoch's weights when validating).
    """
    cfg = config or TrainConfig()
    cfg.validate()
    rank, world = _dist()
    device = torch.device(cfg.device)
    if cfg.batch_size % world:
        raise ConfigError(
            f"batch_size {cfg.batch_size} must be divisible by the world size {world}"
        )
    torch.manual_seed(cfg.seed)
    binder.to(device)
    objective.to(device)
    modalities = binder.modalities
    feats = {m: train_ds.features[m].to(device) for m in modalities}
    mask_all = _reordered_mask(train_ds, modalities).to(device)
    n = len(train_ds)
    bs = min(cfg.batch_size, n)
    if world > 1 and bs % world:
        raise ConfigError(f"batch size {bs} is not divisible by the world size {world}")
    nb = n // bs if cfg.drop_last else math.ceil(n / bs)
    total_steps = nb * cfg.epochs
    validate = validate or native_validator(objective)
    if world > 1 and not cfg.drop_last and n % bs:
        raise ConfigError("distributed training needs drop_last=True (equal batches on all ranks)")
    if world > 1 and cfg.intra_weight > 0:
        raise ConfigError(
            "the intra-modal term is not gathered across ranks yet; use "
            "intra_weight=0 under torchrun"
        )
    aug_gen = torch.Generator(device=device).manual_seed(cfg.seed + 1)

    # Fixed anchor: unimodal pre-training, then freeze (ImageBind's anchor encoder is pretrained).
    if isinstance(objective, FixedAnchor) and cfg.freeze_anchor:
        anchor = (
            modalities[objective.anchor] if isinstance(objective.anchor, int) else objective.anchor
        )
        if not resume and cfg.anchor_init == "ssl" and cfg.anchor_pretrain_epochs > 0:
            pretrain_encoder(binder, anchor, train_ds, cfg, aug_gen)
        binder.freeze(anchor)
    trainable_mods = [m for m in modalities if not binder.is_frozen(m)]

    step_module: nn.Module = _StepModule(binder, objective)
    if world > 1:
        step_module = nn.parallel.DistributedDataParallel(step_module)
    params = [
        p for p in list(binder.parameters()) + list(objective.parameters()) if p.requires_grad
    ]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    use_bf16 = cfg.bf16 and device.type == "cuda"

    out = Path(out_dir) if out_dir is not None else None
    ckpt_dir = out / "checkpoints" if out is not None else None
    history: list[dict[str, float]] = []
    best_metric: float | None = None
    best_epoch: int | None = None
    best_state: dict[str, Tensor] | None = None
    bad_epochs = 0
    start_epoch, start_batch, step = 0, 0, 0
    elapsed = 0.0
    stopped_early = False
    partial: dict[str, Any] = {}

    def model_tensors() -> dict[str, Tensor]:
        t = {f"model.{k}": v for k, v in binder.state_dict().items()}
        t.update({f"objective.{k}": v for k, v in objective.state_dict().items()})
        return t

    def save_checkpoint(epoch: int, batch: int, partial: dict[str, Any]) -> None:
        if ckpt_dir is None or rank != 0:
            return
        opt_t, opt_rest = optimizer_to_flat(opt)
        tensors = {**model_tensors(), **opt_t, **_rng_tensors(aug_gen)}
        if best_state is not None:  # binder + objective of the best epoch
            tensors.update({f"best.{k}": v for k, v in best_state.items()})
        state = {
            "epoch": epoch,
            "batch": batch,
            "step": step,
            "optimizer": opt_rest,
            "best_metric": best_metric,
            "best_epoch": best_epoch,
            "bad_epochs": bad_epochs,
            "history": history,
            "elapsed": elapsed,
            "config": cfg.to_dict(),
            "frozen": [m for m in modalities if binder.is_frozen(m)],
            "stopped_early": stopped_early,
            "partial": partial,  # sums of the epoch in progress (mid-epoch checkpoints)
        }
        save_tensors(ckpt_dir / "latest.safetensors", tensors, state)

    if resume:
        if ckpt_dir is None or not (ckpt_dir / "latest.safetensors").is_file():
            raise CentrobindError(f"--resume: no checkpoint at {ckpt_dir}/latest.safetensors")
        tensors, state = load_tensors(ckpt_dir / "latest.safetensors")
        binder.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
        objective.load_state_dict(
            {k[10:]: v for k, v in tensors.items() if k.startswith("objective.")}
        )
        for m in state.get("frozen", []):
            binder.freeze(m)
        optimizer_from_flat(opt, tensors, state["optimizer"])
        torch.set_rng_state(tensors["rng.torch"])
        aug_gen.set_state(tensors["rng.aug"])
        if "rng.cuda" in tensors:
            torch.cuda.set_rng_state(tensors["rng.cuda"])
        bstate = {k[5:]: v for k, v in tensors.items() if k.startswith("best.")}
        best_state = bstate or None
        start_epoch, start_batch, step = state["epoch"], state["batch"], state["step"]
        best_metric, best_epoch = state["best_metric"], state["best_epoch"]
        bad_epochs, history, elapsed = state["bad_epochs"], state["history"], state["elapsed"]
        stopped_early = bool(state.get("stopped_early", False))
        partial = state.get("partial", {})
        if state.get("config") != cfg.to_dict():
            raise CentrobindError(
                f"--resume: {ckpt_dir}/latest.safetensors was written by a different config; "
                "start a new run folder instead"
            )

    from tqdm.auto import tqdm

    bar = tqdm(
        total=total_steps,
        initial=step,
        disable=cfg.quiet or rank != 0,
        desc=f"train {cfg.objective}",
        unit="step",
        dynamic_ncols=True,
    )
    local = bs // world
    epoch = start_epoch
    try:
        for epoch in range(start_epoch, cfg.epochs if not stopped_early else start_epoch):
            t0 = time.perf_counter()
            perm = _epoch_perm(n, cfg.seed, epoch).to(device)
            loss_sum = torch.zeros((), device=device)
            term_sums: dict[str, Tensor] = {}
            n_steps = 0
            if epoch == start_epoch and start_batch > 0 and partial:  # resumed mid-epoch
                loss_sum += partial["loss_sum"]
                n_steps = partial["n_steps"]
                term_sums = {k: torch.tensor(v, device=device) for k, v in partial["terms"].items()}
            step_module.train()
            for m in modalities:  # a frozen (anchor) encoder is a fixed function: no dropout
                if binder.is_frozen(m):
                    binder.encoders[m].eval()
            for b in range(start_batch if epoch == start_epoch else 0, nb):
                idx = perm[b * bs : (b + 1) * bs]
                if world > 1:
                    idx = idx[rank * local : (rank + 1) * local]
                for g in opt.param_groups:
                    g["lr"] = _lr_at(step, total_steps, cfg)
                feats_b = {m: feats[m].index_select(0, idx) for m in modalities}
                mask_b = mask_all[:, idx]
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16):
                    try:
                        loss, terms = step_module(feats_b, mask_b)
                    except NonFiniteInputError:  # diverged: reported as a non-finite loss below
                        loss, terms = torch.tensor(float("nan")), {}
                    if cfg.intra_weight > 0 and trainable_mods:
                        intra = intra_modal_loss(
                            binder,
                            feats_b,
                            mask_b,
                            trainable_mods,
                            binder.logit_scale,
                            cfg,
                            aug_gen,
                        )
                        terms = {**terms, "intra": intra}
                        loss = loss + cfg.intra_weight * intra
                if not torch.isfinite(loss):
                    last = (ckpt_dir / "latest.safetensors") if ckpt_dir else None
                    kept = f"; last good checkpoint: {last}" if last and last.is_file() else ""
                    raise TrainingError(
                        f"non-finite loss ({loss.item()}) at step {step} (epoch {epoch}, batch {b})"
                        f"{kept}; try a lower lr or logit scale"
                    )
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                step += 1
                n_steps += 1
                loss_sum += loss.detach()
                for k, v in terms.items():
                    term_sums[k] = term_sums.get(k, 0.0) + v.detach()
                bar.update(1)
                if cfg.checkpoint_every and step % cfg.checkpoint_every == 0:
                    save_checkpoint(
                        epoch,
                        b + 1,
                        {
                            "loss_sum": float(loss_sum),
                            "n_steps": n_steps,
                            "terms": {k: float(v) for k, v in term_sums.items()},
                        },
                    )
            start_batch = 0
            elapsed += time.perf_counter() - t0
            row: dict[str, float] = {
                "epoch": epoch + 1,
                "step": step,
                "loss": float(loss_sum) / max(1, n_steps),
                "lr": opt.param_groups[0]["lr"],
                "logit_scale": float(binder.logit_scale.detach()),
                "seconds": elapsed,
            }
            row.update({f"loss/{k}": float(v) / max(1, n_steps) for k, v in term_sums.items()})
            if val_ds is not None:
                metric = validate(binder, val_ds)
                row["val_metric"] = metric
                if best_metric is None or metric > best_metric:
                    best_metric, best_epoch, bad_epochs = metric, epoch + 1, 0
                    best_state = {k: v.detach().clone() for k, v in model_tensors().items()}
                    if ckpt_dir is not None and rank == 0:
                        save_tensors(
                            ckpt_dir / "best.safetensors",
                            best_state,
                            {"epoch": epoch + 1, "val_metric": metric},
                        )
                else:
                    bad_epochs += 1
            history.append(row)
            bar.set_postfix(
                epoch=epoch + 1,
                loss=f"{row['loss']:.3f}",
                **({"val": f"{row['val_metric']:.1f}"} if "val_metric" in row else {}),
            )
            if out is not None and rank == 0:
                _write_log(out / "log.csv", history)
            stopped_early = cfg.early_stopping is not None and bad_epochs >= cfg.early_stopping
            save_checkpoint(epoch + 1, 0, {})
            if stopped_early:
                break
    finally:
        bar.close()
    if best_state is not None:
        binder.load_state_dict({k[6:]: v for k, v in best_state.items() if k.startswith("model.")})
        objective.load_state_dict(
            {k[10:]: v for k, v in best_state.items() if k.startswith("objective.")}
        )
    return FitResult(
        history=history,
        best_epoch=best_epoch,
        best_metric=best_metric,
        train_seconds=elapsed,
        steps=step,
        stopped_early=stopped_early,
    )


def _write_log(path: Path, history: list[dict[str, float]]) -> None:
    keys: list[str] = []
    for row in history:
        keys += [k for k in row if k not in keys]
    lines = [",".join(keys)]
    for row in history:
        lines.append(",".join("" if k not in row else f"{row[k]:.6g}" for k in keys))
    atomic_write_text(path, "\n".join(lines) + "\n")
