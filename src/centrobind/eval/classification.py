"""Label-task evaluation of embeddings: linear probe, cosine k-NN, cross-modal prototypes.

All accuracies are percentages (0-100). Inputs may be tensors or numpy arrays.

Unlabelled rows: a label of -1 (:data:`centrobind.data.UNLABELLED`) means "no label"; such rows
are left out of every probe, on both sides (they neither train a probe nor count in its accuracy).

Tie conventions:
    * k-NN: majority vote among the k nearest neighbours (cosine similarity, uniform weights);
      a tie between classes goes to the smallest label (as sklearn's ``KNeighborsClassifier``);
      neighbours tied in similarity at the k-th place are chosen by ``torch.topk`` (arbitrary).
      If fewer than k training rows exist, all of them vote.
    * prototypes: a tie in cosine between classes goes to the smallest label.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from torch import Tensor

from centrobind.data.dataset import UNLABELLED

from ._common import (
    ArrayLike,
    as_2d,
    as_labels,
    check_present_finite,
    fused_embedding,
    l2_normalize,
    mean_or_none,
    modality_masks,
    to_numpy,
)

__all__ = [
    "classification_metrics",
    "fused_embedding",
    "knn_accuracy",
    "linear_probe",
    "prototype_accuracy",
]


def _xy(x: ArrayLike, y: ArrayLike, name: str) -> tuple[Tensor, Tensor]:
    """``(x [n, D], y [n])`` restricted to the labelled rows (label != -1)."""
    xt = as_2d(x, f"{name}_x")
    yt = as_labels(y, xt.shape[0], f"{name}_y")
    keep = yt != UNLABELLED
    if bool(keep.all()):
        return xt, yt
    return xt[keep.to(xt.device)], yt[keep]


def linear_probe(
    train_x: ArrayLike,
    train_y: ArrayLike,
    test_x: ArrayLike,
    test_y: ArrayLike,
    seed: int = 0,
    C: float = 1.0,
    max_iter: int = 1000,
) -> float:
    """Test accuracy (%) of a logistic-regression probe.

    ``StandardScaler`` (fit on train) followed by ``LogisticRegression`` (lbfgs; multinomial for
    more than two classes), deterministic given ``seed``. If the training labels hold a single
    class, that class is predicted for every test row. Rows labelled -1 are left out.

    Args:
        train_x: ``[Ntr, D]``; train_y: ``[Ntr]`` integer labels.
        test_x: ``[Nte, D]``; test_y: ``[Nte]``.
    """
    xtr, ytr = _xy(train_x, train_y, "train")
    xte, yte = _xy(test_x, test_y, "test")
    if xtr.shape[0] == 0 or xte.shape[0] == 0:
        raise ValueError("linear_probe needs non-empty train and test sets (of labelled rows)")
    ytr_np, yte_np = ytr.numpy(), yte.numpy()
    if np.unique(ytr_np).size == 1:
        return 100.0 * float(np.mean(yte_np == ytr_np[0]))
    clf = make_pipeline(
        StandardScaler(),
        LogisticRegression(C=C, solver="lbfgs", max_iter=max_iter, random_state=seed),
    )
    clf.fit(to_numpy(xtr).astype(np.float64), ytr_np)
    pred = clf.predict(to_numpy(xte).astype(np.float64))
    return 100.0 * float(np.mean(pred == yte_np))


def knn_accuracy(
    train_x: ArrayLike,
    train_y: ArrayLike,
    test_x: ArrayLike,
    test_y: ArrayLike,
    k: int = 10,
    chunk_size: int = 4096,
) -> float:
    """Test accuracy (%) of cosine k-NN majority vote (ties: see module doc); rows labelled -1
    are left out.

    Args:
        train_x: ``[Ntr, D]``; train_y: ``[Ntr]``; test_x: ``[Nte, D]``; test_y: ``[Nte]``.
        k: neighbours (capped at Ntr).
        chunk_size: test rows scored per block (``[chunk, Ntr]`` similarities in memory).
    """
    xtr, ytr = _xy(train_x, train_y, "train")
    xte, yte = _xy(test_x, test_y, "test")
    if xtr.shape[0] == 0 or xte.shape[0] == 0:
        raise ValueError("knn_accuracy needs non-empty train and test sets (of labelled rows)")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    dtype = torch.promote_types(xtr.dtype, xte.dtype)
    xtr = l2_normalize(xtr.to(dtype))
    xte = l2_normalize(xte.to(device=xtr.device, dtype=dtype))
    classes, ytr_idx = torch.unique(ytr, sorted=True, return_inverse=True)
    ytr_idx = ytr_idx.to(xtr.device)
    kk = min(k, xtr.shape[0])
    n_cls = classes.numel()
    preds = torch.empty(xte.shape[0], dtype=torch.long)
    with torch.no_grad():
        for s in range(0, xte.shape[0], chunk_size):
            sims = xte[s : s + chunk_size] @ xtr.T  # [c, Ntr]
            nn_idx = sims.topk(kk, dim=1).indices  # [c, k]
            votes = torch.zeros(nn_idx.shape[0], n_cls, device=xtr.device)
            votes.scatter_add_(1, ytr_idx[nn_idx], torch.ones(nn_idx.shape, device=xtr.device))
            # argmax returns the first maximum -> smallest label among tied classes
            preds[s : s + chunk_size] = votes.argmax(dim=1).cpu()
    return 100.0 * float((classes[preds] == yte).double().mean())


def prototype_accuracy(
    proto_x: ArrayLike, proto_y: ArrayLike, query_x: ArrayLike, query_y: ArrayLike
) -> float:
    """Accuracy (%) of nearest-class-prototype classification by cosine.

    Prototype of class c = L2-normalised mean of the ``proto_x`` rows labelled c (e.g. modality-a
    train embeddings); each query row (e.g. modality-b test embedding) gets the class of the most
    cosine-similar prototype. Query classes without a prototype are always wrong. Rows labelled
    -1 are left out on both sides.

    Args:
        proto_x: ``[Np, D]``; proto_y: ``[Np]``; query_x: ``[Nq, D]``; query_y: ``[Nq]``.
    """
    xp, yp = _xy(proto_x, proto_y, "proto")
    xq, yq = _xy(query_x, query_y, "query")
    if xp.shape[0] == 0 or xq.shape[0] == 0:
        raise ValueError(
            "prototype_accuracy needs non-empty prototype and query sets (of labelled rows)"
        )
    dtype = torch.promote_types(xp.dtype, xq.dtype)
    xp = xp.to(dtype)
    xq = xq.to(device=xp.device, dtype=dtype)
    classes, inv = torch.unique(yp, sorted=True, return_inverse=True)
    sums = torch.zeros(classes.numel(), xp.shape[1], dtype=dtype, device=xp.device)
    sums.index_add_(0, inv.to(xp.device), xp)
    protos = l2_normalize(sums)  # mean and sum share the direction
    with torch.no_grad():
        pred = (l2_normalize(xq) @ protos.T).argmax(dim=1).cpu()
    return 100.0 * float((classes[pred] == yq).double().mean())


def _subset(x: Tensor, rows: Tensor) -> Tensor:
    return x[rows.to(x.device)]


def classification_metrics(
    train_emb: Mapping[str, ArrayLike],
    train_mask: ArrayLike | None,
    train_labels: Mapping[str, ArrayLike],
    test_emb: Mapping[str, ArrayLike],
    test_mask: ArrayLike | None,
    test_labels: Mapping[str, ArrayLike],
    seed: int = 0,
    knn_k: int = 10,
) -> dict[str, dict[str, dict[str, float | None]]]:
    """Linear probe, k-NN and cross-modal prototype accuracy (%) for every label task.

    Each modality is evaluated on the train/test rows where it is present; ``"fused"`` uses
    :func:`fused_embedding` on rows with at least one modality present. Prototypes are built
    from modality ``a`` (train rows where present) and queried with modality ``b`` (test rows
    where present) for all ordered pairs, including ``a->a``. Rows labelled -1 in a task are left
    out of that task's probes.

    Args:
        train_emb / test_emb: ``{name: Tensor[N, D]}`` with identical keys and order.
        train_mask / test_mask: ``BoolTensor[M, N]`` in dict order, or None.
        train_labels / test_labels: ``{task: LongTensor[N]}`` with identical keys.

    Returns:
        ``{task: {"linear_probe": {m: acc, "fused": acc}, "knn": {m: acc, "fused": acc},
        "prototype": {"a->b": acc, ..., "mean": acc}}}``; an entry is None when its train or
        test subset (present and labelled rows) is empty.

    Over 80 lines: one loop per label task over the three probes, kept together so every
    probe sees the same rows.
    """
    names = list(train_emb)
    if list(test_emb) != names:
        raise ValueError(f"train/test modalities differ: {names} vs {list(test_emb)}")
    if set(train_labels) != set(test_labels):
        raise ValueError(f"train/test tasks differ: {list(train_labels)} vs {list(test_labels)}")
    tr_masks = modality_masks(train_emb, train_mask)
    te_masks = modality_masks(test_emb, test_mask)
    tr = {m: as_2d(x, f"train_emb[{m!r}]") for m, x in train_emb.items()}
    te = {m: as_2d(x, f"test_emb[{m!r}]") for m, x in test_emb.items()}
    for m in names:
        check_present_finite(tr[m], tr_masks[m], m)
        check_present_finite(te[m], te_masks[m], m)
    views_tr = {m: (tr[m], tr_masks[m]) for m in names}
    views_te = {m: (te[m], te_masks[m]) for m in names}
    dims = {x.shape[1] for x in tr.values()} | {x.shape[1] for x in te.values()}
    if len(dims) == 1:
        views_tr["fused"] = (
            fused_embedding(tr, torch.stack([tr_masks[m] for m in names])),
            torch.stack([tr_masks[m] for m in names]).any(dim=0),
        )
        views_te["fused"] = (
            fused_embedding(te, torch.stack([te_masks[m] for m in names])),
            torch.stack([te_masks[m] for m in names]).any(dim=0),
        )

    out: dict[str, dict[str, dict[str, float | None]]] = {}
    for task in train_labels:
        ytr = as_labels(train_labels[task], next(iter(tr.values())).shape[0], f"train[{task}]")
        yte = as_labels(test_labels[task], next(iter(te.values())).shape[0], f"test[{task}]")
        ltr, lte = ytr != UNLABELLED, yte != UNLABELLED
        lin: dict[str, float | None] = {}
        knn: dict[str, float | None] = {}
        for view in views_tr:
            xtr, rtr = views_tr[view]
            xte, rte = views_te[view]
            rtr, rte = rtr & ltr, rte & lte
            if not bool(rtr.any()) or not bool(rte.any()):
                lin[view] = knn[view] = None
                continue
            args = (_subset(xtr, rtr), ytr[rtr], _subset(xte, rte), yte[rte])
            lin[view] = linear_probe(*args, seed=seed)
            knn[view] = knn_accuracy(*args, k=knn_k)
        proto: dict[str, float | None] = {}
        for a in names:
            for b in names:
                ra, rb = tr_masks[a] & ltr, te_masks[b] & lte
                if not bool(ra.any()) or not bool(rb.any()):
                    proto[f"{a}->{b}"] = None
                    continue
                proto[f"{a}->{b}"] = prototype_accuracy(
                    _subset(tr[a], ra), ytr[ra], _subset(te[b], rb), yte[rb]
                )
        proto["mean"] = mean_or_none(list(proto.values()))
        out[task] = {"linear_probe": lin, "knn": knn, "prototype": proto}
    return out
