"""Reading WAV files with the standard library (``wave``) and numpy; polyphase resampling."""

from __future__ import annotations

import wave
from math import gcd
from pathlib import Path

import numpy as np

__all__ = ["read_wav", "resample"]

#: Sample rates read (a header declaring 1 Hz would make resampling blow up the signal).
MIN_RATE, MAX_RATE = 1_000, 768_000


def _pcm_to_float(raw: bytes, width: int) -> np.ndarray:
    """Little-endian PCM bytes -> float32 in [-1, 1)."""
    if width == 1:  # unsigned 8-bit
        return (np.frombuffer(raw, dtype=np.uint8).astype(np.float32) - 128.0) / 128.0
    if width == 2:
        return np.frombuffer(raw, dtype="<i2").astype(np.float32) / 32768.0
    if width == 3:
        b = np.frombuffer(raw, dtype=np.uint8).reshape(-1, 3).astype(np.int32)
        v = b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16)
        v = np.where(v >= 1 << 23, v - (1 << 24), v)
        return v.astype(np.float32) / float(1 << 23)
    if width == 4:
        return (np.frombuffer(raw, dtype="<i4").astype(np.float64) / 2.0**31).astype(np.float32)
    raise ValueError(f"unsupported sample width {width} bytes")


def resample(x: np.ndarray, rate_in: int, rate_out: int) -> np.ndarray:
    """Resample a 1-D signal ``[T]`` with a polyphase anti-aliasing filter (scipy)."""
    if rate_in == rate_out:
        return x
    from scipy.signal import resample_poly

    g = gcd(rate_in, rate_out)
    return resample_poly(x, rate_out // g, rate_in // g).astype(np.float32)


def read_wav(path: str | Path, rate: int | None = None) -> np.ndarray:
    """A PCM WAV file -> mono float32 ``[T]`` in [-1, 1], resampled to ``rate`` if given.

    Raises ``ValueError``/``OSError`` with a short reason for anything it cannot read (other
    formats than PCM WAV, empty or truncated files).
    """
    path = Path(path)
    if path.suffix.lower() not in (".wav", ".wave"):
        raise ValueError(f"only PCM WAV audio can be read, not {path.suffix or 'no suffix'}")
    try:
        with wave.open(str(path), "rb") as w:
            ch, width, sr, n = w.getnchannels(), w.getsampwidth(), w.getframerate(), w.getnframes()
            raw = w.readframes(n)
    except (wave.Error, EOFError) as e:
        raise ValueError(f"not a readable PCM WAV file ({e})") from None
    if len(raw) != n * ch * width:
        raise ValueError(f"truncated WAV file ({len(raw)} of {n * ch * width} data bytes)")
    if n == 0:
        raise ValueError("empty WAV file (0 samples)")
    if not MIN_RATE <= sr <= MAX_RATE:  # 1 Hz resampled to 16 kHz: 16,000 times the samples
        raise ValueError(f"implausible sample rate {sr} Hz (read {MIN_RATE}-{MAX_RATE} Hz)")
    x = _pcm_to_float(raw, width).reshape(-1, ch).mean(axis=1)
    return resample(x, sr, rate) if rate else x
