"""A torch image backbone as an :class:`Encoder` (used by timm, torchvision and open_clip)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from .base import Encoder
from .image_common import backbone_dim


class BackboneEncoder(Encoder):
    """Image files -> ``forward_fn(batch [n, 3, S, S])`` flattened, float32 ``[n, dim]``."""

    kind = "image"

    def __init__(
        self,
        spec: str,
        forward_fn: Callable[[Any], Any],
        preprocess: Callable[[str], np.ndarray],
        size: int,
        device: str,
        version: str,
        options: dict[str, Any],
    ) -> None:
        self.spec, self.version, self.options = spec, version, options
        self.forward_fn, self.preprocess, self.device = forward_fn, preprocess, device
        self.dim = backbone_dim(forward_fn, size, device)
        import torch.nn as nn

        # what a trainable ``backbone:`` tower trains (centrobind.towers), on items of this shape
        self.module = forward_fn if isinstance(forward_fn, nn.Module) else None
        self.input_shape = (3, size, size)

    def train_shape(self, options: Mapping[str, Any]) -> tuple[int, ...] | None:
        return self.input_shape if self.module is not None else None

    def train_module(self) -> Any:
        return self.module

    def prepare(self, item: str) -> np.ndarray:
        return self.preprocess(item)

    def forward(self, prepared: list[Any]) -> np.ndarray:
        import torch

        x = torch.from_numpy(np.stack(prepared)).to(self.device)
        with torch.inference_mode():
            out = self.forward_fn(x)
        return out.reshape(len(prepared), -1).float().cpu().numpy()
