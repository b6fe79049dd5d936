"""``hf:PATH`` (a local Hugging Face transformers encoder folder) or ``hf:ORG/NAME`` (a model on
the hub, e.g. ``hf:facebook/wav2vec2-base``, from the hub cache, downloaded once; :mod:`.hub`),
mean-pooled.

Text models (BERT-like; tokenizer files in the folder): mean of the last hidden states over the
attention mask, not normalised. Audio models (wav2vec2 / HuBERT / WavLM-like; a
``preprocessor_config.json`` in the folder): WAV read and resampled to the feature extractor's
rate, mean of the last hidden states over time, one clip at a time (no padding effects).
The kind comes from the column (``kind``), else from the model config.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .audio_io import read_wav
from .base import Encoder, EncoderError, offline, package_version, require
from .hub import hub_snapshot, is_hub_id

_AUDIO_TYPES = {
    "wav2vec2",
    "wav2vec2-conformer",
    "wav2vec2-bert",
    "hubert",
    "wavlm",
    "data2vec-audio",
    "unispeech",
    "unispeech-sat",
    "sew",
    "sew-d",
}
_EXTRA = "'transformers>=4.30'"


def _load(spec: str, what: str, fn: Any, path: Path) -> Any:
    try:
        return fn(str(path), local_files_only=True)
    except Exception as e:
        raise EncoderError(
            f"encoder {spec!r}: cannot load the {what} from {path}: "
            f"{' '.join(str(e).split())[:300]}"
        ) from None


class HFTextEncoder(Encoder):
    """Texts -> mean-pooled last hidden state, float32 ``[n, hidden_size]``."""

    kind = "text"

    def __init__(self, spec: str, path: Path, device: str, max_length: int = 512) -> None:
        tr = require("transformers", spec, _EXTRA)
        self.torch = require("torch", spec, "torch")
        self.tok = _load(spec, "tokenizer", tr.AutoTokenizer.from_pretrained, path)
        self.model = _load(spec, "model", tr.AutoModel.from_pretrained, path).to(device).eval()
        self.device = device
        self.max_length = int(min(max_length, getattr(self.tok, "model_max_length", max_length)))
        self.spec = spec
        self.dim = int(self.model.config.hidden_size)
        self.version = f"{path.name} (transformers {package_version('transformers')})"
        self.options = {"pooling": "mean", "max_length": self.max_length}

    def train_shape(self, options: Mapping[str, Any]) -> tuple[int, ...] | None:
        """``[2, length]`` token ids + mask; ``length`` defaults to ``max_length``."""
        return (2, int(options.get("length") or self.max_length))

    def train_input(self, prepared: Any, shape: Sequence[int]) -> np.ndarray:
        from .trainable import token_input

        length = int(shape[-1])
        b = self.tok(str(prepared), truncation=True, max_length=min(length, self.max_length))
        return token_input(b["input_ids"], b["attention_mask"], length)

    def train_module(self) -> Any:
        """The model, mean-pooled over the mask as :meth:`forward`, on ``[N, 2, L]`` inputs."""
        from .trainable import TokenInputs, layers_of

        return TokenInputs(self.model, "hf", layers_of(self.model))

    def forward(self, prepared: list[Any]) -> np.ndarray:
        from .trainable import mean_pool

        torch = self.torch
        batch = self.tok(
            [str(t) for t in prepared],
            padding=True,
            truncation=True,
            max_length=self.max_length,
            return_tensors="pt",
        ).to(self.device)
        with torch.inference_mode():
            h = self.model(**batch).last_hidden_state  # [n, T, H]
            pooled = mean_pool(h, batch["attention_mask"])
        return pooled.float().cpu().numpy()


class HFAudioEncoder(Encoder):
    """WAV files -> mean over time of the last hidden state, float32 ``[n, hidden_size]``."""

    kind = "audio"

    def __init__(self, spec: str, path: Path, device: str, max_seconds: float = 30.0) -> None:
        tr = require("transformers", spec, _EXTRA)
        self.torch = require("torch", spec, "torch")
        if not (path / "preprocessor_config.json").is_file():
            raise EncoderError(
                f"encoder {spec!r}: {path} has no preprocessor_config.json (the audio feature "
                "extractor settings, e.g. saved with Wav2Vec2FeatureExtractor.save_pretrained)"
            )
        self.fe = _load(spec, "feature extractor", tr.AutoFeatureExtractor.from_pretrained, path)
        self.model = _load(spec, "model", tr.AutoModel.from_pretrained, path).to(device).eval()
        self.device = device
        self.rate = int(getattr(self.fe, "sampling_rate", 16000))
        cfg = self.model.config
        # shortest input the convolutional front end accepts (its receptive field)
        rf, jump = 1, 1
        for k, s in zip(
            getattr(cfg, "conv_kernel", ()), getattr(cfg, "conv_stride", ()), strict=False
        ):
            rf += (k - 1) * jump
            jump *= s
        self.min_samples = rf
        self.max_samples = int(max_seconds * self.rate)
        self.spec = spec
        self.dim = int(cfg.hidden_size)
        self.version = f"{path.name} (transformers {package_version('transformers')})"
        self.options = {"pooling": "mean", "sample_rate": self.rate, "max_seconds": max_seconds}

    def train_shape(self, options: Mapping[str, Any]) -> tuple[int, ...] | None:
        """``[1, T]``: ``seconds`` (default 1.0) of the waveform at the model's rate."""
        samples = int(round(float(options.get("seconds") or 1.0) * self.rate))
        if samples < self.min_samples:
            raise EncoderError(
                f"encoder {self.spec!r}: seconds={options.get('seconds')} is {samples} samples; "
                f"the model needs at least {self.min_samples}"
            )
        return (1, samples)

    def train_input(self, prepared: Any, shape: Sequence[int]) -> np.ndarray:
        """A clip (at most ``T`` samples) -> ``[1, T]``: normalised by the feature extractor,
        then zero-padded (a clip of exactly ``T`` samples gives :meth:`forward`'s input)."""
        from .trainable import wave_input

        x = np.asarray(prepared, dtype=np.float32)[: int(shape[-1])]
        return wave_input(x, int(shape[-1]), self._normalise).reshape(tuple(shape))

    def _normalise(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(self.fe(x, sampling_rate=self.rate, return_tensors="np")["input_values"])

    def train_module(self) -> Any:
        """The model, mean over time as :meth:`forward`, on ``[N, 1, T]`` waveforms."""
        from .trainable import WaveInputs

        return WaveInputs(self.model)

    def prepare(self, item: str) -> np.ndarray:
        x = read_wav(item, self.rate)[: self.max_samples]
        if x.shape[0] < self.min_samples:
            x = np.pad(x, (0, self.min_samples - x.shape[0]))
        return x

    def forward(self, prepared: list[Any]) -> np.ndarray:
        torch = self.torch
        out = []
        with torch.inference_mode():
            for x in prepared:
                inp = self.fe(x, sampling_rate=self.rate, return_tensors="pt")
                h = self.model(inp["input_values"].to(self.device)).last_hidden_state  # [1, T, H]
                out.append(h.mean(1)[0].float().cpu().numpy())
        return np.stack(out)


def hf_encoder(arg: str | None, *, device: str, allow_random: bool, kind: str | None) -> Encoder:
    """``hf:PATH``: a text or audio transformers encoder folder (see the module docstring)."""
    if not arg:
        raise EncoderError("encoder 'hf:' needs a model folder, e.g. hf:models/my-encoder")
    if is_hub_id(arg):
        path, spec = hub_snapshot(f"hf:{arg}", arg), f"hf:{arg}"
    else:
        path = Path(arg).expanduser().resolve()
        spec = f"hf:{path}"
    if not (path / "config.json").is_file():
        raise EncoderError(
            f"encoder 'hf:{arg}': no config.json in that folder (a local transformers model "
            "folder; nothing is downloaded)"
        )
    offline()
    if kind is None:
        try:
            model_type = json.loads((path / "config.json").read_text()).get("model_type", "")
        except (OSError, json.JSONDecodeError, AttributeError):
            model_type = ""
        kind = "audio" if model_type in _AUDIO_TYPES else "text"
    if kind == "audio":
        return HFAudioEncoder(spec, path, device)
    if kind == "text":
        return HFTextEncoder(spec, path, device)
    raise EncoderError(f"encoder {spec!r}: hf: serves text and audio columns, not {kind}")
