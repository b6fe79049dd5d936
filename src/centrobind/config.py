"""The training configuration: :class:`TrainConfig`, its validation and its command-line flags.

One flat dataclass, saved as ``config.json`` in a run folder (flat keys, so every existing run
folder still loads). Each field carries its documentation, its bounds and its CLI group in its
``metadata``; from them come

* :meth:`TrainConfig.check`: a type check generated from the field annotations (bool, int,
  float, str, tuple, ``X | None``, dict; ``"false"`` is not a bool, ``1.5`` not an int, NaN/inf
  no float) and the bounds, each failure one :class:`~centrobind.errors.ConfigError` line naming
  the field, plus the few checks that involve several fields;
* :func:`add_config_arguments`: the ``centrobind train`` flags (``--batch-size`` for
  ``batch_size``...), with each field's default shown in ``--help``.

Example:
    >>> cfg = TrainConfig.from_dict({"objective": "all_pairs", "epochs": 5})
    >>> cfg.epochs, cfg.lr
    (5, 0.001)
    >>> TrainConfig.from_dict({"standardize": "false"})
    Traceback (most recent call last):
    ...
    centrobind.errors.ConfigError: standardize must be true or false, got 'false'
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .distributed import DEVICE_CHOICES, resolve_device
from .errors import ConfigError
from .objectives import OBJECTIVES, Objective, objective_class

__all__ = [
    "LEGACY_DEFAULTS",
    "PER_INVOCATION",
    "TrainConfig",
    "add_config_arguments",
    "config_overrides",
    "resume_conflicts",
    "objective_class",
    "read_config_file",
]

INT_MAX = 2**63 - 1  # what a seed (and any int) must fit: int64
#: Fields added after runs were first saved, with the value those runs trained with: a saved
#: ``config.json`` without them reads as these (``centrobind.runs.read_run_config``), so
#: ``--resume`` and ``evaluate`` keep an old run as it was. ``batch_size`` was always saved.
LEGACY_DEFAULTS: dict[str, Any] = {"min_steps": 0, "val_metric": "R@1"}
#: ``batch_size=None``: a quarter of the training rows, at most this.
AUTO_BATCH_MAX = 256
#: ``val_metric="auto"``: R@1 from this many validation rows on, MRR below (on a 24-row split one
#: query moves R@1 by 4 points; MRR counts every rank).
AUTO_R1_MIN_VAL_ROWS = 100

#: Fields about watching one invocation, not the run: ``--resume`` takes them from its own
#: command line (they may differ from the saved config).
PER_INVOCATION = ("quiet", "tensorboard", "loader", "workers")


def _field(
    default: Any = dataclasses.MISSING,
    doc: str = "",
    *,
    group: str,
    lo: float | None = None,
    hi: float | None = None,
    lo_open: bool = False,
    hi_open: bool = False,
    choices: tuple[str, ...] | None = None,
    metavar: str | None = None,
    cli: bool = True,
    factory: Any = dataclasses.MISSING,
) -> Any:
    meta: dict[str, Any] = dict(doc=doc, group=group, lo=lo, hi=hi)
    meta.update(lo_open=lo_open, hi_open=hi_open)
    meta.update(choices=choices, metavar=metavar, cli=cli)
    if factory is not dataclasses.MISSING:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class TrainConfig:
    """Everything a run needs; saved as ``config.json`` in the run folder (flat keys).

    Fixed anchor (objectives with ``pretrains_frozen_anchor``): the anchor encoder is frozen
    (``freeze_anchor``) after a unimodal pre-training ``anchor_init`` ("ssl":
    ``anchor_pretrain_epochs`` of augmented-view InfoNCE on the anchor alone, the stand-in for
    ImageBind's pretrained anchor encoder; "none": a random frozen encoder).
    Logit scale: ``logit_scale_init=None`` means the objective's
    :meth:`~centrobind.objectives.Objective.default_logit_scale`, per objective (listed by
    ``centrobind train --help``; base class 10);
    ``max_logit_scale=None`` means 10x the initial scale. The Binder
    supports CLIP's learnable scale (``logit_scale_init=1/0.07, learn_logit_scale=True``), but on
    mfeat it measured worse for every objective (mean R@1, 2 seeds, benchmark budget: CentroBind
    38.1 vs 41.9, FixedAnchor(pix) 34.7 vs 37.0, AllPairs 42.3 vs 43.5): with a few thousand
    samples a learnable scale grows and overfits.
    Intra-modal term: ``intra_weight`` x InfoNCE between two augmented views (Gaussian noise
    ``aug_noise`` + ``aug_mask`` feature masking) of each modality through its own encoder.
    """

    objective: str = _field("centrobind", "registered objective name", group="objective")
    objective_options: dict[str, Any] = _field(
        doc="objective keyword arguments", group="objective", factory=dict, cli=False
    )
    anchor: str | None = _field(
        None,
        "anchor modality of objectives that take one (none: the first modality)",
        group="objective",
        metavar="NAME",
    )
    freeze_anchor: bool = _field(True, "freeze a pre-trained fixed anchor", group="objective")
    anchor_init: str = _field(
        "ssl",
        "fixed anchor init: ssl pre-training or none",
        group="objective",
        choices=("ssl", "none"),
    )
    anchor_pretrain_epochs: int = _field(
        20, "epochs of anchor pre-training", group="objective", lo=0, hi=10**7
    )
    intra_weight: float = _field(
        0.0, "weight of the intra-modal (augmented views) term", group="objective", lo=0
    )
    aug_noise: float = _field(0.3, "augmentation noise std", group="objective", lo=0)
    aug_mask: float = _field(
        0.2, "augmentation masked fraction", group="objective", lo=0, hi=1, hi_open=True
    )
    towers: dict[str, Any] = _field(
        doc="modality -> tower spec (mlp, conv1d, cnn, identity, backbone:SPEC, module:PATH; "
        "centrobind.towers); modalities not named get mlp",
        group="model",
        factory=dict,
        cli=False,
    )
    embed_dim: int = _field(64, "embedding size D", group="model", lo=1, hi=65536)
    hidden: int = _field(256, "hidden width of the encoders", group="model", lo=1, hi=65536)
    depth: int = _field(2, "layers per encoder", group="model", lo=1, hi=64)
    dropout: float = _field(0.0, "dropout", group="model", lo=0, hi=1, hi_open=True)
    logit_scale_init: float | None = _field(
        None,
        "initial logit scale s (none: the objective's default)",  # listed by _field_help
        group="model",
        lo=0,
        lo_open=True,
    )
    max_logit_scale: float | None = _field(
        None, "logit scale clamp (none: 10x the initial)", group="model", lo=0, lo_open=True
    )
    learn_logit_scale: bool = _field(False, "learn the logit scale", group="model")
    epochs: int = _field(100, "training epochs", group="optimiser", lo=1, hi=10**7)
    batch_size: int | None = _field(
        None,
        "global batch size (none: auto, a quarter of the training rows, at most 256, so even a "
        "small dataset gets several steps per epoch)",
        group="optimiser",
        lo=2,
        hi=2**31,
    )
    lr: float = _field(1e-3, "peak learning rate", group="optimiser", lo=0, lo_open=True)
    weight_decay: float = _field(0.0, "AdamW weight decay", group="optimiser", lo=0)
    warmup_steps: int = _field(
        50,
        "linear warm-up steps (at most a tenth of the run's steps)",
        group="optimiser",
        lo=0,
        hi=INT_MAX,
    )
    schedule: str = _field(
        "cosine", "learning-rate schedule", group="optimiser", choices=("cosine", "constant")
    )
    chunk_size: int | None = _field(
        None, "row-block size of the logits (memory)", group="optimiser", lo=1, hi=INT_MAX
    )
    seed: int = _field(0, "seed of everything random", group="run", lo=0, hi=INT_MAX)
    device: str = _field(
        "auto",
        DEVICE_CHOICES,
        group="run",
        metavar="DEVICE",
    )
    bf16: bool = _field(True, "bfloat16 autocast on CUDA", group="run")
    early_stopping: int | None = _field(
        None, "patience in epochs (none: off)", group="run", lo=1, hi=INT_MAX, metavar="PATIENCE"
    )
    min_steps: int = _field(
        100,
        "early stopping never ends a run before this many optimiser steps",
        group="run",
        lo=0,
        hi=INT_MAX,
    )
    val_metric: str = _field(
        "auto",
        "validation score that picks the best epoch and drives early stopping: R@1, MRR, or "
        "auto (R@1 with >= 100 validation rows, else MRR, which uses every rank and is steadier "
        "on a small split)",
        group="run",
        choices=("auto", "R@1", "MRR"),
    )
    checkpoint_every: int | None = _field(
        None, "also checkpoint every N steps", group="run", lo=1, hi=INT_MAX, metavar="STEPS"
    )
    split: tuple[float, float, float] = _field(
        (0.7, 0.1, 0.2),
        "train,val,test fractions (datasets without splits/)",
        group="data",
        lo=0,
        metavar="TRAIN,VAL,TEST",
    )
    standardize: bool = _field(True, "standardise features on the training rows", group="data")
    drop_last: bool = _field(True, "drop the last incomplete batch", group="data")
    loader: str = _field(
        "auto",
        "where training rows live: memory (whole, fastest), stream (memory-mapped, read in blocks "
        "in the background; data larger than memory), auto (stream when the features would not "
        "fit comfortably in the memory available); results do not depend on it",
        group="data",
        choices=("auto", "memory", "stream"),
    )
    workers: int = _field(
        2,
        "worker processes decoding raw items while training (--loader stream on a manifest)",
        group="data",
        lo=0,
        hi=256,
    )
    row_order: str = _field(
        "block",
        "epoch order: block (shuffled blocks of --block-rows, --shuffle-blocks at a time, rows "
        "shuffled within; a uniform shuffle when the training rows fit in one buffer) or global "
        "(a uniform shuffle of all rows: random reads when streaming)",
        group="data",
        choices=("block", "global"),
    )
    block_rows: int = _field(
        4096, "rows per block of the block order", group="data", lo=1, hi=INT_MAX
    )
    shuffle_blocks: int = _field(
        16, "blocks shuffled together (the shuffle buffer)", group="data", lo=1, hi=INT_MAX
    )
    val_rows: int = _field(
        10_000,
        "validation uses at most this many rows: a seeded random sample of the validation "
        "split, fixed for the run",
        group="data",
        lo=2,
        hi=INT_MAX,
    )
    quiet: bool = _field(False, "no progress bar", group="run")
    tensorboard: bool = _field(
        False, "write TensorBoard event files to OUT/tensorboard", group="run"
    )

    def check(self) -> None:
        """Type-check and bound every field (generated from the annotations and metadata), then
        the checks that involve several fields. Raises :class:`ConfigError` naming the field."""
        hints = typing.get_type_hints(type(self))
        for f in dataclasses.fields(self):
            _check_value(f.name, getattr(self, f.name), hints[f.name], f.metadata)
        if "anchor" in self.objective_options:
            raise ConfigError("give the anchor modality with --anchor NAME, not as an option")
        objective_class(self.objective)  # a registered name
        _check_towers(self.towers)
        if abs(sum(self.split) - 1) > 1e-6:
            raise ConfigError(f"split must be 3 non-negative fractions summing to 1: {self.split}")
        resolve_device(self.device)  # a device this machine has

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (``config.json``): flat keys, ``split`` as a list."""
        d = dataclasses.asdict(self)
        d["split"] = list(self.split)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TrainConfig:
        """Build and check a config from a (JSON/TOML) table of fields."""
        if not isinstance(d, Mapping):
            raise ConfigError(
                f"a config must be a table of TrainConfig fields, got {type(d).__name__}"
            )
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(str(k) for k in set(d) - names)
        if unknown:
            raise ConfigError(f"unknown config keys: {', '.join(unknown)}")
        d = dict(d)
        if isinstance(d.get("split"), list):
            d["split"] = tuple(d["split"])
        cfg = cls(**d)
        cfg.check()
        return cfg

    def objective_class(self) -> type[Objective]:
        """The registered class of ``self.objective``."""
        return objective_class(self.objective)

    def anchor_modality(self, modalities: list[str]) -> str | None:
        """The anchor of an objective that takes one (``anchor``, default the first modality);
        None for the others (and an error if ``anchor`` was set for them)."""
        if not self.objective_class().takes_anchor:
            if self.anchor is not None:
                takers = [n for n, c in OBJECTIVES.items() if c.takes_anchor]
                raise ConfigError(
                    f"--anchor only applies to {' and '.join(takers)}, not {self.objective}"
                )
            return None
        anchor = self.anchor if self.anchor is not None else modalities[0]
        if anchor not in modalities:
            raise ConfigError(f"anchor {anchor!r} is not a modality; choose from {modalities}")
        return anchor

    def resolved_logit_scale(self, n_modalities: int) -> tuple[float, float]:
        """``(initial, max)`` logit scale after applying the automatic defaults."""
        init = self.logit_scale_init
        if init is None:
            init = self.objective_class().default_logit_scale(n_modalities, self.embed_dim)
        return init, self.max_logit_scale if self.max_logit_scale is not None else 10.0 * init

    def batch_rows(self, n: int) -> int:
        """The batch size on ``n`` training rows: ``batch_size`` (at most ``n``), or when it is
        None, ``n // 4`` clipped to [2, 256] (at most ``n``).

        >>> TrainConfig().batch_rows(216), TrainConfig().batch_rows(5000)
        (54, 256)
        """
        bs = self.batch_size if self.batch_size is not None else min(AUTO_BATCH_MAX, max(2, n // 4))
        return max(1, min(bs, n))

    def validation_metric(self, val_rows: int) -> str:
        """``val_metric`` with ``auto`` resolved for a validation split of ``val_rows`` rows."""
        if self.val_metric != "auto":
            return self.val_metric
        return "R@1" if val_rows >= AUTO_R1_MIN_VAL_ROWS else "MRR"


def _check_towers(towers: Mapping[str, Any]) -> None:
    """Every tower spec is a string naming a registered tower (nothing is built or imported)."""
    from .towers import parse_tower_spec

    for m, spec in towers.items():
        if not isinstance(spec, str):
            raise ConfigError(f"towers.{m} must be a tower spec string, got {spec!r}")
        parse_tower_spec(spec)


def resume_conflicts(saved: Mapping[str, Any], asked: TrainConfig) -> list[str]:
    """The ``--resume`` rule, the one every check of it applies (the CLI's flags and the run's
    ``config.json`` in :mod:`centrobind.runs`, a checkpoint's config in :mod:`centrobind.train`):
    a resumed run keeps the config it was ``saved`` with (a ``to_dict`` form); only the
    :data:`PER_INVOCATION` fields may differ, and ``epochs`` may grow (the run is extended), never
    shrink. Returns the fields of ``asked`` that break it, in field order (a field absent from
    ``saved``, newer than it, is not one; a saved key no field has is named as it is).

    Example:
        >>> saved = TrainConfig(epochs=5).to_dict()
        >>> resume_conflicts(saved, TrainConfig(epochs=9, quiet=True))
        []
        >>> resume_conflicts(saved, TrainConfig(epochs=3, lr=0.1))
        ['lr', 'epochs']
    """
    now = asked.to_dict()
    bad = [
        k for k in now if k in saved and k not in (*PER_INVOCATION, "epochs") and saved[k] != now[k]
    ]
    bad += [k for k in saved if k not in now]
    if "epochs" in saved and now["epochs"] < saved["epochs"]:
        bad.append("epochs")
    return bad


# --------------------------------------------------------------------------- config files


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


# --------------------------------------------------------------------------- validation


def _optional_inner(tp: Any) -> tuple[Any, bool]:
    """``X | None`` -> ``(X, True)``; any other type -> ``(tp, False)``."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1 and len(typing.get_args(tp)) == 2:
            return args[0], True
    return tp, False


def _check_number(name: str, v: Any, tp: type, meta: Mapping[str, Any]) -> None:
    if tp is int and (isinstance(v, bool) or not isinstance(v, int)):
        raise ConfigError(f"{name} must be an integer, got {v!r}")
    if tp is float:
        if isinstance(v, bool) or not isinstance(v, int | float):
            raise ConfigError(f"{name} must be a number, got {v!r}")
        if not math.isfinite(v):
            raise ConfigError(f"{name} must be a finite number, got {v!r}")
    lo, hi = meta.get("lo"), meta.get("hi")
    if lo is not None and (v <= lo if meta.get("lo_open") else v < lo):
        raise ConfigError(f"{name} must be {'>' if meta.get('lo_open') else '>='} {lo}, got {v!r}")
    if hi is not None and (v >= hi if meta.get("hi_open") else v > hi):
        raise ConfigError(f"{name} must be {'<' if meta.get('hi_open') else '<='} {hi}, got {v!r}")


def _check_value(name: str, v: Any, tp: Any, meta: Mapping[str, Any]) -> None:
    """One field against its annotation ``tp`` and its metadata bounds/choices."""
    tp, optional = _optional_inner(tp)
    if v is None:
        if not optional:
            raise ConfigError(f"{name} may not be empty (null)")
        return
    origin = typing.get_origin(tp) or tp
    if tp is bool:
        if not isinstance(v, bool):
            raise ConfigError(f"{name} must be true or false, got {v!r}")
    elif tp in (int, float):
        _check_number(name, v, tp, meta)
    elif tp is str:
        if not isinstance(v, str):
            raise ConfigError(f"{name} must be a string, got {v!r}")
        choices = meta.get("choices")
        if choices and v not in choices:
            raise ConfigError(f"{name} must be one of {', '.join(choices)}, got {v!r}")
    elif origin is tuple:
        items = typing.get_args(tp)
        if not isinstance(v, tuple | list) or len(v) != len(items):
            raise ConfigError(f"{name} must be {len(items)} values, got {v!r}")
        for i, (x, t) in enumerate(zip(v, items, strict=True)):
            _check_value(f"{name}[{i}]", x, t, meta)
    elif origin is dict:
        if not isinstance(v, dict) or not all(isinstance(k, str) for k in v):
            raise ConfigError(f"{name} must be a table/dict of keyword arguments, got {v!r}")
    else:  # pragma: no cover - a new field type must be taught here
        raise TypeError(f"config field {name}: unsupported type {tp!r}")


# --------------------------------------------------------------------------- command line


def _parser_for(tp: Any) -> Any:
    """A string -> value parser for a field type (``none`` gives None for optional fields)."""
    inner, optional = _optional_inner(tp)

    def parse(text: str) -> Any:
        if optional and text.lower() in ("none", "null"):
            return None
        if typing.get_origin(inner) is tuple:
            return tuple(float(x) for x in text.split(","))
        return inner(text)

    parse.__name__ = getattr(inner, "__name__", "value")  # argparse names it in its errors
    return parse


_METAVARS: dict[Any, str] = {int: "N", float: "X", str: "NAME"}


def _field_help(name: str, doc: str) -> str:
    """A field's ``--help`` line: its ``doc``, for ``logit_scale_init`` completed with every
    registered objective's default scale (from the registry, so it cannot go stale)."""
    if name == "logit_scale_init":
        scales = ", ".join(f"{n} {c.default_logit_scale_text()}" for n, c in OBJECTIVES.items())
        doc = f"{doc.removesuffix(')')}: {scales})"
    return doc


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """Add one ``--flag`` per CLI field of :class:`TrainConfig`, grouped, defaults in the help.

    A flag that is not given is absent from the parsed namespace (``argparse.SUPPRESS``), so a
    config file's values stay unless a flag overrides them; see :func:`config_overrides`.
    """
    hints = typing.get_type_hints(TrainConfig)
    groups: dict[str, Any] = {}
    for f in dataclasses.fields(TrainConfig):
        meta = f.metadata
        if not meta.get("cli", True):
            continue
        g = groups.get(meta["group"])
        if g is None:
            g = groups[meta["group"]] = parser.add_argument_group(f"{meta['group']} settings")
        flag = "--" + f.name.replace("_", "-")
        default = f.default if f.default is not dataclasses.MISSING else None
        shown = ",".join(map(str, default)) if isinstance(default, tuple) else default
        help_text = (
            f"{_field_help(f.name, meta['doc'])} (default: {'none' if shown is None else shown})"
        )
        choices = meta.get("choices")
        inner = _optional_inner(hints[f.name])[0]
        metavar = meta.get("metavar") or _METAVARS.get(inner)
        if f.name == "objective":  # checked by check(): one line naming the registered names
            metavar = "{" + ",".join(OBJECTIVES) + "}"
        if hints[f.name] is bool:
            g.add_argument(
                flag,
                action=argparse.BooleanOptionalAction,
                default=argparse.SUPPRESS,
                help=help_text,
            )
        else:
            g.add_argument(
                flag,
                type=_parser_for(hints[f.name]),
                default=argparse.SUPPRESS,
                choices=choices,
                metavar=None if choices else metavar,
                help=help_text,
            )


def config_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The :class:`TrainConfig` fields given as flags in ``args`` (see
    :func:`add_config_arguments`)."""
    return {
        f.name: getattr(args, f.name)
        for f in dataclasses.fields(TrainConfig)
        if f.metadata.get("cli", True) and hasattr(args, f.name)
    }
