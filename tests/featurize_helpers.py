"""Small raw-data builders shared by the featurize tests (images, WAV files, manifests)."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import wave
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def write_wav(path: Path, x: np.ndarray, rate: int = 16000, width: int = 2, channels: int = 1):
    """Write float samples in [-1, 1] (``[T]`` or ``[T, C]``) as PCM WAV."""
    x = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
    assert x.shape[1] == channels
    if width == 1:
        raw = np.clip(np.round(x * 128 + 128), 0, 255).astype(np.uint8).tobytes()
    elif width == 2:
        raw = np.clip(np.round(x * 32768), -32768, 32767).astype("<i2").tobytes()
    elif width == 3:
        v = np.clip(np.round(x * 2**23), -(2**23), 2**23 - 1).astype(np.int64).reshape(-1)
        v = np.where(v < 0, v + 2**24, v).astype(np.uint32)
        b = np.stack([(v >> s) & 0xFF for s in (0, 8, 16)], axis=1).astype(np.uint8)
        raw = b.tobytes()
    else:
        raw = np.clip(np.round(x * 2**31), -(2**31), 2**31 - 1).astype("<i4").tobytes()
    with wave.open(str(path), "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(width)
        w.setframerate(rate)
        w.writeframes(raw)


def tone(freq: float, seconds: float = 0.5, rate: int = 16000, amp: float = 0.5) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return amp * np.sin(2 * np.pi * freq * t)


def make_raw(root: Path, n: int = 12, seed: int = 0) -> list[dict[str, str]]:
    """n rows: caption text, a PNG image and a WAV tone per row, a string label."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    (root / "img").mkdir(parents=True, exist_ok=True)
    (root / "wav").mkdir(exist_ok=True)
    colours = ["red", "green", "blue"]
    rows = []
    for i in range(n):
        c = i % 3
        img = np.zeros((12, 10, 3), np.uint8)
        img[..., c] = 200
        img += rng.integers(0, 40, img.shape, dtype=np.uint8)
        Image.fromarray(img).save(root / "img" / f"{i}.png")
        write_wav(root / "wav" / f"{i}.wav", tone(300 + 200 * c + 10 * i, 0.3))
        rows.append(
            {
                "caption": f"a {colours[c]} square, number {i}",
                "image": f"img/{i}.png",
                "sound": f"wav/{i}.wav",
                "colour": colours[c],
            }
        )
    return rows


def write_manifest(path: Path, rows: list[dict[str, str | None]]) -> Path:
    """CSV / TSV / JSONL / Parquet by suffix; ``None`` or ``""`` cells are empty."""
    cols = list(rows[0])
    if path.suffix in (".csv", ".tsv"):
        with open(path, "w", newline="", encoding="utf-8") as f:
            w = csv.writer(f, delimiter="," if path.suffix == ".csv" else "\t")
            w.writerow(cols)
            w.writerows([[r[c] or "" for c in cols] for r in rows])
    elif path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    else:
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.table({c: [r[c] for r in rows] for c in cols}), path)
    return path


def cli(*args: str, env: dict[str, str] | None = None, timeout: int = 600):
    """Run ``python -m centrobind.cli ARGS`` in a subprocess."""
    full = dict(os.environ)
    full["PYTHONPATH"] = str(ROOT / "src") + os.pathsep + full.get("PYTHONPATH", "")
    full.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "centrobind.cli", *args],
        capture_output=True,
        text=True,
        env=full,
        timeout=timeout,
    )


def make_tiny_wav2vec2(path: Path) -> Path:
    """A tiny randomly initialised wav2vec2 (hidden 32, 2 layers) and its feature extractor
    (16 kHz, normalising), saved with ``save_pretrained``: an ``hf:`` audio model, no download."""
    import torch
    from transformers import Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2Model

    torch.manual_seed(0)
    cfg = Wav2Vec2Config(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        conv_dim=(16, 16),
        conv_stride=(5, 4),
        conv_kernel=(10, 8),
        num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=2,
        vocab_size=8,
    )
    Wav2Vec2Model(cfg).save_pretrained(path)
    Wav2Vec2FeatureExtractor(sampling_rate=16000, do_normalize=True).save_pretrained(path)
    return path


def make_tiny_st(path: Path, words: list[str]) -> Path:
    """A tiny randomly initialised sentence-transformers model (BERT, hidden 16, 2 layers, a
    word-level vocabulary of ``words``; mean pooling, normalised) saved to ``path``: an ``st:``
    model, no download."""
    import inspect

    import torch
    from sentence_transformers import SentenceTransformer, models
    from transformers import BertConfig, BertModel, BertTokenizerFast

    bert = path / "bert"
    bert.mkdir(parents=True, exist_ok=True)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *sorted(set(words))]
    (bert / "vocab.txt").write_text("\n".join(vocab) + "\n")
    if "vocab" in inspect.signature(BertTokenizerFast.__init__).parameters:  # transformers 5
        tok = BertTokenizerFast(vocab={w: i for i, w in enumerate(vocab)})
    else:
        tok = BertTokenizerFast(vocab_file=str(bert / "vocab.txt"))
    tok.save_pretrained(bert)
    torch.manual_seed(0)
    cfg = BertConfig(
        vocab_size=len(vocab),
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=64,
    )
    BertModel(cfg).save_pretrained(bert)
    modules = [models.Transformer(str(bert), max_seq_length=32), models.Pooling(16, "mean")]
    SentenceTransformer(modules=[*modules, models.Normalize()], device="cpu").save(str(path / "st"))
    return path / "st"
