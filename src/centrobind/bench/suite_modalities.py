"""The ``modalities`` suite (the M-suite): quality and cost against the number of modalities.

Synthetic data as in the ``synthetic`` suite (shared, pair (m2, m3) and private factors) with
M = 2, 3, 4, 6, 8, 12, 16 modalities, modality m1 weak (noise 2.0; ``--extended`` adds the clean
variant). CentroBind uses M InfoNCE terms, all-pairs M(M-1)/2: every job also records its mean
training-step time and the peak memory of one training step at the benchmark's batch, so the
report can say where, if anywhere, the quadratic cost stops paying for itself. The main job
(the default) measures only that cost, on untrained models (seconds); ``--full`` trains every
cell for the quality against M.

Scales: each method's scale is the one chosen on the 4-modality synthetic setting with the same
m1 noise (published, or chosen there with ``--choose-scales``), Symile's as the same factor of
its M-dependent default; a grid per M would cost seven times the suite.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from .base import (
    Q_ALL_PAIRS,
    Q_COST,
    ReportContext,
    Section,
    Suite,
    SummaryItem,
    answer_vs,
    compare_to,
    present_methods,
)
from .jobs import SYNTH_CLEAN_NOISE, SYNTH_WEAK_NOISE, BenchSettings, Job, synthetic_key
from .methods import Method
from .stats import Stat, fmt, markdown_table, seeds_text
from .suite_mfeat import LOO, PAPER

__all__ = ["M_VALUES", "ModalitiesSuite"]

M_VALUES = (2, 3, 4, 6, 8, 12, 16)
QUICK_M_VALUES = (2, 4, 8)
VARIANTS = (("weak", SYNTH_WEAK_NOISE), ("clean", SYNTH_CLEAN_NOISE))
#: The objectives scored by their joint leave-one-out retrieval (pairwise cosine R@1 is not
#: what they train for).
JOINT = ("Symile", "Gram(m1)")


def _methods() -> list[Method]:
    return [
        Method("CentroBind", objective="centrobind"),
        PAPER,
        LOO,
        Method("AllPairs", objective="all_pairs"),
        Method("Symile", objective="symile"),
        Method("Gram(m1)", objective="gram", anchor="m1"),
        # m1 is the weak modality; m2 was the best fixed anchor of the 4-modality weak setting
        Method("FixedAnchor(m2)", objective="fixed_anchor", anchor="m2"),
    ]


def _split(setting: str) -> tuple[str, int]:
    variant, m = setting.split(" M=")
    return variant, int(m)


class ModalitiesSuite(Suite):
    name = "modalities"
    title = "quality and cost against the number of modalities M (synthetic, m1 weak)"
    #: Seeds per M: one with ``--full`` (the suite costs as much as the others together; the
    #: main job only measures the step cost), up to three with ``--extended``.
    default_seeds = 1
    extended_seeds = 3

    def samples(self, s: BenchSettings) -> int:
        return s.synthetic_samples // 2

    def epoch_cap(self, s: BenchSettings) -> int:
        return s.synthetic_epochs

    def meta(self, s: BenchSettings) -> dict[str, Any]:
        return {"epochs": s.synthetic_epochs, "samples": self.samples(s)}

    def jobs(self, s: BenchSettings) -> Iterator[Job]:
        ms = QUICK_M_VALUES if s.quick else M_VALUES
        variants = VARIANTS if s.extended else VARIANTS[:1]
        n_seeds = min(s.seeds, self.extended_seeds if s.extended else self.default_seeds)
        for seed in range(n_seeds):
            for variant, noise in variants:
                for m in ms:
                    for method in _methods():
                        yield Job(
                            self.name,
                            f"{variant} M={m}",
                            method,
                            seed,
                            synthetic_key(noise, self.samples(s), m),
                            extra=(("M", m), ("noise_m1", noise)),
                            probe_tasks=0,
                            epochs=s.synthetic_epochs,
                            tune_on=synthetic_key(noise, s.synthetic_samples),
                            memory=True,
                            train=s.full,
                        )

    def section(self, ctx: ReportContext) -> Section:
        sec = Section(
            [
                f"## {self.title}",
                "",
                "Synthetic data with M modalities (shared, pair (m2, m3) and private factors; m1 "
                "noise 2.0, the others 0.1). Per method and M: test mean R@1 over the M(M-1) "
                "ordered pairs (Symile and GRAM: their leave-one-out R@1, the score they train "
                "for), R@1 on the pairs without m1, the CPU time of a training step (forward, "
                "backward and update at batch 256, one thread: robust to other processes on the "
                "machine, unlike the wall time also shown) and the peak tensor memory of one "
                "step's forward and backward pass (beyond weights and optimiser state).",
                "",
            ]
        )
        by_variant: dict[str, list[tuple[int, str]]] = {}
        for setting in ctx.settings(self.name):
            variant, m = _split(setting)
            by_variant.setdefault(variant, []).append((m, setting))
        for variant, items in by_variant.items():
            items.sort()
            sec.lines += self._variant(ctx, variant, items, sec)
        return sec

    def _variant(
        self, ctx: ReportContext, variant: str, items: list[tuple[int, str]], sec: Section
    ) -> list[str]:
        """Tables, figures, findings and summary items of one variant (``items``: (M, setting));
        the cost only where the cells were not trained (the main job)."""
        settings = [s for _, s in items]
        methods = present_methods(ctx.agg, self.name, settings)
        stats = {m: ctx.stats(self.name, s) for m, s in items}
        n = max(v[2] for st in stats.values() for ms in st.values() for v in ms.values())
        header = ["method"] + [f"M={m}" for m, _ in items]

        def table(metric: str, digits: int = 1) -> str:
            rows = [
                [meth] + [fmt(stats[m].get(meth, {}).get(metric), digits) for m, _ in items]
                for meth in methods
            ]
            return markdown_table(header, rows)

        rows = [r for r in ctx.rows if r["suite"] == self.name and r["setting"] in settings]
        fig_c = f"modalities_{variant}_cost.png"
        ctx.plots.cost_against_m(rows, methods, ctx.out / fig_c)
        sec.findings += self._findings(variant, items, stats, ctx.ref)  # none without quality
        sec.summary += self._summary(variant, items, stats, ctx.ref)
        cpu = ["CPU time per training step (ms; median of 5 steps, one thread):", ""]
        cpu += [table("step_cpu_ms", 1), ""]
        memory = ["Peak memory of one training step (MiB):", "", table("peak_mib", 1), ""]
        figure = [f"![cost against M]({fig_c})", ""]
        if not any(self._quality_key(r["method"]) in r for r in rows):
            return [
                f"### {variant}: cost only ({seeds_text(n)} per M)",
                "",
                "The main job measures the cost of a training step on untrained models; "
                "`centrobind benchmark --full` trains every cell for the quality against M "
                "(the committed report).",
                "",
                *cpu,
                *memory,
                *figure,
            ]
        quality = self._quality_key
        q_rows = [
            [meth + (" (leave-one-out)" if meth in JOINT else "")]
            + [fmt(stats[m].get(meth, {}).get(quality(meth))) for m, _ in items]
            for meth in methods
        ]
        fig_q = f"modalities_{variant}_quality.png"
        ctx.plots.against_m(rows, methods, ctx.out / fig_q, quality, JOINT)
        return [
            f"### {variant} ({seeds_text(n)} per M)",
            "",
            "Mean R@1 (%):",
            "",
            markdown_table(header, q_rows),
            "",
            "R@1 on the pairs without m1 (%):",
            "",
            table("R@1_excl/m1"),
            "",
            "Epochs trained (early stopping with patience 20 within the budget; a run that "
            "stops early at a plateau can end far below one that trains on, so read the R@1 "
            "tables with these):",
            "",
            table("epochs", 0),
            "",
            *cpu,
            "Wall time per training step during training (ms; machine shared with other runs):",
            "",
            table("step_ms", 1),
            "",
            *memory,
            "Logit scale (chosen on the 4-modality setting; Symile: the same factor of its "
            "M-dependent default):",
            "",
            table("logit_scale", 3),
            "",
            f"![quality against M]({fig_q})",
            "",
            *figure,
        ]

    @staticmethod
    def _quality_key(method: str) -> str:
        return "loo_R@1" if method in JOINT else "R@1"

    def _findings(
        self,
        variant: str,
        items: list[tuple[int, str]],
        stats: Mapping[int, Mapping[str, Mapping[str, Stat]]],
        ref: str,
    ) -> list[str]:
        """Where all-pairs' quadratic cost stops paying: per M, AllPairs vs ``ref`` on R@1 and
        on the pairs without m1, next to the ratio of their step times and peak memories."""
        parts, paying = [], []
        for m, _ in items:
            st = stats[m]
            c = compare_to(st, "AllPairs", ref, "R@1")
            c1 = compare_to(st, "AllPairs", ref, "R@1_excl/m1")
            t = _ratio(st, "AllPairs", ref, "step_cpu_ms")
            mem = _ratio(st, "AllPairs", ref, "peak_mib")
            if c is None:
                continue
            gap = f"{c.gap:+.1f}" + ("" if c1 is None else f" (w/o m1 {c1.gap:+.1f})")
            ep = [st[x]["epochs"][0] for x in ("AllPairs", ref) if "epochs" in st[x]]
            if len(ep) == 2:
                gap += f" after {ep[0]:.0f} vs {ep[1]:.0f} epochs"
            parts.append(
                f"M={m}: {gap}"
                + (f", step {t:.1f}x" if t is not None else "")
                + (f", memory {mem:.1f}x" if mem is not None else "")
            )
            if answer_vs(c, "AllPairs").startswith("ahead") or (
                c1 is not None and answer_vs(c1, "AllPairs").startswith("ahead")
            ):
                paying.append(m)
        if not parts:
            return []
        one_seed = any(stats[m][ref]["R@1"][2] < 2 for m, _ in items if ref in stats[m])
        beyond = " (one seed: no spread estimate)" if one_seed else " by more than one std"
        if not paying:
            verdict = f"AllPairs is never ahead of it{beyond}: its extra cost buys nothing here"
        else:
            verdict = f"AllPairs ahead{beyond} at M = {', '.join(map(str, paying))}"
        return [
            f"modalities ({variant}), AllPairs minus {ref} in R@1, and AllPairs' step time and "
            f"memory as a multiple of {ref}'s: " + "; ".join(parts) + f". {verdict}."
        ]

    def _summary(
        self,
        variant: str,
        items: list[tuple[int, str]],
        stats: Mapping[int, Mapping[str, Mapping[str, Stat]]],
        ref: str,
    ) -> list[SummaryItem]:
        out = []
        top, _ = items[-1]
        st = stats[top]
        c = compare_to(st, ref, "AllPairs", "R@1")
        if c is not None:
            nums = f"M={top}: {fmt(c.sa)} vs AllPairs {fmt(c.sb)}"
            out.append(
                SummaryItem(Q_ALL_PAIRS, f"M-suite {variant}", answer_vs(c, ref), nums, c.sa[2])
            )
        t = _ratio(st, "AllPairs", ref, "step_cpu_ms")
        mem = _ratio(st, "AllPairs", ref, "peak_mib")
        if t is not None:
            low, _ = items[0]
            t_low = _ratio(stats[low], "AllPairs", ref, "step_cpu_ms")
            nums = f"AllPairs' step CPU time at M={top}: {t:.1f}x {ref}'s" + (
                f" (M={low}: {t_low:.1f}x)" if t_low is not None else ""
            )
            if mem is not None:
                nums += f", peak memory {mem:.1f}x"
            n = st[ref]["step_cpu_ms"][2]
            out.append(
                SummaryItem(Q_COST, f"M-suite {variant}", "yes" if t > 1.2 else "no", nums, n)
            )
        return out


def _ratio(st: Mapping[str, Mapping[str, Stat]], a: str, b: str, metric: str) -> float | None:
    """``mean(a) / mean(b)`` of ``metric`` (None when either lacks it or ``b``'s is 0)."""
    if metric not in st.get(a, {}) or metric not in st.get(b, {}) or not st[b][metric][0]:
        return None
    return st[a][metric][0] / st[b][metric][0]
