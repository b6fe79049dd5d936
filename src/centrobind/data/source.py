"""Training sources: how training rows reach the trainer, one batch at a time.

The trainer sees only :class:`TrainSource`; it never cares whether the rows sit in memory
(:class:`InMemorySource`), stream from memory-mapped shards on disk
(:class:`~centrobind.data.stream.StreamingSource`) or are raw items decoded in DataLoader workers.

Contract of :meth:`TrainSource.batches`: for epoch ``epoch`` it yields the global batches
``start, start + 1, ...`` (``num_batches`` in all), each as this rank's contiguous ``1/world``
share ``(features, mask)`` on ``device``:

- ``features[m]``: modality ``m``'s rows ready for its encoder (``[B, D_m]`` standardised floats
  for feature modalities, missing rows 0.0; a raw-item source may yield another batch type, as
  long as the modality's tower takes it);
- ``mask``: bool ``[M, B]`` in ``modalities`` order, True = present.

The row order of an epoch is a pure function of ``(seed, epoch)`` (see :class:`RowOrder`), so a
resumed run and every rank of a distributed run see the same global batches.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "Batch",
    "BlockShuffle",
    "GlobalShuffle",
    "InMemorySource",
    "RowOrder",
    "TrainSource",
    "epoch_permutation",
    "make_order",
]

#: ``(features, mask)``: modality -> this rank's rows of the batch, bool ``[M, B]``.
Batch = tuple[dict[str, Any], Tensor]


def epoch_permutation(n: int, seed: int, epoch: int) -> Tensor:
    """The seeded permutation of ``n`` rows for ``epoch`` (int64 ``[n]``): the global shuffle."""
    g = torch.Generator().manual_seed(seed * 100_003 + epoch)
    return torch.randperm(n, generator=g)


class RowOrder(ABC):
    """The order in which an epoch visits the ``n`` training rows, as a stream of chunks.

    Concatenated, the chunks of :meth:`chunks` are a permutation of ``range(n)`` (positions in the
    training split); batches are cut from that stream. A chunk is the unit a streaming source
    reads from disk at once, so a chunk should touch few, large, contiguous regions.
    """

    name: str

    def is_global(self, n: int) -> bool:
        """Whether the epoch order of ``n`` rows is :func:`epoch_permutation` (one chunk)."""
        return False

    @abstractmethod
    def chunks(self, n: int, seed: int, epoch: int) -> Iterator[np.ndarray[Any, Any]]:
        """int64 position arrays whose concatenation is this epoch's permutation of ``range(n)``."""

    def describe(self) -> dict[str, Any]:
        """JSON-able description (``run.json``)."""
        return {"order": self.name}


class GlobalShuffle(RowOrder):
    """A uniform random permutation of all training rows every epoch (the in-memory default):
    every batch is a uniform sample of the training rows."""

    name = "global"

    def is_global(self, n: int) -> bool:
        return True

    def chunks(self, n: int, seed: int, epoch: int) -> Iterator[np.ndarray[Any, Any]]:
        yield epoch_permutation(n, seed, epoch).numpy()


class BlockShuffle(RowOrder):
    """Block shuffle plus a shuffle buffer (the streaming default).

    The training rows, in file order, are cut into blocks of ``block_rows`` consecutive rows. An
    epoch visits the blocks in a seeded random order, ``buffer_blocks`` at a time; the rows of
    those blocks (one chunk, the shuffle buffer) are shuffled together and batches are cut from
    them. What this gives up against :class:`GlobalShuffle`: a batch draws its rows from at most
    ``buffer_blocks + 1`` blocks (those of its buffer, plus the tail of the previous one), not
    from the whole split, so rows that are stored far apart rarely share a batch. Data written in
    a sorted order (by class, by source) should be shuffled when written, or given a smaller
    ``block_rows``. When all rows fit in one buffer the order is the global shuffle itself
    (:func:`epoch_permutation`): small data loses nothing.
    """

    name = "block"

    def __init__(self, block_rows: int = 4096, buffer_blocks: int = 16) -> None:
        if block_rows < 1 or buffer_blocks < 1:
            raise ValueError("block_rows and buffer_blocks must be >= 1")
        self.block_rows = int(block_rows)
        self.buffer_blocks = int(buffer_blocks)

    def is_global(self, n: int) -> bool:
        return n <= self.block_rows * self.buffer_blocks

    def chunks(self, n: int, seed: int, epoch: int) -> Iterator[np.ndarray[Any, Any]]:
        if self.is_global(n):
            yield epoch_permutation(n, seed, epoch).numpy()
            return
        rng = np.random.default_rng([seed, epoch, 0x5EED])
        n_blocks = math.ceil(n / self.block_rows)
        blocks = rng.permutation(n_blocks)
        for i in range(0, n_blocks, self.buffer_blocks):
            parts = [
                np.arange(b * self.block_rows, min(n, (b + 1) * self.block_rows), dtype=np.int64)
                for b in np.sort(blocks[i : i + self.buffer_blocks])
            ]
            buf = np.concatenate(parts)
            yield buf[rng.permutation(buf.shape[0])]

    def describe(self) -> dict[str, Any]:
        return {
            "order": self.name,
            "block_rows": self.block_rows,
            "buffer_blocks": self.buffer_blocks,
        }


def make_order(name: str, block_rows: int = 4096, buffer_blocks: int = 16) -> RowOrder:
    """A :class:`RowOrder` by name: ``"global"`` or ``"block"``."""
    if name == "global":
        return GlobalShuffle()
    if name == "block":
        return BlockShuffle(block_rows, buffer_blocks)
    raise ValueError(f"unknown row order {name!r} (global, block)")


def batch_positions(
    order: RowOrder, n: int, seed: int, epoch: int, batch_size: int, drop_last: bool
) -> Iterator[np.ndarray[Any, Any]]:
    """The global batches of an epoch as position arrays (cut from the order's chunk stream)."""
    pending: list[np.ndarray[Any, Any]] = []
    have = 0
    for chunk in order.chunks(n, seed, epoch):
        pending.append(chunk)
        have += chunk.shape[0]
        if have < batch_size:
            continue
        stream = np.concatenate(pending)
        k = stream.shape[0] // batch_size
        for b in range(k):
            yield stream[b * batch_size : (b + 1) * batch_size]
        pending, have = [stream[k * batch_size :]], stream.shape[0] - k * batch_size
    if have and not drop_last:
        yield np.concatenate(pending)


def num_batches(n: int, batch_size: int, drop_last: bool) -> int:
    """Global batches per epoch of ``n`` rows."""
    return n // batch_size if drop_last else math.ceil(n / batch_size)


def rank_share(idx: np.ndarray[Any, Any], rank: int, world: int) -> np.ndarray[Any, Any]:
    """This rank's contiguous ``1/world`` slice of a global batch of positions."""
    if world == 1:
        return idx
    local = idx.shape[0] // world
    return idx[rank * local : (rank + 1) * local]


class TrainSource(ABC):
    """Training rows, served as batches (module docstring: the contract).

    Attributes:
        modalities: the model's modality order (the mask's row order).
    """

    modalities: list[str]

    @property
    @abstractmethod
    def dims(self) -> dict[str, int]:
        """Modality -> input width (what the model's towers are built for)."""

    @abstractmethod
    def __len__(self) -> int:
        """Training rows."""

    def num_batches(self, batch_size: int, drop_last: bool) -> int:
        """Global batches per epoch."""
        return num_batches(len(self), batch_size, drop_last)

    @abstractmethod
    def batches(
        self,
        epoch: int,
        seed: int,
        batch_size: int,
        drop_last: bool,
        *,
        start: int = 0,
        rank: int = 0,
        world: int = 1,
    ) -> Iterator[Batch]:
        """This rank's share of the global batches ``start..`` of ``epoch`` (on the source's
        device)."""

    def describe(self) -> dict[str, Any]:
        """JSON-able description of the source for ``run.json`` (``kind``, order, ...)."""
        return {"kind": type(self).__name__}

    def close(self) -> None:
        """Release files and background threads (idempotent)."""
        return None


class InMemorySource(TrainSource):
    """Standardised features held whole on ``device``; a step is an ``index_select``.

    The fastest path when the data fits in memory. Args: ``features`` modality -> ``[N, D_m]``
    (missing rows 0.0), ``mask`` bool ``[M, N]`` in ``modalities`` order.
    """

    def __init__(
        self,
        features: dict[str, Tensor],
        mask: Tensor,
        modalities: list[str],
        order: RowOrder | None = None,
        device: str | torch.device = "cpu",
    ) -> None:
        self.modalities = list(modalities)
        self.device = torch.device(device)
        self.features = {m: features[m].to(self.device) for m in self.modalities}
        self.mask = mask.to(self.device)
        self.order = order or BlockShuffle()

    @property
    def dims(self) -> dict[str, int]:
        """Modality -> input width."""
        return {m: int(x.shape[1]) for m, x in self.features.items()}

    def __len__(self) -> int:
        return int(self.mask.shape[1])

    def batches(
        self,
        epoch: int,
        seed: int,
        batch_size: int,
        drop_last: bool,
        *,
        start: int = 0,
        rank: int = 0,
        world: int = 1,
    ) -> Iterator[Batch]:
        n = len(self)
        if self.order.is_global(n):  # the permutation on the device, sliced
            perm = epoch_permutation(n, seed, epoch).to(self.device)
            for b in range(start, num_batches(n, batch_size, drop_last)):
                idx = perm[b * batch_size : (b + 1) * batch_size]
                if world > 1:
                    local = idx.shape[0] // world
                    idx = idx[rank * local : (rank + 1) * local]
                yield self._take(idx)
            return
        for b, pos in enumerate(batch_positions(self.order, n, seed, epoch, batch_size, drop_last)):
            if b >= start:
                idx = torch.from_numpy(rank_share(pos, rank, world)).to(self.device)
                yield self._take(idx)

    def _take(self, idx: Tensor) -> Batch:
        feats = {m: self.features[m].index_select(0, idx) for m in self.modalities}
        return feats, self.mask[:, idx]

    def describe(self) -> dict[str, Any]:
        return {"kind": "memory", **self.order.describe()}
