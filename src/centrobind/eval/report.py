"""One-call evaluation (:func:`evaluate`) and plain-text tables (:func:`format_metrics`).

Layout returned by :func:`evaluate` (all leaves are plain ``float``/``int``/``None``, JSON-safe;
``a``, ``b`` range over the modality names in dict order; percentages are 0-100)::

    {
      "retrieval": {                            # test split
        "a->b": {"R@1", "R@5", "R@10", "MRR", "median_rank", "n_queries"},  # every a != b
        "mean": {"R@1", ..., "median_rank", "n_pairs"} | None,   # unweighted over the pairs
        "mean_excluding": {k: {...same as mean...} | None},      # pairs with a != k and b != k
        "mean_excluding_anchor": mean_excluding[anchor] | None,  # None when anchor is None
        "leave_one_out": {b: {...pair metrics...}, "mean": {...} | None},
      },
      "classification": {                       # train -> test, one entry per label task
        task: {
          "linear_probe": {m: acc, "fused": acc},
          "knn": {m: acc, "fused": acc},
          "prototype": {"a->b": acc, ..., "mean": acc},   # all ordered pairs incl. a->a
        },
      },
      "geometry": {                             # test split
        "uniformity": {m: float},
        "alignment": {"a-b": float, ..., "mean": float},   # unordered pairs
        "modality_gap": {"a-b": float, ..., "mean": float},
      },
      "latent_recovery": {view: {group: R^2}},  # only when factors are given; view = m | "fused"
    }

:func:`centrobind.runs.evaluate_run` adds ``"label_retrieval"``
(:func:`~centrobind.eval.label_retrieval`: P@k and mAP by label, per task and pair) when the data
has labels; :func:`format_metrics` shows it.

A value is None when its subset of rows is empty (see the individual metric modules).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ._common import ArrayLike, to_builtin
from .classification import classification_metrics
from .geometry import geometry_metrics
from .latent import latent_recovery
from .retrieval import cross_modal_retrieval, leave_one_out_retrieval

__all__ = ["evaluate", "format_metrics"]


def evaluate(
    train_emb: Mapping[str, ArrayLike],
    train_mask: ArrayLike | None,
    train_labels: Mapping[str, ArrayLike] | None,
    test_emb: Mapping[str, ArrayLike],
    test_mask: ArrayLike | None,
    test_labels: Mapping[str, ArrayLike] | None,
    train_factors: Mapping[str, ArrayLike] | None = None,
    test_factors: Mapping[str, ArrayLike] | None = None,
    anchor: str | None = None,
    seed: int = 0,
    *,
    ks: Sequence[int] = (1, 5, 10),
    chunk_size: int = 4096,
    knn_k: int = 10,
    ridge_alpha: float = 1.0,
    uniformity_max_n: int | None = 10_000,
) -> dict[str, Any]:
    """Run every evaluation and return the layout described in the module docstring.

    Args:
        train_emb / test_emb: ``{name: Tensor[N, D]}`` L2-normalised embeddings, same keys/order.
        train_mask / test_mask: ``BoolTensor[M, N]`` presence (dict order) or None (all present).
        train_labels / test_labels: ``{task: LongTensor[N]}`` or None (no classification).
        train_factors / test_factors: ``{group: Tensor[N, k]}``; both or neither.
        anchor: the anchor modality of a fixed-anchor method; fills
            ``retrieval["mean_excluding_anchor"]`` (the pairs that such a method never trains).
        seed: seeds the linear probe and the uniformity subsample.
    """
    names = list(test_emb)
    if list(train_emb) != names:
        raise ValueError(f"train/test modalities differ: {list(train_emb)} vs {names}")
    if anchor is not None and anchor not in names:
        raise ValueError(f"anchor {anchor!r} is not one of the modalities {names}")
    if (train_factors is None) != (test_factors is None):
        raise ValueError("give both train_factors and test_factors, or neither")
    if (train_labels is None) != (test_labels is None):
        raise ValueError("give both train_labels and test_labels, or neither")

    retrieval = cross_modal_retrieval(test_emb, test_mask, ks=ks, chunk_size=chunk_size)
    retrieval["mean_excluding_anchor"] = (
        retrieval["mean_excluding"][anchor] if anchor is not None else None
    )
    retrieval["leave_one_out"] = leave_one_out_retrieval(
        test_emb, test_mask, ks=ks, chunk_size=chunk_size
    )
    out: dict[str, Any] = {"retrieval": retrieval}
    out["classification"] = (
        classification_metrics(
            train_emb,
            train_mask,
            train_labels,
            test_emb,
            test_mask,
            test_labels,
            seed=seed,
            knn_k=knn_k,
        )
        if train_labels is not None and test_labels is not None
        else {}
    )
    out["geometry"] = geometry_metrics(test_emb, test_mask, max_n=uniformity_max_n, seed=seed)
    if train_factors is not None and test_factors is not None:
        out["latent_recovery"] = latent_recovery(
            train_emb,
            train_mask,
            train_factors,
            test_emb,
            test_mask,
            test_factors,
            alpha=ridge_alpha,
        )
    built: dict[str, Any] = to_builtin(out)
    return built


# --------------------------------------------------------------------------- formatting


def _fmt(v: Any, digits: int = 2) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    cols = [header, *rows]
    widths = [max(len(r[i]) for r in cols) for i in range(len(header))]
    lines = []
    for j, r in enumerate(cols):
        rest = [c.rjust(w) for c, w in zip(r[1:], widths[1:], strict=True)]
        cells = [r[0].ljust(widths[0]), *rest]
        lines.append("  ".join(cells).rstrip())
        if j == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _modalities(metrics: Mapping[str, Any]) -> list[str]:
    loo = metrics.get("retrieval", {}).get("leave_one_out")
    if loo:
        return [k for k in loo if k != "mean"]
    unif = metrics.get("geometry", {}).get("uniformity")
    return list(unif) if unif else []


def _retrieval_section(ret: Mapping[str, Any], names: list[str]) -> list[str]:
    out = ["== Retrieval R@1 (%)  rows: query modality, cols: gallery modality =="]
    rows = []
    for a in names:
        row = [a]
        for b in names:
            pair = ret.get(f"{a}->{b}")
            row.append("-" if a == b or pair is None else _fmt(pair.get("R@1"), 1))
        rows.append(row)
    out.append(_table(["query\\gallery", *names], rows))
    metric_keys: list[str] = []
    for key in ("mean", "mean_excluding_anchor"):
        if isinstance(ret.get(key), Mapping):
            metric_keys = [k for k in ret[key] if k != "n_pairs"]
            break
    if metric_keys:
        summary = []

        def add(label: str, m: Mapping[str, Any] | None) -> None:
            summary.append(
                [label]
                + [_fmt(m.get(k) if m else None, 3 if k == "MRR" else 1) for k in metric_keys]
            )

        add("mean (all pairs)", ret.get("mean"))
        for k, m in (ret.get("mean_excluding") or {}).items():
            add(f"mean excl. {k}", m)
        if isinstance(ret.get("mean_excluding_anchor"), Mapping):
            add("mean excl. anchor", ret["mean_excluding_anchor"])
        loo = ret.get("leave_one_out") or {}
        for b in names:
            if b in loo:
                add(f"others -> {b}", loo[b])
        if "mean" in loo:
            add("others -> * (mean)", loo["mean"])
        out.append("")
        out.append(_table(["summary", *metric_keys], summary))
    return out


def _classification_section(cls: Mapping[str, Any], names: list[str]) -> list[str]:
    out: list[str] = []
    for task, res in cls.items():
        lin, knn, proto = res.get("linear_probe", {}), res.get("knn", {}), res.get("prototype", {})
        views = list(dict.fromkeys([*lin, *knn]))
        out.append(f"== Classification: {task} (accuracy %) ==")
        out.append(
            _table(
                ["view", "linear_probe", "knn"],
                [[v, _fmt(lin.get(v), 1), _fmt(knn.get(v), 1)] for v in views],
            )
        )
        if proto:
            out.append("")
            out.append(
                f"prototype accuracy (%)  rows: prototype modality (train), "
                f"cols: query modality (test); mean = {_fmt(proto.get('mean'), 1)}"
            )
            out.append(
                _table(
                    ["proto\\query", *names],
                    [[a, *[_fmt(proto.get(f"{a}->{b}"), 1) for b in names]] for a in names],
                )
            )
        out.append("")
    return out[:-1] if out else out


def _label_retrieval_section(lab: Mapping[str, Any]) -> list[str]:
    out: list[str] = []
    for task, res in lab.items():
        pairs = [p for p in res if p != "mean" and res[p].get("n_queries")]
        if not pairs:
            continue
        keys = [k for k in res[pairs[0]] if k != "n_queries"]
        rows = [[p, *[_fmt(res[p].get(k), 1) for k in keys]] for p in pairs]
        if isinstance(res.get("mean"), Mapping):
            rows.append(["mean (all pairs)", *[_fmt(res["mean"].get(k), 1) for k in keys]])
        out.append(
            f"== Label retrieval: {task} (%; a hit = any gallery item with the query's label) =="
        )
        out.append(_table(["query->gallery", *keys], rows))
        out.append("")
    return out[:-1]


def _geometry_section(geo: Mapping[str, Any], names: list[str]) -> list[str]:
    out = ["== Geometry =="]
    unif = geo.get("uniformity", {})
    out.append(_table(["modality", "uniformity"], [[m, _fmt(unif.get(m), 3)] for m in unif]))
    align, gap = geo.get("alignment", {}), geo.get("modality_gap", {})
    pairs = list(dict.fromkeys([*align, *gap]))
    out.append("")
    out.append(
        _table(
            ["pair", "alignment", "modality_gap"],
            [[p, _fmt(align.get(p), 3), _fmt(gap.get(p), 3)] for p in pairs],
        )
    )
    return out


def _latent_section(lat: Mapping[str, Any]) -> list[str]:
    groups = list(dict.fromkeys(g for res in lat.values() for g in res))
    return [
        "== Latent recovery (ridge R^2, test) ==",
        _table(
            ["view", *groups],
            [[v, *[_fmt(res.get(g), 3) for g in groups]] for v, res in lat.items()],
        ),
    ]


def format_metrics(metrics: Mapping[str, Any]) -> str:
    """Render the output of :func:`evaluate` (or any subset of its sections) as text tables."""
    names = _modalities(metrics)
    sections: list[list[str]] = []
    if metrics.get("retrieval"):
        sections.append(_retrieval_section(metrics["retrieval"], names))
    if metrics.get("label_retrieval"):
        sections.append(_label_retrieval_section(metrics["label_retrieval"]))
    if metrics.get("classification"):
        sections.append(_classification_section(metrics["classification"], names))
    if metrics.get("geometry"):
        sections.append(_geometry_section(metrics["geometry"], names))
    if metrics.get("latent_recovery"):
        sections.append(_latent_section(metrics["latent_recovery"]))
    return "\n\n".join("\n".join(s) for s in sections) + "\n"
