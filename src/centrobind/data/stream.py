"""Out-of-core training rows: :class:`StreamingSource` reads memory-mapped shards in the
background, one chunk of the row order at a time, and standardises each batch on the device.

Memory stays bounded by the chunk (the shuffle buffer of :class:`~centrobind.data.source.
BlockShuffle`) and ``prefetch`` ready batches, whatever the size of the data. Each rank reads only
the rows of its own share of every global batch. A chunk's rows are read per modality either as
one contiguous range (then selected) when they are dense in it, or row by row (sorted) when they
are sparse (a distributed rank, a global shuffle).
"""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch import Tensor

from centrobind.data.ondisk import DiskDataset
from centrobind.data.source import (
    Batch,
    BlockShuffle,
    RowOrder,
    TrainSource,
    batch_positions,
    num_batches,
    rank_share,
)
from centrobind.errors import DatasetError

__all__ = ["DataChangedError", "StreamingSource"]

#: Read a chunk's rows as one contiguous range when they fill at least this share of it.
DENSE_READ = 0.25


class DataChangedError(DatasetError):
    """A feature file changed (size, time or inode) while training read it."""


def _file_state(path: os.PathLike[str] | str) -> tuple[int, int, int]:
    st = os.stat(path)
    return st.st_size, st.st_mtime_ns, st.st_ino


#: Below this many rows per run of consecutive rows, a sorted gather beats slice reads.
RUN_READ = 64


def read_rows(store: Any, rows: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    """float32 rows ``rows`` (sorted, unique) of a :class:`~centrobind.data.store.ModalityStore`:
    one contiguous read when dense (:data:`DENSE_READ`); one read per run of consecutive rows
    when the rows come in long runs (a block-shuffle buffer is a few blocks of consecutive rows);
    else a sorted gather."""
    if rows.shape[0] == 0:
        return np.empty((0, store.dim), dtype=np.float32)
    lo, hi = int(rows[0]), int(rows[-1]) + 1
    out: np.ndarray[Any, Any]
    if rows.shape[0] >= DENSE_READ * (hi - lo):
        return store.read(lo, hi)[rows - lo]  # type: ignore[no-any-return]
    breaks = np.flatnonzero(np.diff(rows) != 1) + 1
    if rows.shape[0] >= RUN_READ * (breaks.shape[0] + 1):
        starts = np.concatenate(([0], breaks))
        ends = np.concatenate((breaks, [rows.shape[0]]))
        out = np.empty((rows.shape[0], store.dim), dtype=np.float32)
        for a, b in zip(starts.tolist(), ends.tolist(), strict=True):
            store.read(int(rows[a]), int(rows[b - 1]) + 1, out=out[a:b])
        return out
    return store.take(rows)  # type: ignore[no-any-return]


class StreamingSource(TrainSource):
    """Training rows streamed from a :class:`~centrobind.data.ondisk.DiskDataset`.

    Args:
        disk: the opened dataset; ``rows``: the training rows (sorted file row indices).
        mask: bool ``[M, len(rows)]`` presence of the training rows, in ``modalities`` order.
        mean, std: per-modality float32 ``[D_m]`` standardisation (None: raw features).
        order: the row order (default :class:`BlockShuffle`); ``device``: where batches go.
        prefetch: ready batches the background reader keeps ahead.
    """

    def __init__(
        self,
        disk: DiskDataset,
        rows: np.ndarray[Any, Any],
        mask: np.ndarray[Any, Any],
        modalities: list[str],
        mean: dict[str, Tensor] | None = None,
        std: dict[str, Tensor] | None = None,
        order: RowOrder | None = None,
        device: str | torch.device = "cpu",
        prefetch: int = 4,
    ) -> None:
        self.disk = disk
        self.rows = np.asarray(rows, dtype=np.int64)
        self.mask = torch.from_numpy(np.ascontiguousarray(mask))
        self.modalities = list(modalities)
        self.device = torch.device(device)
        self.order = order or BlockShuffle()
        self.prefetch = max(1, int(prefetch))
        self.pin = self.device.type == "cuda"
        self.mean = {m: v.to(self.device) for m, v in (mean or {}).items()}
        self.std = {m: v.to(self.device) for m, v in (std or {}).items()}
        self._files = {
            str(p): _file_state(p) for m in self.modalities for p in disk.stores[m].files
        }

    def __len__(self) -> int:
        return int(self.rows.shape[0])

    @property
    def dims(self) -> dict[str, int]:
        """Modality -> input width."""
        return {m: self.disk.stores[m].dim for m in self.modalities}

    def describe(self) -> dict[str, Any]:
        return {"kind": "stream", **self.order.describe(), "prefetch": self.prefetch}

    def check_unchanged(self) -> None:
        """Refuse to go on when a feature file changed since the source opened it (a rewrite
        under a memory map gives other rows or, when truncated, a crash)."""
        for p, was in self._files.items():
            try:
                now = _file_state(p)
            except OSError:
                now = (-1, -1, -1)
            if now != was:
                raise DataChangedError(
                    f"{p}: the data changed while training read it (size, time or file "
                    "replaced); restore it, then --resume continues from the last checkpoint"
                )

    # -- the background reader -------------------------------------------------------------

    def _cpu_batches(
        self, epoch: int, seed: int, bs: int, drop_last: bool, start: int, rank: int, world: int
    ) -> Iterator[tuple[dict[str, Tensor], Tensor]]:
        """This rank's batches as CPU tensors (raw float32 features, mask), read per group of
        batches that the order's chunks complete."""
        group: list[np.ndarray[Any, Any]] = []
        target = 0
        positions = batch_positions(self.order, len(self), seed, epoch, bs, drop_last)
        for b, pos in enumerate(positions):
            if b < start:
                continue
            group.append(rank_share(pos, rank, world))
            target += group[-1].shape[0]
            if target >= self._group_rows(bs):
                yield from self._read_group(group)
                group, target = [], 0
        if group:
            yield from self._read_group(group)

    def _group_rows(self, bs: int) -> int:
        """Rows read at once: one shuffle buffer (block order), else 64 batches."""
        if isinstance(self.order, BlockShuffle):
            return max(bs, self.order.block_rows * self.order.buffer_blocks)
        return 64 * bs

    def _read_group(
        self, group: list[np.ndarray[Any, Any]]
    ) -> Iterator[tuple[dict[str, Tensor], Tensor]]:
        self.check_unchanged()
        pos = np.concatenate(group)
        file_rows = self.rows[pos]
        uniq, inverse = np.unique(file_rows, return_inverse=True)
        data = {m: read_rows(self.disk.stores[m], uniq)[inverse] for m in self.modalities}
        start = 0
        for g in group:
            sl = slice(start, start + g.shape[0])
            start += g.shape[0]
            feats = {m: torch.from_numpy(data[m][sl]) for m in self.modalities}
            mask = self.mask[:, torch.from_numpy(g)]
            if self.pin:
                feats = {m: x.pin_memory() for m, x in feats.items()}
            yield feats, mask

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
        q: queue.Queue[Any] = queue.Queue(maxsize=self.prefetch)
        stop = threading.Event()
        args = (epoch, seed, batch_size, drop_last, start, rank, world)
        thread = threading.Thread(target=self._produce, args=(q, stop, args), daemon=True)
        thread.start()
        try:
            while True:
                item = q.get()
                if item is None:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield self._to_device(*item)
        finally:
            stop.set()
            while thread.is_alive():  # unblock a producer waiting on a full queue
                try:
                    q.get_nowait()
                except queue.Empty:
                    thread.join(timeout=0.05)

    def _produce(self, q: queue.Queue[Any], stop: threading.Event, args: tuple[Any, ...]) -> None:
        try:
            for item in self._cpu_batches(*args):
                if stop.is_set():
                    return
                q.put(item)
            q.put(None)
        except BaseException as e:  # noqa: BLE001 - handed to the consumer thread
            q.put(e)

    def _to_device(self, feats: dict[str, Tensor], mask: Tensor) -> Batch:
        mask = mask.to(self.device, non_blocking=True)
        out = {}
        for i, m in enumerate(self.modalities):
            x = feats[m].to(self.device, non_blocking=True)
            if m in self.mean:
                x = (x - self.mean[m]) / self.std[m]
            out[m] = x.masked_fill(~mask[i].unsqueeze(1), 0.0)
        return out, mask

    def num_batches(self, batch_size: int, drop_last: bool) -> int:
        return num_batches(len(self), batch_size, drop_last)
