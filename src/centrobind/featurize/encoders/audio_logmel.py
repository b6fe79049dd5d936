"""``logmel[:N_MELS]``: log-mel spectrogram statistics in plain torch (no weights, no torchaudio).

WAV -> mono 16 kHz -> power spectrogram (``torch.stft``, n_fft 400 = 25 ms Hann window, hop 160
= 10 ms, centred) -> HTK mel filterbank (``N_MELS`` triangles, 0-8 kHz, default 64) ->
``log(mel + 1e-6)`` -> per-band mean and standard deviation over time: float32 ``[2 * N_MELS]``.
Clips are cut to their first 30 s.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from .audio_io import read_wav
from .base import Encoder, EncoderError

__all__ = ["hz_to_mel", "mel_to_hz", "mel_filterbank", "log_mel", "LogMelEncoder", "logmel"]

VERSION = "logmel/1"


def hz_to_mel(f: Any) -> Any:
    """HTK mel scale: ``2595 log10(1 + f / 700)``."""
    return 2595.0 * np.log10(1.0 + np.asarray(f, dtype=np.float64) / 700.0)


def mel_to_hz(m: Any) -> Any:
    """Inverse of :func:`hz_to_mel`."""
    return 700.0 * (10.0 ** (np.asarray(m, dtype=np.float64) / 2595.0) - 1.0)


def mel_filterbank(
    n_freqs: int, sample_rate: int, n_mels: int, f_min: float = 0.0, f_max: float | None = None
) -> torch.Tensor:
    """Triangular HTK mel filters ``[n_freqs, n_mels]`` (unnormalised, peak 1) for the
    ``n_freqs = n_fft // 2 + 1`` rFFT bins of a ``sample_rate`` signal.

    Filter ``j`` rises linearly from mel point ``j`` to ``j + 1`` and falls to ``j + 2``, with the
    ``n_mels + 2`` points equally spaced on the mel scale between ``f_min`` and ``f_max``.
    """
    f_max = sample_rate / 2 if f_max is None else f_max
    freqs = np.linspace(0.0, sample_rate / 2, n_freqs)  # [F]
    pts = mel_to_hz(np.linspace(hz_to_mel(f_min), hz_to_mel(f_max), n_mels + 2))  # [n_mels + 2]
    lower, center, upper = pts[:-2], pts[1:-1], pts[2:]  # [n_mels] each
    up = (freqs[:, None] - lower[None, :]) / (center - lower)[None, :]
    down = (upper[None, :] - freqs[:, None]) / (upper - center)[None, :]
    fb = np.clip(np.minimum(up, down), 0.0, None)
    return torch.from_numpy(fb.astype(np.float32))


def log_mel(
    x: torch.Tensor,
    fb: torch.Tensor,
    n_fft: int = 400,
    hop: int = 160,
    eps: float = 1e-6,
) -> torch.Tensor:
    """Mono waveform ``[T]`` -> log-mel spectrogram ``[frames, n_mels]``."""
    if x.shape[0] < n_fft // 2 + 1:  # reflect padding needs more than n_fft // 2 samples
        x = torch.nn.functional.pad(x, (0, n_fft // 2 + 1 - x.shape[0]))
    window = torch.hann_window(n_fft, dtype=x.dtype, device=x.device)
    spec = torch.stft(x, n_fft, hop, window=window, center=True, return_complex=True)  # [F, t]
    power = spec.abs() ** 2
    return torch.log(power.T @ fb.to(x.device) + eps)  # [t, n_mels]


class LogMelEncoder(Encoder):
    """WAV files -> per-band mean and std of the log-mel spectrogram, float32 ``[2 * n_mels]``."""

    kind = "audio"

    def __init__(self, n_mels: int = 64, device: str = "cpu") -> None:
        self.sample_rate, self.n_fft, self.hop, self.max_seconds = 16000, 400, 160, 30.0
        self.n_mels = n_mels
        self.device = device
        self.fb = mel_filterbank(self.n_fft // 2 + 1, self.sample_rate, n_mels).to(device)
        self.spec = "logmel" if n_mels == 64 else f"logmel:{n_mels}"
        self.dim = 2 * n_mels
        self.version = VERSION
        self.options = {
            "sample_rate": self.sample_rate,
            "n_fft": self.n_fft,
            "hop": self.hop,
            "n_mels": n_mels,
            "stats": ["mean", "std"],
            "max_seconds": self.max_seconds,
        }

    def prepare(self, item: str) -> np.ndarray:
        return read_wav(item, self.sample_rate)[: int(self.max_seconds * self.sample_rate)]

    def forward(self, prepared: list[Any]) -> np.ndarray:
        out = np.empty((len(prepared), self.dim), dtype=np.float32)
        for i, x in enumerate(prepared):
            lm = log_mel(torch.from_numpy(np.ascontiguousarray(x)).to(self.device), self.fb)
            feats = torch.cat([lm.mean(0), lm.std(0, correction=0)])
            out[i] = feats.cpu().numpy()
        return out


def logmel(arg: str | None, *, device: str, allow_random: bool, kind: str | None) -> Encoder:
    """``logmel`` (64 mel bands) or ``logmel:N`` (N bands, 8-256)."""
    n = 64
    if arg:
        try:
            n = int(arg)
        except ValueError:
            n = -1
        if not 8 <= n <= 256:
            raise EncoderError(f"encoder 'logmel:{arg}': expected logmel:N with 8 <= N <= 256")
    return LogMelEncoder(n, device)
