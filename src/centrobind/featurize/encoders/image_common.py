"""Shared helpers for the image encoders: decoding, CNN preprocessing, weight files."""

from __future__ import annotations

import math
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from .base import EncoderError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def pil() -> Any:
    """The Pillow ``Image`` module (a one-line error if Pillow is missing)."""
    try:
        from PIL import Image
    except ImportError:
        raise EncoderError("image encoders need Pillow: pip install 'pillow>=9'") from None
    return Image


#: The most pixels an image may declare before it is decoded (``CENTROBIND_MAX_IMAGE_PIXELS``
#: overrides it): 64 megapixels decode to about 200 MB as RGB. A larger JPEG is decoded at a
#: reduced scale that fits; any other larger image is refused as unreadable.
MAX_IMAGE_PIXELS = 64_000_000


def max_image_pixels() -> int:
    """The pixel budget: ``CENTROBIND_MAX_IMAGE_PIXELS`` when set to a positive integer."""
    raw = os.environ.get("CENTROBIND_MAX_IMAGE_PIXELS", "").strip()
    if not raw:
        return MAX_IMAGE_PIXELS
    if not raw.isdigit() or int(raw) < 1:
        raise EncoderError(f"CENTROBIND_MAX_IMAGE_PIXELS must be a positive integer, got {raw!r}")
    return int(raw)


def open_image(path: str, mode: str) -> Any:
    """Open and fully decode an image (so truncated files fail here), converted to ``mode``.

    The size the file declares is checked against :func:`max_image_pixels` before decoding
    (a 17 KB PNG may declare 12000 x 12000 pixels): a JPEG over it is decoded at the reduced
    scale that fits (``draft``), any other image over it is refused.
    """
    Image = pil()
    budget = max_image_pixels()
    with warnings.catch_warnings(record=True) as said:  # Pillow's size warning: see below
        warnings.simplefilter("always")
        im = Image.open(path)
    with im:
        w, h = im.size
        if w * h > budget and im.format == "JPEG":  # DCT scaling: 1/2, 1/4 or 1/8
            for s in (2, 4, 8):
                size = (math.ceil(w / s), math.ceil(h / s))
                if size[0] * size[1] <= budget:
                    im.draft(im.mode, size)
                    break
        if im.size[0] * im.size[1] > budget:  # the one line that counts, not Pillow's warning
            raise EncoderError(
                f"the image declares {w} x {h} pixels, over the budget of {budget:,} "
                "(set CENTROBIND_MAX_IMAGE_PIXELS to allow more)"
            )
        for caught in said:  # within the budget: Pillow's warnings stand
            warnings.warn_explicit(caught.message, caught.category, caught.filename, caught.lineno)
        im.load()
        return im.convert(mode)


def cnn_input(path: str, size: int = 224, mean=IMAGENET_MEAN, std=IMAGENET_STD) -> np.ndarray:
    """Image file -> float32 ``[3, size, size]``: shorter side resized to ``size / 0.875``
    (bicubic), centre crop, scaled to [0, 1], normalised by ``mean``/``std``."""
    Image = pil()
    im = open_image(path, "RGB")
    short = round(size / 0.875)
    w, h = im.size
    scale = short / min(w, h)
    im = im.resize((max(size, round(w * scale)), max(size, round(h * scale))), Image.BICUBIC)
    w, h = im.size
    left, top = (w - size) // 2, (h - size) // 2
    im = im.crop((left, top, left + size, top + size))
    x = np.asarray(im, dtype=np.float32) / np.float32(255.0)  # [H, W, 3]
    y = (x - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    return np.ascontiguousarray(y.transpose(2, 0, 1), dtype=np.float32)


def split_weights(spec: str, arg: str | None, family: str) -> tuple[str, Path | None]:
    """``NAME[@WEIGHTS]`` -> (name, absolute weights path or None); checks the file exists."""
    if not arg:
        raise EncoderError(f"encoder '{family}:' needs a model name, e.g. {family}:resnet18@w.pth")
    name, _, weights = arg.partition("@")
    if not name:
        raise EncoderError(f"encoder {spec!r}: missing model name before '@'")
    if not weights:
        return name, None
    path = Path(weights).expanduser().resolve()
    if not path.is_file():
        raise EncoderError(
            f"encoder {spec!r}: weights file {path} not found (weights come from a local file; "
            "nothing is downloaded)"
        )
    return name, path


def no_weights(spec: str, family: str) -> EncoderError:
    tag = (
        f" or {family}:NAME@TAG (a pretrained tag, e.g. ViT-B-32@laion2b_s34b_b79k)"
        if (family == "open_clip")
        else ""
    )
    return EncoderError(
        f"encoder {spec!r} has no weights file: give {family}:NAME@PATH (a local .safetensors or "
        f".pth state dict){tag}; random weights only with --allow-random (for tests)"
    )


def load_state_dict(path: Path) -> dict[str, Any]:
    """A local state dict: ``.safetensors``, or a torch file read with ``weights_only=True``
    (tensors only: no code from the file is ever executed)."""
    import torch

    sd: Any
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            sd = load_file(str(path))
        else:
            sd = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:
        raise EncoderError(
            f"{path}: unreadable weights file: {' '.join(str(e).split())[:200]}"
        ) from None
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(sd, dict) and isinstance(sd.get(key), dict):
            sd = sd[key]
    if not isinstance(sd, dict):
        raise EncoderError(f"{path}: not a state dict (a mapping of parameter names to tensors)")
    return sd


def seeded_init(build, seed: int = 0):
    """Run ``build()`` under a fixed torch seed so random weights are reproducible."""
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build()


def backbone_dim(model: Any, size: int, device: str) -> int:
    """Output width of ``model`` on one zero image ``[1, 3, size, size]``."""
    import torch

    with torch.inference_mode():
        out = model(torch.zeros(1, 3, size, size, device=device))
    return int(out.reshape(1, -1).shape[1])
