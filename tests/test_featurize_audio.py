"""Audio featurizers: WAV reading, the mel filterbank against independent references, log-mel
statistics, and ``hf:`` with a tiny randomly initialised wav2vec2 saved to disk."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from centrobind.featurize import encoder_from_meta, featurize, load_encoder
from centrobind.featurize.encoders.audio_io import read_wav
from centrobind.featurize.encoders.audio_logmel import log_mel, mel_filterbank
from featurize_helpers import make_tiny_wav2vec2, tone, write_manifest, write_wav


def test_filterbank_hand_computed_case():
    # sr 8000, n_fft 8 -> bins at 0, 1000, 2000, 3000, 4000 Hz; one filter over 0..4000 Hz.
    # mel(4000) = 2595 log10(1 + 4000/700) = 2146.06; centre = mel^-1(1073.03) = 1113.9 Hz.
    # weights: 0, 1000/1113.9, (4000-2000)/(4000-1113.9), (4000-3000)/(4000-1113.9), 0
    fb = mel_filterbank(5, 8000, 1).numpy()[:, 0]
    np.testing.assert_allclose(fb, [0.0, 0.8977, 0.69298, 0.34649, 0.0], atol=2e-4)


def _reference_filterbank(n_fft: int, sr: int, n_mels: int, fmin: float, fmax: float):
    """librosa.filters.mel(htk=True, norm=None) re-derived with scalar math, loop by loop."""

    def mel(f):
        return 2595.0 * math.log10(1.0 + f / 700.0)

    def hz(m):
        return 700.0 * (10.0 ** (m / 2595.0) - 1.0)

    lo, hi = mel(fmin), mel(fmax)
    pts = [hz(lo + (hi - lo) * i / (n_mels + 1)) for i in range(n_mels + 2)]
    fft_freqs = [k * sr / n_fft for k in range(n_fft // 2 + 1)]
    w = np.zeros((len(fft_freqs), n_mels))
    for i in range(n_mels):
        for k, f in enumerate(fft_freqs):
            rise = (f - pts[i]) / (pts[i + 1] - pts[i])
            fall = (pts[i + 2] - f) / (pts[i + 2] - pts[i + 1])
            w[k, i] = max(0.0, min(rise, fall))
    return w


@pytest.mark.parametrize(
    "n_fft,sr,n_mels,fmin,fmax", [(400, 16000, 64, 0.0, 8000.0), (512, 22050, 40, 50.0, 7000.0)]
)
def test_filterbank_matches_reference(n_fft, sr, n_mels, fmin, fmax):
    ours = mel_filterbank(n_fft // 2 + 1, sr, n_mels, fmin, fmax).numpy()
    ref = _reference_filterbank(n_fft, sr, n_mels, fmin, fmax)
    np.testing.assert_allclose(ours, ref, atol=1e-6)
    assert (ours.max(axis=0) > 0).all()  # no empty filter at these settings


def test_log_mel_matches_numpy_framing():
    """torch.stft (centred, reflect-padded, Hann) + filterbank vs an explicit numpy version."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal(3000).astype(np.float64) * 0.1
    fb = mel_filterbank(201, 16000, 32)
    ours = log_mel(torch.from_numpy(x), fb.double()).numpy()
    padded = np.pad(x, 200, mode="reflect")
    win = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(400) / 400)  # periodic Hann
    frames = np.stack([padded[i : i + 400] * win for i in range(0, len(padded) - 399, 160)])
    power = np.abs(np.fft.rfft(frames, axis=1)) ** 2
    ref = np.log(power @ fb.double().numpy() + 1e-6)
    np.testing.assert_allclose(ours, ref, rtol=1e-6, atol=1e-6)


def test_logmel_tone_peaks_in_its_band(tmp_path):
    enc = load_encoder("logmel:32")
    assert enc.dim == 64 and enc.kind == "audio"
    centres = np.asarray(
        [(np.argmax(mel_filterbank(201, 16000, 32).numpy()[:, j])) * 40 for j in range(32)]
    )
    for f in (500.0, 2000.0, 5000.0):
        write_wav(tmp_path / "t.wav", tone(f, 1.0))
        mean = enc.encode([str(tmp_path / "t.wav")])[0, :32]
        assert abs(centres[int(np.argmax(mean))] - f) <= 0.15 * f
    # a steady tone: the loud band barely changes over time (std of log energy < 0.1)
    stats = enc.encode([str(tmp_path / "t.wav")])[0]
    assert stats[32 + int(np.argmax(stats[:32]))] < 0.1


@pytest.mark.parametrize("width", [1, 2, 3, 4])
def test_read_wav_sample_widths(tmp_path, width):
    x = tone(440.0, 0.1, rate=8000, amp=0.7)
    write_wav(tmp_path / "a.wav", x, rate=8000, width=width)
    y = read_wav(tmp_path / "a.wav")
    assert y.dtype == np.float32 and y.shape == x.shape
    np.testing.assert_allclose(y, x, atol=1.5 / 2 ** (8 * width - 1))


def test_read_wav_stereo_and_resampling(tmp_path):
    left, right = tone(440.0, 0.5, rate=8000), tone(440.0, 0.5, rate=8000, amp=0.1)
    write_wav(tmp_path / "s.wav", np.stack([left, right], 1), rate=8000, channels=2)
    y = read_wav(tmp_path / "s.wav")
    np.testing.assert_allclose(y, (left + right) / 2, atol=1e-4)
    up = read_wav(tmp_path / "s.wav", 16000)
    assert up.shape == (8000,)
    spectrum = np.abs(np.fft.rfft(up))
    assert abs(np.argmax(spectrum) * 16000 / len(up) - 440.0) < 3.0  # same pitch after resampling


def test_read_wav_rejects_bad_files(tmp_path):
    (tmp_path / "a.mp3").write_bytes(b"ID3")
    with pytest.raises(ValueError, match="only PCM WAV"):
        read_wav(tmp_path / "a.mp3")
    (tmp_path / "b.wav").write_bytes(b"RIFF....WAVEjunk")
    with pytest.raises(ValueError, match="not a readable PCM WAV"):
        read_wav(tmp_path / "b.wav")
    write_wav(tmp_path / "c.wav", tone(440.0, 0.2))
    data = (tmp_path / "c.wav").read_bytes()
    (tmp_path / "c.wav").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="truncated"):
        read_wav(tmp_path / "c.wav")


@pytest.fixture(scope="module")
def tiny_w2v(tmp_path_factory):
    return make_tiny_wav2vec2(tmp_path_factory.mktemp("w2v") / "tiny-wav2vec2")


def test_hf_audio_tiny_wav2vec2(tmp_path, tiny_w2v):
    from transformers import Wav2Vec2FeatureExtractor, Wav2Vec2Model

    rows = []
    for i in range(5):
        rate = 16000 if i != 2 else 22050  # one file needs resampling
        write_wav(tmp_path / f"{i}.wav", tone(200.0 + 150 * i, 0.2 + 0.1 * i, rate=rate), rate=rate)
        rows.append({"sound": f"{i}.wav", "k": str(i % 2)})
    write_wav(tmp_path / "short.wav", tone(300.0, 0.001))  # 16 samples: padded to the minimum
    rows.append({"sound": "short.wav", "k": "0"})
    man = write_manifest(tmp_path / "m.jsonl", rows)
    s = featurize(man, tmp_path / "ds", encoders={"sound": f"hf:{tiny_w2v}"}, labels=["k"],
                  batch_size=2, progress=False)  # fmt: skip
    assert s.encoded == {"sound": 6} and s.failed == {"sound": 0}
    meta = json.loads((tmp_path / "ds/meta.json").read_text())
    entry = meta["featurizers"]["sound"]
    assert entry["kind"] == "audio" and entry["dim"] == 32 and entry["spec"] == f"hf:{tiny_w2v}"
    x = np.load(tmp_path / "ds/modalities/sound.npy")
    # independent forward: feature extractor + model, mean over time
    fe = Wav2Vec2FeatureExtractor.from_pretrained(tiny_w2v)
    model = Wav2Vec2Model.from_pretrained(tiny_w2v).eval()
    wav = read_wav(tmp_path / "0.wav", 16000)
    with torch.no_grad():
        h = model(fe(wav, sampling_rate=16000, return_tensors="pt")["input_values"])
    np.testing.assert_allclose(x[0], h.last_hidden_state.mean(1)[0].numpy(), rtol=1e-4, atol=1e-5)
    again = encoder_from_meta(entry).encode([str(tmp_path / f"{i}.wav") for i in range(5)])
    np.testing.assert_allclose(again, x[:5], rtol=1e-4, atol=1e-5)
    assert len({tuple(np.round(r, 4)) for r in x}) == 6  # distinct clips, distinct features
