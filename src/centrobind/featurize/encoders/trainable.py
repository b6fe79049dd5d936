"""Text and audio encoders as torch networks on fixed-shape inputs, for trainable ``backbone:``
towers (:mod:`centrobind.towers`) on raw items (:mod:`centrobind.data.raw`).

A raw-item row is one flat float32 vector, so a text or a clip is decoded (in the DataLoader
workers) to a fixed shape:

- text: ``[2, L]``, token ids then the attention mask, padded with zeros to ``L`` tokens
  (:func:`token_input`); :class:`TokenInputs` cuts every batch to its longest text before the
  network runs, so a batch is padded to its own longest text, not to ``L``;
- audio: ``[1, T]``, the waveform of the clip normalised by the model's feature extractor and
  zero-padded to ``T`` samples (:func:`wave_input`).

Each network pools exactly as the featurize encoder does (sentence-transformers: its own
pooling and normalisation; ``hf:`` text: mean over the mask; ``hf:`` audio: mean over time), so
in eval mode it gives featurize's vector for the same item (a clip exactly ``T`` samples long).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from torch import Tensor, nn

__all__ = ["TokenInputs", "WaveInputs", "layers_of", "mean_pool", "token_input", "wave_input"]


def mean_pool(h: Tensor, mask: Tensor) -> Tensor:
    """Mean of ``h`` ``[N, T, H]`` over the positions where ``mask`` ``[N, T]`` is 1: ``[N, H]``."""
    m = mask.unsqueeze(-1).to(h.dtype)
    return (h * m).sum(1) / m.sum(1).clamp_min(1.0)


def token_input(ids: Any, mask: Any, length: int) -> np.ndarray:
    """One tokenised text (ids and attention mask, ``[T]`` each) -> float32 ``[2, length]``
    (longer texts are cut: give the tokenizer ``max_length=length`` so the end token stays)."""
    ids, mask = np.asarray(ids).reshape(-1), np.asarray(mask).reshape(-1)
    out = np.zeros((2, length), np.float32)
    n = min(length, ids.shape[0])
    out[0, :n], out[1, :n] = ids[:n], mask[:n]
    return out


def wave_input(x: np.ndarray, samples: int, normalise: Callable[[np.ndarray], Any]) -> np.ndarray:
    """A clip ``[t]`` (``t <= samples``) -> float32 ``[1, samples]``: ``normalise`` (the feature
    extractor) on the clip itself, then zeros after it (as a padded batch with an attention mask
    is normalised)."""
    out = np.zeros((1, samples), np.float32)
    if x.shape[0]:
        y = np.asarray(normalise(x), dtype=np.float32).reshape(-1)[:samples]
        out[0, : y.shape[0]] = y
    return out


class TokenInputs(nn.Module):
    """``[N, 2, L]`` (or flat ``[N, 2L]``) token ids + mask -> ``[N, F]`` through ``net``.

    ``kind`` ``"st"``: ``net`` is a SentenceTransformer (its own pooling and normalisation);
    ``"hf"``: a transformers encoder, mean-pooled over the mask. ``blocks``: the transformer
    layers, for ``train_last=K`` (:func:`centrobind.towers.block_list`)."""

    def __init__(self, net: nn.Module, kind: str, blocks: nn.ModuleList) -> None:
        super().__init__()
        self.net = net
        self.kind = kind
        self._blocks = [blocks]  # a list: not registered twice

    def train_blocks(self) -> list[nn.Module]:
        return list(self._blocks[0])

    def forward(self, x: Tensor) -> Tensor:
        x = x.reshape(x.shape[0], 2, -1)
        mask = x[:, 1].round().long()
        n = max(1, int(mask.sum(1).max()))  # padding per batch: cut to the longest text
        ids, mask = x[:, 0, :n].round().long(), mask[:, :n]
        if self.kind == "st":
            out: Tensor = self.net({"input_ids": ids, "attention_mask": mask})["sentence_embedding"]
            return out
        return mean_pool(self.net(input_ids=ids, attention_mask=mask).last_hidden_state, mask)


class WaveInputs(nn.Module):
    """``[N, 1, T]`` (or ``[N, T]``) normalised waveforms -> mean over time of the last hidden
    state ``[N, H]`` of a transformers audio encoder (wav2vec2, HuBERT, WavLM, ...).

    SpecAugment masking inside the model is switched off: it draws from numpy's global
    generator, which would make runs unrepeatable; centrobind's seeded audio augmentation
    applies instead."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net
        config: Any = getattr(net, "config", None)
        if config is not None:
            config.apply_spec_augment = False

    def train_blocks(self) -> list[nn.Module]:
        return list(layers_of(self.net))

    def forward(self, x: Tensor) -> Tensor:
        h = self.net(x.reshape(x.shape[0], -1)).last_hidden_state  # [N, T', H]
        out: Tensor = h.mean(1)
        return out


def layers_of(model: nn.Module) -> nn.ModuleList:
    """The transformer layers of a BERT-like model (``encoder.layer`` / ``encoder.layers``)."""
    enc = getattr(model, "encoder", None)
    for name in ("layer", "layers"):
        sub = getattr(enc, name, None)
        if isinstance(sub, nn.ModuleList):
            return sub
    return nn.ModuleList([c for c in model.children() if any(True for _ in c.parameters())])
