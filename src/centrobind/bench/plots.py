"""Benchmark figures (matplotlib, Agg backend; PNG files next to report.md).

Every figure colours a method with :func:`method_color`, so a method has one colour in all of
them, whatever the list of methods: CentroBind is always the same red, its main variants clearly
different warm colours ([paper] orange, [loo] pink, [learned-scale] brown), AllPairs blue, fixed
anchors greens/teals, Symile purple, GRAM olive; line plots also give each method its own marker.

matplotlib stays a core dependency rather than an extra: the two commands a newcomer runs first,
``centrobind benchmark`` and ``centrobind demo``, both draw figures, and only writing a report
imports this module (training, embedding and search never load it).
"""

from __future__ import annotations

import math
import re
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

__all__ = [
    "against_m",
    "cost_against_m",
    "excluding_bars",
    "method_color",
    "missing_plot",
    "pair_heatmaps",
    "sweep_plot",
]

Stat = tuple[float, float, int]  # (mean, std over seeds, number of seeds), as in report.Agg
Agg = dict[tuple[str, str, str], dict[str, Stat]]

_EXACT = {
    "CentroBind": "#d62728",
    "CentroBind[paper]": "#ff7f0e",
    "CentroBind[loo]": "#e377c2",
    "CentroBind[learned-scale]": "#8c564b",
    "AllPairs": "#1f77b4",
    "Symile": "#9467bd",
    "GCCA": "#7f7f7f",
    "Raw": "#c7c7c7",
    "Untrained": "#3b3b3b",
}
# (name prefix, colours, names in a fixed order so the common ones never collide; the suites'
# own names, such as one fixed anchor per mfeat view, come from their Suite.colour_order)
_FAMILIES: list[tuple[str, list[str], list[str]]] = [
    (
        "CentroBind",
        ["#ffbb78", "#67000d", "#c49c94", "#fdae6b", "#843c39", "#e7969c", "#7b4173", "#f768a1"],
        [
            "CentroBind[grad,unnorm]",
            "CentroBind[detach,norm]",
            "CentroBind[grad,norm]",
            "CentroBind[learned-w]",
            "CentroBind[lr3e-3]",
            "CentroBind+intra0.3",
            "CentroBind+intra1.0",
        ],
    ),
    ("AllPairs", ["#6baed6", "#08519c", "#9ecae1", "#3182bd"], ["AllPairs[lr3e-3]"]),
    (
        "FixedAnchor(",
        ["#2ca02c", "#17becf", "#98df8a", "#006d2c", "#9edae5", "#637939", "#74c476", "#0e7c7b"],
        [],
    ),
    ("Gram", ["#bcbd22", "#8c6d31", "#dbdb8d"], []),
    ("Symile", ["#c5b0d5", "#6a51a3"], []),
]
_OTHER = ["#393b79", "#e7ba52", "#5254a3", "#ad494a", "#9c9ede", "#cedb9c", "#de9ed6", "#636363"]
_MARKERS = ["o", "s", "^", "D", "v", "P", "X", "*", "<", ">", "h"]


def _suite_order(prefix: str) -> list[str]:
    """The names starting with ``prefix`` that the registered suites declare
    (:attr:`~centrobind.bench.base.Suite.colour_order`), in suite order."""
    from .suites import SUITES

    return [n for s in SUITES.values() for n in s.colour_order if n.startswith(prefix)]


def _pick(name: str, colours: list[str], order: list[str]) -> str:
    if name in order:
        return colours[order.index(name) % len(colours)]
    return colours[zlib.crc32(name.encode()) % len(colours)]


def method_color(name: str) -> str:
    """The colour of method ``name`` (a hex string), the same in every figure and every run."""
    if name in _EXACT:
        return _EXACT[name]
    m = re.fullmatch(r"FixedAnchor\((m\d+)\)", name)
    if m:  # synthetic anchors m1, m2, ...: the same shades as the first mfeat views
        fam = _FAMILIES[2]
        return fam[1][(int(m[1][1:]) - 1) % len(fam[1])]
    if re.fullmatch(r"Gram\([^)]*\)\[official\]", name):
        return _FAMILIES[3][1][1]
    for prefix, colours, order in _FAMILIES:
        if name.startswith(prefix):
            if prefix == "Gram":
                return colours[0]
            return _pick(name, colours, order + _suite_order(prefix))
    return _pick(name, _OTHER, [])


def method_marker(name: str) -> str:
    """A line-plot marker for ``name``, stable across runs."""
    return _MARKERS[zlib.crc32(name.encode()) % len(_MARKERS)]


def _stat(agg: Agg, key: tuple[str, str, str], metric: str) -> Stat | None:
    return agg.get(key, {}).get(metric)


def pair_heatmaps(agg: Agg, methods: list[str], mods: list[str], path: Path) -> None:
    """Per-pair R@1 (rows: query view, columns: gallery view) for each of ``methods``."""
    fig, axes = plt.subplots(1, len(methods), figsize=(3.6 * len(methods), 3.6))
    axes = np.atleast_1d(axes)
    for ax, method in zip(axes, methods, strict=True):
        mat = np.full((len(mods), len(mods)), np.nan)
        for i, a in enumerate(mods):
            for j, b in enumerate(mods):
                st = _stat(agg, ("mfeat", "mfeat", method), f"pair/{a}->{b}")
                if a != b and st is not None:
                    mat[i, j] = st[0]
        im = ax.imshow(mat, vmin=0, vmax=100, cmap="viridis")
        for i in range(len(mods)):
            for j in range(len(mods)):
                if i != j and np.isfinite(mat[i, j]):
                    ax.text(
                        j,
                        i,
                        f"{mat[i, j]:.0f}",
                        ha="center",
                        va="center",
                        fontsize=8,
                        color="white" if mat[i, j] < 60 else "black",
                    )
        ax.set_xticks(range(len(mods)), mods)
        ax.set_yticks(range(len(mods)), mods)
        ax.set_xlabel("gallery view")
        if ax is axes[0]:
            ax.set_ylabel("query view")
        mean = f"{np.nanmean(mat):.1f}" if np.isfinite(mat).any() else "–"
        ax.set_title(f"{method}\nmean R@1 {mean}", color=method_color(method), fontsize=10)
    fig.colorbar(im, ax=list(axes), shrink=0.8, label="R@1 (%)")
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


def excluding_bars(agg: Agg, methods: list[str], mods: list[str], path: Path) -> None:
    """Small multiples, one panel per view k: R@1 over the pairs not involving k.

    Each panel shows FixedAnchor(k) (hatched, black edge), the best of the other fixed anchors,
    and every method that is not a fixed anchor, so a panel has a handful of bars.
    """
    ncols = 2 if len(mods) > 1 else 1
    nrows = math.ceil(len(mods) / ncols)
    fixed = [m for m in methods if m.startswith("FixedAnchor(")]
    rest = [m for m in methods if m not in fixed]
    per_panel = 2 + len(rest)
    fig, axes = plt.subplots(
        nrows,
        ncols,
        figsize=(8, 0.28 * per_panel * nrows + 0.9 * nrows),
        sharex=True,
        squeeze=False,
    )
    top = 0.0
    for ax, k in zip(axes.flat, mods, strict=False):
        metric = f"R@1_excl/{k}"
        own = f"FixedAnchor({k})"
        others = [m for m in fixed if m != own and _stat(agg, ("mfeat", "mfeat", m), metric)]
        best_other = max(others, key=lambda m: agg[("mfeat", "mfeat", m)][metric][0], default=None)
        shown = ([own] if own in fixed else []) + ([best_other] if best_other else []) + rest
        have = [
            (m, st) for m in shown if (st := _stat(agg, ("mfeat", "mfeat", m), metric)) is not None
        ]
        shown = [m for m, _ in have]
        for y, (m, (mean, std, n)) in enumerate(have):
            highlight = m == own
            ax.barh(
                y,
                mean,
                xerr=std if n > 1 else None,
                color=method_color(m),
                edgecolor="black" if highlight else "none",
                linewidth=1.4 if highlight else 0,
                hatch="///" if highlight else None,
                capsize=2,
                height=0.75,
            )
            ax.text(mean + (std if n > 1 else 0) + 0.8, y, f"{mean:.1f}", va="center", fontsize=7)
            top = max(top, mean + (std if n > 1 else 0))
        ax.set_yticks(range(len(shown)), shown, fontsize=8)
        for lbl in ax.get_yticklabels():
            if lbl.get_text() == own:
                lbl.set_fontweight("bold")
        ax.invert_yaxis()
        ax.set_title(f"pairs without {k}", fontsize=10)
        ax.grid(axis="x", alpha=0.3)
    for ax in list(axes.flat)[len(mods) :]:
        ax.set_visible(False)
    for ax in axes[-1]:
        ax.set_xlabel("R@1 (%)")
    axes[0, 0].set_xlim(0, top * 1.15 + 1)
    fig.suptitle(
        "mfeat: R@1 on the pairs not involving view k\n"
        "hatched: FixedAnchor(k), which never trains these pairs; next: the best other anchor",
        fontsize=11,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


def _lines(
    ax: Any,
    rows: Sequence[dict[str, Any]],
    x_key: str,
    y_key: str,
    methods: list[str],
    linestyle: str = "-",
) -> None:
    for method in methods:
        pts: dict[float, list[float]] = {}
        for r in rows:
            if r["method"] == method and r.get(y_key) is not None:
                pts.setdefault(float(r[x_key]), []).append(float(r[y_key]))
        xs = sorted(pts)
        if not xs:
            continue
        mean = [np.mean(pts[v]) for v in xs]
        std = [np.std(pts[v], ddof=1) if len(pts[v]) > 1 else 0.0 for v in xs]
        ax.errorbar(
            xs,
            mean,
            yerr=std,
            marker=method_marker(method),
            linestyle=linestyle,
            capsize=3,
            label=method,
            color=method_color(method),
        )


def sweep_plot(rows: list[dict[str, Any]], methods: list[str], path: Path) -> None:
    """Synthetic: m1's noise level against R@1 on the pairs without m1 (spread over seeds)."""
    sweep = [r for r in rows if r["suite"] == "synthetic" and r["setting"] == "sweep"]
    fig, ax = plt.subplots(figsize=(6, 4))
    _lines(ax, sweep, "noise_m1", "R@1_excl/m1", methods)
    ax.set_ylabel("R@1 on the pairs without m1 (%)")
    ax.set_xlabel("noise std of modality m1 (the fixed anchor)")
    ax.set_xscale("log")
    levels = sorted({float(r["noise_m1"]) for r in sweep if r.get("noise_m1") is not None})
    if levels:
        ax.set_xticks(levels, [f"{v:g}" for v in levels])
        ax.minorticks_off()
    ax.grid(alpha=0.3)
    ax.legend()
    ax.set_title("synthetic: degrading the anchor modality")
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


def missing_plot(rows: list[dict[str, Any]], methods: list[str], path: Path) -> None:
    """mfeat with training modalities dropped at rate p: R@1 against p."""
    miss = [r for r in rows if r["suite"] == "missing"]
    fig, ax = plt.subplots(figsize=(6, 4))
    _lines(ax, miss, "p", "R@1", methods)
    ax.set_xlabel("training drop rate p per modality (test set complete)")
    ax.set_ylabel("mean cross-modal R@1 (%)")
    ax.grid(alpha=0.3)
    ax.legend()
    ax.set_title("mfeat with missing modalities")
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


def _m_axis(ax: Any, rows: Sequence[dict[str, Any]]) -> None:
    ms = sorted({int(r["M"]) for r in rows if r.get("M") is not None})
    ax.set_xscale("log")
    if ms:
        ax.set_xticks(ms, [str(m) for m in ms])
        ax.minorticks_off()
    ax.set_xlabel("number of modalities M")
    ax.grid(alpha=0.3)


def against_m(
    rows: list[dict[str, Any]],
    methods: list[str],
    path: Path,
    quality: Any,
    joint: Sequence[str] = (),
) -> None:
    """The M-suite's quality against M: left, each method's own score (``quality(method)``: the
    row key, e.g. leave-one-out R@1 for the ``joint`` objectives, drawn dashed); right, R@1 on
    the pairs without m1."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for method in methods:
        mine = [r for r in rows if r["method"] == method]
        dashed = method in joint
        _lines(axes[0], mine, "M", quality(method), [method], "--" if dashed else "-")
        if not dashed:
            _lines(axes[1], mine, "M", "R@1_excl/m1", [method])
    axes[0].set_ylabel("test R@1 (%) (dashed: leave-one-out)")
    axes[1].set_ylabel("R@1 on the pairs without m1 (%)")
    for ax in axes:
        _m_axis(ax, rows)
    axes[0].legend(fontsize=8)
    fig.suptitle("quality against the number of modalities (m1 weak)")
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


def cost_against_m(rows: list[dict[str, Any]], methods: list[str], path: Path) -> None:
    """The M-suite's cost against M, log scales: CPU time per training step and peak memory of
    one step (batch 256)."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    _lines(axes[0], rows, "M", "step_cpu_ms", methods)
    _lines(axes[1], rows, "M", "peak_mib", methods)
    axes[0].set_ylabel("CPU time per training step (ms)")
    axes[1].set_ylabel("peak memory of one step (MiB)")
    for ax in axes:
        _m_axis(ax, rows)
        ax.set_yscale("log")
    axes[0].legend(fontsize=8)
    fig.suptitle("cost against the number of modalities (log scales)")
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
