"""The ``synthetic`` suite: four modalities with known shared, pair (m2, m3) and private factors,
in a clean and a weak-anchor setting (modality m1 much noisier); with ``--extended`` also the
learnable-scale, intra-modal and learned-weight variants and a sweep of m1's noise level."""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import Any

from .base import (
    Q_ALL_PAIRS,
    Q_FIXED,
    Q_WEAK,
    ReportContext,
    Section,
    Suite,
    SummaryItem,
    answer_vs,
    compare_to,
    present_methods,
    vs_text,
    yes_no,
)
from .jobs import SYNTH_CLEAN_NOISE, SYNTH_WEAK_NOISE, BenchSettings, Job, synthetic_key
from .methods import Method
from .stats import (
    DESIGN_KEYS,
    Stat,
    best_of,
    compare,
    describe_variant,
    fixed_anchors,
    fmt,
    markdown_table,
    scale_column,
    standing,
)
from .suite_mfeat import INTRA_WEIGHTS, PAPER, core_methods, learned_scale_methods

__all__ = ["PAIR_MODALITIES", "SWEEP_NOISE", "SyntheticSuite"]

SWEEP_NOISE = (0.1, 0.5, 1.0, 2.0, 4.0)
#: The modalities that share the "pair" factor.
PAIR_MODALITIES = ("m2", "m3")
SETTINGS = (("clean", SYNTH_CLEAN_NOISE), ("weak-anchor", SYNTH_WEAK_NOISE))


class SyntheticSuite(Suite):
    name = "synthetic"
    title = "synthetic (4 modalities: shared, pair (m2, m3) and private factors)"
    #: Seeds of the noise sweep (``--extended``), at most the run's seeds.
    sweep_seeds = 2

    def epoch_cap(self, s: BenchSettings) -> int:
        return s.synthetic_epochs

    def meta(self, s: BenchSettings) -> dict[str, Any]:
        return {"epochs": s.synthetic_epochs, "samples": s.synthetic_samples}

    def jobs(self, s: BenchSettings) -> Iterator[Job]:
        mods = ["m1", "m2", "m3", "m4"]
        methods = core_methods(mods, ["m1", "m2"], s.full)
        if s.extended:
            methods += learned_scale_methods()
        methods += [
            Method("Untrained", kind="untrained"),
            Method("Raw", kind="raw"),
            Method("GCCA", kind="gcca"),
        ]
        if s.extended:
            methods += [Method(f"CentroBind+intra{w}", intra_weight=w) for w in INTRA_WEIGHTS]
            methods.append(Method("CentroBind[learned-w]", options=(("weights", "learned"),)))
        for seed in range(s.seeds):
            for setting, noise1 in SETTINGS if s.full else SETTINGS[1:]:
                for m in methods:
                    yield Job(
                        "synthetic",
                        setting,
                        m,
                        seed,
                        synthetic_key(noise1, s.synthetic_samples),
                        extra=(("noise_m1", noise1),),
                        probe_tasks=2,
                        epochs=s.synthetic_epochs,
                    )
        if s.extended:
            yield from self._sweep(s)

    def _sweep(self, s: BenchSettings) -> Iterator[Job]:
        sweep = [
            Method("FixedAnchor(m1)", objective="fixed_anchor", anchor="m1"),
            Method("CentroBind"),
            PAPER,
            Method("AllPairs", objective="all_pairs"),
        ]
        levels = SWEEP_NOISE[::2] if s.quick else SWEEP_NOISE
        for seed in range(min(s.seeds, self.sweep_seeds)):
            for noise1 in levels:
                for m in sweep:
                    yield Job(
                        "synthetic",
                        "sweep",
                        m,
                        seed,
                        synthetic_key(noise1, s.synthetic_samples),
                        extra=(("noise_m1", noise1),),
                        probe_tasks=0,
                        loo=False,
                        epochs=s.synthetic_epochs,
                    )

    def derive(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Summary R^2 keys: ``r2/pair`` (mean over the pair modalities' own embeddings),
        ``r2/private`` (mean over m of private_m from m's own embedding) and their gain over the
        ``Untrained`` row of the same setting, seed and design keys (``gain/r2/pair``, ...)."""
        for r in rows:
            if r.get("suite") != self.name:
                continue
            pair = [r.get(f"r2/pair/{m}") for m in PAIR_MODALITIES]
            nums = [v for v in pair if isinstance(v, int | float)]
            if len(nums) == len(pair):
                r["r2/pair"] = sum(nums) / len(nums)
            own = [
                v
                for k, v in r.items()
                if (g := re.fullmatch(r"r2/private_(\d+)/m(\d+)", k))
                and g[1] == g[2]
                and isinstance(v, int | float)
            ]
            if own:
                r["r2/private"] = sum(own) / len(own)

        def cell(r: Mapping[str, Any]) -> tuple:
            return (r["setting"], r["seed"], *(r.get(k) for k in DESIGN_KEYS))

        mine = [r for r in rows if r.get("suite") == self.name]
        untrained = {cell(r): r for r in mine if r["method"] == "Untrained"}
        for r in mine:
            u = untrained.get(cell(r))
            if u is None:
                continue
            for k in ("r2/pair", "r2/private"):
                if k in r and k in u:
                    r[f"gain/{k}"] = r[k] - u[k]
        return rows

    def section(self, ctx: ReportContext) -> Section:
        sec = Section(
            [
                f"## {self.title}",
                "",
                "R² = ridge regression from an embedding to the true factors (test split): shared "
                "from the fused embedding, pair = mean over m2 and m3's own embeddings, private = "
                "mean over m of private_m from m's own embedding. The untrained encoder (a "
                "randomly initialised Binder) is the reference: Δ in brackets = R² minus the "
                "untrained encoder's on the same seed, i.e. what training added (or removed). "
                "Probe = fused linear probe on the factor-derived labels.",
                "",
            ]
        )
        present = ctx.settings(self.name)
        per = {s: ctx.stats(self.name, s) for s, _ in SETTINGS if s in present}
        for setting, stats in per.items():
            sec.lines += _setting_table(setting, stats)
            sec.findings += _setting_findings(setting, stats, ctx.ref)
            sec.summary += _summary(setting, stats, ctx.ref)
        if len(per) == 2:
            sec.summary += _weak_summary(per["clean"], per["weak-anchor"], ctx.ref)
            f = _clean_to_weak_finding(per["clean"], per["weak-anchor"], ctx.ref)
            if f:
                sec.findings.append(f)
        sec.lines += _sweep(ctx, sec.findings)
        return sec


def _summary(setting: str, stats: Mapping[str, Mapping[str, Stat]], ref: str) -> list[SummaryItem]:
    out = []
    best = best_of(stats, fixed_anchors(stats), "R@1")
    c = compare_to(stats, ref, best, "R@1")
    if c is not None:
        word = yes_no(answer_vs(c, ref))
        out.append(SummaryItem(Q_FIXED, f"synthetic {setting}", word, vs_text(c), c.sa[2]))
    c = compare_to(stats, ref, "AllPairs", "R@1")
    if c is not None:
        out.append(
            SummaryItem(Q_ALL_PAIRS, f"synthetic {setting}", answer_vs(c, ref), vs_text(c), c.sa[2])
        )
    c = compare_to(stats, ref, "AllPairs", "R@1_excl/m1")
    if c is not None and setting == "weak-anchor":
        out.append(
            SummaryItem(Q_ALL_PAIRS, "weak, pairs w/o m1", answer_vs(c, ref), vs_text(c), c.sa[2])
        )
    return out


def _weak_summary(
    clean: Mapping[str, Mapping[str, Stat]], weak: Mapping[str, Mapping[str, Stat]], ref: str
) -> list[SummaryItem]:
    """Robust to a weak modality: how much R@1 on the pairs without m1 drops from the clean to
    the weak setting, for ``ref`` against AllPairs (which no modality anchors); "yes" when the
    weak-setting level is not behind AllPairs' by more than one std."""
    key = "R@1_excl/m1"
    c = compare_to(weak, ref, "AllPairs", key)
    if c is None or key not in clean.get(ref, {}) or key not in clean.get("AllPairs", {}):
        return []
    drop = round(weak[ref][key][0] - clean[ref][key][0], 1)
    drop_ap = round(weak["AllPairs"][key][0] - clean["AllPairs"][key][0], 1)
    word = "no" if answer_vs(c, ref).startswith("behind") else "yes"
    nums = f"w/o m1 {vs_text(c)}; clean -> weak {drop:+.1f} (AllPairs {drop_ap:+.1f})"
    paper = compare_to(weak, ref, PAPER.name, key)
    if paper is not None:
        nums += f"; {PAPER.name} {fmt(paper.sb)}"
    return [SummaryItem(Q_WEAK, "synthetic m1 noise 2.0", word, nums, c.sa[2])]


def _r2_cell(st: Mapping[str, Stat], key: str, is_untrained: bool) -> str:
    """``R² (Δ gain over the untrained encoder)``; the untrained row itself has no Δ."""
    gain = st.get(f"gain/{key}")
    delta = f" (Δ {fmt(gain, 2, sign=True)})" if gain is not None and not is_untrained else ""
    return fmt(st.get(key), 2) + delta


def _setting_table(setting: str, stats: Mapping[str, Mapping[str, Stat]]) -> list[str]:
    """One synthetic setting's table: retrieval, R² (with gains) and probes per method."""
    scale = scale_column(stats)
    table = [
        [
            m,
            fmt(st.get("R@1")),
            fmt(st.get("R@1_excl/m1")),
            fmt(st.get("r2/shared/fused"), 2),
            _r2_cell(st, "r2/pair", m == "Untrained"),
            _r2_cell(st, "r2/private", m == "Untrained"),
            fmt(st.get("probe/shared/fused")),
            fmt(st.get("probe/pair/fused")),
        ]
        + ([fmt(st.get("logit_scale"))] if scale else [])
        + [fmt(st.get("seconds"))]
        for m, st in stats.items()
    ]
    noise = "0.1 on every modality" if setting == "clean" else "m1 noise 2.0, others 0.1"
    header = [
        "method",
        "R@1",
        "R@1 without m1",
        "R² shared",
        "R² pair (Δ vs untrained)",
        "R² private (Δ vs untrained)",
        "probe shared",
        "probe pair",
    ]
    header += (["logit scale"] if scale else []) + ["train s"]
    return [f"### {setting} ({noise})", "", markdown_table(header, table), ""]


def _setting_findings(setting: str, stats: Mapping[str, Mapping[str, Stat]], ref: str) -> list[str]:
    """One synthetic setting's findings: standings, AllPairs vs ``ref`` on the private factors,
    ``ref+intra`` variants, and learned vs uniform centroid weights."""
    findings = []
    trained = {m: st for m, st in stats.items() if m not in ("Untrained", "Raw")}
    for metric, label, digits in (
        ("R@1", "mean R@1", 1),
        ("R@1_excl/m1", "R@1 on the pairs without m1", 1),
        ("gain/r2/pair", "pair-factor R² gain over the untrained encoder", 2),
    ):
        f = standing(
            trained, metric, f"synthetic {setting}, {label}", ref, digits, sign=digits == 2
        )
        if f:
            findings.append(f)
    gain = "gain/r2/private"
    if "AllPairs" in stats and gain in stats["AllPairs"] and gain in stats.get(ref, {}):
        c = compare("AllPairs", stats["AllPairs"][gain], ref, stats[ref][gain], 2)
        findings.append(
            f"synthetic {setting}, private-factor R² gain over the untrained encoder: "
            f"{c.sentence(sign=True)}."
        )
    for m, st in stats.items():
        if not re.fullmatch(re.escape(ref) + r"\+intra[0-9.]+", m) or ref not in stats:
            continue
        cb = stats[ref]
        if gain in st and gain in cb:
            findings.append(
                f"synthetic {setting}, {m} ({describe_variant(m, ref)}): private R² gain "
                f"{fmt(st[gain], 2, sign=True)} vs {fmt(cb[gain], 2, sign=True)}, mean R@1 "
                f"{compare(m, st['R@1'], ref, cb['R@1']).verdict()}."
            )
    lw = stats.get(f"{ref}[learned-w]")
    if lw and ref in stats and "R@1_excl/m1" in lw and "R@1_excl/m1" in stats[ref]:
        w = ", ".join(f"{k[2:]} {v[0]:.2f}" for k, v in lw.items() if k.startswith("w/"))
        c = compare(f"{ref}[learned-w]", lw["R@1_excl/m1"], ref, stats[ref]["R@1_excl/m1"])
        findings.append(
            f"synthetic {setting}, learned centroid weights ({w}), R@1 without m1: {c.sentence()}."
        )
    return findings


def _clean_to_weak_finding(
    clean: Mapping[str, Mapping[str, Stat]], weak: Mapping[str, Mapping[str, Stat]], ref: str
) -> str | None:
    """How mean R@1 moves from the clean to the weak-anchor setting (``ref``, AllPairs, and the
    fixed anchors), or None when no method has both."""
    moves = [
        f"{m} {round(weak[m]['R@1'][0] - clean[m]['R@1'][0], 1):+.1f}"
        for m in clean
        if m in weak
        and "R@1" in clean[m]
        and "R@1" in weak[m]
        and (m == ref or m == "AllPairs" or m.startswith("FixedAnchor("))
    ]
    if not moves:
        return None
    return "synthetic, clean -> weak anchor, change in mean R@1: " + "; ".join(moves) + "."


def _sweep(ctx: ReportContext, findings: list[str]) -> list[str]:
    """The sweep over m1's noise level: table, figure (written to ``out``) and standings."""
    sweep = [s for s in ctx.settings("synthetic") if s.split(" ")[0] == "sweep"]
    if not sweep:
        return []
    levels = sorted(sweep, key=lambda s: float(s.split("=")[-1]) if "=" in s else 0.0)
    methods = present_methods(ctx.agg, "synthetic", levels)
    table = [
        [m] + [fmt(ctx.agg.get(("synthetic", s, m), {}).get("R@1_excl/m1")) for s in levels]
        for m in methods
    ]
    ctx.plots.sweep_plot(ctx.rows, methods, ctx.out / "synthetic_sweep.png")
    n = max(v[2] for s in levels for st in ctx.stats("synthetic", s).values() for v in st.values())
    spread = "the spread is over seeds at each level" if n > 1 else "one seed: no spread"
    lines = [
        "### Sweep of m1's noise level",
        "",
        f"R@1 on the pairs without m1 (the pairs FixedAnchor(m1) never trains) as m1 gets "
        f"noisier; {spread}.",
        "",
        markdown_table(["method"] + [f"m1 noise {s.split('=')[-1]}" for s in levels], table),
        "",
        "![sweep](synthetic_sweep.png)",
        "",
    ]
    for s in levels:
        f = standing(
            ctx.stats("synthetic", s),
            "R@1_excl/m1",
            f"synthetic sweep, m1 noise {s.split('=')[-1]}, R@1 on the pairs without m1",
            ctx.ref,
        )
        if f:
            findings.append(f)
    return lines
