"""Towers: the per-modality encoders of a :class:`~centrobind.models.Binder`, and their registry.

A tower is any ``nn.Module`` mapping one modality's batch to ``[N, D]`` (``D`` the shared space's
width). From the CLI and config a tower is named by a spec string::

    NAME[:ARG][,KEY=VALUE...]

========================  ===============================================================
``mlp``                   today's head over feature vectors (``hidden``, ``depth``, ``dropout``;
                          defaults from the config's ``--hidden/--depth/--dropout``)
``identity``              keep the input space: the modality's features *are* the shared space
                          (width must equal ``--embed-dim``); no parameters (ImageBind's recipe)
``conv1d``                sequences / time series ``[N, C, T]`` (``channels``, ``width`` 64,
                          ``layers`` 4, ``kernel`` 5)
``cnn``                   small images ``[N, C, S, S]`` (``channels``, ``width`` 32, ``layers`` 3)
``bow``                   hashed word ids ``[N, L]`` (0 = padding) -> mean of embeddings -> MLP
                          (``vocab`` 32768, ``width`` 128)
``backbone:SPEC``         a featurize encoder (``timm:resnet18``, ``minilm``, ``st:...``,
                          ``hf:...``) as a tower with a ``head`` (``mlp`` or ``identity``) on
                          top. Frozen (the default) it runs once over the data (its features are
                          cached); with ``freeze=false`` or ``train_last=K`` it trains end to end
                          on raw items (images; texts as ids + mask, ``length``; audio clips,
                          ``seconds``: :mod:`centrobind.data.raw`)
``module:PKG.MOD:CLASS``  your own ``nn.Module``, built with the options as keyword arguments
========================  ===============================================================

Options for every tower: ``freeze`` (no parameter trains) and ``train_last=K`` (only the last
``K`` blocks train, with everything registered after them; see :func:`block_list`).

Flat input: vectors are what run folders, ``encode`` and search pass around, so the raw-item
towers (``conv1d``, ``cnn``, backbones) take ``[N, prod(shape)]`` and reshape it to the
modality's item shape (``shape``, recorded per modality); they also take the shaped batch.

A run records each tower's spec (``config.json`` ``towers``; a module passed in Python records
``module:<its import path>`` plus the keyword arguments its ``tower_config()`` returns, if it has
one). Loading a run imports that module: code installed on the machine, never code from the run
folder; a module that cannot be imported is one :class:`TowerError` line.
"""

from __future__ import annotations

import importlib
import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from .errors import ConfigError


class MLPHead(nn.Module):
    """``depth`` linear layers (GELU + dropout between them), ``[N, D_in] -> [N, D_out]``.

    ``depth=1`` is a linear projection. The output is not normalised here; :class:`Binder`
    does that.
    """

    def __init__(
        self, in_dim: int, out_dim: int, hidden: int = 256, depth: int = 2, dropout: float = 0.0
    ) -> None:
        super().__init__()
        if depth < 1:
            raise ValueError(f"depth must be >= 1, got {depth}")
        layers: list[nn.Module] = []
        d = in_dim
        for _ in range(depth - 1):
            layers += [nn.Linear(d, hidden), nn.GELU()]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            d = hidden
        layers.append(nn.Linear(d, out_dim))
        self.net = nn.Sequential(*layers)
        self.in_dim, self.out_dim = in_dim, out_dim

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


__all__ = [
    "TOWERS",
    "Conv1dTower",
    "CNNTower",
    "BagOfWordsTower",
    "BackboneTower",
    "IdentityTower",
    "TowerError",
    "TowerSpec",
    "apply_freeze",
    "block_list",
    "build_tower",
    "check_tower_output",
    "parse_tower_spec",
    "register_tower",
    "tower_spec_of",
]


class TowerError(ConfigError):
    """A bad tower spec, a tower that cannot be built or imported, or a wrong output width."""


# --------------------------------------------------------------------------- specs


@dataclass
class TowerSpec:
    """A parsed tower spec: ``name`` (registry key), ``arg`` (after the first ``:``) and
    ``options`` (the ``,KEY=VALUE`` pairs, values parsed as JSON where they parse)."""

    name: str
    arg: str | None = None
    options: dict[str, Any] = field(default_factory=dict)

    def __str__(self) -> str:
        head = self.name + (f":{self.arg}" if self.arg else "")
        opts = [f"{k}={_fmt(v)}" for k, v in self.options.items()]
        return ",".join([head, *opts])

    @property
    def freeze(self) -> bool:
        """Whether the tower is frozen (``freeze``; a ``backbone:`` without ``train_last`` or
        ``freeze=false`` is frozen by default)."""
        default = self.name == "backbone" and "train_last" not in self.options
        return bool(self.options.get("freeze", default))


def _fmt(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)


def _value(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


def _split(text: str) -> list[str]:
    """Split on the commas outside ``[...]`` (so ``shape=[3,128]`` stays one option)."""
    parts, depth, cur = [], 0, ""
    for ch in text:
        depth += {"[": 1, "]": -1}.get(ch, 0)
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    return [*parts, cur]


def parse_tower_spec(spec: str | TowerSpec) -> TowerSpec:
    """``"conv1d,width=32"`` -> ``TowerSpec("conv1d", None, {"width": 32})``. A bare option
    (``freeze``) means ``true``. Raises :class:`TowerError` for an empty or unknown name."""
    if isinstance(spec, TowerSpec):
        return spec
    if not isinstance(spec, str) or not spec.strip():
        raise TowerError(f"empty tower spec {spec!r}")
    head, *opts = [p.strip() for p in _split(spec.strip())]
    name, _, arg = head.partition(":")
    if name not in TOWERS:
        raise TowerError(
            f"unknown tower {spec!r} (towers: {', '.join(sorted(TOWERS))}; e.g. mlp, conv1d, "
            "cnn, identity, backbone:timm:resnet18, module:my_pkg.towers:MyTower)"
        )
    options: dict[str, Any] = {}
    for o in opts:
        if not o:
            continue
        k, eq, v = o.partition("=")
        options[k.strip()] = _value(v.strip()) if eq else True
    return TowerSpec(name, arg or None, options)


# --------------------------------------------------------------------------- towers


class IdentityTower(nn.Module):
    """Keeps the input: ``[N, D] -> [N, D]`` (the modality's pretrained space is the shared one)."""

    def __init__(self, in_dim: int) -> None:
        super().__init__()
        self.in_dim = in_dim

    def forward(self, x: Tensor) -> Tensor:
        return x


def _shaped(x: Tensor, shape: Sequence[int]) -> Tensor:
    """``[N, prod(shape)]`` (or already ``[N, *shape]``) -> ``[N, *shape]``."""
    if tuple(x.shape[1:]) == tuple(shape):
        return x
    return x.reshape(x.shape[0], *shape)


class Conv1dTower(nn.Module):
    """A 1-D CNN for sequences: ``[N, C*T]`` or ``[N, C, T]`` -> ``[N, D]``.

    ``layers`` blocks of (Conv1d kernel ``kernel``, stride 2 after the first, GroupNorm, GELU),
    doubling the width up to 4x ``width``; then mean and max over time, concatenated, and a
    linear projection. Shift-invariant in time, which an MLP on the flattened window is not.
    """

    def __init__(
        self,
        shape: Sequence[int],
        out_dim: int,
        width: int = 64,
        layers: int = 4,
        kernel: int = 5,
    ) -> None:
        super().__init__()
        if len(shape) != 2:
            raise TowerError(f"conv1d takes [channels, length] items, got shape {list(shape)}")
        self.shape = tuple(int(s) for s in shape)
        blocks: list[nn.Module] = []
        c = self.shape[0]
        for i in range(layers):
            w = width * min(4, 2 ** (i // 2))
            blocks.append(
                nn.Sequential(
                    nn.Conv1d(c, w, kernel, stride=1 if i == 0 else 2, padding=kernel // 2),
                    nn.GroupNorm(min(8, w), w),
                    nn.GELU(),
                )
            )
            c = w
        self.blocks = nn.Sequential(*blocks)
        self.proj = nn.Linear(2 * c, out_dim)
        self.in_dim, self.out_dim = math.prod(self.shape), out_dim

    def forward(self, x: Tensor) -> Tensor:
        h = self.blocks(_shaped(x, self.shape))  # [N, W, T']
        return self.proj(torch.cat([h.mean(-1), h.amax(-1)], dim=1))


class CNNTower(nn.Module):
    """A small 2-D CNN for images: ``[N, C*H*W]`` or ``[N, C, H, W]`` -> ``[N, D]``.

    ``layers`` blocks of (3x3 conv, GroupNorm, GELU, 2x2 max-pool), doubling the width; global
    average pool; linear projection.
    """

    def __init__(self, shape: Sequence[int], out_dim: int, width: int = 32, layers: int = 3):
        super().__init__()
        if len(shape) != 3:
            raise TowerError(f"cnn takes [channels, height, width] items, got shape {list(shape)}")
        self.shape = tuple(int(s) for s in shape)
        blocks: list[nn.Module] = []
        c = self.shape[0]
        for i in range(layers):
            w = width * 2 ** min(i, 3)
            blocks.append(
                nn.Sequential(
                    nn.Conv2d(c, w, 3, padding=1),
                    nn.GroupNorm(min(8, w), w),
                    nn.GELU(),
                    nn.MaxPool2d(2) if min(self.shape[1:]) >= 2 ** (i + 1) else nn.Identity(),
                )
            )
            c = w
        self.blocks = nn.Sequential(*blocks)
        self.proj = nn.Linear(c, out_dim)
        self.in_dim, self.out_dim = math.prod(self.shape), out_dim

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(self.blocks(_shaped(x, self.shape)).mean((-2, -1)))


class BagOfWordsTower(nn.Module):
    """Hashed word ids ``[N, L]`` (0 = padding, as floats or ints) -> mean embedding -> MLP."""

    def __init__(self, length: int, out_dim: int, vocab: int = 32768, width: int = 128) -> None:
        super().__init__()
        self.emb = nn.EmbeddingBag(vocab, width, mode="sum", padding_idx=0)
        self.mlp = nn.Sequential(nn.GELU(), nn.Linear(width, out_dim))
        self.in_dim, self.out_dim, self.vocab = length, out_dim, vocab

    def forward(self, x: Tensor) -> Tensor:
        ids = x.round().long().clamp(0, self.vocab - 1)
        count = (ids > 0).sum(1, keepdim=True).clamp_min(1)
        return self.mlp(self.emb(ids) / count)


class BackboneTower(nn.Module):
    """A pretrained network as a tower: ``[N, prod(shape)]`` raw items (decoded by the
    backbone's own preprocessing) -> ``module`` -> flattened ``[N, F]`` -> ``head`` -> ``[N, D]``.

    ``forward_fn`` defaults to ``module`` itself (e.g. ``lambda x: clip.encode_image(x)``)."""

    def __init__(
        self,
        module: nn.Module,
        shape: Sequence[int],
        head: nn.Module,
        forward_fn: Callable[[Tensor], Tensor] | None = None,
    ) -> None:
        super().__init__()
        self.backbone = module
        self.head = head
        self.shape = tuple(int(s) for s in shape)
        self._fn = forward_fn
        self.in_dim = math.prod(self.shape)

    def forward(self, x: Tensor) -> Tensor:
        x = _shaped(x, self.shape)
        f = self._fn(x) if self._fn is not None else self.backbone(x)
        if isinstance(f, (tuple, list)):
            f = f[0]
        return self.head(f.reshape(f.shape[0], -1).float())


# --------------------------------------------------------------------------- freezing


def block_list(module: nn.Module) -> list[nn.Module]:
    """The ordered "blocks" of a network, for ``train_last=K``: the first container of several
    modules among ``blocks``, ``stages``, ``layers``, ``encoder.layer``, ``transformer.resblocks``,
    ``features`` (timm, transformers, open_clip, torchvision), else ResNet's ``layer1..layerN``,
    else the top-level children that have parameters. A module may name its own blocks with a
    ``train_blocks()`` method (the text and audio backbones do)."""
    own = getattr(module, "train_blocks", None)
    if callable(own):
        return list(own())
    for path in ("blocks", "stages", "layers", "encoder.layer", "transformer.resblocks"):
        sub: Any = module
        for part in path.split("."):
            sub = getattr(sub, part, None)
        if isinstance(sub, (nn.Sequential, nn.ModuleList)) and len(sub) > 1:
            return list(sub)
    for inner in ("backbone", "features", "visual", "model"):
        sub = getattr(module, inner, None)
        if isinstance(sub, nn.Module) and sub is not module:
            found = block_list(sub)
            if len(found) > 1:
                return found
    res = [getattr(module, f"layer{i}") for i in range(1, 9) if hasattr(module, f"layer{i}")]
    if len(res) > 1:
        return res
    return [c for c in module.children() if any(True for _ in c.parameters())]


def apply_freeze(module: nn.Module, freeze: bool = False, train_last: int | None = None) -> None:
    """Freeze every parameter (``freeze``), or all but the last ``train_last`` blocks and what is
    registered after them (:func:`block_list`). Frozen submodules are marked so that
    :class:`~centrobind.models.Binder` keeps them in eval mode (no BatchNorm statistics drift)."""
    if train_last is not None:
        if isinstance(train_last, bool) or not isinstance(train_last, int) or train_last < 0:
            raise TowerError(f"train_last must be a whole number >= 0, got {train_last!r}")
        blocks = block_list(module)
        if train_last > len(blocks):
            raise TowerError(f"train_last={train_last}, but the network has {len(blocks)} blocks")
        first = blocks[len(blocks) - train_last] if train_last else None
        first_ids = {id(p) for p in first.parameters()} if first is not None else set()
        on = False
        for p in module.parameters():
            on = on or id(p) in first_ids
            p.requires_grad_(on)
        _mark_frozen(module)
        return
    if freeze:
        for p in module.parameters():
            p.requires_grad_(False)
        module._centrobind_frozen = True  # type: ignore[assignment]


def _mark_frozen(module: nn.Module) -> None:
    """Mark the largest submodules whose parameters are all frozen (the frozen blocks, and
    whatever runs before them: a stem, embeddings), so that they stay in eval mode."""
    for child in module.children():
        params = list(child.parameters())
        if params and not any(p.requires_grad for p in params):
            child._centrobind_frozen = True  # type: ignore[assignment]
        elif params:
            _mark_frozen(child)


# --------------------------------------------------------------------------- registry


@dataclass
class TowerContext:
    """What a tower builder knows: the input width ``in_dim`` (flat), the item ``shape`` when the
    modality holds raw items (else None), the shared width ``embed_dim`` and the config's MLP
    defaults (``hidden``, ``depth``, ``dropout``)."""

    in_dim: int
    embed_dim: int
    shape: tuple[int, ...] | None = None
    hidden: int = 256
    depth: int = 2
    dropout: float = 0.0
    modality: str = "?"


Builder = Callable[[TowerSpec, TowerContext], nn.Module]


#: Options of a tower spec that configure how the modality's raw items are decoded
#: (:mod:`centrobind.data.raw`), not the tower: image ``size``/``gray``/``flip``, audio
#: ``rate``/``seconds``, sensor arrays ``shift``, text ``length`` (``vocab`` goes to both).
DATA_OPTIONS = ("size", "gray", "flip", "rate", "seconds", "shift", "length", "augment")


def _opts(spec: TowerSpec, allowed: Sequence[str]) -> dict[str, Any]:
    skip = ("freeze", "train_last", "shape", "random", *DATA_OPTIONS)
    kw = {k: v for k, v in spec.options.items() if k not in skip}
    bad = [k for k in kw if k not in allowed]
    if bad:
        raise TowerError(
            f"tower {str(spec)!r}: unknown option {bad[0]!r} (options: "
            f"{', '.join([*allowed, 'freeze', 'train_last'])})"
        )
    return kw


def _mlp(spec: TowerSpec, ctx: TowerContext) -> nn.Module:
    kw: dict[str, Any] = {"hidden": ctx.hidden, "depth": ctx.depth, "dropout": ctx.dropout}
    kw.update(_opts(spec, ("hidden", "depth", "dropout")))
    return MLPHead(ctx.in_dim, ctx.embed_dim, **kw)


def _identity(spec: TowerSpec, ctx: TowerContext) -> nn.Module:
    _opts(spec, ())
    if ctx.in_dim != ctx.embed_dim:
        raise TowerError(
            f"modality {ctx.modality!r}: an identity tower keeps its input space, so its width "
            f"{ctx.in_dim} must equal embed_dim {ctx.embed_dim} (--embed-dim {ctx.in_dim})"
        )
    return IdentityTower(ctx.in_dim)


def _item_shape(spec: TowerSpec, ctx: TowerContext, rank: int, default_channels: int) -> list[int]:
    """The item shape of a raw-item tower: the modality's recorded shape, else ``shape=...``,
    else ``channels`` (default ``default_channels``) with the rest inferred from ``in_dim``."""
    if "shape" in spec.options:
        shape = spec.options["shape"]
        if not isinstance(shape, list) or not all(isinstance(s, int) for s in shape):
            raise TowerError(f"tower {str(spec)!r}: shape must be a list of ints, e.g. [3,128]")
    elif ctx.shape is not None and len(ctx.shape) == rank:
        shape = list(ctx.shape)
    else:
        c = int(spec.options.get("channels", default_channels))
        rest = ctx.in_dim // c if c > 0 else 0
        side = math.isqrt(rest)
        shape = [c, rest] if rank == 2 else [c, side, side]
    if math.prod(shape) != ctx.in_dim:
        raise TowerError(
            f"modality {ctx.modality!r}: tower {str(spec)!r} reads items of shape {shape}, but "
            f"the modality has {ctx.in_dim} values per row"
        )
    return shape


def _conv1d(spec: TowerSpec, ctx: TowerContext) -> nn.Module:
    kw = _opts(spec, ("width", "layers", "kernel", "channels"))
    kw.pop("channels", None)
    return Conv1dTower(_item_shape(spec, ctx, 2, 1), ctx.embed_dim, **kw)


def _cnn(spec: TowerSpec, ctx: TowerContext) -> nn.Module:
    kw = _opts(spec, ("width", "layers", "channels"))
    kw.pop("channels", None)
    return CNNTower(_item_shape(spec, ctx, 3, 3), ctx.embed_dim, **kw)


def _bow(spec: TowerSpec, ctx: TowerContext) -> nn.Module:
    return BagOfWordsTower(ctx.in_dim, ctx.embed_dim, **_opts(spec, ("vocab", "width")))


def _head(spec: TowerSpec, ctx: TowerContext, width: int) -> nn.Module:
    head = spec.options.get("head", "mlp")
    sub = TowerContext(width, ctx.embed_dim, None, ctx.hidden, ctx.depth, ctx.dropout, ctx.modality)
    if head not in ("mlp", "identity"):
        raise TowerError(f"tower {str(spec)!r}: head must be mlp or identity, got {head!r}")
    return (
        _identity(TowerSpec("identity"), sub) if head == "identity" else _mlp(TowerSpec("mlp"), sub)
    )


def _backbone(spec: TowerSpec, ctx: TowerContext) -> nn.Module:
    """A frozen backbone's features are computed once (the data holds them: the tower is its
    head); a trainable one is built here and runs on raw items every step."""
    _opts(spec, ("head", "hidden", "depth", "dropout"))
    if not spec.arg:
        raise TowerError("tower 'backbone:' needs a featurize encoder, e.g. backbone:timm:resnet18")
    if spec.freeze or ctx.shape is None:
        return _head(spec, ctx, ctx.in_dim)
    from .featurize.encoders import load_encoder

    enc = load_encoder(spec.arg, device="cpu", allow_random=bool(spec.options.get("random")))
    module = enc.train_module()
    found = enc.train_shape({k: v for k, v in spec.options.items() if k in DATA_OPTIONS})
    if not isinstance(module, nn.Module) or found is None:
        raise TowerError(
            f"tower {str(spec)!r}: encoder {spec.arg!r} cannot be trained end to end (it is not a "
            "torch network); freeze it (its features are then computed once)"
        )
    module.train()
    shape = list(found)
    if math.prod(shape) != ctx.in_dim:
        raise TowerError(
            f"modality {ctx.modality!r}: backbone {spec.arg!r} reads items of shape {shape}, the "
            f"data has {ctx.in_dim} values per row"
        )
    return BackboneTower(module, shape, _head(spec, ctx, int(enc.dim)))


def _module(spec: TowerSpec, ctx: TowerContext) -> nn.Module:
    cls = import_tower_class(spec)
    kw = {k: v for k, v in spec.options.items() if k not in ("freeze", "train_last")}
    try:
        return cls(**kw)
    except Exception as e:  # noqa: BLE001 - the user's constructor: any failure is one line
        raise TowerError(
            f"tower {str(spec)!r}: {cls.__name__}(**{kw}) failed: {' '.join(str(e).split())[:200]}"
        ) from None


def import_tower_class(spec: TowerSpec) -> type[nn.Module]:
    """The ``nn.Module`` subclass named by ``module:PKG.MOD:CLASS`` (one line if it cannot be
    imported or is not a module class)."""
    path = spec.arg or ""
    mod_name, _, qual = path.partition(":")
    if not mod_name or not qual:
        raise TowerError(f"tower {str(spec)!r}: expected module:PACKAGE.MODULE:CLASS")
    if "<locals>" in qual or mod_name == "__main__":
        raise TowerError(
            f"tower {str(spec)!r}: the class is defined in a script or a function, so it cannot "
            "be imported again; move it into an importable module"
        )
    try:
        obj: Any = importlib.import_module(mod_name)
        for part in qual.split("."):
            obj = getattr(obj, part)
    except ImportError as e:
        raise TowerError(
            f"tower {str(spec)!r}: cannot import {mod_name!r} ({' '.join(str(e).split())[:160]}); "
            "install the package that defines this tower or put it on PYTHONPATH"
        ) from None
    except AttributeError:
        raise TowerError(f"tower {str(spec)!r}: {mod_name!r} has no {qual!r}") from None
    if not (isinstance(obj, type) and issubclass(obj, nn.Module)):
        raise TowerError(f"tower {str(spec)!r}: {path} is not an nn.Module class")
    return obj


#: Registry: tower name -> builder ``(spec, context) -> nn.Module``.
TOWERS: dict[str, Builder] = {
    "mlp": _mlp,
    "identity": _identity,
    "conv1d": _conv1d,
    "cnn": _cnn,
    "bow": _bow,
    "backbone": _backbone,
    "module": _module,
}


def register_tower(name: str, builder: Builder) -> Builder:
    """Add a tower family: ``builder(spec: TowerSpec, ctx: TowerContext) -> nn.Module``."""
    if not name or ":" in name or "," in name:
        raise ValueError(f"bad tower name {name!r}")
    TOWERS[name] = builder
    return builder


def build_tower(spec: str | TowerSpec, ctx: TowerContext) -> nn.Module:
    """Build the tower named by ``spec`` for one modality and apply its ``freeze`` /
    ``train_last`` options. The module remembers its spec (:func:`tower_spec_of`)."""
    s = parse_tower_spec(spec)
    tower = TOWERS[s.name](s, ctx)
    train_last = s.options.get("train_last")
    if s.name == "backbone" and isinstance(tower, BackboneTower):
        apply_freeze(tower.backbone, freeze=False, train_last=train_last)
    elif train_last is not None:
        apply_freeze(tower, train_last=train_last)
    if s.options.get("freeze", False) is True:
        apply_freeze(tower, freeze=True)
    tower._centrobind_spec = str(s)  # type: ignore[assignment]
    return tower


def tower_spec_of(module: nn.Module) -> str:
    """The spec that rebuilds ``module``: the one it was built from, else
    ``module:<import path>`` with the keyword arguments of its ``tower_config()`` (if any)."""
    spec = getattr(module, "_centrobind_spec", None)
    if isinstance(spec, str):
        return spec
    cls = type(module)
    config_fn = getattr(module, "tower_config", None)
    kw = config_fn() if callable(config_fn) else {}
    if not isinstance(kw, Mapping):
        raise TowerError(f"{cls.__qualname__}.tower_config() must return a dict of kwargs")
    opts = [f"{k}={json.dumps(v, separators=(',', ':'))}" for k, v in kw.items()]
    bad = [
        o for o in opts if "," in o.partition("=")[2] and not o.partition("=")[2].startswith("[")
    ]
    if bad:
        raise TowerError(
            f"{cls.__qualname__}.tower_config(): {bad[0]!r} holds a comma; give scalars or lists"
        )
    return ",".join([f"module:{cls.__module__}:{cls.__qualname__}", *opts])


def check_tower_output(
    modality: str, tower: nn.Module, x: Tensor, out: Any, embed_dim: int
) -> None:
    """Raise :class:`TowerError` unless ``out`` is ``[N, embed_dim]`` for ``x`` of ``N`` rows."""
    n = x.shape[0] if isinstance(x, Tensor) else len(x)
    if isinstance(out, Tensor) and out.dim() == 2 and tuple(out.shape) == (n, embed_dim):
        return
    got = list(out.shape) if isinstance(out, Tensor) else type(out).__name__
    raise TowerError(
        f"the tower of {modality!r} ({tower_spec_of(tower)}) returns {got} for {n} rows; the "
        f"shared space needs [{n}, {embed_dim}] (embed_dim {embed_dim})"
    )
