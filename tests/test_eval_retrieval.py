"""Retrieval metrics vs brute-force references (full score matrix / full argsort)."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from centrobind.eval import (
    cross_modal_retrieval,
    leave_one_out_retrieval,
    metrics_from_ranks,
    retrieval,
    retrieval_metrics,
    retrieval_ranks,
)


def _randn(*shape, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=dtype)


def _unit(*shape, seed=0):
    return F.normalize(_randn(*shape, seed=seed), dim=-1)


def _argsort_ranks(q, g, targets):
    """1-based position of the target in a full descending argsort (tie-free inputs)."""
    s = (q @ g.T).numpy()
    order = np.argsort(-s, axis=1, kind="stable")
    return np.array([int(np.where(order[i] == targets[i])[0][0]) + 1 for i in range(len(q))])


def _count_ranks(s, targets):
    """1 + #strictly higher scores, from a full score matrix (the documented tie convention)."""
    s = np.asarray(s)
    t = s[np.arange(len(s)), targets]
    return 1 + (s > t[:, None]).sum(axis=1)


@pytest.mark.parametrize("chunk_size", [1, 7, 13, 50, 4096])
def test_ranks_match_full_argsort(chunk_size):
    q, g = _unit(50, 8, seed=1), _unit(50, 8, seed=2)
    ref = _argsort_ranks(q, g, np.arange(50))
    got = retrieval_ranks(q, g, chunk_size=chunk_size).numpy()
    np.testing.assert_array_equal(got, ref)
    assert got.min() >= 1 and got.max() <= 50


@pytest.mark.parametrize("chunk_size", [4, 9, 64])
def test_custom_targets_and_rectangular_gallery(chunk_size):
    q, g = _unit(23, 6, seed=3), _unit(41, 6, seed=4)
    targets = torch.randint(0, 41, (23,), generator=torch.Generator().manual_seed(5))
    ref = _argsort_ranks(q, g, targets.numpy())
    got = retrieval_ranks(q, g, targets, chunk_size=chunk_size).numpy()
    np.testing.assert_array_equal(got, ref)
    np.testing.assert_array_equal(got, _count_ranks((q @ g.T).numpy(), targets.numpy()))


def test_ties_are_optimistic(block_elems):
    # integer-valued vectors -> exact dot products; gallery rows 0 and 1 are identical
    g = torch.tensor([[1.0, 0.0], [1.0, 0.0], [2.0, 0.0], [0.0, 1.0]])
    q = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    ranks = retrieval_ranks(q, g, torch.tensor([0, 1, 3])).tolist()
    # query 0 -> target 0: only row 2 (score 2) is strictly higher; its twin row 1 ties
    assert ranks == [2, 2, 1]
    # ... but a score above the target's by a hair is strictly higher
    g64 = torch.tensor([[1.0, 0.0], [1.0 + 1e-12, 0.0]], dtype=torch.float64)
    assert retrieval_ranks(g64[:1], g64).tolist() == [2]
    # fully tied gallery: every target has rank 1 (documented caveat)
    same = torch.ones(5, 3)
    assert retrieval_ranks(same, same).tolist() == [1] * 5


@pytest.mark.parametrize("n", [31, 40])  # odd and even query counts (median convention)
def test_metrics_from_brute_force_ranks(n):
    q, g = _unit(n, 4, seed=6), _unit(n, 4, seed=7)
    ref = _count_ranks((q @ g.T).numpy(), np.arange(n))
    m = retrieval_metrics(q, g, ks=(1, 3, 10), chunk_size=6)
    assert set(m) == {"R@1", "R@3", "R@10", "MRR", "median_rank", "n_queries"}
    for k in (1, 3, 10):
        assert m[f"R@{k}"] == pytest.approx(100.0 * np.mean(ref <= k))
    assert m["MRR"] == pytest.approx(np.mean(1.0 / ref))
    assert m["median_rank"] == pytest.approx(np.median(ref))
    assert m["n_queries"] == n


def test_metrics_from_ranks_known_values():
    m = metrics_from_ranks(torch.tensor([1, 2, 4, 11]), ks=(1, 5, 10))
    assert m == pytest.approx(
        {
            "R@1": 25.0,
            "R@5": 75.0,
            "R@10": 75.0,
            "MRR": (1 + 0.5 + 0.25 + 1 / 11) / 4,
            "median_rank": 3.0,
            "n_queries": 4,
        }
    )


def test_perfect_alignment_gives_r1_100():
    x = _unit(64, 16, seed=8).float()
    m = retrieval_metrics(x, x, chunk_size=10)
    assert m["R@1"] == 100.0 and m["MRR"] == 1.0 and m["median_rank"] == 1.0


def test_random_embeddings_give_chance_level():
    n, trials = 20, 200
    r1, mrr = [], []
    for t in range(trials):
        m = retrieval_metrics(_unit(n, 16, seed=2 * t), _unit(n, 16, seed=2 * t + 1))
        r1.append(m["R@1"])
        mrr.append(m["MRR"])
    # the target's rank is uniform on 1..n: E[R@1] = 100/n, E[MRR] = H_n / n
    assert np.mean(r1) == pytest.approx(100.0 / n, abs=1.5)  # ~4 standard errors
    assert np.mean(mrr) == pytest.approx(sum(1 / i for i in range(1, n + 1)) / n, abs=0.02)


@pytest.fixture(params=[None, 12, 100])
def block_elems(request, monkeypatch):
    """Also run with tiny gallery slices (targets then fall into many different slices)."""
    if request.param is not None:
        monkeypatch.setattr(retrieval, "_BLOCK_ELEMS", request.param)
    return request.param


@pytest.mark.parametrize("chunk_size", [1, 5, 8, 64])
def test_ranks_with_gallery_slices(block_elems, chunk_size):
    q, g = _unit(37, 6, seed=12), _unit(45, 6, seed=13)
    targets = torch.randint(0, 45, (37,), generator=torch.Generator().manual_seed(14))
    got = retrieval_ranks(q, g, targets, chunk_size=chunk_size).numpy()
    np.testing.assert_array_equal(got, _argsort_ranks(q, g, targets.numpy()))
    got = retrieval_ranks(q, g, chunk_size=chunk_size).numpy()
    np.testing.assert_array_equal(got, _argsort_ranks(q, g, np.arange(37)))


def test_self_retrieval_float32_is_exact(block_elems):
    # the target's score comes from a separate call; it must never outrank itself
    x = F.normalize(torch.randn(300, 256, generator=torch.Generator().manual_seed(0)), dim=1)
    assert retrieval_metrics(x, x, chunk_size=64)["R@1"] == 100.0


def test_custom_score_fn_and_chunking(monkeypatch):
    monkeypatch.setattr(retrieval, "_BLOCK_ELEMS", 30)
    # Symile-style trilinear score: the extra modality rides along in the query block
    d = 5
    a, c, b = _unit(17, d, seed=9), _unit(17, d, seed=10), _unit(17, d, seed=11)
    seen = []

    def score_fn(qblock, gallery):
        seen.append((qblock.shape[0], gallery.shape[0]))
        return (qblock[:, :d] * qblock[:, d:]) @ gallery.T

    got = retrieval_ranks(torch.cat([a, c], dim=1), b, chunk_size=5, score_fn=score_fn)
    ref = _count_ranks(((a * c) @ b.T).numpy(), np.arange(17))
    np.testing.assert_array_equal(got.numpy(), ref)
    # never more than chunk_size queries, never more than _BLOCK_ELEMS scores per call
    assert max(nq for nq, _ in seen) == 5
    assert max(nq * ng for nq, ng in seen) <= 30
    assert sum(ng for nq, ng in seen if nq == 5) == 3 * (17 + 5)  # gallery + own targets


def test_input_validation():
    x = _unit(4, 3)
    with pytest.raises(ValueError, match="targets"):
        retrieval_ranks(x, x, torch.tensor([0, 1, 2, 4]))
    with pytest.raises(ValueError, match="Nq <= Ng"):
        retrieval_ranks(_unit(5, 3), x)
    bad = x.clone()
    bad[0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        retrieval_ranks(bad, x)
    with pytest.raises(ValueError, match="shape"):
        retrieval_ranks(x, x, score_fn=lambda q, g: q @ g[:2].T)


def _three_modalities(n=40, seed=0):
    z = _randn(n, 6, seed=seed)
    emb = {
        m: F.normalize(z + 0.8 * _randn(n, 6, seed=seed + i + 1), dim=1)
        for i, m in enumerate(["a", "b", "c"])
    }
    mask = torch.rand(3, n, generator=torch.Generator().manual_seed(seed + 9)) > 0.3
    for i, m in enumerate(emb):  # garbage in missing rows must not matter
        emb[m][~mask[i]] = float("nan")
    return emb, mask


def test_cross_modal_uses_only_co_present_rows():
    emb, mask = _three_modalities()
    names = list(emb)
    out = cross_modal_retrieval(emb, mask, ks=(1, 5), chunk_size=7)
    pairs = [(a, b) for a in names for b in names if a != b]
    assert set(out) == {f"{a}->{b}" for a, b in pairs} | {"mean", "mean_excluding"}
    for a, b in pairs:
        both = (mask[names.index(a)] & mask[names.index(b)]).numpy()
        qa, gb = emb[a].numpy()[both], emb[b].numpy()[both]
        ref = _count_ranks(qa @ gb.T, np.arange(both.sum()))
        got = out[f"{a}->{b}"]
        assert got["n_queries"] == both.sum()
        assert got["R@1"] == pytest.approx(100 * np.mean(ref <= 1))
        assert got["R@5"] == pytest.approx(100 * np.mean(ref <= 5))
        assert got["MRR"] == pytest.approx(np.mean(1 / ref))
    for key in ("R@1", "MRR", "median_rank"):
        assert out["mean"][key] == pytest.approx(np.mean([out[f"{a}->{b}"][key] for a, b in pairs]))
    assert out["mean"]["n_pairs"] == 6
    # excluding "a": only b->c and c->b remain
    exc = out["mean_excluding"]["a"]
    assert exc["n_pairs"] == 2
    assert exc["R@1"] == pytest.approx((out["b->c"]["R@1"] + out["c->b"]["R@1"]) / 2)


def test_cross_modal_two_modalities_and_empty_pair():
    x = _unit(10, 4, seed=3)
    out = cross_modal_retrieval({"a": x, "b": x}, None)
    assert out["a->b"]["R@1"] == 100.0 and out["b->a"]["R@1"] == 100.0
    assert out["mean_excluding"] == {"a": None, "b": None}
    # a and c never co-occur: n_queries 0, metrics None, left out of the mean
    mask = torch.tensor([[1] * 5 + [0] * 5, [1] * 10, [0] * 5 + [1] * 5], dtype=torch.bool)
    out = cross_modal_retrieval({"a": x, "b": x, "c": x}, mask)
    assert out["a->c"]["n_queries"] == 0 and out["a->c"]["R@1"] is None
    assert out["mean"]["n_pairs"] == 4
    assert out["mean_excluding"]["b"] is None


def test_mask_shape_is_checked():
    x = _unit(10, 4)
    with pytest.raises(ValueError, match="mask"):
        cross_modal_retrieval({"a": x, "b": x}, torch.ones(3, 10, dtype=torch.bool))


def test_leave_one_out_matches_brute_force():
    emb, mask = _three_modalities(seed=4)
    names = list(emb)
    out = leave_one_out_retrieval(emb, mask, ks=(1,), chunk_size=5)
    assert set(out) == {"a", "b", "c", "mean"}
    for j, b in enumerate(names):
        others = [i for i in range(3) if i != j]
        rows = (mask[j] & mask[others].any(dim=0)).numpy()
        q = np.zeros((len(rows), 6))
        for i in others:
            present = mask[i].numpy()
            q[present] += emb[names[i]].numpy()[present]
        q = q[rows] / np.linalg.norm(q[rows], axis=1, keepdims=True)
        g = emb[b].numpy()[rows]
        ref = _count_ranks(q @ g.T, np.arange(rows.sum()))
        assert out[b]["n_queries"] == rows.sum()
        assert out[b]["R@1"] == pytest.approx(100 * np.mean(ref <= 1))
        assert out[b]["MRR"] == pytest.approx(np.mean(1 / ref))
    assert out["mean"]["R@1"] == pytest.approx(np.mean([out[b]["R@1"] for b in names]))


@pytest.mark.parametrize("with_mask", [False, True])
def test_mean_pairwise_r1_matches_cross_modal_retrieval(with_mask):
    from centrobind.eval.retrieval import mean_pairwise_r1

    g = torch.Generator().manual_seed(5)
    shared = torch.randn(60, 8, generator=g)
    z = torch.nn.functional.normalize(shared + 1.2 * torch.randn(4, 60, 8, generator=g), dim=-1)
    mask = torch.rand(4, 60, generator=g) > 0.3 if with_mask else None
    ref = cross_modal_retrieval({str(i): z[i] for i in range(4)}, mask, ks=(1,))["mean"]["R@1"]
    assert mean_pairwise_r1(z, mask) == pytest.approx(ref)
    assert mean_pairwise_r1(z, mask, max_elements=1) == pytest.approx(ref)  # chunked fallback
    assert 5 < ref < 95
