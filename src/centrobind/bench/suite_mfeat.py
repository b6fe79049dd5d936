"""The ``mfeat`` suite: the six UCI Multiple Features views, every method; with ``--extended``
also the learnable-scale variants and the ablations (anchor variants, learned weights,
intra-modal term, learning rate, the fixed anchor without pre-training)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from ..data.builtin import MFEAT_VIEWS
from .base import (
    Q_ALL_PAIRS,
    Q_FIXED,
    ReportContext,
    Section,
    Suite,
    SummaryItem,
    answer_vs,
    compare_to,
    vs_text,
    yes_no,
)
from .jobs import MFEAT, BenchSettings, Job, dataset
from .methods import Method
from .stats import (
    Stat,
    aggregate,
    best_of,
    compare,
    describe_variant,
    fixed_anchors,
    fmt,
    markdown_table,
    scale_column,
    seeds_text,
    standing,
)

__all__ = ["INTRA_WEIGHTS", "LOO_DEFINITION", "MfeatSuite", "core_methods", "learned_scale_methods"]

INTRA_WEIGHTS = (0.3, 1.0)
PAPER = Method("CentroBind[paper]", options=(("centroid", "full"),))
LOO = Method("CentroBind[loo]", options=(("centroid", "leave_one_out"),))
#: GRAM's own training recipe (see :class:`centrobind.objectives.Gram`).
GRAM_OFFICIAL = (("label_smoothing", 0.1), ("temperature", 0.07), ("no_grad_gather", True))

LOO_DEFINITION = (
    "Leave-one-out R@1: for each modality b, the query of a test row is the L2-normalised mean of "
    "the row's other modalities' embeddings and the gallery is modality b's embeddings of all "
    "test rows; R@1 is the % of queries whose own row ranks first, averaged over b (Symile: the "
    "elementwise product of the other modalities, scored by inner product; GRAM: the volume "
    "spanned by the other modalities plus the candidate)."
)


def core_methods(
    modalities: Sequence[str], anchors: Sequence[str], full: bool = True
) -> list[Method]:
    """Fixed anchor on each of ``anchors``, CentroBind (the default, self_weight 0.25), AllPairs,
    Symile and GRAM anchored on the first modality at the benchmark's scale: the main job's
    methods. ``full`` adds the paper's full centroid, the leave-one-out centroid and GRAM with its
    authors' recipe (``[official]``)."""
    methods = [Method(f"FixedAnchor({a})", objective="fixed_anchor", anchor=a) for a in anchors]
    first = modalities[0]
    methods.append(Method("CentroBind", objective="centrobind"))
    if full:
        methods += [PAPER, LOO]
    methods += [
        Method("AllPairs", objective="all_pairs"),
        Method("Symile", objective="symile"),
        Method(f"Gram({first})", objective="gram", anchor=first),
    ]
    if full:
        methods.append(
            Method(
                f"Gram({first})[official]",
                objective="gram",
                anchor=first,
                options=GRAM_OFFICIAL,
                own_scale=True,
            )
        )
    return methods


def learned_scale_methods() -> list[Method]:
    """CentroBind and AllPairs with a learnable scale from their chosen one (clamp at 2x)."""
    return [
        Method("CentroBind[learned-scale]", learn_scale=True, scale_from="CentroBind"),
        Method(
            "AllPairs[learned-scale]",
            objective="all_pairs",
            learn_scale=True,
            scale_from="AllPairs",
        ),
    ]


def _ablations() -> list[Method]:
    abl = [
        Method("CentroBind"),  # the reference, on the same seeds (a copy of the mfeat run)
        Method("CentroBind[grad,unnorm]", options=(("detach_anchor", False),)),
        Method("CentroBind[detach,norm]", options=(("normalize_anchor", True),)),
        Method(
            "CentroBind[grad,norm]", options=(("detach_anchor", False), ("normalize_anchor", True))
        ),
        Method("CentroBind[learned-w]", options=(("weights", "learned"),)),
        Method("CentroBind[lr3e-3]", overrides=(("lr", 3e-3),)),
        Method("AllPairs[lr3e-3]", objective="all_pairs", overrides=(("lr", 3e-3),)),
        Method(
            "FixedAnchor(pix)[no-pretrain]",
            objective="fixed_anchor",
            anchor="pix",
            overrides=(("anchor_init", "none"),),
        ),
    ]
    return abl + [Method(f"CentroBind+intra{w}", intra_weight=w) for w in INTRA_WEIGHTS]


def _views(stats: Mapping[str, Mapping[str, Stat]]) -> list[str]:
    """The views, read from the rows' ``R@1_excl/<view>`` keys (in order of appearance)."""
    views: list[str] = []
    for st in stats.values():
        views += [k.split("/", 1)[1] for k in st if k.startswith("R@1_excl/")]
    return list(dict.fromkeys(views))


class MfeatSuite(Suite):
    name = "mfeat"
    title = "mfeat (UCI Multiple Features: 6 views of 2,000 digits)"
    colour_order = tuple(f"FixedAnchor({v})" for v in MFEAT_VIEWS)
    #: Seeds of the ablations (``--extended``), at most the run's seeds.
    ablation_seeds = 3

    def jobs(self, s: BenchSettings) -> Iterator[Job]:
        mods = dataset(MFEAT).modalities
        methods = core_methods(mods, mods, s.full)
        if s.extended:
            methods += learned_scale_methods()
        methods += [Method("GCCA", kind="gcca"), Method("Raw", kind="raw")]
        for seed in range(s.seeds):
            for m in methods:
                yield Job("mfeat", "mfeat", m, seed, MFEAT, per_view_probes=True)
        if not s.extended:
            return
        ablations = _ablations()[:2] if s.quick else _ablations()
        for seed in range(min(s.seeds, self.ablation_seeds)):
            for m in ablations:
                yield Job("mfeat", "ablation", m, seed, MFEAT)

    def section(self, ctx: ReportContext) -> Section:
        stats = ctx.stats("mfeat", "mfeat")
        probe_key = next(
            (
                k
                for st in stats.values()
                for k in st
                if k.startswith("probe/") and k.endswith("/fused")
            ),
            "probe/digit/fused",
        )
        views = _views(stats)
        best = best_of(stats, fixed_anchors(stats), "R@1")
        sec = Section(_main_table(stats, probe_key, views, self.title))
        sec.findings += _findings(stats, probe_key, views, best, ctx.ref)
        sec.lines += _view_figures(ctx, stats, views, best)
        sec.lines += _probe_table(stats, probe_key.split("/")[1], views)
        abl = ctx.stats("mfeat", "ablation")
        if abl:
            sec.lines += _ablation_table(abl, probe_key, ctx.ref)
            sec.findings += _ablation_findings(abl, stats, ctx.rows, ctx.ref)
        sec.summary += _summary(stats, best, ctx.ref)
        return sec


def _summary(
    stats: Mapping[str, Mapping[str, Stat]], best: str | None, ref: str
) -> list[SummaryItem]:
    out = []
    for q, other in ((Q_FIXED, best), (Q_ALL_PAIRS, "AllPairs")):
        c = compare_to(stats, ref, other, "R@1")
        if c is not None:
            a = answer_vs(c, ref)
            word = yes_no(a) if q == Q_FIXED else a
            out.append(SummaryItem(q, "mfeat", word, vs_text(c), c.sa[2]))
    return out


def _main_table(
    stats: Mapping[str, Mapping[str, Stat]], probe_key: str, views: Sequence[str], title: str
) -> list[str]:
    """The mfeat headline table: R@1, R@5, leave-one-out R@1 and the fused probe per method."""
    scale = scale_column(stats)
    table = [
        [m, fmt(st.get("R@1")), fmt(st.get("R@5")), fmt(st.get("loo_R@1")), fmt(st.get(probe_key))]
        + ([fmt(st.get("logit_scale"))] if scale else [])
        + [fmt(st.get("seconds"))]
        for m, st in stats.items()
    ]
    n_pairs = len(views) * (len(views) - 1)
    return [
        f"## {title}",
        "",
        markdown_table(
            ["method", f"R@1 ({n_pairs} pairs)", "R@5", "leave-one-out R@1", "fused linear probe"]
            + (["logit scale"] if scale else [])
            + ["train s"],
            table,
        ),
        "",
        LOO_DEFINITION,
        "",
    ]


def _findings(
    stats: Mapping[str, Mapping[str, Stat]],
    probe_key: str,
    views: Sequence[str],
    best: str | None,
    ref: str,
) -> list[str]:
    """One line each: ``ref``'s standing on R@1, leave-one-out R@1 and the fused probe, ``ref``
    vs the best fixed anchor and vs AllPairs, and the pairs each fixed anchor never trains."""
    findings = []
    task = probe_key.split("/")[1]
    n_pairs = len(views) * (len(views) - 1)
    for metric, label in (
        ("R@1", f"mfeat, mean R@1 over the {n_pairs} ordered pairs"),
        ("loo_R@1", "mfeat, leave-one-out R@1"),
        (probe_key, f"mfeat, fused linear probe ({task}, % accuracy)"),
    ):
        f = standing(stats, metric, label, ref)
        if f:
            findings.append(f)
    c = compare_to(stats, ref, best, "R@1")
    if c is not None:
        findings.append(f"mfeat, {ref} vs the best fixed anchor ({best}): {c.sentence()}.")
    if "AllPairs" in stats and ref in stats and "R@1" in stats[ref]:
        m = len(views)
        findings.append(
            f"mfeat, AllPairs ({m * (m - 1) // 2} pairwise terms) vs {ref} ({m} terms): "
            + compare("AllPairs", stats["AllPairs"]["R@1"], ref, stats[ref]["R@1"]).sentence()
            + "."
        )
    f = _excluded_view_finding(stats, ref)
    if f:
        findings.append(f)
    return findings


def _excluded_view_finding(stats: Mapping[str, Mapping[str, Stat]], ref: str) -> str | None:
    """``ref`` against FixedAnchor(k) on the pairs not involving view k, for every such k: how
    often it is ahead, and the closest case."""
    items = []
    for fa in fixed_anchors(stats):
        k = fa[len("FixedAnchor(") : -1]
        c = compare_to(stats, ref, fa, f"R@1_excl/{k}")
        if c is not None:
            items.append((k, c))
    if not items:
        return None
    ahead = [c for _, c in items if c.winner == ref]
    k, closest = min(items, key=lambda kc: kc[1].gap)
    return (
        f"mfeat, the pairs not involving view k (which FixedAnchor(k) never trains): {ref} "
        f"ahead for {len(ahead)} of {len(items)} views; closest, without {k}: "
        f"{fmt(closest.sa)} vs {fmt(closest.sb)}, {closest.verdict()}."
    )


def _view_figures(
    ctx: ReportContext,
    stats: Mapping[str, Mapping[str, Stat]],
    views: list[str],
    best: str | None,
) -> list[str]:
    """The R@1-without-view-k table and figure, and the per-pair heatmaps (written to ``out``)."""
    excl = [m for m in stats if "R@1" in stats[m]]
    header = ["method"] + [f"without {k}" for k in views]
    rows = [[m] + [fmt(stats[m].get(f"R@1_excl/{k}")) for k in views] for m in excl]
    lines = [
        "### R@1 over the pairs not involving view k",
        "",
        "The pairs a fixed anchor k never trains directly. In the figure, each panel is one view "
        "k; FixedAnchor(k) is the hatched bar with a black edge.",
        "",
        markdown_table(header, rows),
        "",
        "![R@1 excluding view k](excluding_view.png)",
        "",
    ]
    ctx.plots.excluding_bars(ctx.agg, excl, views, ctx.out / "excluding_view.png")
    if best and ctx.ref in stats:
        heat = [ctx.ref, best] + (["AllPairs"] if "AllPairs" in stats else [])
        ctx.plots.pair_heatmaps(ctx.agg, heat, views, ctx.out / "pair_heatmaps.png")
        lines += [
            f"### Per-pair R@1: {', '.join(heat[:-1])} and {heat[-1]}",
            "",
            f"{best} is the best fixed anchor on mean R@1.",
            "",
            "![per-pair R@1](pair_heatmaps.png)",
            "",
        ]
    return lines


def _probe_table(stats: Mapping[str, Mapping[str, Stat]], task: str, views: list[str]) -> list[str]:
    """Linear-probe accuracy per view and fused."""
    rows = [
        [m] + [fmt(stats[m].get(f"probe/{task}/{k}")) for k in views + ["fused"]] for m in stats
    ]
    return [
        f"### Linear-probe accuracy ({task}, %) per view and fused",
        "",
        "Raw = standardised input features (fused = all views concatenated).",
        "",
        markdown_table(["method"] + views + ["fused"], rows),
        "",
    ]


def _ablation_table(abl: Mapping[str, Mapping[str, Stat]], probe_key: str, ref: str) -> list[str]:
    """The ablation variants' table (``abl``: the ``("mfeat", "ablation")`` stats)."""
    scale = scale_column(abl)
    rows = [
        [m, describe_variant(m, ref), fmt(st.get("R@1")), fmt(st.get("loo_R@1"))]
        + [fmt(st.get(probe_key))]
        + ([fmt(st.get("logit_scale"))] if scale else [])
        + [fmt(st.get("seconds"))]
        for m, st in abl.items()
    ]
    n = max(v[2] for st in abl.values() for v in st.values())
    return [
        "### Ablations",
        "",
        f"Variants of the default {ref} (and of other methods) on the same {seeds_text(n)}; the "
        f"{ref} row is its own run on these seeds. 'what differs' is read from the variant's "
        "name.",
        "",
        markdown_table(
            ["variant", "what differs", "R@1", "leave-one-out R@1", "fused probe"]
            + (["logit scale"] if scale else [])
            + ["train s"],
            rows,
        ),
        "",
    ]


def _ablation_findings(
    abl: Mapping[str, Mapping[str, Stat]],
    stats: Mapping[str, Mapping[str, Stat]],
    rows_all: list[dict[str, Any]],
    ref: str,
) -> list[str]:
    """The ablations' standing, and each variant ``base[tag]`` vs its ``base`` method re-aggregated
    on the ablation seeds."""
    findings = []
    n = max(v[2] for st in abl.values() for v in st.values())
    f = standing(abl, "R@1", f"mfeat ablations, mean R@1 ({seeds_text(n)})", ref)
    if f:
        findings.append(f)
    abl_seeds = {
        r["seed"] for r in rows_all if r["suite"] == "mfeat" and r["setting"] == "ablation"
    }
    for m, st in abl.items():
        base = m.split("[")[0]
        if base == m or base == ref or base not in stats or "R@1" not in st:
            continue
        same = aggregate(
            r
            for r in rows_all
            if (r["suite"], r["setting"], r["method"]) == ("mfeat", "mfeat", base)
            and r["seed"] in abl_seeds
        ).get(("mfeat", "mfeat", base), {})
        if "R@1" in same:
            findings.append(
                f"mfeat ablation {m} ({describe_variant(m, base)}) vs {base} on the same "
                f"seeds: " + compare(m, st["R@1"], base, same["R@1"]).sentence() + "."
            )
    return findings
