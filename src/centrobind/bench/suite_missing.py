"""The ``missing`` suite: mfeat with each modality of each training row dropped at rate p (the
test set complete), for CentroBind, the paper's centroid, AllPairs and the best fixed anchor."""

from __future__ import annotations

import math
from collections.abc import Iterator

from .base import (
    Q_MISSING,
    ReportContext,
    Section,
    Suite,
    SummaryItem,
    answer_vs,
    compare_to,
    present_methods,
)
from .jobs import MFEAT, BenchSettings, Job
from .methods import Method
from .stats import fmt, markdown_table, standing
from .suite_mfeat import PAPER

__all__ = ["MISSING_RATES", "MissingSuite"]

MISSING_RATES = (0.0, 0.3, 0.6)


def _rate(setting: str) -> float:
    try:
        return float(setting.split("=")[-1])
    except ValueError:
        return math.inf


class MissingSuite(Suite):
    name = "missing"
    title = "missing modalities (mfeat, training rows dropped per modality at rate p)"
    #: The fixed anchor compared: the best one on complete mfeat in the committed runs.
    anchor = "pix"

    def jobs(self, s: BenchSettings) -> Iterator[Job]:
        if not s.full:
            return  # the full protocol's (--full)
        methods = [
            Method("CentroBind"),
            PAPER,
            Method("AllPairs", objective="all_pairs"),
            Method(f"FixedAnchor({self.anchor})", objective="fixed_anchor", anchor=self.anchor),
        ]
        rates = (0.0, 0.6) if s.quick else MISSING_RATES
        for seed in range(s.seeds):
            for p in rates:
                for m in methods:
                    yield Job(
                        "missing",
                        f"p={p}",
                        m,
                        seed,
                        MFEAT,
                        drop=p,
                        extra=(("p", p),),
                        probe_tasks=1,
                        loo=False,
                    )

    def section(self, ctx: ReportContext) -> Section:
        settings = sorted(ctx.settings(self.name), key=_rate)
        methods = present_methods(ctx.agg, self.name, settings)
        table = [
            [m] + [fmt(ctx.agg.get((self.name, s, m), {}).get("R@1")) for s in settings]
            for m in methods
        ]
        ctx.plots.missing_plot(ctx.rows, methods, ctx.out / "missing.png")
        sec = Section(
            [
                f"## {self.title}",
                "",
                "Test set complete. CentroBind and AllPairs use the masks; FixedAnchor's terms "
                "can only use samples that have the anchor.",
                "",
                markdown_table(["method"] + [f"R@1 {s}" for s in settings], table),
                "",
                "![missing](missing.png)",
                "",
            ]
        )
        for s in settings:
            f = standing(
                ctx.stats(self.name, s), "R@1", f"missing modalities ({s}), mean R@1", ctx.ref
            )
            if f:
                sec.findings.append(f)
        if settings and _rate(settings[-1]) > 0:
            top = settings[-1]
            stats = ctx.stats(self.name, top)
            parts, words = [], []
            for other in ("AllPairs", f"FixedAnchor({self.anchor})"):
                c = compare_to(stats, ctx.ref, other, "R@1")
                if c is not None:
                    words.append(f"{answer_vs(c, ctx.ref)} vs {other}")
                    parts.append(f"{other} {fmt(c.sb)}")
            if words:
                nums = f"{fmt(stats[ctx.ref]['R@1'])} vs " + ", ".join(parts)
                n = stats[ctx.ref]["R@1"][2]
                sec.summary.append(
                    SummaryItem(Q_MISSING, f"mfeat {top}", "; ".join(words), nums, n)
                )
        return sec
