"""What a benchmark suite is: an object that owns its jobs, its settings and its section of the
report (:class:`Suite`), and the summary questions its section answers (:class:`SummaryItem`).

Adding a suite: subclass :class:`Suite` (``name``, ``title``, :meth:`Suite.jobs`; optionally
:meth:`Suite.section`, :meth:`Suite.derive`, :meth:`Suite.epoch_cap`,
:attr:`Suite.colour_order`) and register an instance with
:func:`centrobind.bench.suites.register_suite`. The default section is one table of mean R@1
per setting and method, with one finding per setting; nothing in the report needs to know the
suite.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, ClassVar

from .jobs import BenchSettings, Job
from .stats import (
    Agg,
    Comparison,
    Stat,
    compare,
    fmt,
    markdown_table,
    methods_in,
    scale_column,
    settings_of,
    standing,
    stats_of,
)

__all__ = [
    "QUESTIONS",
    "Q_ALL_PAIRS",
    "Q_COST",
    "Q_FIXED",
    "Q_MISSING",
    "Q_WEAK",
    "ReportContext",
    "Section",
    "Suite",
    "SummaryItem",
    "answer_vs",
    "yes_no",
]

Q_FIXED = "Beats every fixed anchor?"
Q_ALL_PAIRS = "Ties all-pairs?"
Q_WEAK = "Robust to a weak modality?"
Q_MISSING = "Missing modalities?"
Q_COST = "Cheaper than all-pairs as M grows?"
#: The summary table's rows, in this order (a suite may add its own questions after them).
QUESTIONS = (Q_FIXED, Q_ALL_PAIRS, Q_WEAK, Q_MISSING, Q_COST)


@dataclass(frozen=True)
class SummaryItem:
    """One suite's answer to a summary question in one setting.

    ``answer`` is a short word computed from the numbers ("yes", "no", "tie", "ahead",
    "behind", ...); ``numbers`` the figures it rests on; ``seeds`` how many seeds they average.
    """

    question: str
    where: str
    answer: str
    numbers: str
    seeds: int


@dataclass
class Section:
    """A suite's part of the report: markdown ``lines`` (tables, figures), one-line
    ``findings`` and the ``summary`` items it contributes to the table at the top."""

    lines: list[str] = field(default_factory=list)
    findings: list[str] = field(default_factory=list)
    summary: list[SummaryItem] = field(default_factory=list)


@dataclass
class ReportContext:
    """What a section renders from: the aggregated statistics, every row, the run's metadata,
    the output folder (figures are written there), the reference method and the plotting module
    (imported once, only when a report is rendered)."""

    agg: Agg
    rows: list[dict[str, Any]]
    meta: Mapping[str, Any]
    out: Path
    ref: str
    plots: ModuleType

    def stats(self, suite: str, setting: str) -> dict[str, dict[str, Stat]]:
        return stats_of(self.agg, suite, setting)

    def settings(self, suite: str) -> list[str]:
        return settings_of(self.agg, suite)


def answer_vs(c: Comparison, ref: str) -> str:
    """``"ahead"``, ``"behind"`` or ``"tie"`` (``ref`` is ``c.a``): a gap within one std over
    seeds is a tie; with one seed any gap at the printed precision decides, and the answer says
    ``"(1 seed)"``."""
    if c.winner is None or c.within_noise:
        return "tie"
    word = "ahead" if c.winner == ref else "behind"
    return word + (" (1 seed)" if c.noise is None else "")


def yes_no(answer: str) -> str:
    """An :func:`answer_vs` answer as yes/no ("ahead" -> "yes", "behind" -> "no", "tie" stays),
    keeping a "(1 seed)" note."""
    return answer.replace("ahead", "yes").replace("behind", "no")


def vs_text(c: Comparison) -> str:
    """``"43.2 ± 0.3 vs AllPairs 43.4 ± 0.2"`` (``c.a`` is the reference, not named)."""
    return f"{fmt(c.sa)} vs {c.b} {fmt(c.sb)}"


class Suite:
    """A benchmark suite. Subclasses set ``name`` (the ``--suite`` value and the rows' ``suite``),
    ``title`` (the report section's heading) and implement :meth:`jobs`."""

    name: ClassVar[str] = ""
    title: ClassVar[str] = ""
    #: Method names that each keep their own colour of their family in every figure, in this
    #: order (e.g. one fixed anchor per view); other names get a colour from a hash of the name.
    colour_order: ClassVar[tuple[str, ...]] = ()

    def jobs(self, s: BenchSettings) -> Iterator[Job]:
        """Every job of this suite under ``s`` (main comparison; more with ``s.extended``)."""
        raise NotImplementedError

    def epoch_cap(self, s: BenchSettings) -> int:
        """The epoch budget of its trained jobs (the report warns when most runs reach it)."""
        return s.epochs

    def meta(self, s: BenchSettings) -> dict[str, Any]:
        """What ``results.json`` records of this suite's own settings."""
        return {"epochs": self.epoch_cap(s)}

    def derive(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Add derived metric keys to this suite's rows before aggregation (default: none)."""
        return rows

    def section(self, ctx: ReportContext) -> Section:
        """The default section: mean R@1 per setting and method, one finding per setting."""
        sec = Section([f"## {self.title or self.name}", ""])
        for setting in ctx.settings(self.name):
            stats = ctx.stats(self.name, setting)
            sec.lines += [f"### {setting}", "", *self.r1_table(stats), ""]
            f = standing(stats, "R@1", f"{self.name} {setting}, mean R@1", ctx.ref)
            if f:
                sec.findings.append(f)
        return sec

    @staticmethod
    def r1_table(stats: Mapping[str, Mapping[str, Stat]], extra: Sequence[str] = ()) -> list[str]:
        """A table of R@1 (and the ``extra`` metrics), logit scale and training seconds."""
        scale = scale_column(stats)
        rows = [
            [m, fmt(st.get("R@1"))]
            + [fmt(st.get(k)) for k in extra]
            + ([fmt(st.get("logit_scale"))] if scale else [])
            + [fmt(st.get("seconds"))]
            for m, st in stats.items()
        ]
        header = ["method", "R@1", *extra] + (["logit scale"] if scale else []) + ["train s"]
        return [markdown_table(header, rows)]


def compare_to(
    stats: Mapping[str, Mapping[str, Stat]], ref: str, other: str | None, metric: str
) -> Comparison | None:
    """``ref`` against ``other`` on ``metric``, None when either lacks it."""
    if other is None or metric not in stats.get(ref, {}) or metric not in stats.get(other, {}):
        return None
    return compare(ref, stats[ref][metric], other, stats[other][metric])


def present_methods(agg: Agg, suite: str, settings: Sequence[str]) -> list[str]:
    """Every method of ``suite`` over ``settings``, in order of first appearance."""
    out: list[str] = []
    for s in settings:
        out += [m for m in methods_in(agg, suite, s) if m not in out]
    return out
