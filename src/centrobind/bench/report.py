"""Aggregate benchmark rows (mean +- std over seeds) and write results.json, results.csv and
report.md.

Metric keys in a row (all test-split figures; retrieval in percent, R^2 in [.., 1]):
``R@1``/``R@5`` mean cross-modal over all ordered pairs; ``R@1_excl/<k>`` over the pairs involving
neither modality k; ``pair/<a>-><b>`` R@1 of one pair; ``loo_R@1`` and ``loo/<b>`` leave-one-out
retrieval (query = the other modalities fused; Symile: their elementwise product, scored by MIP);
``probe/<task>/<view>`` linear-probe accuracy (view = a modality or ``fused``);
``r2/<group>/<view>``
latent recovery; ``seconds`` training (or fitting) wall time; ``epochs`` epochs run.
"""

from __future__ import annotations

import csv
import json
import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from ..checkpoint import atomic_write_text
from .suites import INTRA_WEIGHTS

__all__ = ["aggregate", "fmt", "markdown_table", "render_report", "write_results"]

_ID = ("suite", "setting", "method", "seed")


def aggregate(rows: Iterable[dict[str, Any]]) -> dict[tuple[str, str, str], dict[str, tuple]]:
    """``(suite, setting, method) -> {metric: (mean, std, n)}`` (std over seeds, ddof=1)."""
    groups: dict[tuple[str, str, str], dict[str, list[float]]] = defaultdict(
        lambda: defaultdict(list)
    )
    for r in rows:
        key = (r["suite"], r["setting"], r["method"])
        for k, v in r.items():
            if k not in _ID and isinstance(v, int | float) and v is not None:
                groups[key][k].append(float(v))
    out: dict[tuple[str, str, str], dict[str, tuple]] = {}
    for key, metrics in groups.items():
        out[key] = {}
        for k, vals in metrics.items():
            n = len(vals)
            mean = sum(vals) / n
            std = math.sqrt(sum((v - mean) ** 2 for v in vals) / (n - 1)) if n > 1 else 0.0
            out[key][k] = (mean, std, n)
    return out


def fmt(stat: tuple | None, digits: int = 1) -> str:
    """``mean ± std`` (or ``–`` when missing)."""
    if stat is None:
        return "–"
    mean, std, n = stat
    return f"{mean:.{digits}f} ± {std:.{digits}f}" if n > 1 else f"{mean:.{digits}f}"


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def write_results(rows: list[dict[str, Any]], out: Path, meta: dict[str, Any]) -> None:
    """``results.json`` (every number, every seed, plus run metadata) and ``results.csv``."""
    atomic_write_text(out / "results.json", json.dumps({"meta": meta, "rows": rows}, indent=1))
    keys: list[str] = list(_ID)
    for r in rows:
        keys += [k for k in r if k not in keys]
    tmp = out / ".results.csv.tmp"
    with tmp.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        for r in rows:
            w.writerow(r)
    tmp.replace(out / "results.csv")


def _methods(agg, suite: str, setting: str) -> list[str]:
    seen: list[str] = []
    for s, st, m in agg:
        if s == suite and st == setting and m not in seen:
            seen.append(m)
    return seen


def _pair_r2(stats: dict[str, tuple], pair=("m2", "m3")) -> tuple | None:
    a, b = (stats.get(f"r2/pair/{p}") for p in pair)
    if a is None or b is None:
        return None
    return ((a[0] + b[0]) / 2, (a[1] + b[1]) / 2, a[2])


def _private_r2(stats: dict[str, tuple], mods: Sequence[str]) -> tuple | None:
    vals = [stats.get(f"r2/private_{i + 1}/{m}") for i, m in enumerate(mods)]
    if any(v is None for v in vals):
        return None
    return (sum(v[0] for v in vals) / len(vals), sum(v[1] for v in vals) / len(vals), vals[0][2])


def _best_fixed(agg, suite: str, setting: str, metric: str = "R@1") -> str | None:
    fixed = [
        m for m in _methods(agg, suite, setting) if m.startswith("FixedAnchor(") and "[" not in m
    ]
    if not fixed:
        return None
    return max(fixed, key=lambda m: agg[(suite, setting, m)].get(metric, (-1,))[0])


def render_report(rows: list[dict[str, Any]], meta: dict[str, Any], out: Path) -> str:
    """Write figures into ``out`` and return the markdown of ``report.md``."""
    from . import plots

    agg = aggregate(rows)
    parts = [
        "# centrobind benchmark",
        "",
        f"Command: `{meta['command']}`  ",
        f"Seeds: {meta['seeds']} (seed s = split s and initialisation s); budget per method: "
        f"{meta['epochs']} epochs max (synthetic: {meta.get('synthetic_epochs')}), early stopping "
        f"patience {meta['patience']} on validation mean R@1 (Symile, GRAM: their own "
        f"leave-one-out R@1), batch {meta['batch_size']}, embedding D = {meta['embed_dim']}, "
        f"fixed logit scale 10 (Symile: 10 D^(M/2-1)), AdamW lr "
        f"{meta['lr']}, warm-up + cosine. Splits 70/10/20 (train/val/test), stratified. "
        f"Machine: {meta['machine']}. Wall time: {meta['wall_seconds']:.0f} s.",
        "",
        "All figures are on the held-out test split, mean ± std over seeds. Retrieval in %, "
        "chance R@1 = 100/N_test. Pairwise retrieval ranks by cosine, except GRAM (its own "
        "area score, i.e. cos²); Symile is trained for its multilinear score over ALL modalities, "
        "so its pairwise-cosine figures are near chance by construction and its own retrieval "
        "is the leave-one-out column (query = elementwise product of the other modalities, "
        "scored by MIP); GRAM's leave-one-out ranks by the volume of the query's modalities plus "
        "the candidate.",
        "",
        "<!-- findings -->",
    ]
    findings: list[str] = []
    if any(k[0] == "mfeat" for k in agg):
        parts += _mfeat_section(agg, out, plots, findings)
    if any(k[0] == "synthetic" for k in agg):
        parts += _synthetic_section(agg, rows, out, plots, findings)
    if any(k[0] == "missing" for k in agg):
        parts += _missing_section(agg, rows, out, plots, findings)
    at = parts.index("<!-- findings -->")
    parts[at : at + 1] = ["## Findings", "", *[f"- {f}" for f in findings], ""]
    return "\n".join(parts) + "\n"


MFEAT_VIEWS = ["fac", "fou", "kar", "mor", "pix", "zer"]


def _mfeat_section(agg, out: Path, plots, findings: list[str]) -> list[str]:
    mods = MFEAT_VIEWS
    methods = _methods(agg, "mfeat", "mfeat")
    rows = []
    for m in methods:
        st = agg[("mfeat", "mfeat", m)]
        rows.append(
            [
                m,
                fmt(st.get("R@1")),
                fmt(st.get("R@5")),
                fmt(st.get("loo_R@1")),
                fmt(st.get("probe/digit/fused")),
                fmt(st.get("seconds")),
            ]
        )
    lines = [
        "## mfeat (UCI Multiple Features: 6 views of 2,000 digits)",
        "",
        markdown_table(
            [
                "method",
                "R@1 (30 pairs)",
                "R@5",
                "leave-one-out R@1",
                "fused linear probe",
                "train s",
            ],
            rows,
        ),
        "",
    ]
    best = _best_fixed(agg, "mfeat", "mfeat")
    cb = agg.get(("mfeat", "mfeat", "CentroBind"))
    if best and cb:
        bf = agg[("mfeat", "mfeat", best)]
        d = cb["R@1"][0] - bf["R@1"][0]
        verdict = (
            "beats"
            if d > 2 * max(cb["R@1"][1], bf["R@1"][1], 0.3)
            else ("ties with" if abs(d) <= 2 * max(cb["R@1"][1], bf["R@1"][1], 0.3) else "loses to")
        )
        findings.append(
            f"mfeat: CentroBind {verdict} the best fixed anchor {best} on mean R@1 over all 30 "
            f"pairs ({fmt(cb['R@1'])} vs {fmt(bf['R@1'])}); fused linear probe "
            f"{fmt(cb.get('probe/digit/fused'))} vs {fmt(bf.get('probe/digit/fused'))}."
        )
        weak = [k for k in mods if f"R@1_excl/{k}" in cb]
        for k in ("fou", "mor"):
            fk = agg.get(("mfeat", "mfeat", f"FixedAnchor({k})"))
            if fk and k in weak:
                findings.append(
                    f"mfeat, anchor {k}: on the pairs without {k}, FixedAnchor({k}) reaches "
                    f"{fmt(fk[f'R@1_excl/{k}'])} R@1, CentroBind {fmt(cb[f'R@1_excl/{k}'])}."
                )
    header = ["method"] + [f"without {k}" for k in mods]
    rows = [
        [m] + [fmt(agg[("mfeat", "mfeat", m)].get(f"R@1_excl/{k}")) for k in mods]
        for m in methods
        if "R@1" in agg[("mfeat", "mfeat", m)]
    ]
    lines += [
        "### R@1 over the pairs not involving view k",
        "",
        "The pairs a fixed anchor k never trains directly.",
        "",
        markdown_table(header, rows),
        "",
        "![R@1 excluding view k](excluding_view.png)",
        "",
    ]
    plots.excluding_bars(
        agg,
        [m for m in methods if "R@1" in agg[("mfeat", "mfeat", m)]],
        mods,
        out / "excluding_view.png",
    )
    ap = agg.get(("mfeat", "mfeat", "AllPairs"))
    if cb and ap:
        d = ap["R@1"][0] - cb["R@1"][0]
        findings.append(
            f"mfeat: AllPairs (15 pairwise terms) vs CentroBind (6 terms): {fmt(ap['R@1'])} vs "
            f"{fmt(cb['R@1'])} mean R@1 ({'AllPairs' if d > 0 else 'CentroBind'} ahead by "
            f"{abs(d):.1f}); CentroBind's advantage is over fixed anchors, not over the full graph."
        )
    if best and cb:
        heat = ["CentroBind", best] + (["AllPairs"] if ap else [])
        plots.pair_heatmaps(agg, heat, mods, out / "pair_heatmaps.png")
        lines += [
            f"### Per-pair R@1: CentroBind vs the best fixed anchor ({best}) and AllPairs",
            "",
            "![per-pair R@1](pair_heatmaps.png)",
            "",
        ]
    rows = [
        [m] + [fmt(agg[("mfeat", "mfeat", m)].get(f"probe/digit/{k}")) for k in mods + ["fused"]]
        for m in methods
    ]
    lines += [
        "### Linear-probe accuracy (digit, %) per view and fused",
        "",
        "Raw = standardised input features (fused = all views concatenated).",
        "",
        markdown_table(["method"] + mods + ["fused"], rows),
        "",
    ]
    abl = _methods(agg, "mfeat", "ablation")
    if abl:
        rows = []
        for m in abl:
            st = agg[("mfeat", "ablation", m)]
            rows.append(
                [
                    m,
                    fmt(st.get("R@1")),
                    fmt(st.get("loo_R@1")),
                    fmt(st.get("probe/digit/fused")),
                    fmt(st.get("seconds")),
                ]
            )
        lines += [
            "### Ablations",
            "",
            "CentroBind anchor variants (detach = no gradient through the centroid; norm = "
            "L2-normalised centroid), learned modality weights (softmax, gradient through the "
            "anchor), the optional intra-modal term (weight λ), and the fixed anchor without "
            "its unimodal pre-training (a random frozen encoder).",
            "",
            markdown_table(["variant", "R@1", "leave-one-out R@1", "fused probe", "train s"], rows),
            "",
        ]
        ref = agg.get(("mfeat", "ablation", "CentroBind"))
        if ref:
            best_abl = max(abl, key=lambda m: agg[("mfeat", "ablation", m)]["R@1"][0])
            ba = agg[("mfeat", "ablation", best_abl)]
            findings.append(
                f"mfeat ablations (same {ref['R@1'][2]} seeds): best variant {best_abl} at "
                f"{fmt(ba['R@1'])} R@1 vs the default CentroBind {fmt(ref['R@1'])}."
            )
    return lines


def _synthetic_section(agg, rows_all, out: Path, plots, findings: list[str]) -> list[str]:
    mods = ["m1", "m2", "m3", "m4"]
    lines = [
        "## synthetic (4 modalities: shared, pair (m2, m3) and private factors)",
        "",
        "R² = ridge regression from an embedding to the true factors (test split): shared "
        "from the fused embedding, pair = mean over m2 and m3's own embeddings, private = mean "
        "over m of private_m from m's own embedding. Probe = fused linear probe on the "
        "factor-derived labels.",
        "",
    ]
    for setting in ("clean", "weak-anchor"):
        methods = _methods(agg, "synthetic", setting)
        if not methods:
            continue
        table = []
        for m in methods:
            st = agg[("synthetic", setting, m)]
            table.append(
                [
                    m,
                    fmt(st.get("R@1")),
                    fmt(st.get("R@1_excl/m1")),
                    fmt(st.get("r2/shared/fused"), 2),
                    fmt(_pair_r2(st), 2),
                    fmt(_private_r2(st, mods), 2),
                    fmt(st.get("probe/shared/fused")),
                    fmt(st.get("probe/pair/fused")),
                    fmt(st.get("seconds")),
                ]
            )
        noise = "0.1 on every modality" if setting == "clean" else "m1 noise 2.0, others 0.1"
        lines += [
            f"### {setting} ({noise})",
            "",
            markdown_table(
                [
                    "method",
                    "R@1",
                    "R@1 without m1",
                    "R² shared",
                    "R² pair",
                    "R² private",
                    "probe shared",
                    "probe pair",
                    "train s",
                ],
                table,
            ),
            "",
        ]
    weak, clean = ("synthetic", "weak-anchor"), ("synthetic", "clean")
    cbw, faw = agg.get((*weak, "CentroBind")), agg.get((*weak, "FixedAnchor(m1)"))
    cbc, fac = agg.get((*clean, "CentroBind")), agg.get((*clean, "FixedAnchor(m1)"))
    if cbw and faw:
        findings.append(
            f"synthetic, weak anchor m1: R² of the pair factor FixedAnchor(m1) "
            f"{fmt(_pair_r2(faw), 2)} vs CentroBind {fmt(_pair_r2(cbw), 2)}; R@1 on pairs "
            f"without m1 {fmt(faw.get('R@1_excl/m1'))} vs {fmt(cbw.get('R@1_excl/m1'))}."
        )
    if cbw and faw and cbc and fac:
        findings.append(
            f"synthetic, clean -> weak anchor: CentroBind mean R@1 {fmt(cbc['R@1'])} -> "
            f"{fmt(cbw['R@1'])}, FixedAnchor(m1) {fmt(fac['R@1'])} -> {fmt(faw['R@1'])}."
        )
    lw = agg.get((*weak, "CentroBind[learned-w]"))
    if cbw and lw:
        w = ", ".join(f"{m} {lw[f'w/{m}'][0]:.2f}" for m in mods if f"w/{m}" in lw)
        findings.append(
            f"synthetic, weak anchor: learned centroid weights ({w}) give R@1 without m1 "
            f"{fmt(lw.get('R@1_excl/m1'))} vs uniform {fmt(cbw.get('R@1_excl/m1'))}."
        )
    for setting in ("clean", "weak-anchor"):
        ap_s, cb_s = (agg.get(("synthetic", setting, m)) for m in ("AllPairs", "CentroBind"))
        if ap_s and cb_s:
            lead = "AllPairs" if ap_s["R@1"][0] > cb_s["R@1"][0] else "CentroBind"
            findings.append(
                f"synthetic {setting}: AllPairs vs CentroBind mean R@1 {fmt(ap_s['R@1'])} vs "
                f"{fmt(cb_s['R@1'])} ({lead} ahead); private-factor R² "
                f"{fmt(_private_r2(ap_s, mods), 2)} vs {fmt(_private_r2(cb_s, mods), 2)}."
            )
    for setting in ("clean", "weak-anchor"):
        key = ("synthetic", setting)
        cb_s, un = agg.get((*key, "CentroBind")), agg.get((*key, "Untrained"))
        if not (cb_s and un):
            continue
        parts = [
            f"CentroBind {fmt(_private_r2(cb_s, mods), 2)}",
            f"an untrained encoder {fmt(_private_r2(un, mods), 2)}",
        ]
        for w in INTRA_WEIGHTS:
            st = agg.get((*key, f"CentroBind+intra{w}"))
            if st:
                parts.append(
                    f"CentroBind+intra{w} {fmt(_private_r2(st, mods), 2)} (pair R² "
                    f"{fmt(_pair_r2(st), 2)}, mean R@1 {fmt(st['R@1'])} vs "
                    f"{fmt(cb_s['R@1'])} without the term)"
                )
        findings.append(
            f"synthetic {setting}, intra-modal information (private-factor R²): "
            + "; ".join(parts)
            + "."
        )
    sweep_methods = _methods(agg, "synthetic", "sweep")
    if sweep_methods:
        plots.sweep_plot(rows_all, sweep_methods, out / "synthetic_sweep.png")
        lines += ["### Sweep of m1's noise level", "", "![sweep](synthetic_sweep.png)", ""]
    return lines


def _missing_section(agg, rows_all, out: Path, plots, findings: list[str]) -> list[str]:
    settings = sorted({k[1] for k in agg if k[0] == "missing"}, key=lambda s: float(s[2:]))
    methods = _methods(agg, "missing", settings[0])
    table = [
        [m] + [fmt(agg.get(("missing", s, m), {}).get("R@1")) for s in settings] for m in methods
    ]
    plots.missing_plot(rows_all, methods, out / "missing.png")
    last = settings[-1]
    cb, fa = (agg.get(("missing", last, m)) for m in ("CentroBind", "FixedAnchor(pix)"))
    if cb and fa:
        findings.append(
            f"missing modalities ({last}): CentroBind {fmt(cb['R@1'])} R@1 vs "
            f"FixedAnchor(pix) {fmt(fa['R@1'])}."
        )
    return [
        "## missing modalities (mfeat, training rows dropped per modality at rate p)",
        "",
        "Test set complete. CentroBind and AllPairs use the masks; FixedAnchor's terms can only "
        "use samples that have the anchor.",
        "",
        markdown_table(["method"] + [f"R@1 {s}" for s in settings], table),
        "",
        "![missing](missing.png)",
        "",
    ]
