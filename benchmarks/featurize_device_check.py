"""Featurize checks that need what this project's CI machine lacks: a GPU, timm, torchvision and
torchaudio (PyPI torchvision does not import beside the pinned torch 2.13.0).

    PYTHONPATH=src python benchmarks/featurize_device_check.py   # prints one JSON object

1. The log-mel filterbank and spectrogram against torchaudio (an independent implementation).
2. ``timm:`` and ``torchvision:`` backbones with seeded random weights: CPU vs CUDA, and a
   weights file saved from the same seeded model loads back to the same features.
3. ``featurize(device="cuda")`` vs ``device="cpu"`` on pixels, logmel, hf (tiny wav2vec2), timm.
4. Throughput (items/s) on the GPU machine.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from centrobind.featurize import featurize, load_encoder  # noqa: E402
from centrobind.featurize.encoders.audio_io import read_wav  # noqa: E402
from centrobind.featurize.encoders.audio_logmel import log_mel, mel_filterbank  # noqa: E402
from centrobind.featurize.encoders.image_common import seeded_init  # noqa: E402
from featurize_helpers import make_raw, write_manifest  # noqa: E402


def _maxabs(a, b) -> float:
    return float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))))


def main() -> None:
    res: dict = {"torch": torch.__version__, "cuda": torch.cuda.is_available()}
    root = Path("/tmp/fzdev")
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 512
    rows = make_raw(root, n=n)
    imgs = [str(root / r["image"]) for r in rows]
    wavs = [str(root / r["sound"]) for r in rows]

    try:
        _torchaudio(res, wavs)
    except Exception as e:  # keep going: report what broke
        res["torchaudio_error"] = repr(e)
    try:
        _backbones(res, root, imgs)
    except Exception as e:
        res["backbones_error"] = repr(e)
    try:
        _featurize_and_rates(res, root, rows, imgs, wavs)
    except Exception as e:
        res["featurize_error"] = repr(e)
    print(json.dumps(res, indent=1))


def _torchaudio(res: dict, wavs: list[str]) -> None:
    import torchaudio

    res["torchaudio"] = torchaudio.__version__
    fb = mel_filterbank(201, 16000, 64)
    ta_fb = torchaudio.functional.melscale_fbanks(201, 0.0, 8000.0, 64, 16000, None, "htk")
    res["fbank_maxabs_vs_torchaudio"] = _maxabs(fb, ta_fb)
    mel = torchaudio.transforms.MelSpectrogram(
        sample_rate=16000, n_fft=400, hop_length=160, n_mels=64, power=2.0, center=True,
        pad_mode="reflect", norm=None, mel_scale="htk",
    )  # fmt: skip
    x = torch.from_numpy(read_wav(wavs[0], 16000))
    res["logmel_maxabs_vs_torchaudio"] = _maxabs(log_mel(x, fb), torch.log(mel(x).T + 1e-6))


def _backbones(res: dict, root: Path, imgs: list[str]) -> None:
    import timm
    import torchvision

    res["timm"], res["torchvision"] = timm.__version__, torchvision.__version__
    wdir = root / "weights"
    wdir.mkdir(exist_ok=True)
    full = {
        "timm": lambda: timm.create_model("resnet18", pretrained=False),
        "torchvision": lambda: torchvision.models.get_model("resnet18", weights=None),
    }
    for fam in ("timm", "torchvision"):
        cpu = load_encoder(f"{fam}:resnet18", allow_random=True, device="cpu")
        gpu = load_encoder(f"{fam}:resnet18", allow_random=True, device="cuda")
        a, b = cpu.encode(imgs[:16]), gpu.encode(imgs[:16])
        path = wdir / f"{fam}-resnet18.pth"
        torch.save(seeded_init(full[fam]).state_dict(), path)
        w = load_encoder(f"{fam}:resnet18@{path}", device="cpu")
        res[fam] = {
            "dim": cpu.dim,
            "spec_random": cpu.spec,
            "spec_weights": w.spec,
            "cpu_vs_cuda_maxabs": _maxabs(a, b),
            "feature_scale": float(np.abs(a).mean()),
            "weights_file_vs_seeded_maxabs": _maxabs(w.encode(imgs[:16]), a),
        }


def _featurize_and_rates(res: dict, root: Path, rows: list, imgs: list, wavs: list) -> None:
    from transformers import Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2Model

    torch.manual_seed(0)
    cfg = Wav2Vec2Config(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
        conv_dim=(16, 16), conv_stride=(5, 4), conv_kernel=(10, 8), num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=2, vocab_size=8,
    )  # fmt: skip
    Wav2Vec2Model(cfg).save_pretrained(root / "w2v")
    Wav2Vec2FeatureExtractor(sampling_rate=16000).save_pretrained(root / "w2v")
    man = write_manifest(
        root / "m.csv",
        [{"img": r["image"], "img2": r["image"], "snd": r["sound"], "snd2": r["sound"]}
         for r in rows[:64]],
    )  # fmt: skip
    enc = {"img": "pixels", "img2": "timm:resnet18", "snd": "logmel", "snd2": f"hf:{root / 'w2v'}"}
    outs = {}
    for dev in ("cpu", "cuda"):
        featurize(man, root / f"ds-{dev}", encoders=enc, device=dev, allow_random=True,
                  progress=False)  # fmt: skip
        outs[dev] = {m: np.load(root / f"ds-{dev}" / "modalities" / f"{m}.npy") for m in enc}
    res["featurize_cpu_vs_cuda_maxabs"] = {m: _maxabs(outs["cpu"][m], outs["cuda"][m]) for m in enc}

    rates = {}
    for spec, items in [
        ("timm:resnet50", imgs), ("torchvision:resnet50", imgs), ("pixels", imgs),
        ("logmel", wavs), (f"hf:{root / 'w2v'}", wavs),
    ]:  # fmt: skip
        for dev in ("cuda", "cpu"):
            e = load_encoder(spec, allow_random=True, device=dev)
            e.encode(items[:64])  # warm-up
            if dev == "cuda":
                torch.cuda.synchronize()
            t = time.perf_counter()
            for i in range(0, len(items), 64):
                e.encode(items[i : i + 64])
            if dev == "cuda":
                torch.cuda.synchronize()
            rates[f"{spec.split('/')[0]} {dev}"] = round(len(items) / (time.perf_counter() - t), 1)
    res["items_per_s"] = rates
    res["cpus"] = torch.get_num_threads()


if __name__ == "__main__":
    main()
