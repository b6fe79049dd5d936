"""The benchmark report states only what its own numbers say: findings are generated from the
comparison they state (winner, gap, within one std), a quick run says it is a smoke run, a sweep is
never averaged over its levels, and every figure colours a method the same way."""

from __future__ import annotations

import random
import re

import pytest

from centrobind.bench.plots import excluding_bars, method_color
from centrobind.bench.progress import JobProgress
from centrobind.bench.report import (
    aggregate,
    compare,
    describe_variant,
    render_report,
    standing,
    summary_table,
)

MODS = ["fac", "fou", "kar", "mor", "pix", "zer"]


def _meta(quick: bool = False, seeds: int = 3, epochs: int = 100, patience: int = 20) -> dict:
    return {
        "command": "centrobind benchmark (test)",
        "seeds": seeds,
        "quick": quick,
        "epochs": epochs,
        "synthetic_epochs": epochs,
        "patience": patience,
        "batch_size": 256,
        "embed_dim": 64,
        "lr": 1e-3,
        "machine": "test",
        "wall_seconds": 1.0,
    }


def _rows(table: dict[str, list[float]], suite="mfeat", setting="mfeat", **extra) -> list[dict]:
    """One row per method and seed with ``R@1`` (and the same value for the other R@1 keys)."""
    rows = []
    for method, values in table.items():
        for seed, v in enumerate(values):
            r = {"suite": suite, "setting": setting, "method": method, "seed": seed, "R@1": v}
            r.update({f"R@1_excl/{k}": v for k in MODS})
            r["loo_R@1"] = v
            r.update(extra)
            rows.append(r)
    return rows


def _finding(report: str, prefix: str) -> str:
    lines = [ln for ln in report.splitlines() if ln.startswith(f"- {prefix}")]
    assert len(lines) == 1, (prefix, lines)
    return lines[0]


# ------------------------------------------------------------------------- compare


def test_compare_names_the_winner_the_gap_and_the_noise():
    a_wins = compare("AllPairs", (45.0, 1.0, 3), "CentroBind", (41.0, 1.0, 3))
    assert a_wins.winner == "AllPairs" and a_wins.within_noise is False
    assert a_wins.sentence() == (
        "AllPairs 45.0 ± 1.0 vs CentroBind 41.0 ± 1.0: AllPairs ahead by 4.0, more than one "
        "std (1.0)"
    )
    b_wins = compare("AllPairs", (41.0, 0.5, 3), "CentroBind", (45.0, 2.0, 3))
    assert b_wins.winner == "CentroBind"
    assert b_wins.verdict() == "CentroBind ahead by 4.0, more than one std (2.0)"
    tie = compare("GCCA", (41.5, 1.0, 3), "CentroBind", (41.0, 0.2, 3))
    assert tie.winner == "GCCA" and tie.within_noise is True
    assert tie.verdict() == "GCCA ahead by 0.5, within noise (one std is 1.0)"
    equal = compare("A", (30.31, 0.1, 3), "B", (30.29, 0.1, 3))
    assert equal.winner is None and equal.verdict() == "equal at this precision (30.3)"
    one_seed = compare("A", (29.2, 0.0, 1), "B", (30.3, 0.0, 1))
    assert one_seed.noise is None and one_seed.within_noise is None
    assert one_seed.verdict() == "B ahead by 1.1, one seed: no spread estimate"


def test_compare_gap_is_the_difference_of_the_printed_numbers():
    c = compare("A", (98.46, 0.0, 1), "B", (98.24, 0.0, 1))  # printed 98.5 vs 98.2
    assert c.sentence().startswith("A 98.5 vs B 98.2: A ahead by 0.3")


# ------------------------------------------------------------------------- findings


def _stats(table: dict[str, list[float]]) -> dict:
    agg = aggregate(_rows(table))
    return {m: agg[("mfeat", "mfeat", m)] for m in table}


def test_standing_is_one_line_with_rank_the_methods_ahead_and_the_next_behind():
    stats = _stats(
        {
            "CentroBind": [40, 41, 42],
            "AllPairs": [44, 45, 46],
            "GCCA": [40.5, 41.5, 42.5],
            "FixedAnchor(fac)": [30, 31, 32],
        }
    )
    text = standing(stats, "R@1", "mean R@1")
    assert "\n" not in text
    assert text == (
        "mean R@1: CentroBind 41.0 ± 1.0, rank 3 of 4; ahead of it: AllPairs 45.0 (+4.0, beyond "
        "noise), GCCA 41.5 (+0.5, within noise); next behind: FixedAnchor(fac) 31.0 (-10.0, "
        "beyond noise)."
    )


def test_standing_when_the_reference_leads_and_when_it_ties():
    lead = standing(_stats({"CentroBind": [50, 51, 52], "AllPairs": [44, 45, 46]}), "R@1", "x")
    assert "rank 1 of 2" in lead and "ahead of it" not in lead
    assert "next behind: AllPairs 45.0 (-6.0, beyond noise)" in lead
    tie = standing(_stats({"CentroBind": [50, 51, 52], "AllPairs": [51, 51, 51]}), "R@1", "x")
    assert "level: AllPairs" in tie and "ahead of it:" not in tie


@pytest.mark.parametrize("seed", range(15))
def test_findings_name_the_methods_that_beat_the_reference(seed):
    rng = random.Random(seed)
    names = ["CentroBind", "AllPairs", "GCCA", "Symile", "Gram(fac)", "CentroBind[loo]"]
    names += [f"FixedAnchor({k})" for k in MODS]
    n = rng.choice([1, 3])
    table = {m: [rng.uniform(10, 50) for _ in range(n)] for m in names}
    stats = _stats(table)
    line = standing(stats, "R@1", "x")
    ref = round(stats["CentroBind"]["R@1"][0], 1)
    ahead = sorted(
        (round(stats[m]["R@1"][0], 1) - ref, m)
        for m in names[1:]
        if round(stats[m]["R@1"][0], 1) > ref
    )[::-1]
    assert f"rank {len(ahead) + 1} of {len(names)}" in line
    listed = line.split("ahead of it: ")[1].split(";")[0] if ahead else ""
    for gap, m in ahead[:3]:
        assert f"{m} {stats[m]['R@1'][0]:.1f} ({gap:+.1f}" in listed, (m, line)
    if len(ahead) > 3:
        assert f"and {len(ahead) - 3} more" in listed
    for m in names[1:]:
        if round(stats[m]["R@1"][0], 1) < ref:
            assert f"{m} {stats[m]['R@1'][0]:.1f} (+" not in line


def _tmp(i: int):
    import tempfile
    from pathlib import Path

    return Path(tempfile.mkdtemp(prefix=f"report{i}_"))


@pytest.mark.parametrize(
    "allpairs, word", [([44, 45, 46], "AllPairs"), ([30, 31, 32], "CentroBind")]
)
def test_report_allpairs_sentence_follows_the_numbers(tmp_path, allpairs, word):
    table = {"CentroBind": [40, 41, 42], "AllPairs": allpairs, "FixedAnchor(pix)": [20, 21, 22]}
    report = render_report(_rows(table), _meta(), tmp_path)
    line = _finding(report, "mfeat, AllPairs (15 pairwise terms) vs CentroBind (6 terms)")
    assert f"{word} ahead by" in line
    assert "advantage" not in report  # no fixed conclusion text
    best = _finding(report, "mfeat, CentroBind vs the best fixed anchor (FixedAnchor(pix))")
    assert "CentroBind ahead by 20.0, more than one std (1.0)" in best


def test_ablation_finding_compares_variants_with_the_default_only(tmp_path):
    rows = _rows({"CentroBind": [40, 41, 42]}) + _rows(
        {"CentroBind": [40, 41, 42], "CentroBind[grad,unnorm]": [39.9, 40.9, 41.9]},
        setting="ablation",
    )
    report = render_report(rows, _meta(), tmp_path)
    line = _finding(report, "mfeat ablations")
    assert "rank 1 of 2; next behind: CentroBind[grad,unnorm] 40.9 (-0.1, within noise)" in line
    # the ablation table describes only the rows it has
    assert "gradient through the centroid, unnormalised centroid" in report
    assert "learned" not in report and "intra" not in report


def test_a_variant_of_another_method_is_also_compared_with_that_method(tmp_path):
    rows = _rows({"CentroBind": [40, 41, 42, 43, 44], "FixedAnchor(pix)": [30, 31, 32, 50, 50]})
    rows += _rows(
        {"CentroBind": [40, 41, 42], "FixedAnchor(pix)[no-pretrain]": [25, 26, 27]},
        setting="ablation",
    )
    report = render_report(rows, _meta(seeds=5), tmp_path)
    line = _finding(report, "mfeat ablation FixedAnchor(pix)[no-pretrain]")
    assert "(anchor encoder not pre-trained (a random frozen encoder))" in line
    # against FixedAnchor(pix) on the ablation's seeds 0-2 only: 31.0 ± 1.0, not the 5-seed mean
    assert (
        "vs FixedAnchor(pix) 31.0 ± 1.0: FixedAnchor(pix) ahead by 5.0, more than one std" in line
    )


def test_describe_variant():
    assert describe_variant("CentroBind[grad,norm]") == (
        "gradient through the centroid, L2-normalised centroid"
    )
    assert describe_variant("CentroBind+intra0.3") == "intra-modal term with weight λ = 0.3"
    assert (
        describe_variant("AllPairs[lr3e-3]") == "AllPairs instead of CentroBind, learning rate 3e-3"
    )
    assert describe_variant("CentroBind[new-thing]") == "'new-thing'"


# ------------------------------------------------------------------------- header


def test_quick_report_says_it_is_a_smoke_run(tmp_path):
    table = {"CentroBind": [30.3], "AllPairs": [29.2]}
    report = render_report(
        _rows(table), _meta(quick=True, seeds=1, epochs=15, patience=15), tmp_path
    )
    top = report.split("## Findings")[0]
    assert "This is a 1-seed, 15-epoch smoke run (`--quick`)" in top
    assert "not the benchmark's results" in top
    assert "Early stopping is off here (patience 15 >= 15 epochs)" in top
    assert "no early stopping (patience 15 >= the epoch budget)" in top
    assert "one seed: no spread estimate" in report.lower()


def test_full_report_has_no_smoke_banner(tmp_path):
    report = render_report(
        _rows({"CentroBind": [1, 2, 3], "AllPairs": [2, 3, 4]}), _meta(), tmp_path
    )
    assert "smoke run" not in report and "not the benchmark's results" not in report
    assert "early stopping with patience 20" in report
    assert "Leave-one-out R@1: for each modality b" in report


def test_report_warns_when_the_epoch_cap_not_early_stopping_ended_most_runs(tmp_path):
    table = {"CentroBind": [1, 2, 3], "AllPairs": [2, 3, 4]}
    capped = render_report(_rows(table, epochs=100), _meta(), tmp_path)
    assert "mfeat/mfeat: 6 of 6 trained runs stopped at the 100-epoch cap" in capped
    rows = _rows(table, epochs=100)
    for r in rows[:4]:
        r["epochs"] = 70
    early = render_report(rows, _meta(), tmp_path)  # 2 of 6 at the cap: no warning
    assert "-epoch cap" not in early


# ------------------------------------------------------------------------- sweeps


def _sweep_rows(seeds: int) -> list[dict]:
    rows = []
    for seed in range(seeds):
        for level, value in ((0.1, 30.0), (4.0, 10.0)):
            rows.append(
                {
                    "suite": "synthetic",
                    "setting": "sweep",
                    "method": "FixedAnchor(m1)",
                    "seed": seed,
                    "noise_m1": level,
                    "R@1": value + seed,
                    "R@1_excl/m1": value + seed,
                }
            )
    return rows


def test_summary_prints_a_sweep_per_level_never_averaged_over_levels():
    text = summary_table(_sweep_rows(1))
    assert "20.0" not in text  # the mean over the two levels
    lines = [ln for ln in text.splitlines() if "sweep" in ln]
    assert len(lines) == 2
    assert "noise_m1=0.1" in lines[0] and lines[0].split()[-2] == "30.0"
    assert "noise_m1=4" in lines[1] and lines[1].split()[-2] == "10.0"
    assert "±" not in "\n".join(lines)
    two = summary_table(_sweep_rows(2))  # the spread shown is over seeds at one level
    assert "30.5 ± 0.7" in two and "10.5 ± 0.7" in two


def test_report_sweep_table_is_per_level(tmp_path):
    rows = _sweep_rows(2)
    for r in rows:
        r["method"] = "CentroBind"
    report = render_report(rows + _sweep_rows(2), _meta(seeds=2), tmp_path)
    assert "| method | m1 noise 0.1 | m1 noise 4 |" in report
    assert "| CentroBind | 30.5 ± 0.7 | 10.5 ± 0.7 |" in report
    assert "synthetic sweep, m1 noise 0.1, R@1 on the pairs without m1" in report


# ------------------------------------------------------------------------- figures


def test_method_colours_are_one_per_method_stable_and_centrobind_variants_stand_apart():
    mfeat = ["CentroBind", "AllPairs", "Symile", "Gram(fac)", "Gram(fac)[official]", "GCCA", "Raw"]
    mfeat += [f"FixedAnchor({k})" for k in MODS]
    main = ["CentroBind", "CentroBind[paper]", "CentroBind[loo]", "CentroBind[learned-scale]"]
    variants = [
        "CentroBind[grad,unnorm]",
        "CentroBind[detach,norm]",
        "CentroBind[grad,norm]",
        "CentroBind[learned-w]",
        "CentroBind[lr3e-3]",
        "CentroBind+intra0.3",
        "CentroBind+intra1.0",
    ]
    assert len({method_color(m) for m in mfeat + main[1:]}) == len(mfeat) + 3
    assert len({method_color(m) for m in variants + main}) == len(variants) + len(main)
    assert method_color("CentroBind") == "#d62728"
    assert method_color("CentroBind[leave-one-out]") == method_color("CentroBind[leave-one-out]")

    def rgb(m: str) -> tuple[int, ...]:
        return tuple(int(method_color(m)[i : i + 2], 16) for i in (1, 3, 5))

    for a in main:  # clearly different: far apart in RGB, all warm (more red than blue)
        assert rgb(a)[0] > rgb(a)[2], a
        for b in main:
            dist = sum((x - y) ** 2 for x, y in zip(rgb(a), rgb(b), strict=True)) ** 0.5
            assert a == b or dist > 90, (a, b)
    assert len({method_color(f"FixedAnchor(m{i})") for i in range(1, 5)}) == 4


def test_excluding_chart_writes_small_multiples(tmp_path):
    table = {f"FixedAnchor({k})": [20 + i, 21 + i] for i, k in enumerate(MODS)}
    table |= {"CentroBind": [40, 41], "AllPairs": [42, 43], "CentroBind[loo]": [44, 45]}
    agg = aggregate(_rows(table))
    path = tmp_path / "x.png"
    excluding_bars(agg, list(table), MODS, path)
    assert path.stat().st_size > 5000


# ------------------------------------------------------------------------- progress


def test_progress_bar_shows_the_running_job_not_the_finished_one():
    bar = JobProgress(["mfeat/A seed 0", "mfeat/B seed 0", "clean/C seed 0"], "t", workers=2)
    assert "starting 2 worker processes" in bar.postfix  # something before the first job
    bar.started(0)
    bar.started(1)
    assert bar.postfix == "running mfeat/A seed 0 (+1 more)"
    bar.finished(0)
    assert bar.postfix == "running mfeat/B seed 0"
    bar.finished(1)
    assert bar.postfix == "waiting for a worker"
    bar.started(1)  # a late announcement of a finished job is ignored
    assert "mfeat/B" not in bar.postfix
    bar.started(2)
    assert bar.postfix == "running clean/C seed 0"
    bar.finished(2)
    assert bar.bar.n == 3 and bar.postfix == "writing the report"
    bar.close()
    serial = JobProgress(["mfeat/A seed 0"], "t", workers=1)
    assert re.search("preparing mfeat/A seed 0", serial.postfix)
    serial.close()


def test_progress_poll_reads_what_workers_announce():
    import multiprocessing as mp
    import time

    events = mp.get_context("spawn").Queue()
    bar = JobProgress(["a", "b"], "t", disable=True, workers=2)
    events.put(1)
    deadline = time.time() + 5
    while not bar.running and time.time() < deadline:
        bar.poll(events)
    assert list(bar.running) == [1] and bar.postfix == "running b"
    bar.close()


def test_a_logit_scale_per_method_gets_a_column_and_no_fixed_scale_claim(tmp_path):
    rows = _rows({"CentroBind": [40, 41, 42]}, logit_scale=7.0) + _rows(
        {"AllPairs": [40, 41, 42]}, logit_scale=5.0
    )
    report = render_report(rows, _meta(), tmp_path)
    assert "fixed logit scale" not in report
    assert "| logit scale |" in report and "| CentroBind | 41.0 ± 1.0 |" in report
    assert "| 7.0 ± 0.0 |" in report


def test_a_full_run_with_one_seed_says_there_is_no_spread_estimate(tmp_path):
    report = render_report(
        _rows({"CentroBind": [1.0], "AllPairs": [2.0]}), _meta(seeds=1), tmp_path
    )
    top = report.split("## Findings")[0]
    assert "With one seed there is no spread estimate" in top and "smoke run" not in top


# ------------------------------------------------------------------------- summary and M-suite


def test_report_opens_with_the_summary_table_of_questions(tmp_path):
    rows = _rows(
        {"CentroBind": [40, 41, 42], "AllPairs": [40.5, 41.5, 42.5], "FixedAnchor(pix)": [30] * 3}
    )
    rows += _rows(
        {"CentroBind": [20, 21, 22], "AllPairs": [20, 21, 22], "FixedAnchor(pix)": [10, 11, 12]},
        suite="missing",
        setting="p=0.6",
        p=0.6,
    )
    report = render_report(rows, _meta(), tmp_path)
    head = report.split("## How it was run")[0]
    assert head.index("## Summary") < head.index("| question | answer | numbers | seeds |")
    line = next(ln for ln in head.splitlines() if ln.startswith("| Beats every fixed anchor?"))
    assert "| yes (mfeat) |" in line and "41.0 ± 1.0 vs FixedAnchor(pix) 30.0 ± 0.0" in line
    assert line.endswith("| 3 |")
    tie = next(ln for ln in head.splitlines() if ln.startswith("| Ties all-pairs?"))
    assert "| tie (mfeat) |" in tie
    miss = next(ln for ln in head.splitlines() if ln.startswith("| Missing modalities?"))
    assert "tie vs AllPairs; ahead vs FixedAnchor(pix)" in miss
    assert report.index("## Summary") < report.index("## Findings") < report.index("## mfeat")


def _m_rows() -> list[dict]:
    rows = []
    for m in (2, 4, 16):
        for meth, r1, ms in (("CentroBind", 50, 1.0), ("AllPairs", 50.5, m / 2), ("Symile", 5, 2)):
            rows.append(
                {
                    "suite": "modalities",
                    "setting": f"weak M={m}",
                    "method": meth,
                    "seed": 0,
                    "M": m,
                    "noise_m1": 2.0,
                    "R@1": r1 - m,
                    "R@1_excl/m1": r1 + 10 - m,
                    "loo_R@1": 40.0,
                    "step_cpu_ms": ms,
                    "step_ms": 2 * ms,
                    "peak_mib": ms * 3,
                    "logit_scale": 3.0,
                    "epochs": 50,
                }
            )
    return rows


def test_m_suite_section_tables_figures_and_the_cost_answer(tmp_path):
    report = render_report(_m_rows(), _meta(seeds=1), tmp_path)
    assert "| method | M=2 | M=4 | M=16 |" in report
    assert "| Symile (leave-one-out) | 40.0 | 40.0 | 40.0 |" in report
    assert "| AllPairs | 1.0 | 2.0 | 8.0 |" in report  # step ms
    for png in ("modalities_weak_quality.png", "modalities_weak_cost.png"):
        assert (tmp_path / png).stat().st_size > 5000
    cost = next(ln for ln in report.splitlines() if ln.startswith("| Cheaper than all-pairs"))
    assert "| yes (M-suite weak) |" in cost
    assert "step CPU time at M=16: 8.0x CentroBind's (M=2: 1.0x)" in cost
    line = _finding(report, "modalities (weak)")
    assert "M=16: +0.5 (w/o m1 +0.5), step 8.0x, memory 8.0x" in line
    assert "AllPairs ahead (one seed: no spread estimate) at M = 2, 4, 16" in line
