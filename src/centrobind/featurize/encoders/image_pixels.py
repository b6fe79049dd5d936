"""``pixels[:SIZE][:gray]``: resize + flatten (Pillow, no weights; the offline image default is
``imstats``, which a shift or a change of size does not break).

An image becomes ``SIZE x SIZE`` (default 32, bilinear, aspect ratio not kept), RGB (or one
grey channel with ``:gray``), scaled to [0, 1] and flattened row-major: float32
``[SIZE * SIZE * 3]`` (or ``[SIZE * SIZE]``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .base import Encoder, EncoderError, package_version
from .image_common import open_image, pil

VERSION = "pixels/1"


class PixelsEncoder(Encoder):
    kind = "image"

    def __init__(self, size: int = 32, gray: bool = False) -> None:
        self.Image = pil()
        self.size, self.gray = size, gray
        self.spec = "pixels" + (f":{size}" if size != 32 else "") + (":gray" if gray else "")
        self.dim = size * size * (1 if gray else 3)
        self.version = f"{VERSION} (Pillow {package_version('pillow')})"
        self.options = {"size": size, "gray": gray, "resample": "bilinear"}

    def prepare(self, item: str) -> np.ndarray:
        im = open_image(item, "L" if self.gray else "RGB")
        im = im.resize((self.size, self.size), self.Image.BILINEAR)
        return np.asarray(im, dtype=np.float32).reshape(-1) / 255.0

    def forward(self, prepared: list[Any]) -> np.ndarray:
        return np.stack(prepared).astype(np.float32)


def pixels(arg: str | None, *, device: str, allow_random: bool, kind: str | None) -> Encoder:
    """``pixels``, ``pixels:16``, ``pixels:gray``, ``pixels:16:gray``."""
    size, gray = 32, False
    for part in (arg or "").split(":") if arg else []:
        if part == "gray":
            gray = True
        elif part.isdigit() and 1 <= int(part) <= 1024:
            size = int(part)
        else:
            raise EncoderError(f"encoder 'pixels:{arg}': expected pixels[:SIZE][:gray]")
    return PixelsEncoder(size, gray)
