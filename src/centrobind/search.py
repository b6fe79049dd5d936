"""Nearest-neighbour search over embeddings: exact (chunked, memory-bounded) or faiss.

Scores are inner products (cosine similarity for the unit-norm vectors that
:meth:`centrobind.inference.Model.encode` returns). Higher is better.

``backend="exact"`` never builds an ``N x N`` or ``q x N`` score matrix: queries are processed
``query_chunk`` at a time against ``corpus_chunk`` corpus rows at a time (one ``[query_chunk,
corpus_chunk]`` block in memory), keeping a running top-k. Ties are broken deterministically: equal
scores are ranked by ascending corpus row. ``backend="faiss"`` needs ``pip install
"centrobind[faiss]"`` (``faiss-cpu``); ``faiss_index`` is a faiss index-factory string (default
``"Flat"``: exact; e.g. ``"IVF1024,Flat"`` is approximate and faster on large corpora), and
faiss's tie order is its own.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

__all__ = ["Index", "topk_exact"]


def _as_matrix(x: Any, what: str) -> Tensor:
    """Array-like ``[n, D]`` of real numbers -> contiguous float32 CPU tensor, checked finite."""
    if isinstance(x, Tensor):
        t = x.detach()
        if t.is_complex() or t.dtype == torch.bool:
            raise ValueError(f"{what}: expected real numbers, got {t.dtype}")
    else:
        arr = np.asarray(x)
        if arr.dtype.kind not in "iuf":
            raise ValueError(f"{what}: expected real numbers, got dtype {arr.dtype}")
        t = torch.from_numpy(np.ascontiguousarray(arr))
    if t.dim() == 1 and what == "queries":
        t = t[None]
    if t.dim() != 2:
        raise ValueError(f"{what}: expected a 2-D array [n, D], got shape {tuple(t.shape)}")
    t = t.to(device="cpu", dtype=torch.float32).contiguous()
    finite = torch.isfinite(t).all(dim=1)
    if not bool(finite.all()):
        row = int((~finite).nonzero()[0, 0])
        raise ValueError(f"{what}: row {row} has NaN/inf (drop missing rows first)")
    return t


def _order_rows(scores: Tensor, ids: Tensor) -> tuple[Tensor, Tensor]:
    """Sort each row by (score descending, id ascending): ``[q, c]`` each."""
    by_id = torch.argsort(ids, dim=1, stable=True)
    scores, ids = scores.gather(1, by_id), ids.gather(1, by_id)
    by_score = torch.argsort(scores, dim=1, descending=True, stable=True)
    return scores.gather(1, by_score), ids.gather(1, by_score)


def _block_topk(block: Tensor, k: int, offset: int) -> tuple[Tensor, Tensor]:
    """Top ``k`` of each row of ``block [q, c]`` with ties at the cut-off resolved to the lowest
    column; returns unsorted ``(scores [q, k], ids [q, k])`` with ids = column + offset."""
    c = block.shape[1]
    if k >= c:
        vals, cols = block, torch.arange(c).expand(block.shape[0], c)
    else:
        vals, cols = torch.topk(block, k + 1, dim=1, sorted=True)
        tied = vals[:, k] == vals[:, k - 1]  # the cut-off falls inside a run of equal scores
        vals, cols = vals[:, :k].contiguous(), cols[:, :k].contiguous()
        for r in tied.nonzero().flatten().tolist():  # rare: re-select these rows stably
            order = torch.argsort(block[r], descending=True, stable=True)[:k]
            vals[r], cols[r] = block[r, order], order
    return vals, cols + offset


def topk_exact(
    corpus: Tensor, queries: Tensor, k: int, corpus_chunk: int = 16384, query_chunk: int = 1024
) -> tuple[Tensor, Tensor]:
    """Exact top-``k`` inner products: ``corpus [N, D]``, ``queries [q, D]`` -> ``(scores [q,
    k'], rows [q, k'])`` with ``k' = min(k, N)``, best first, ties by ascending row. Memory: one
    ``[query_chunk, corpus_chunk]`` block plus the running ``[query_chunk, 2 k']`` top-k."""
    n, q = corpus.shape[0], queries.shape[0]
    k = min(k, n)
    scores = torch.empty(q, k)
    rows = torch.empty(q, k, dtype=torch.long)
    if k == 0 or q == 0:
        return scores, rows
    for qs in range(0, q, query_chunk):
        qb = queries[qs : qs + query_chunk]
        best_s = torch.empty(qb.shape[0], 0)
        best_i = torch.empty(qb.shape[0], 0, dtype=torch.long)
        for cs in range(0, n, corpus_chunk):
            block = qb @ corpus[cs : cs + corpus_chunk].T
            s, i = _block_topk(block, k, cs)
            del block
            s, i = _order_rows(torch.cat([best_s, s], 1), torch.cat([best_i, i], 1))
            best_s, best_i = s[:, :k], i[:, :k]
        scores[qs : qs + query_chunk], rows[qs : qs + query_chunk] = best_s, best_i
    return scores, rows


class Index:
    """Top-k inner-product search over a fixed corpus of embeddings.

    Args:
        embeddings: corpus ``[N, D]`` (numpy or torch, finite; ``N`` may be 0).
        ids: one id per corpus row (any values, e.g. row numbers or strings); default
            ``0..N-1``. :meth:`search` returns these.
        backend: ``"exact"`` (default, chunked torch matmul) or ``"faiss"``.
        corpus_chunk, query_chunk: block sizes of the exact backend (memory: one
            ``query_chunk x corpus_chunk`` float32 block).
        faiss_index: faiss index-factory string for ``backend="faiss"`` (``"Flat"`` = exact).
        nprobe: for faiss IVF indexes, the number of lists searched.

    Example:
        >>> idx = Index(np.eye(3, dtype=np.float32), ids=["a", "b", "c"])
        >>> scores, ids = idx.search(np.array([[0.0, 1.0, 0.0]]), k=2)
        >>> ids[0].tolist()
        ['b', 'a']
    """

    def __init__(
        self,
        embeddings: np.ndarray | Tensor,
        ids: Sequence[Any] | np.ndarray | None = None,
        backend: str = "exact",
        corpus_chunk: int = 16384,
        query_chunk: int = 1024,
        faiss_index: str = "Flat",
        nprobe: int | None = None,
    ) -> None:
        if backend not in ("exact", "faiss"):
            raise ValueError(f"unknown search backend {backend!r}; use 'exact' or 'faiss'")
        if corpus_chunk < 1 or query_chunk < 1:
            raise ValueError("corpus_chunk and query_chunk must be >= 1")
        self.embeddings = _as_matrix(embeddings, "embeddings")
        n = self.embeddings.shape[0]
        if ids is None:
            self.ids: np.ndarray | None = None
        else:
            self.ids = np.asarray(ids)
            if self.ids.ndim != 1 or self.ids.shape[0] != n:
                raise ValueError(
                    f"ids: expected {n} ids (one per corpus row), got shape {self.ids.shape}"
                )
        self.backend = backend
        self.corpus_chunk, self.query_chunk = corpus_chunk, query_chunk
        self._faiss = None
        if backend == "faiss":
            self._faiss = _build_faiss(self.embeddings.numpy(), faiss_index, nprobe)

    def __len__(self) -> int:
        return int(self.embeddings.shape[0])

    @property
    def dim(self) -> int:
        """``D``, the embedding width."""
        return int(self.embeddings.shape[1])

    def search(self, queries: np.ndarray | Tensor, k: int = 10) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` corpus rows with the highest inner product for each query.

        Args:
            queries: ``[q, D]`` (a single ``[D]`` vector is read as ``[1, D]``).
            k: hits per query; more than the corpus holds returns all ``N`` rows.

        Returns:
            ``(scores, ids)``: float32 ``[q, min(k, N)]`` best first, and the matching ids
            (``[q, min(k, N)]`` int64 row numbers, or values from ``ids``).
        """
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise ValueError(f"k must be a positive integer, got {k!r}")
        q = _as_matrix(queries, "queries")
        if q.shape[1] != self.dim:
            raise ValueError(f"queries have {q.shape[1]} columns, the index has D = {self.dim}")
        if self._faiss is not None and len(self) > 0 and q.shape[0] > 0:
            kk = min(int(k), len(self))
            s, rows = self._faiss.search(np.ascontiguousarray(q.numpy()), kk)
            scores, rows = s.astype(np.float32), rows.astype(np.int64)
        else:
            st, rt = topk_exact(self.embeddings, q, int(k), self.corpus_chunk, self.query_chunk)
            scores, rows = st.numpy(), rt.numpy()
        if (rows < 0).any():  # an approximate faiss index found fewer than k hits
            raise RuntimeError(
                f"the faiss index found fewer than k = {k} hits for a query; raise nprobe or "
                "use faiss_index='Flat'"
            )
        return (scores, rows) if self.ids is None else (scores, self.ids[rows])


def _build_faiss(x: np.ndarray, factory: str, nprobe: int | None) -> Any:
    try:
        import faiss
    except ImportError:
        raise ImportError(
            'backend="faiss" needs faiss: pip install "centrobind[faiss]" (faiss-cpu)'
        ) from None
    index = faiss.index_factory(x.shape[1], factory, faiss.METRIC_INNER_PRODUCT)
    if not index.is_trained:
        if x.shape[0] == 0:
            raise ValueError(f"faiss index {factory!r} needs training data; the corpus is empty")
        index.train(x)
    if nprobe is not None:
        faiss.extract_index_ivf(index).nprobe = int(nprobe)
    index.add(x)
    return index
