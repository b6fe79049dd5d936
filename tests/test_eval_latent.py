"""Latent recovery (ridge R^2) vs sklearn."""

import numpy as np
import pytest
import torch
from sklearn.linear_model import Ridge
from sklearn.metrics import r2_score
from sklearn.preprocessing import StandardScaler

from centrobind.eval import fused_embedding, latent_recovery, ridge_r2


def _sk_r2(xtr, ytr, xte, yte, alpha=1.0):
    sc = StandardScaler().fit(xtr)
    model = Ridge(alpha=alpha).fit(sc.transform(xtr), ytr)
    return r2_score(yte, model.predict(sc.transform(xte)), multioutput="uniform_average")


def test_ridge_r2_matches_sklearn():
    rng = np.random.default_rng(0)
    xtr, xte = rng.normal(size=(80, 5)) * [1, 10, 0.1, 3, 1], rng.normal(size=(40, 5))
    w = rng.normal(size=(5, 3))
    ytr = xtr @ w + rng.normal(size=(80, 3))
    yte = xte @ w + rng.normal(size=(40, 3))
    for alpha in (0.1, 1.0, 100.0):
        assert ridge_r2(xtr, ytr, xte, yte, alpha=alpha) == pytest.approx(
            _sk_r2(xtr, ytr, xte, yte, alpha)
        )
    # torch inputs and a 1-D target give the same numbers
    got = ridge_r2(torch.from_numpy(xtr), torch.from_numpy(ytr[:, 0]), xte, yte[:, 0])
    assert got == pytest.approx(_sk_r2(xtr, ytr[:, :1], xte, yte[:, :1]))


def test_perfectly_linear_factor_is_recovered():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(100, 4))
    y = x @ rng.normal(size=(4, 2))
    assert ridge_r2(x[:60], y[:60], x[60:], y[60:], alpha=1e-6) == pytest.approx(1.0, abs=1e-6)


def test_latent_recovery_masks_and_fused():
    rng = np.random.default_rng(2)
    n_tr, n_te = 90, 50
    z_tr, z_te = rng.normal(size=(n_tr, 3)), rng.normal(size=(n_te, 3))

    def views(z):
        return {
            m: torch.from_numpy(z @ rng.normal(size=(3, 6)) + 0.3 * rng.normal(size=(len(z), 6)))
            for m in "ab"
        }

    tr, te = views(z_tr), views(z_te)
    mtr = torch.from_numpy(rng.random((2, n_tr)) > 0.3)
    mte = torch.from_numpy(rng.random((2, n_te)) > 0.3)
    ftr = {"z": torch.from_numpy(z_tr[:, :2]), "s": torch.from_numpy(z_tr[:, 2])}
    fte = {"z": torch.from_numpy(z_te[:, :2]), "s": torch.from_numpy(z_te[:, 2])}
    out = latent_recovery(tr, mtr, ftr, te, mte, fte, alpha=0.5)
    assert set(out) == {"a", "b", "fused"}
    for i, m in enumerate("ab"):
        r, s = mtr[i].numpy(), mte[i].numpy()
        for g in ("z", "s"):
            yt, ys = ftr[g].numpy().reshape(n_tr, -1), fte[g].numpy().reshape(n_te, -1)
            ref = _sk_r2(tr[m].numpy()[r], yt[r], te[m].numpy()[s], ys[s], alpha=0.5)
            assert out[m][g] == pytest.approx(ref)
    ftr_x, fte_x = fused_embedding(tr, mtr).numpy(), fused_embedding(te, mte).numpy()
    r, s = mtr.any(0).numpy(), mte.any(0).numpy()
    ref = _sk_r2(ftr_x[r], z_tr[r, :2], fte_x[s], z_te[s, :2], alpha=0.5)
    assert out["fused"]["z"] == pytest.approx(ref)


def test_latent_recovery_raw_features_of_different_dims():
    rng = np.random.default_rng(3)
    z = rng.normal(size=(60, 2))
    feats = {"a": z @ rng.normal(size=(2, 7)), "b": z @ rng.normal(size=(2, 3))}
    out = latent_recovery(
        {m: f[:40] for m, f in feats.items()},
        None,
        {"z": z[:40]},
        {m: f[40:] for m, f in feats.items()},
        None,
        {"z": z[40:]},
        alpha=1e-6,
    )
    assert set(out) == {"a", "b"}  # no common D -> no fused view
    assert out["a"]["z"] == pytest.approx(1.0, abs=1e-6)
    assert out["b"]["z"] == pytest.approx(1.0, abs=1e-6)
