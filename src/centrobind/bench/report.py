"""The benchmark's outputs: ``results.json`` (every number of every seed, and the run's
metadata), ``results.csv`` and ``report.md``.

The report starts with one summary table (rows: questions such as "Beats every fixed anchor?";
columns: the answer, the numbers it rests on, the seeds), then one-line findings, then each
suite's own section (:meth:`centrobind.bench.base.Suite.section`): this module knows no suite,
view or setting by name. Every answer and finding is computed from the comparison it states
(:mod:`centrobind.bench.stats`): which side is ahead, by how much, and whether the gap exceeds
one standard deviation over seeds. Nothing in the report depends on which methods happen to win.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..checkpoint import atomic_write_text
from .base import QUESTIONS, ReportContext, SummaryItem
from .stats import (
    ID_KEYS,
    REFERENCE,
    Agg,
    Comparison,
    aggregate,
    compare,
    describe_variant,
    fmt,
    markdown_table,
    standing,
)

__all__ = [
    "Comparison",
    "aggregate",
    "compare",
    "describe_variant",
    "fmt",
    "markdown_table",
    "render_report",
    "standing",
    "summary_block",
    "summary_table",
    "write_results",
]


def write_results(rows: list[dict[str, Any]], out: Path, meta: dict[str, Any]) -> None:
    """``results.json`` (every number, every seed, plus run metadata) and ``results.csv``."""
    atomic_write_text(out / "results.json", json.dumps({"meta": meta, "rows": rows}, indent=1))
    keys: list[str] = list(ID_KEYS)
    for r in rows:
        keys += [k for k in r if k not in keys]
    tmp = out / ".results.csv.tmp"
    with tmp.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        for r in rows:
            w.writerow(r)
    tmp.replace(out / "results.csv")


def summary_table(rows: list[dict[str, Any]]) -> str:
    """Plain-text headline: mean R@1 and fused probe per suite/setting/method (a sweep per
    level: its spread is over seeds, never over levels)."""
    agg = aggregate(rows)
    width = max([24] + [len(f"{s}/{st}") + 1 for s, st, _ in agg])
    lines = [f"{'suite/setting':{width}} {'method':32} {'R@1':>14} {'probe(fused)':>14}"]
    for (suite, setting, method), st in agg.items():
        probe = next(
            (v for k, v in st.items() if k.startswith("probe/") and k.endswith("/fused")), None
        )
        lines.append(
            f"{suite + '/' + setting:{width}} {method:32} {fmt(st.get('R@1')):>14} {fmt(probe):>14}"
        )
    return "\n".join(lines)


def summary_block(items: Sequence[SummaryItem]) -> list[str]:
    """The report's opening table: one row per question (in :data:`QUESTIONS` order, then any
    other), its answer in every setting that asks it, the numbers and the seeds.

    Example:
        >>> from centrobind.bench.base import SummaryItem
        >>> block = summary_block([SummaryItem("Ties all-pairs?", "mfeat", "tie", "1 vs 2", 5)])
        >>> block[0].splitlines()[2]
        '| Ties all-pairs? | tie (mfeat) | mfeat: 1 vs 2 | 5 |'
    """
    order = list(QUESTIONS) + [i.question for i in items if i.question not in QUESTIONS]
    table = []
    for q in dict.fromkeys(order):
        mine = [i for i in items if i.question == q]
        if not mine:
            continue
        words = list(dict.fromkeys(i.answer for i in mine))
        if len(words) == 1:
            answer = f"{words[0]} ({', '.join(i.where for i in mine)})"
        else:
            answer = "; ".join(
                f"{w} ({', '.join(i.where for i in mine if i.answer == w)})" for w in words
            )
        numbers = "; ".join(f"{i.where}: {i.numbers}" for i in mine)
        counts = list(dict.fromkeys(i.seeds for i in mine))
        seeds = (
            str(counts[0]) if len(counts) == 1 else ", ".join(f"{i.where} {i.seeds}" for i in mine)
        )
        table.append([q, answer, numbers, seeds])
    return [markdown_table(["question", "answer", "numbers", "seeds"], table)]


# --------------------------------------------------------------------------- the report


def _seed_counts(agg: Agg) -> dict[tuple[str, str], int]:
    out: dict[tuple[str, str], int] = {}
    for (suite, setting, _), st in agg.items():
        n = max((v[2] for v in st.values()), default=0)
        out[(suite, setting)] = max(out.get((suite, setting), 0), n)
    return out


def _budget_text(meta: Mapping[str, Any]) -> str:
    """Epoch budget and early stopping, stated as they act (off when patience >= the budget)."""
    pat = meta.get("patience")
    budgets = [("", meta["epochs"])]
    if meta.get("synthetic_epochs") not in (None, meta["epochs"]):
        budgets.append(("synthetic: ", meta["synthetic_epochs"]))
    ep = ", ".join(f"{p}{e}" for p, e in budgets)
    sel = (
        "the weights of the epoch with the best validation mean R@1 (Symile, GRAM: their own "
        "leave-one-out R@1) are kept"
    )
    if pat is None:
        return f"{ep} epochs, no early stopping; {sel}"
    off = [f"{p}{e}" for p, e in budgets if pat >= e]
    if len(off) == len(budgets):
        stop = (
            f"no early stopping (patience {pat} >= the epoch budget): every method trains "
            "every epoch"
        )
    elif off:
        stop = (
            f"early stopping with patience {pat} (it never triggers where the budget is "
            f"{', '.join(off)} epochs)"
        )
    else:
        stop = f"early stopping with patience {pat}"
    return f"{ep} epochs max; {stop}; {sel}"


def _scale_text(meta: Mapping[str, Any], rows: Sequence[Mapping[str, Any]]) -> str:
    """How the logit scales were set, as ``results.json`` records it."""
    if meta.get("logit_scale_protocol"):
        return str(meta["logit_scale_protocol"])
    if any("logit_scale" in r for r in rows):
        return "each method's logit scale as listed in the tables' 'logit scale' column"
    return "fixed logit scale 10 (Symile: 10 D^(M/2-1))"


def quick_banner(meta: Mapping[str, Any], agg: Agg) -> list[str]:
    """The warning at the top of a ``--quick`` (or single-seed) report; [] otherwise."""
    seeds = _seed_counts(agg)
    few = sorted({n for n in seeds.values()}) or [int(meta["seeds"])]
    quick = bool(meta.get("quick"))
    if not quick and min(few) > 1:
        return []
    lines: list[str] = []
    if quick:
        epochs = meta["epochs"]
        syn = meta.get("synthetic_epochs")
        ep = f"{epochs}-epoch" + (f" ({syn} on synthetic)" if syn not in (None, epochs) else "")
        n = str(few[0]) if len(few) == 1 else f"{few[0]}–{few[-1]}"
        lines.append(
            f"> **This is a {n}-seed, {ep} smoke run (`--quick`): its numbers are not the "
            "benchmark's results.** It checks that every method trains and is scored end to end."
        )
    single = sorted({suite for (suite, _), n in seeds.items() if n < 2})
    if max(few) < 2:
        lines.append(
            "> With one seed there is no spread estimate: no difference below is shown to exceed "
            "seed-to-seed noise."
        )
    elif single:
        lines.append(
            f"> One seed in {', '.join(single)}: no spread estimate there, so no difference in "
            "that section is shown to exceed seed-to-seed noise."
        )
    budget = max(meta["epochs"], meta.get("synthetic_epochs") or 0)
    if meta.get("patience") is not None and meta["patience"] >= budget:
        lines.append(
            f"> Early stopping is off here (patience {meta['patience']} >= {budget} epochs)."
        )
    if quick:
        lines.append(
            "> The results are the full run: `centrobind benchmark --full` (committed in "
            "docs/benchmark/)."
        )
    return lines + [""]


def cap_warnings(rows: Sequence[Mapping[str, Any]], meta: Mapping[str, Any]) -> list[str]:
    """A line for every suite/setting where at least half the trained runs ended at the epoch
    cap (so early stopping did not end them): those scores measure what each method learns
    within the budget, not a converged space. [] for ``--quick`` runs (their banner says so).

    Example:
        >>> meta = {"epochs": 100, "synthetic_epochs": 60, "quick": False}
        >>> rows = [{"suite": "synthetic", "setting": "clean", "epochs": 60}] * 3
        >>> cap_warnings(rows, meta)[0][:60]
        '> **synthetic/clean: 3 of 3 trained runs stopped at the 60-e'
    """
    if meta.get("quick"):
        return []

    def cap(suite: str) -> int:
        own = meta.get("suite_settings", {}).get(suite, {}).get("epochs")
        if own is not None:
            return int(own)
        return (
            int(meta.get("synthetic_epochs") or meta["epochs"])
            if suite == "synthetic"
            else int(meta["epochs"])
        )

    counts: dict[tuple[str, str], list[int]] = {}
    for r in rows:
        if not r.get("epochs"):
            continue  # GCCA, Raw, Untrained: nothing trained
        c = counts.setdefault((r["suite"], r["setting"].split(" ")[0]), [0, 0])
        c[0] += int(r["epochs"] >= cap(r["suite"]))
        c[1] += 1
    lines = [
        f"> **{suite}/{setting}: {hit} of {n} trained runs stopped at the {cap(suite)}-epoch "
        "cap**, not by early stopping: these scores compare what each method learns within that "
        "budget, not converged spaces."
        for (suite, setting), (hit, n) in counts.items()
        if hit * 2 >= n
    ]
    return lines + [""] if lines else []


def render_report(rows: list[dict[str, Any]], meta: dict[str, Any], out: Path) -> str:
    """Write figures into ``out`` and return the markdown of ``report.md``: the summary table,
    how the run was made, one-line findings, then every suite's section (suites in the
    registry's order; a suite missing from the registry gets the default section)."""
    from . import plots
    from .base import Suite
    from .suites import SUITES

    agg = aggregate(rows)
    ref = meta.get("reference_method", REFERENCE)
    ctx = ReportContext(agg, rows, meta, out, ref, plots)
    names = list(dict.fromkeys(k[0] for k in agg))
    suites = [SUITES[n] for n in SUITES if n in names]
    for n in names:
        if n not in SUITES:  # rows of a suite no longer registered: the default section
            suites.append(type("Unregistered", (Suite,), {"name": n, "title": n})())
    sections = [(s.name, s.section(ctx)) for s in suites]
    findings = ["## Findings", ""]
    for name, sec in sections:
        if sec.findings:
            findings += [f"**{name}**", "", *[f"- {f}" for f in sec.findings], ""]
    summary = [i for _, sec in sections for i in sec.summary]
    parts = [
        "# centrobind benchmark",
        "",
        *quick_banner(meta, agg),
        *cap_warnings(rows, meta),
    ]
    if summary:
        parts += [
            f"## Summary: the default {ref} against its peers",
            "",
            *summary_block(summary),
            "",
            "'tie': the gap is within one standard deviation over seeds (with one seed: equal at "
            "the printed precision); 'ahead'/'behind' and 'yes'/'no': beyond it. The findings "
            "and the tables below give every number.",
            "",
        ]
    parts += [*_run_text(meta, rows, agg, ref), *findings]
    for _, sec in sections:
        parts += sec.lines
    return "\n".join(parts) + "\n"


PLANS = {
    "main": "the main job (the default): the core methods (fixed anchors, CentroBind, AllPairs, "
    "Symile, GRAM) on mfeat and the weak-anchor synthetic setting, and the M-suite's step cost "
    "on untrained models; `--full` adds CentroBind's paper and leave-one-out centroids, GRAM's "
    "official recipe, the clean synthetic setting, missing modalities and the M-suite's "
    "trainings (the committed report). Every cell it runs is the full protocol's cell: the "
    "same seeds at the same scales give the same numbers.",
    "full": "the full protocol (`--full`): the committed report's cells.",
    "extended": "the full protocol and the secondary studies (`--extended`).",
}


def _plan_text(meta: Mapping[str, Any]) -> list[str]:
    plan = meta.get("plan")
    return [f"Plan: {PLANS[plan]}  "] if plan in PLANS else []


def _run_text(
    meta: Mapping[str, Any], rows: Sequence[Mapping[str, Any]], agg: Agg, ref: str
) -> list[str]:
    """How the run was made: command, seeds, budget, scales, machine, wall time, conventions."""
    seeds = _seed_counts(agg)
    other = sorted(
        {(s, st.split(" ")[0], n) for (s, st), n in seeds.items() if n != meta["seeds"]},
        key=str,
    )
    seed_extra = " (" + ", ".join(f"{s}/{st}: {n}" for s, st, n in other) + ")" if other else ""
    return [
        "## How it was run",
        "",
        f"Command: `{meta['command']}`  ",
        *_plan_text(meta),
        f"Seeds: {meta['seeds']}{seed_extra} (seed s = split s and initialisation s); budget per "
        f"method: {_budget_text(meta)}; batch {meta['batch_size']}, embedding D = "
        f"{meta['embed_dim']}, {_scale_text(meta, rows)}, AdamW lr {meta['lr']}, warm-up + "
        f"cosine. Splits 70/10/20 (train/val/test), stratified. Machine: {meta['machine']}. "
        f"Wall time: {meta['wall_seconds']:.0f} s.",
        "",
        "All figures are on the held-out test split, mean ± std over seeds (std with ddof = 1; "
        "one seed: the value alone). Retrieval in %, chance R@1 = 100/N_test. Pairwise retrieval "
        "ranks by cosine, except GRAM (its own area score, i.e. cos²); Symile is trained for its "
        "multilinear score over ALL modalities, so its pairwise-cosine figures are near chance by "
        "construction and its own retrieval is the leave-one-out column. Findings compare each "
        f"method with the default {ref}: a gap is 'within noise' when it is no larger than the "
        "larger of the two standard deviations over seeds.",
        "",
    ]
