"""A tiny featurized tri-modal corpus and a run trained on it, for the serve and export tests.

Rows are red, green or blue squares (PNG), a caption naming the colour, and a tone whose pitch
depends on the colour (WAV): a space where "a red square" should find red images within seconds
of training. Built with the real featurizers (MiniLM, pixels, logmel); no espeak-ng needed.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from featurize_helpers import tone, write_manifest, write_wav

COLOURS = ["red", "green", "blue"]


def make_corpus(root: Path, n: int = 30, seed: int = 0) -> Path:
    """Raw files under ``root/raw`` and the featurized dataset ``root/dataset`` (returned)."""
    from PIL import Image

    from centrobind.featurize import featurize

    rng = np.random.default_rng(seed)
    raw = root / "raw"
    (raw / "img").mkdir(parents=True, exist_ok=True)
    (raw / "wav").mkdir(exist_ok=True)
    rows = []
    for i in range(n):
        c = i % 3
        img = np.full((16, 16, 3), 30, np.uint8)
        img[3:13, 3:13, c] = 220
        img += rng.integers(0, 30, img.shape, dtype=np.uint8)
        Image.fromarray(img).save(raw / "img" / f"{i:03d}.png")
        write_wav(raw / "wav" / f"{i:03d}.wav", tone(300 + 300 * c + 7 * i, 0.4))
        size = ["small", "large"][i % 2]
        rows.append(
            {
                "caption": f"a {size} {COLOURS[c]} square",
                "image": f"img/{i:03d}.png",
                "sound": f"wav/{i:03d}.wav",
                "colour": COLOURS[c],
            }
        )
    manifest = write_manifest(raw / "manifest.csv", rows)
    out = root / "dataset"
    featurize(
        manifest,
        out,
        encoders={"caption": "minilm", "image": "pixels:8", "sound": "logmel:32"},
        labels=["colour"],
        device="cpu",
        progress=False,
    )
    return out


def train_tiny(data: Path, out: Path, epochs: int = 30, seed: int = 0) -> Path:
    """A small CentroBind run on ``data`` (a second or two on one core)."""
    from centrobind.config import TrainConfig
    from centrobind.runs import train_run

    cfg = TrainConfig(
        objective="centrobind",
        epochs=epochs,
        batch_size=12,
        embed_dim=16,
        hidden=32,
        seed=seed,
        device="cpu",
        quiet=True,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tiny splits, by design
        train_run(data, cfg, out)
    return out


_SPACE: dict[str, tuple[Path, Path, Path]] = {}


def tiny_space(tmp_path_factory) -> tuple[Path, Path, Path]:
    """``(root, dataset, run)``, built once per test session and shared by the serve and export
    tests (torch on one thread while training: as fast for this size, and steady when busy)."""
    if "space" not in _SPACE:
        import torch

        root = tmp_path_factory.mktemp("space")
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            data = make_corpus(root)
            run = train_tiny(data, root / "run")
        finally:
            torch.set_num_threads(threads)
        _SPACE["space"] = (root, data, run)
    return _SPACE["space"]
