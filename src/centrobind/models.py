"""The Binder: one encoder (tower) per modality into a shared, L2-normalised space, plus a logit
scale.

Shapes: ``features[m]`` is ``[N, D_m]`` (or whatever batch the modality's tower takes); every
tower maps it to ``[N, D]``; ``Binder.forward`` stacks the modalities into ``[M, N, D]`` (the
objectives' input). Towers: :mod:`centrobind.towers`.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .towers import TowerContext, build_tower, check_tower_output, tower_spec_of

__all__ = ["MLPHead", "Binder", "ModalityDict"]

_RESERVED = frozenset(dir(nn.ModuleDict()))


class ModalityDict(nn.ModuleDict):
    """A ``ModuleDict`` keyed by modality names, any name a file may have: names that collide with
    ``ModuleDict`` attributes (``items``, ``keys``, ``training``, ...) or start with ``~`` are
    stored under ``"~" + name`` (an injective escape), so they never clash with an attribute."""

    @staticmethod
    def _key(name: str) -> str:
        return "~" + name if name in _RESERVED or name.startswith("~") else name

    @staticmethod
    def _name(key: str) -> str:
        return key[1:] if key.startswith("~") else key

    def __getitem__(self, name: str) -> nn.Module:
        return super().__getitem__(self._key(name))

    def __setitem__(self, name: str, module: nn.Module) -> None:
        super().__setitem__(self._key(name), module)

    def __delitem__(self, name: str) -> None:
        super().__delitem__(self._key(name))

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and super().__contains__(self._key(name))

    def __iter__(self) -> Iterator[str]:
        return (self._name(k) for k in super().__iter__())

    def keys(self) -> list[str]:  # type: ignore[override]
        return [self._name(k) for k in super().keys()]

    def items(self) -> list[tuple[str, nn.Module]]:  # type: ignore[override]
        return [(self._name(k), v) for k, v in super().items()]


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


class Binder(nn.Module):
    """One tower per modality plus a learnable logit scale (CLIP convention).

    Args:
        dims: modality name -> input dimension ``D_m`` (order = modality order); a modality whose
            tower is given in ``encoders`` may be left out (its width is then the tower's
            ``in_dim`` attribute, or the product of its ``shapes`` entry, or 0: unchecked).
        embed_dim: ``D`` of the shared space.
        hidden, depth, dropout: MLP head shape (see :class:`MLPHead`), the default tower.
        logit_scale_init: initial ``s = 1 / temperature`` (CLIP: ``1 / 0.07``).
        max_logit_scale: ``s`` is clamped to this (CLIP: 100).
        learn_logit_scale: when False, ``s`` stays at its initial value.
        encoders: modality -> a tower: any ``nn.Module`` mapping a batch of that modality to
            ``[N, embed_dim]``, or a tower spec (``"conv1d"``, ``"identity"``, ...; see
            :mod:`centrobind.towers`). Modalities not named get an :class:`MLPHead`.
        shapes: modality -> item shape (e.g. ``[3, 128]``) for raw-item towers built from specs.

    Example:
        >>> binder = Binder({"a": 8, "b": 5}, embed_dim=4)
        >>> z = binder({"a": torch.randn(3, 8), "b": torch.randn(3, 5)})
        >>> tuple(z.shape)
        (2, 3, 4)
        >>> imu = Binder({"imu": 3 * 16, "text": 4}, embed_dim=4, encoders={"imu": "conv1d"},
        ...              shapes={"imu": [3, 16]})
        >>> imu.towers["imu"], tuple(imu.encode("imu", torch.randn(2, 48)).shape)
        ('conv1d', (2, 4))
    """

    def __init__(
        self,
        dims: Mapping[str, int] | None = None,
        embed_dim: int = 64,
        hidden: int = 256,
        depth: int = 2,
        dropout: float = 0.0,
        logit_scale_init: float = 1 / 0.07,
        max_logit_scale: float = 100.0,
        learn_logit_scale: bool = True,
        encoders: Mapping[str, nn.Module | str] | None = None,
        shapes: Mapping[str, Sequence[int]] | None = None,
    ) -> None:
        super().__init__()
        dims, encoders, shapes = dict(dims or {}), dict(encoders or {}), dict(shapes or {})
        mods = list(dims) + [m for m in encoders if m not in dims]
        if len(mods) < 2:
            raise ValueError(f"a Binder needs at least 2 modalities, got {mods}")
        if not logit_scale_init > 0:
            raise ValueError(f"logit_scale_init must be > 0, got {logit_scale_init}")
        if logit_scale_init > max_logit_scale:
            raise ValueError(
                f"logit_scale_init {logit_scale_init} exceeds max_logit_scale {max_logit_scale}"
            )
        self.modalities = mods
        self.embed_dim = embed_dim
        towers: dict[str, nn.Module] = {}
        for m in mods:
            given = encoders.get(m)
            if isinstance(given, nn.Module):
                towers[m] = given
                continue
            shape = tuple(int(s) for s in shapes[m]) if m in shapes else None
            width = int(dims.get(m, math.prod(shape) if shape else 0))
            ctx = TowerContext(width, embed_dim, shape, hidden, depth, dropout, m)
            if given is None:
                towers[m] = MLPHead(ctx.in_dim, embed_dim, hidden, depth, dropout)
                towers[m]._centrobind_spec = "mlp"  # type: ignore[assignment]
            else:
                towers[m] = build_tower(given, ctx)
        self.dims = {m: int(dims.get(m, getattr(towers[m], "in_dim", 0) or 0)) for m in mods}
        self.shapes = {m: [int(s) for s in shapes[m]] for m in mods if m in shapes}
        self.encoders = ModalityDict(towers)
        # Stored as log(s) like CLIP so that Adam steps are relative.
        self.log_logit_scale = nn.Parameter(
            torch.tensor(math.log(logit_scale_init)), requires_grad=learn_logit_scale
        )
        self.max_logit_scale = max_logit_scale

    @property
    def towers(self) -> dict[str, str]:
        """modality -> the spec that rebuilds its tower (``mlp``, ``conv1d,width=32``,
        ``module:pkg.mod:Class``; see :func:`~centrobind.towers.tower_spec_of`)."""
        return {m: tower_spec_of(self.encoders[m]) for m in self.modalities}

    def train(self, mode: bool = True) -> Binder:
        """Like ``nn.Module.train``, but frozen parts of towers (``freeze``, ``train_last``) stay
        in eval mode, so their BatchNorm statistics and dropout stay fixed."""
        super().train(mode)
        for mod in self.modules():
            if getattr(mod, "_centrobind_frozen", False):
                mod.eval()
        return self

    @property
    def logit_scale(self) -> Tensor:
        """``s = exp(log_logit_scale)`` clamped to ``max_logit_scale`` (0-dim tensor)."""
        return self.log_logit_scale.exp().clamp(max=self.max_logit_scale)

    def encode(self, modality: str, x: Any) -> Tensor:
        """``[N, D_m] -> [N, D]`` L2-normalised embeddings of one modality (with grad). A tower
        whose output is not ``[N, D]`` is one :class:`~centrobind.towers.TowerError` line."""
        if modality not in self.encoders:
            raise KeyError(f"unknown modality {modality!r}; the model has {self.modalities}")
        tower = self.encoders[modality]
        out = tower(x)
        check_tower_output(modality, tower, x, out, self.embed_dim)
        return F.normalize(out, dim=-1)

    def forward(self, features: Mapping[str, Any]) -> Tensor:
        """Encode every modality: dict of ``[N, D_m]`` -> ``[M, N, D]`` in model order.

        Rows of missing modalities are encoded too (they are zeros by the data convention); the
        objectives ignore them through the mask.
        """
        return torch.stack([self.encode(m, features[m]) for m in self.modalities])

    def freeze(self, modality: str, frozen: bool = True) -> None:
        """Stop (or resume) training one modality's encoder."""
        for p in self.encoders[modality].parameters():
            p.requires_grad_(not frozen)

    def is_frozen(self, modality: str) -> bool:
        return not any(p.requires_grad for p in self.encoders[modality].parameters())

    @torch.no_grad()
    def embed(self, modality: str, x: Tensor, batch_size: int = 8192) -> Tensor:
        """Inference embedding ``[N, D_m] -> [N, D]`` in eval mode, batched, no grad.

        Low-level: ``x`` must already be standardised as in training. To embed raw features
        (or raw items) of a trained run, use ``centrobind.load(run_dir).encode(modality, x)``.
        """
        was_training = self.training
        self.eval()
        try:
            dev = self.log_logit_scale.device
            out = [
                self.encode(modality, x[i : i + batch_size].to(dev)).float().cpu()
                for i in range(0, x.shape[0], batch_size)
            ]
        finally:
            self.train(was_training)
        if not out:
            return torch.empty(0, self.embed_dim)
        return torch.cat(out)

    def embed_all(self, dataset, batch_size: int = 8192) -> dict[str, Tensor]:
        """Embed every modality of a :class:`~centrobind.data.MultimodalDataset`.

        Returns modality -> ``[N, D]`` (rows where the modality is missing are NaN).
        """
        out = {}
        for m in self.modalities:
            if m not in dataset.features:
                raise KeyError(f"dataset lacks modality {m!r}; it has {dataset.modalities}")
            e = self.embed(m, dataset.features[m], batch_size)
            e[~dataset.mask[dataset.modalities.index(m)].cpu()] = float("nan")
            out[m] = e
        return out
