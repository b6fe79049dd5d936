"""Benchmark figures (matplotlib, Agg backend; PNG files next to report.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

__all__ = ["pair_heatmaps", "excluding_bars", "sweep_plot", "missing_plot"]

Agg = dict[tuple[str, str, str], dict[str, tuple]]


def _mean(agg: Agg, key: tuple[str, str, str], metric: str) -> float:
    stat = agg.get(key, {}).get(metric)
    return float("nan") if stat is None else stat[0]


def pair_heatmaps(agg: Agg, methods: list[str], mods: list[str], path: Path) -> None:
    """Per-pair R@1 (rows: query view, columns: gallery view) for each of ``methods``."""
    fig, axes = plt.subplots(1, len(methods), figsize=(4.6 * len(methods), 4.2))
    axes = np.atleast_1d(axes)
    for ax, method in zip(axes, methods, strict=True):
        mat = np.full((len(mods), len(mods)), np.nan)
        for i, a in enumerate(mods):
            for j, b in enumerate(mods):
                if a != b:
                    mat[i, j] = _mean(agg, ("mfeat", "mfeat", method), f"pair/{a}->{b}")
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
        ax.set_title(f"{method}\nmean R@1 {np.nanmean(mat):.1f}")
    fig.colorbar(im, ax=list(axes), shrink=0.8, label="R@1 (%)")
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


def excluding_bars(agg: Agg, methods: list[str], mods: list[str], path: Path) -> None:
    """Grouped bars: R@1 over the pairs not involving view k, for every method and k."""
    fig, ax = plt.subplots(figsize=(max(8, 1.2 * len(mods) * len(methods) / 4), 4.2))
    width = 0.85 / len(methods)
    x = np.arange(len(mods))
    cmap = plt.get_cmap("tab20")
    for i, method in enumerate(methods):
        means, stds = [], []
        for k in mods:
            stat = agg.get(("mfeat", "mfeat", method), {}).get(f"R@1_excl/{k}")
            means.append(np.nan if stat is None else stat[0])
            stds.append(0 if stat is None else stat[1])
        ax.bar(
            x + (i - (len(methods) - 1) / 2) * width,
            means,
            width,
            yerr=stds,
            label=method,
            color=cmap(i % 20),
            capsize=1.5,
        )
    ax.set_xticks(x, [f"without {k}" for k in mods])
    ax.set_ylabel("mean R@1 over pairs not involving the view (%)")
    ax.set_title("mfeat: retrieval on the pairs a fixed anchor k never trains")
    ax.legend(fontsize=7, ncol=2, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


def _lines(ax, rows: list[dict[str, Any]], x_key: str, y_key: str, methods: list[str]) -> None:
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
        ax.errorbar(xs, mean, yerr=std, marker="o", capsize=3, label=method)


def sweep_plot(rows: list[dict[str, Any]], methods: list[str], path: Path) -> None:
    """Synthetic: m1's noise level against R@1 without m1 and the pair factor's R^2."""
    sweep = [r for r in rows if r["suite"] == "synthetic" and r["setting"] == "sweep"]
    for r in sweep:
        r2 = [r.get("r2/pair/m2"), r.get("r2/pair/m3")]
        r["_pair_r2"] = float(np.mean(r2)) if None not in r2 else None
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    _lines(axes[0], sweep, "noise_m1", "R@1_excl/m1", methods)
    axes[0].set_ylabel("R@1 on pairs without m1 (%)")
    _lines(axes[1], sweep, "noise_m1", "_pair_r2", methods)
    axes[1].set_ylabel("R² of the pair factor (from m2, m3)")
    for ax in axes:
        ax.set_xlabel("noise std of modality m1 (the fixed anchor)")
        ax.set_xscale("log")
        ax.grid(alpha=0.3)
    axes[0].legend()
    for r in sweep:
        r.pop("_pair_r2", None)
    fig.suptitle("synthetic: degrading the anchor modality")
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


def missing_plot(rows: list[dict[str, Any]], methods: list[str], path: Path) -> None:
    """mfeat with training modalities dropped at rate p: R@1 against p."""
    miss = [r for r in rows if r["suite"] == "missing"]
    fig, ax = plt.subplots(figsize=(5.5, 4))
    _lines(ax, miss, "p", "R@1", methods)
    ax.set_xlabel("training drop rate p per modality (test set complete)")
    ax.set_ylabel("mean cross-modal R@1 (%)")
    ax.grid(alpha=0.3)
    ax.legend()
    ax.set_title("mfeat with missing modalities")
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
