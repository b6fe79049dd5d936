"""Classification metrics vs sklearn / brute-force references."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.linear_model import LogisticRegression
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from centrobind.eval import (
    classification_metrics,
    fused_embedding,
    knn_accuracy,
    linear_probe,
    prototype_accuracy,
)


def _data(n, d=8, n_cls=3, seed=0, noise=1.0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(n_cls, d))
    y = rng.integers(0, n_cls, size=n)
    x = centers[y] + noise * rng.normal(size=(n, d))
    return torch.from_numpy(x).float(), torch.from_numpy(y).long()


def test_linear_probe_matches_sklearn_pipeline():
    xtr, ytr = _data(120, seed=1)
    xte, yte = _data(80, seed=2)
    ref = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000, random_state=0))
    ref.fit(xtr.double().numpy(), ytr.numpy())
    expected = 100 * np.mean(ref.predict(xte.double().numpy()) == yte.numpy())
    got = linear_probe(xtr, ytr, xte, yte, seed=0)
    assert got == pytest.approx(expected)
    assert linear_probe(xtr, ytr, xte, yte, seed=0) == got  # deterministic
    # C matters (heavy regularisation changes the fit) -> the argument is really passed on
    ref_c = make_pipeline(StandardScaler(), LogisticRegression(C=1e-4, max_iter=1000))
    ref_c.fit(xtr.double().numpy(), ytr.numpy())
    exp_c = 100 * np.mean(ref_c.predict(xte.double().numpy()) == yte.numpy())
    assert linear_probe(xtr, ytr, xte, yte, C=1e-4) == pytest.approx(exp_c)


def test_linear_probe_single_class():
    x = torch.randn(10, 3)
    assert linear_probe(x, torch.full((10,), 2), x, torch.tensor([2] * 7 + [1] * 3)) == 70.0


@pytest.mark.parametrize(("k", "chunk_size"), [(1, 7), (5, 3), (10, 4096), (25, 16)])
def test_knn_matches_sklearn_cosine(k, chunk_size):
    xtr, ytr = _data(90, n_cls=4, seed=3, noise=2.0)
    xte, yte = _data(60, n_cls=4, seed=4, noise=2.0)
    ref = KNeighborsClassifier(n_neighbors=k, metric="cosine", algorithm="brute")
    ref.fit(xtr.numpy(), ytr.numpy())
    expected = 100 * np.mean(ref.predict(xte.numpy()) == yte.numpy())
    assert knn_accuracy(xtr, ytr, xte, yte, k=k, chunk_size=chunk_size) == pytest.approx(expected)


def test_knn_vote_tie_goes_to_smallest_label_and_k_is_capped():
    xtr = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]])
    ytr = torch.tensor([7, 7, 3, 3])
    xte = torch.tensor([[1.0, 0.05]])
    # k=4: two votes for 7, two for 3 -> 3 wins; k=1: nearest neighbour is class 7
    assert knn_accuracy(xtr, ytr, xte, torch.tensor([3]), k=4) == 100.0
    assert knn_accuracy(xtr, ytr, xte, torch.tensor([7]), k=1) == 100.0
    assert knn_accuracy(xtr, ytr, xte, torch.tensor([3]), k=50) == 100.0  # capped at 4


def test_prototype_accuracy_brute_force():
    xp, yp = _data(70, n_cls=4, seed=5)
    xq, yq = _data(50, n_cls=4, seed=6)
    xp, xq = F.normalize(xp, dim=1), F.normalize(xq, dim=1)
    protos = {}
    for c in np.unique(yp.numpy()):
        m = xp.numpy()[yp.numpy() == c].mean(axis=0)
        protos[c] = m / np.linalg.norm(m)
    correct = 0
    for x, y in zip(xq.numpy(), yq.numpy(), strict=True):
        xn = x / np.linalg.norm(x)
        best = max(protos, key=lambda c: float(xn @ protos[c]))
        correct += int(best == y)
    assert prototype_accuracy(xp, yp, xq, yq) == pytest.approx(100 * correct / len(yq))


def test_prototypes_are_normalised_means_not_sums():
    # class 0 has ten rows, class 1 one: an unnormalised sum would let class 0 win everywhere
    xp = torch.tensor([[1.0, 0.0]] * 10 + [[0.6, 0.8]])
    yp = torch.tensor([0] * 10 + [1])
    xq = torch.tensor([[0.5, 0.866], [1.0, 0.1]])
    assert prototype_accuracy(xp, yp, xq, torch.tensor([1, 0])) == 100.0


def test_prototype_unseen_query_class_is_wrong():
    xp = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    xq = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    assert prototype_accuracy(xp, torch.tensor([0, 1]), xq, torch.tensor([0, 5])) == 50.0


def test_fused_embedding_ignores_missing_rows():
    a = F.normalize(torch.randn(6, 4), dim=1)
    b = F.normalize(torch.randn(6, 4), dim=1)
    mask = torch.tensor([[1, 1, 0, 1, 0, 1], [1, 0, 1, 1, 0, 1]], dtype=torch.bool)
    a_bad, b_bad = a.clone(), b.clone()
    a_bad[~mask[0]] = float("nan")
    b_bad[~mask[1]] = 7.0  # finite garbage must be ignored too
    fused = fused_embedding({"a": a_bad, "b": b_bad}, mask)
    for i in range(6):
        parts = [x[i] for x, p in ((a, mask[0, i]), (b, mask[1, i])) if p]
        if parts:
            ref = torch.stack(parts).mean(0)
            torch.testing.assert_close(fused[i], ref / ref.norm())
        else:
            assert torch.equal(fused[i], torch.zeros(4))
    assert torch.allclose(fused_embedding({"a": a, "b": a}), a)


def test_classification_metrics_per_modality_rows():
    n_tr, n_te = 100, 60
    ztr, ytr = _data(n_tr, d=6, seed=7)
    zte, yte = _data(n_te, d=6, seed=8)
    g = torch.Generator().manual_seed(0)
    tr = {m: F.normalize(ztr + 0.5 * torch.randn(n_tr, 6, generator=g), dim=1) for m in "ab"}
    te = {m: F.normalize(zte + 0.5 * torch.randn(n_te, 6, generator=g), dim=1) for m in "ab"}
    mtr = torch.rand(2, n_tr, generator=g) > 0.3
    mte = torch.rand(2, n_te, generator=g) > 0.3
    out = classification_metrics(tr, mtr, {"cls": ytr}, te, mte, {"cls": yte}, seed=0, knn_k=5)
    res = out["cls"]
    assert set(res) == {"linear_probe", "knn", "prototype"}
    assert set(res["linear_probe"]) == {"a", "b", "fused"}
    assert set(res["prototype"]) == {"a->a", "a->b", "b->a", "b->b", "mean"}
    for i, m in enumerate("ab"):
        args = (tr[m][mtr[i]], ytr[mtr[i]], te[m][mte[i]], yte[mte[i]])
        assert res["linear_probe"][m] == pytest.approx(linear_probe(*args))
        assert res["knn"][m] == pytest.approx(knn_accuracy(*args, k=5))
    ftr, fte = fused_embedding(tr, mtr), fused_embedding(te, mte)
    rtr, rte = mtr.any(0), mte.any(0)
    fargs = (ftr[rtr], ytr[rtr], fte[rte], yte[rte])
    assert res["linear_probe"]["fused"] == pytest.approx(linear_probe(*fargs))
    assert res["knn"]["fused"] == pytest.approx(knn_accuracy(*fargs, k=5))
    expected = prototype_accuracy(tr["a"][mtr[0]], ytr[mtr[0]], te["b"][mte[1]], yte[mte[1]])
    assert res["prototype"]["a->b"] == pytest.approx(expected)
    vals = [res["prototype"][k] for k in ("a->a", "a->b", "b->a", "b->b")]
    assert res["prototype"]["mean"] == pytest.approx(np.mean(vals))


# -- label -1 = unlabelled --------------------------------------------------------------------


def _unlabel(y: torch.Tensor, rate: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(y with ~rate of its entries set to -1, bool [N] of the kept (labelled) rows)``."""
    keep = torch.rand(y.shape[0], generator=torch.Generator().manual_seed(seed)) >= rate
    return torch.where(keep, y, torch.full_like(y, -1)), keep


@pytest.mark.parametrize("fn", [linear_probe, knn_accuracy, prototype_accuracy])
def test_unlabelled_rows_are_left_out_of_each_probe(fn):
    xtr, ytr = _data(120, n_cls=3, seed=11, noise=2.0)
    xte, yte = _data(90, n_cls=3, seed=12, noise=2.0)
    ytr_u, ktr = _unlabel(ytr, 0.4, 0)
    yte_u, kte = _unlabel(yte, 0.4, 1)
    got = fn(xtr, ytr_u, xte, yte_u)
    assert got == pytest.approx(fn(xtr[ktr], ytr[ktr], xte[kte], yte[kte]))
    # -1 is not a class: with it counted as one (a constant "unlabelled" class), results differ
    assert got != pytest.approx(fn(xtr, ytr_u + 1, xte, yte_u + 1))
    with pytest.raises(ValueError, match="labelled rows"):
        fn(xtr, ytr_u, xte, torch.full_like(yte, -1))


def test_classification_metrics_skips_unlabelled_rows_per_task():
    n_tr, n_te = 100, 60
    ztr, ytr = _data(n_tr, d=6, seed=7)
    zte, yte = _data(n_te, d=6, seed=8)
    g = torch.Generator().manual_seed(0)
    tr = {m: F.normalize(ztr + 0.5 * torch.randn(n_tr, 6, generator=g), dim=1) for m in "ab"}
    te = {m: F.normalize(zte + 0.5 * torch.randn(n_te, 6, generator=g), dim=1) for m in "ab"}
    mtr = torch.rand(2, n_tr, generator=g) > 0.3
    mte = torch.rand(2, n_te, generator=g) > 0.3
    ytr_u, ktr = _unlabel(ytr, 0.3, 2)
    yte_u, kte = _unlabel(yte, 0.3, 3)
    out = classification_metrics(
        tr,
        mtr,
        {"cls": ytr_u, "none": torch.full_like(ytr, -1)},
        te,
        mte,
        {"cls": yte_u, "none": yte},
        knn_k=5,
    )
    # the same metrics computed on the labelled rows only
    ref = classification_metrics(
        {m: x[ktr] for m, x in tr.items()},
        mtr[:, ktr],
        {"cls": ytr[ktr]},
        {m: x[kte] for m, x in te.items()},
        mte[:, kte],
        {"cls": yte[kte]},
        knn_k=5,
    )
    for kind in ("linear_probe", "knn", "prototype"):
        assert out["cls"][kind] == pytest.approx(ref["cls"][kind]), kind
    # a task without any labelled training row: every entry is None
    for kind in ("linear_probe", "knn", "prototype"):
        assert all(v is None for v in out["none"][kind].values()), out["none"][kind]
