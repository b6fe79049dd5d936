"""Alignment / uniformity / modality gap vs explicit loops."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from centrobind.eval import alignment, geometry_metrics, modality_gap, uniformity


def _unit(n, d, seed):
    return F.normalize(torch.randn(n, d, generator=torch.Generator().manual_seed(seed)), dim=1)


def _uniformity_loop(x, t=2.0):
    x = x.double().numpy()
    vals = [
        math.exp(-t * float(np.sum((x[i] - x[j]) ** 2)))
        for i in range(len(x))
        for j in range(i + 1, len(x))
    ]
    return math.log(sum(vals) / len(vals))


def test_alignment_loop():
    x, y = _unit(20, 5, 0), _unit(20, 5, 1)
    for alpha in (1.0, 2.0, 3.0):
        ref = np.mean([float(np.linalg.norm(x[i] - y[i])) ** alpha for i in range(20)])
        assert alignment(x, y, alpha=alpha) == pytest.approx(ref, rel=1e-6)
    assert alignment(x, x) == 0.0


@pytest.mark.parametrize(("n", "chunk_size"), [(2, 1024), (17, 4), (30, 7), (30, 1)])
def test_uniformity_loop(n, chunk_size):
    x = _unit(n, 4, n)
    for t in (0.5, 2.0):
        ref = _uniformity_loop(x, t)
        assert uniformity(x, t=t, chunk_size=chunk_size) == pytest.approx(ref, rel=1e-9)


def test_uniformity_extremes():
    assert uniformity(torch.ones(5, 3) / math.sqrt(3)) == pytest.approx(0.0, abs=1e-12)
    # antipodal pair: ||x - y||^2 = 4 -> log exp(-8) = -8
    assert uniformity(torch.tensor([[1.0, 0.0], [-1.0, 0.0]])) == pytest.approx(-8.0)
    # far below exp underflow (-t d^2 = -2e4) the log-sum-exp stays finite
    assert uniformity(torch.tensor([[100.0, 0.0], [0.0, 0.0]])) == pytest.approx(-2e4)


def test_uniformity_subsample_is_seeded():
    x = _unit(50, 4, 3)
    idx = torch.randperm(50, generator=torch.Generator().manual_seed(11))[:20]
    assert uniformity(x, max_n=20, seed=11) == pytest.approx(_uniformity_loop(x[idx]), rel=1e-9)
    assert uniformity(x, max_n=20, seed=11) == uniformity(x, max_n=20, seed=11)
    assert uniformity(x, max_n=20, seed=12) != uniformity(x, max_n=20, seed=11)
    assert uniformity(x, max_n=None) == pytest.approx(_uniformity_loop(x), rel=1e-9)


def test_modality_gap():
    x, y = _unit(15, 6, 4), _unit(15, 6, 5)
    ref = np.linalg.norm(x.numpy().mean(0) - y.numpy().mean(0))
    assert modality_gap(x, y) == pytest.approx(ref, rel=1e-6)
    assert modality_gap(x, -x) == pytest.approx(2 * np.linalg.norm(x.numpy().mean(0)), rel=1e-6)


def test_geometry_metrics_with_mask():
    emb = {m: _unit(25, 4, i) for i, m in enumerate("abc")}
    mask = torch.rand(3, 25, generator=torch.Generator().manual_seed(9)) > 0.3
    for i, m in enumerate(emb):
        emb[m] = emb[m].clone()
        emb[m][~mask[i]] = float("nan")
    out = geometry_metrics(emb, mask)
    assert set(out) == {"uniformity", "alignment", "modality_gap"}
    assert list(out["alignment"]) == ["a-b", "a-c", "b-c", "mean"]
    names = list(emb)
    for i, m in enumerate(names):
        assert out["uniformity"][m] == pytest.approx(_uniformity_loop(emb[m][mask[i]]), rel=1e-6)
    for i, a in enumerate(names):
        for j in range(i + 1, 3):
            b = names[j]
            both = mask[i] & mask[j]
            assert out["alignment"][f"{a}-{b}"] == pytest.approx(
                alignment(emb[a][both], emb[b][both])
            )
            assert out["modality_gap"][f"{a}-{b}"] == pytest.approx(
                modality_gap(emb[a][both], emb[b][both])
            )
    pair_vals = [out["alignment"][p] for p in ("a-b", "a-c", "b-c")]
    assert out["alignment"]["mean"] == pytest.approx(np.mean(pair_vals))
    assert all(np.isfinite(v) for v in out["modality_gap"].values())
