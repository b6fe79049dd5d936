"""centrobind.Index: exact chunked top-k against brute-force ranking; faiss backend; errors."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch

import centrobind
from centrobind import search
from centrobind.search import Index, topk_exact


def _brute(corpus: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Full score matrix, ranked by (score descending, row ascending)."""
    scores = queries.astype(np.float64) @ corpus.astype(np.float64).T
    rows = np.broadcast_to(np.arange(corpus.shape[0]), scores.shape)
    order = np.lexsort((rows, -scores), axis=1)[:, :k]
    return np.take_along_axis(scores, order, 1), order


def _unit(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    x = rng.standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.mark.parametrize(
    ("n", "q", "k", "corpus_chunk", "query_chunk"),
    [(500, 40, 10, 64, 7), (500, 40, 10, 65536, 1024), (97, 5, 97, 10, 2), (33, 3, 1, 1, 1)],
)
def test_exact_matches_brute_force(n, q, k, corpus_chunk, query_chunk):
    rng = np.random.default_rng(n + q + k)
    corpus, queries = _unit(rng, n, 16), _unit(rng, q, 16)
    index = Index(corpus, corpus_chunk=corpus_chunk, query_chunk=query_chunk)
    scores, ids = index.search(queries, k)
    ref_s, ref_i = _brute(corpus, queries, k)
    assert scores.dtype == np.float32 and ids.dtype == np.int64
    assert scores.shape == ids.shape == (q, k)
    np.testing.assert_array_equal(ids, ref_i)
    np.testing.assert_allclose(scores, ref_s, atol=1e-5)


@pytest.mark.parametrize("seed", range(8))
def test_ties_are_broken_by_ascending_row(seed):
    """Small-integer vectors: many exactly equal scores, at and across chunk borders."""
    rng = np.random.default_rng(seed)
    for _ in range(25):
        n, q, k = int(rng.integers(1, 41)), int(rng.integers(1, 7)), int(rng.integers(1, 46))
        chunk, qchunk = int(rng.integers(1, 13)), int(rng.integers(1, 5))
        corpus = rng.integers(-1, 2, size=(n, 3)).astype(np.float32)
        queries = rng.integers(-1, 2, size=(q, 3)).astype(np.float32)
        scores, ids = Index(corpus, corpus_chunk=chunk, query_chunk=qchunk).search(queries, k)
        ref_s, ref_i = _brute(corpus, queries, min(k, n))
        np.testing.assert_array_equal(ids, ref_i)
        np.testing.assert_array_equal(scores, ref_s.astype(np.float32))


def test_duplicate_rows_rank_in_row_order():
    corpus = np.tile(np.eye(4, dtype=np.float32)[[1]], (10, 1))
    _, ids = Index(corpus, corpus_chunk=3).search(np.eye(4, dtype=np.float32)[[1]], 4)
    assert ids.tolist() == [[0, 1, 2, 3]]


def test_blocks_are_bounded(monkeypatch):
    """No q x N (or N x N) score matrix: every block is at most query_chunk x corpus_chunk."""
    shapes: list[tuple[int, int]] = []
    real = search._block_topk

    def spy(block, k, offset):
        shapes.append(tuple(block.shape))
        return real(block, k, offset)

    monkeypatch.setattr(search, "_block_topk", spy)
    rng = np.random.default_rng(0)
    Index(_unit(rng, 1000, 8), corpus_chunk=128, query_chunk=16).search(_unit(rng, 50, 8), 5)
    assert shapes and max(r for r, _ in shapes) <= 16 and max(c for _, c in shapes) <= 128
    assert len(shapes) == 4 * 8  # ceil(50/16) query blocks x ceil(1000/128) corpus blocks


def test_custom_ids_k_larger_than_n_and_single_query():
    emb = np.eye(3, dtype=np.float32)
    index = Index(emb, ids=["a", "b", "c"])
    scores, ids = index.search(np.array([0.0, 1.0, 0.5]), k=10)  # a [D] vector = one query
    assert ids.tolist() == [["b", "c", "a"]] and scores.shape == (1, 3)
    np.testing.assert_allclose(scores, [[1.0, 0.5, 0.0]])
    assert len(index) == 3 and index.dim == 3
    s, i = Index(torch.eye(3), ids=np.array([7, 8, 9])).search(torch.eye(3)[:2], 1)
    assert i.tolist() == [[7], [8]]


def test_empty_corpus_and_empty_queries():
    empty = Index(np.zeros((0, 4), np.float32))
    s, i = empty.search(np.ones((2, 4)), k=3)
    assert s.shape == i.shape == (2, 0)
    s, i = Index(np.eye(4)).search(np.zeros((0, 4)), k=3)
    assert s.shape == i.shape == (0, 3)


def test_bad_inputs():
    index = Index(np.eye(4))
    with pytest.raises(ValueError, match="queries have 3 columns, the index has D = 4"):
        index.search(np.ones((2, 3)), 1)
    with pytest.raises(ValueError, match="queries: expected a 2-D array"):
        index.search(np.ones((2, 4, 1)), 1)
    with pytest.raises(ValueError, match="queries: row 1 has NaN"):
        index.search(np.array([[1, 0, 0, 0], [np.nan, 0, 0, 0]]), 1)
    for k in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="k must be a positive integer"):
            index.search(np.ones((1, 4)), k)
    with pytest.raises(ValueError, match="embeddings: expected a 2-D array"):
        Index(np.ones(4))
    with pytest.raises(ValueError, match="embeddings: row 2 has NaN"):
        Index(np.array([[1.0], [2.0], [np.inf]]))
    with pytest.raises(ValueError, match="expected real numbers"):
        Index(np.array([["a"]]))
    with pytest.raises(ValueError, match="ids: expected 4 ids"):
        Index(np.eye(4), ids=[1, 2])
    with pytest.raises(ValueError, match="unknown search backend"):
        Index(np.eye(4), backend="annoy")
    with pytest.raises(ValueError, match="corpus_chunk"):
        Index(np.eye(4), corpus_chunk=0)


def test_topk_exact_on_tensors():
    g = torch.Generator().manual_seed(0)
    c, q = torch.randn(300, 8, generator=g), torch.randn(9, 8, generator=g)
    s, r = topk_exact(c, q, 7, corpus_chunk=50, query_chunk=4)
    ref = torch.topk(q @ c.T, 7)
    assert torch.equal(r, ref.indices)
    torch.testing.assert_close(s, ref.values)


def test_faiss_flat_equals_exact():
    rng = np.random.default_rng(3)
    corpus, queries = _unit(rng, 2000, 32), _unit(rng, 25, 32)
    ids = np.arange(2000) * 10
    fs, fi = Index(corpus, ids=ids, backend="faiss").search(queries, 8)
    es, ei = Index(corpus, ids=ids).search(queries, 8)
    np.testing.assert_array_equal(fi, ei)
    np.testing.assert_allclose(fs, es, atol=1e-5)
    s, i = Index(corpus, backend="faiss").search(queries, 5000)  # k > N
    assert i.shape == (25, 2000) and sorted(i[0].tolist()) == list(range(2000))
    s, i = Index(np.zeros((0, 32), np.float32), backend="faiss").search(queries, 3)
    assert i.shape == (25, 0)


def test_faiss_ivf_is_approximate_but_close():
    rng = np.random.default_rng(4)
    corpus, queries = _unit(rng, 4000, 16), _unit(rng, 50, 16)
    _, ei = Index(corpus).search(queries, 10)
    _, fi = Index(corpus, backend="faiss", faiss_index="IVF16,Flat", nprobe=16).search(queries, 10)
    np.testing.assert_array_equal(fi, ei)  # nprobe = all lists: exact
    _, ai = Index(corpus, backend="faiss", faiss_index="IVF16,Flat", nprobe=4).search(queries, 10)
    recall = np.mean([len(set(a) & set(e)) / 10 for a, e in zip(ai, ei, strict=True)])
    assert 0.3 < recall <= 1.0


def test_faiss_missing_gives_install_hint(monkeypatch):
    monkeypatch.setitem(sys.modules, "faiss", None)
    with pytest.raises(ImportError, match=r'pip install "centrobind\[faiss\]"'):
        Index(np.eye(4), backend="faiss")


def test_exported_lazily():
    assert centrobind.Index is Index
    assert callable(centrobind.load)
    assert "Index" in dir(centrobind)
