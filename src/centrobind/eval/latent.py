"""Latent-factor recovery: how linearly decodable are the true generative factors?

A ridge regression (``StandardScaler`` fit on train, then sklearn ``Ridge``, multi-output) maps an
embedding (or any raw feature array) to each true factor group; the score is the test R^2
(sklearn ``r2_score``, uniform average over the group's dimensions; 1 = perfect, 0 = no better
than the mean, can be negative).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch
from sklearn.linear_model import Ridge
from sklearn.metrics import r2_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from ._common import (
    ArrayLike,
    as_2d,
    check_present_finite,
    fused_embedding,
    modality_masks,
    to_numpy,
)

__all__ = ["latent_recovery", "ridge_r2"]


def _factor_2d(f: ArrayLike, n: int, name: str) -> np.ndarray:
    a = to_numpy(f).astype(np.float64)
    if a.ndim == 1:
        a = a[:, None]
    if a.ndim != 2 or a.shape[0] != n:
        raise ValueError(f"factor {name!r} must have shape [{n}, k] or [{n}], got {a.shape}")
    return a


def ridge_r2(
    train_x: ArrayLike,
    train_y: ArrayLike,
    test_x: ArrayLike,
    test_y: ArrayLike,
    alpha: float = 1.0,
) -> float:
    """Test R^2 of standardised-input ridge regression ``[N, D] -> [N, k]`` (uniform average).

    Args:
        train_x: ``[Ntr, D]``; train_y: ``[Ntr, k]`` or ``[Ntr]``.
        test_x: ``[Nte, D]`` (Nte >= 2); test_y: ``[Nte, k]`` or ``[Nte]``.
    """
    xtr = to_numpy(as_2d(train_x, "train_x")).astype(np.float64)
    xte = to_numpy(as_2d(test_x, "test_x")).astype(np.float64)
    ytr = _factor_2d(train_y, xtr.shape[0], "train_y")
    yte = _factor_2d(test_y, xte.shape[0], "test_y")
    if xtr.shape[0] < 1 or xte.shape[0] < 2:
        raise ValueError("ridge_r2 needs >= 1 train row and >= 2 test rows")
    model = make_pipeline(StandardScaler(), Ridge(alpha=alpha))
    model.fit(xtr, ytr)
    pred = model.predict(xte).reshape(yte.shape)
    return float(r2_score(yte, pred, multioutput="uniform_average"))


def latent_recovery(
    train_emb: Mapping[str, ArrayLike],
    train_mask: ArrayLike | None,
    train_factors: Mapping[str, ArrayLike],
    test_emb: Mapping[str, ArrayLike],
    test_mask: ArrayLike | None,
    test_factors: Mapping[str, ArrayLike],
    alpha: float = 1.0,
    include_fused: bool = True,
) -> dict[str, dict[str, float | None]]:
    """Ridge R^2 from each modality (and the fused embedding) to each true factor group.

    Works on embeddings or raw features (``[N, D_m]`` arrays; D may differ per modality, then
    ``"fused"`` is skipped). Each view is fit on the train rows where it is present and scored on
    the test rows where it is present; ``"fused"`` (:func:`fused_embedding`) uses rows with at
    least one modality present.

    Args:
        train_emb / test_emb: ``{name: [N, D_m]}`` with identical keys and order.
        train_mask / test_mask: ``BoolTensor[M, N]`` in dict order, or None.
        train_factors / test_factors: ``{group: [N, k]}`` (or ``[N]``), identical keys.
        alpha: ridge penalty.
        include_fused: add the ``"fused"`` view when all D agree.

    Returns:
        ``{view: {group: R^2}}`` with views = modalities (+ ``"fused"``); None where the view has
        no train rows or fewer than 2 test rows.
    """
    names = list(train_emb)
    if list(test_emb) != names:
        raise ValueError(f"train/test modalities differ: {names} vs {list(test_emb)}")
    if set(train_factors) != set(test_factors):
        raise ValueError(
            f"train/test factor groups differ: {list(train_factors)} vs {list(test_factors)}"
        )
    tr_masks = modality_masks(train_emb, train_mask)
    te_masks = modality_masks(test_emb, test_mask)
    tr = {m: as_2d(x, f"train_emb[{m!r}]") for m, x in train_emb.items()}
    te = {m: as_2d(x, f"test_emb[{m!r}]") for m, x in test_emb.items()}
    for m in names:
        check_present_finite(tr[m], tr_masks[m], m)
        check_present_finite(te[m], te_masks[m], m)
    n_tr = next(iter(tr.values())).shape[0]
    n_te = next(iter(te.values())).shape[0]
    ftr = {g: _factor_2d(f, n_tr, g) for g, f in train_factors.items()}
    fte = {g: _factor_2d(f, n_te, g) for g, f in test_factors.items()}

    views = {m: (tr[m], tr_masks[m], te[m], te_masks[m]) for m in names}
    dims = {x.shape[1] for x in tr.values()} | {x.shape[1] for x in te.values()}
    if include_fused and len(dims) == 1:
        mtr = torch.stack([tr_masks[m] for m in names])
        mte = torch.stack([te_masks[m] for m in names])
        views["fused"] = (
            fused_embedding(tr, mtr),
            mtr.any(dim=0),
            fused_embedding(te, mte),
            mte.any(dim=0),
        )

    out: dict[str, dict[str, float | None]] = {}
    for view, (xtr, rtr, xte, rte) in views.items():
        res: dict[str, float | None] = {}
        rtr_np, rte_np = rtr.numpy(), rte.numpy()
        for g in train_factors:
            if rtr_np.sum() < 1 or rte_np.sum() < 2:
                res[g] = None
                continue
            res[g] = ridge_r2(
                xtr[rtr.to(xtr.device)],
                ftr[g][rtr_np],
                xte[rte.to(xte.device)],
                fte[g][rte_np],
                alpha=alpha,
            )
        out[view] = res
    return out
