"""Importable custom towers and tiny raw-item data for the tower / raw-item tests."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import torch
from torch import nn


class TinyIMU(nn.Module):
    """A user-written tower: ``[N, 3 * 16]`` -> ``[N, out]`` (mean over time + linear)."""

    def __init__(self, out: int = 8, channels: int = 3) -> None:
        super().__init__()
        self.out, self.channels = out, channels
        self.conv = nn.Conv1d(channels, 8, 3, padding=1)
        self.proj = nn.Linear(8, out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv(x.reshape(x.shape[0], self.channels, -1)).relu()
        return self.proj(h.mean(-1))

    def tower_config(self) -> dict[str, int]:
        return {"out": self.out, "channels": self.channels}


def make_manifest(root: Path, n: int = 24, seed: int = 0, length: int = 16) -> Path:
    """``n`` rows: a ``[3, length]`` .npy trace, a 8x8 PNG and a caption per row; two classes
    (the trace's frequency, the image's colour, the caption's word); label column ``y``."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    (root / "imu").mkdir(parents=True, exist_ok=True)
    (root / "img").mkdir(exist_ok=True)
    rows = []
    t = np.arange(length)
    for i in range(n):
        c = i % 2
        x = np.sin(2 * np.pi * (1 + 3 * c) * t / length + rng.uniform(0, 6.3))
        trace = np.stack([x, -x, 0.1 * rng.standard_normal(length)]).astype(np.float32)
        np.save(root / "imu" / f"{i}.npy", trace)
        img = rng.integers(0, 50, (8, 8, 3)).astype(np.uint8)
        img[..., 2 * c] = 220
        Image.fromarray(img).save(root / "img" / f"{i}.png")
        rows.append(
            {
                "imu": f"imu/{i}.npy",
                "image": f"img/{i}.png",
                "caption": ["a slow red thing", "a fast blue thing"][c],
                "y": str(c),
            }
        )
    path = root / "manifest.csv"
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return path
