"""Featurize throughput per encoder (items/s) on generated raw data.

    python benchmarks/featurize.py [--n 2000] [--out /tmp/featurize_bench]

Texts: template captions (~8 words). Images: 32x32 RGB PNG. Audio: 1 s 16 kHz PCM WAV tones.
``hf-audio-tiny`` is a randomly initialised 2-layer wav2vec2 (hidden 32) saved to disk: it times
the ``hf:`` audio path, not a real speech model. Reports items/s of the encoding itself
(decode + forward, from ``FeaturizeSummary.items_per_s``) and of the whole call (model loading,
manifest reading and writing included). On a loaded machine use ``--threads 1``: torch's
intra-op threads slow down ~10x when the cores are oversubscribed.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import time
import wave
from pathlib import Path

import numpy as np


def _raw(root: Path, n: int) -> None:
    from PIL import Image

    rng = np.random.default_rng(0)
    (root / "img").mkdir(parents=True, exist_ok=True)
    (root / "wav").mkdir(exist_ok=True)
    words = ["red", "small", "bright", "old", "quiet", "round", "tall", "dark"]
    rows = []
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(
            root / "img" / f"{i}.png"
        )
        t = np.arange(16000) / 16000
        x = 0.3 * np.sin(2 * np.pi * (200 + i % 800) * t) + 0.01 * rng.standard_normal(16000)
        with wave.open(str(root / "wav" / f"{i}.wav"), "wb") as w:
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(16000)
            w.writeframes((x * 32767).astype("<i2").tobytes())
        a, b = rng.choice(words, 2, replace=False)
        rows.append({"text": f"a {a} and {b} thing, item number {i}", "image": f"img/{i}.png",
                     "audio": f"wav/{i}.wav"})  # fmt: skip
    for col in ("text", "image", "audio"):
        with open(root / f"{col}.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow([col])
            w.writerows([[r[col]] for r in rows])


def _tiny_w2v(path: Path) -> None:
    import torch
    from transformers import Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2Model

    torch.manual_seed(0)
    cfg = Wav2Vec2Config(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
        conv_dim=(16, 16), conv_stride=(5, 4), conv_kernel=(10, 8), num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=2, vocab_size=8,
    )  # fmt: skip
    Wav2Vec2Model(cfg).save_pretrained(path)
    Wav2Vec2FeatureExtractor(sampling_rate=16000).save_pretrained(path)


def main() -> None:
    import torch

    from centrobind.featurize import featurize

    p = argparse.ArgumentParser()
    p.add_argument("--n", type=int, default=2000)
    p.add_argument("--out", default="/tmp/featurize_bench")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument(
        "--threads", type=int, default=None, help="torch.set_num_threads (default: as is)"
    )
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    root = Path(args.out)
    shutil.rmtree(root, ignore_errors=True)
    _raw(root / "raw", args.n)
    _tiny_w2v(root / "w2v")
    cases = [
        ("minilm", "text", "minilm"),
        ("pixels", "image", "pixels"),
        ("logmel", "audio", "logmel"),
        ("hf-audio-tiny", "audio", f"hf:{root / 'w2v'}"),
    ]
    results = {}
    for name, col, spec in cases:
        t = time.perf_counter()
        s = featurize(root / "raw" / f"{col}.csv", root / f"out-{name}", encoders={col: spec},
                      batch_size=args.batch_size, device="cpu", progress=False)  # fmt: skip
        wall = time.perf_counter() - t
        results[name] = {
            "items": s.encoded[col],
            "encode_items_per_s": round(s.items_per_s[col], 1),
            "call_items_per_s": round(s.encoded[col] / wall, 1),
        }
        print(f"{name:14s} {results[name]}", flush=True)
    info = {"n": args.n, "batch_size": args.batch_size, "torch_threads": torch.get_num_threads(),
            "cpus": os.cpu_count(), "results": results}  # fmt: skip
    print(json.dumps(info))


if __name__ == "__main__":
    main()
