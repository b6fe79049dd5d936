"""``imstats``: colour and shape statistics of an image (numpy + Pillow, no weights; the offline
image default).

Unlike ``pixels`` (a resized bitmap, which changes completely when the object moves or changes
size), every feature here is pooled over the whole image, so it barely moves when the object
is shifted or scaled. The image is resized to 64 x 64 RGB in [0, 1]; features (float32
``[DIM]`` = 120):

- colour (70): a 4 x 4 x 4 joint RGB histogram (fractions of pixels) and the mean and standard
  deviation of each channel;
- edges (24): at 64, 32 and 16 pixels, an 8-bin histogram of gradient orientation (signed,
  weighted by gradient magnitude, normalised to sum 1): straight sides give peaks, curves a flat
  histogram;
- foreground shape (26): the foreground weight is each pixel's colour distance from the median
  border colour (the background); from it the 7 Hu moments (invariant to translation, scale and
  rotation; signed log10), the area fraction, the fill of its bounding box and its elongation,
  and a 4 x 4 histogram of the foreground's colour hue x saturation (the object's colour without
  the background's).

It describes appearance, not meaning: for photos, use a pretrained backbone (``timm:``,
``torchvision:``, ``open_clip:`` with a local weights file).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .base import Encoder, EncoderError, package_version
from .image_common import open_image, pil

__all__ = ["ImageStatsEncoder", "image_stats", "DIM"]

VERSION = "imstats/1"
SIZE = 64
DIM = 70 + 24 + 26


def _orientation_hist(gray: np.ndarray, bins: int = 8) -> np.ndarray:
    """Magnitude-weighted histogram of gradient direction ``[bins]`` (sums to 1, or all 0)."""
    gy, gx = np.gradient(gray)
    mag = np.hypot(gx, gy)
    ang = np.arctan2(gy, gx)  # [-pi, pi]
    idx = np.floor((ang + np.pi) / (2 * np.pi) * bins).astype(np.int64) % bins
    h = np.bincount(idx.ravel(), weights=mag.ravel(), minlength=bins)
    total = h.sum()
    return h / total if total > 0 else h


def _hu_moments(w: np.ndarray) -> np.ndarray:
    """The 7 Hu moment invariants of a non-negative weight map ``[H, W]`` (zeros if empty)."""
    m00 = w.sum()
    if m00 <= 1e-9:
        return np.zeros(7)
    ys, xs = np.mgrid[0 : w.shape[0], 0 : w.shape[1]].astype(np.float64)
    cx, cy = (w * xs).sum() / m00, (w * ys).sum() / m00
    dx, dy = xs - cx, ys - cy

    def eta(p: int, q: int) -> float:
        return float((w * dx**p * dy**q).sum() / m00 ** (1 + (p + q) / 2))

    n20, n02, n11 = eta(2, 0), eta(0, 2), eta(1, 1)
    n30, n03, n21, n12 = eta(3, 0), eta(0, 3), eta(2, 1), eta(1, 2)
    a, b = n30 + n12, n21 + n03
    return np.array(
        [
            n20 + n02,
            (n20 - n02) ** 2 + 4 * n11**2,
            (n30 - 3 * n12) ** 2 + (3 * n21 - n03) ** 2,
            a**2 + b**2,
            (n30 - 3 * n12) * a * (a**2 - 3 * b**2) + (3 * n21 - n03) * b * (3 * a**2 - b**2),
            (n20 - n02) * (a**2 - b**2) + 4 * n11 * a * b,
            (3 * n21 - n03) * a * (a**2 - 3 * b**2) - (n30 - 3 * n12) * b * (3 * a**2 - b**2),
        ]
    )


def _hue_sat(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Hue in [0, 1) and saturation in [0, 1] of ``[..., 3]`` RGB values in [0, 1]."""
    mx, mn = rgb.max(-1), rgb.min(-1)
    c = mx - mn
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    safe = np.where(c > 0, c, 1.0)
    h = np.where(
        mx == r, ((g - b) / safe) % 6, np.where(mx == g, (b - r) / safe + 2, (r - g) / safe + 4)
    )
    h = np.where(c > 0, h / 6.0, 0.0)
    s = np.where(mx > 0, c / np.where(mx > 0, mx, 1.0), 0.0)
    return h % 1.0, s


def image_features(x: np.ndarray) -> np.ndarray:
    """RGB ``[SIZE, SIZE, 3]`` in [0, 1] -> float32 ``[DIM]`` (see the module docstring)."""
    hist, _ = np.histogramdd(x.reshape(-1, 3), bins=(4, 4, 4), range=((0, 1),) * 3)
    colour = np.concatenate([hist.ravel() / (SIZE * SIZE), x.mean((0, 1)), x.std((0, 1))])
    gray = x.mean(-1)
    edges = []
    for s in (SIZE, SIZE // 2, SIZE // 4):
        k = SIZE // s
        g = gray.reshape(s, k, s, k).mean((1, 3))
        edges.append(_orientation_hist(g))
    border = np.concatenate([x[0], x[-1], x[:, 0], x[:, -1]])  # [4 * SIZE, 3]
    w = np.linalg.norm(x - np.median(border, axis=0), axis=-1)  # foreground weight [H, W]
    w = np.where(w > 0.15, w, 0.0)
    hu = _hu_moments(w)
    hu = np.sign(hu) * np.log10(np.abs(hu) + 1e-12) / 12.0
    area = float((w > 0).mean())
    fill, elong = 0.0, 0.0
    fg_hist = np.zeros(16)
    if area > 0:
        ys, xs = np.nonzero(w)
        bbox = (ys.max() - ys.min() + 1) * (xs.max() - xs.min() + 1)
        fill = float((w > 0).sum() / bbox)
        cov = np.cov(np.stack([xs, ys]).astype(np.float64)) if len(xs) > 1 else np.eye(2)
        ev = np.linalg.eigvalsh(cov)
        elong = float(1 - np.sqrt(max(ev[0], 0) / max(ev[1], 1e-9)))
        hue, sat = _hue_sat(x[w > 0])
        joint, _, _ = np.histogram2d(hue, sat, bins=4, range=[[0.0, 1.0], [0.0, 1.0]])
        fg_hist = joint.ravel() / len(hue)
    shape = np.concatenate([hu, [area, fill, elong], fg_hist])
    return np.concatenate([colour, *edges, shape]).astype(np.float32)


class ImageStatsEncoder(Encoder):
    kind = "image"

    def __init__(self) -> None:
        self.Image = pil()
        self.spec = "imstats"
        self.dim = DIM
        self.version = f"{VERSION} (Pillow {package_version('pillow')})"
        self.options = {"size": SIZE, "resample": "bilinear"}

    def prepare(self, item: str) -> np.ndarray:
        im = open_image(item, "RGB").resize((SIZE, SIZE), self.Image.BILINEAR)
        return np.asarray(im, dtype=np.float64) / 255.0

    def forward(self, prepared: list[Any]) -> np.ndarray:
        return np.stack([image_features(x) for x in prepared]).astype(np.float32)


def image_stats(arg: str | None, *, device: str, allow_random: bool, kind: str | None) -> Encoder:
    """``imstats`` (no arguments)."""
    if arg:
        raise EncoderError(f"encoder 'imstats:{arg}' takes no arguments (use imstats)")
    return ImageStatsEncoder()
