"""Smoke: `centrobind benchmark --quick --full` writes a complete report, results.json and
results.csv; the main job (the default) runs cells of the full protocol."""

import csv
import json
import math
import subprocess
import sys


def test_quick_benchmark_writes_complete_report(tmp_path):
    out = tmp_path / "bench"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "centrobind.cli",
            "benchmark",
            "--quick",
            "--full",
            "--out",
            str(out),
            "--quiet",
        ],
        capture_output=True,
        text=True,
        timeout=1500,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    results = json.loads((out / "results.json").read_text())
    rows = results["rows"]
    suites = {(r["suite"], r["setting"]) for r in rows}
    assert {
        ("mfeat", "mfeat"),
        ("synthetic", "clean"),
        ("synthetic", "weak-anchor"),
        ("missing", "p=0.0"),
        ("missing", "p=0.6"),
        ("modalities", "weak M=8"),
    } <= suites
    assert {"modalities"} <= {r["suite"] for r in rows}
    methods = {r["method"] for r in rows if r["suite"] == "mfeat"}
    for m in (
        "CentroBind",
        "CentroBind[paper]",
        "CentroBind[loo]",
        "AllPairs",
        "Symile",
        "Gram(fac)",
        "Gram(fac)[official]",
        "GCCA",
        "Raw",
        *(f"FixedAnchor({v})" for v in ("fac", "fou", "kar", "mor", "pix", "zer")),
    ):
        assert m in methods, m
    for r in rows:
        if r["method"] != "Raw":
            assert math.isfinite(r["R@1"]) and 0 <= r["R@1"] <= 100, r
        assert r["seconds"] >= 0
    # the published scales: no grid, every binding row at the committed full run's choice
    meta = results["meta"]
    assert meta["reference_method"] == "CentroBind" and meta["plan"] == "full"
    assert meta["logit_scales"] == "published" and meta["grid_runs"] == 0
    mf = {r["method"]: r for r in rows if r["suite"] == "mfeat" and r["setting"] == "mfeat"}
    assert mf["CentroBind"]["logit_scale"] == 7.0 and mf["AllPairs"]["logit_scale"] == 10.0
    official = mf["Gram(fac)[official]"]
    assert "logit_scale" not in official and official["logit_scale_final"] > 0
    for r in rows:
        if r["method"] in ("GCCA", "Raw"):
            assert "logit_scale" not in r
    m_rows = [r for r in rows if r["suite"] == "modalities"]
    assert {r["M"] for r in m_rows} == {2, 4, 8}
    assert all(r["step_ms"] > 0 and r["step_cpu_ms"] > 0 and r["peak_mib"] > 0 for r in m_rows)
    with (out / "results.csv").open() as f:
        assert len(list(csv.DictReader(f))) == len(rows)
    report = (out / "report.md").read_text()
    for needle in (
        "## Summary",
        "## Findings",
        "published logit scale",
        "## mfeat",
        "## synthetic",
        "## missing modalities",
        "excluding_view.png",
        "pair_heatmaps.png",
        "missing.png",
        "modalities_weak_cost.png",
    ):
        assert needle in report, needle
    for png in ("excluding_view.png", "pair_heatmaps.png", "missing.png"):
        assert (out / png).stat().st_size > 5000, png
    _check_resume(out, rows, results["meta"])


def test_benchmark_cell_is_deterministic_and_seed_dependent():
    import dataclasses

    from centrobind.bench.jobs import BenchSettings, Job
    from centrobind.bench.methods import Method

    base = dataclasses.replace(BenchSettings.make(None, quick=True).train_config(), epochs=3)
    job = Job("synthetic", "clean", Method("CentroBind"), 0, ("synthetic", 0.1, 300), probe_tasks=1)
    a, b = job.run(base), job.run(base)
    c = dataclasses.replace(job, seed=1).run(base)
    for r in (a, b, c):  # timings are the only values a rerun may change
        for k in ("seconds", "step_ms", "step_cpu_ms"):
            r.pop(k, None)
    assert a == b
    assert a["R@1"] != c["R@1"]


def _check_resume(out, rows, meta):
    """An interrupted benchmark resumes: the same command redoes only the runs not recorded in
    runs.jsonl (a line cut short included) and gives the same rows."""
    record = out / "runs.jsonl"
    lines = record.read_text().splitlines()
    assert len(lines) == meta["runs"]
    kept = lines[:-5]
    record.write_text("\n".join(kept) + "\n" + lines[-5][: len(lines[-5]) // 2])
    proc = subprocess.run(
        [
            sys.executable,
            *("-m", "centrobind.cli", "benchmark", "--quick", "--full", "--out", str(out)),
        ],
        capture_output=True,
        text=True,
        timeout=1500,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    again = json.loads((out / "results.json").read_text())
    assert again["meta"]["runs_in_record_at_start"] == len(kept)
    assert "runs reused from" in proc.stdout
    timings = ("seconds", "step_ms", "step_cpu_ms")  # the only values a rerun may change
    strip = [{k: v for k, v in r.items() if k not in timings} for r in rows]
    assert [{k: v for k, v in r.items() if k not in timings} for r in again["rows"]] == strip
    assert len(record.read_text().splitlines()) == len(kept) + 1 + 5  # the torn line stays


def test_a_registered_suite_runs_at_published_scales_or_chooses_its_own(tmp_path):
    """A new suite plugs in with register_suite; its methods get the published scale where one
    exists for their data, and --choose-scales runs the seed-0 grid instead."""
    import dataclasses

    from centrobind.bench import run_benchmark
    from centrobind.bench.base import Suite
    from centrobind.bench.jobs import Job, synthetic_key
    from centrobind.bench.methods import Method
    from centrobind.bench.suites import SUITES, register_suite

    class Tiny(Suite):
        name = "tiny"

        def jobs(self, s):
            job = Job("tiny", "clean", Method("CentroBind"), 0, synthetic_key(0.1, 300))
            yield dataclasses.replace(job, probe_tasks=0, loo=False, epochs=3)

    register_suite(Tiny())
    try:
        rows = run_benchmark("tiny", quick=True, out=tmp_path / "a", quiet=True, workers=1)
        assert rows[0]["logit_scale"] == 3.0  # the weak/clean synthetic choice, published
        chosen = run_benchmark(
            "tiny", quick=True, out=tmp_path / "b", quiet=True, workers=1, choose_scales=True
        )
    finally:
        del SUITES["tiny"]
    meta = json.loads((tmp_path / "b" / "results.json").read_text())["meta"]
    assert meta["logit_scales"] == "chosen" and meta["grid_runs"] == 2
    (grid,) = meta["logit_scale_grid"]
    best = max(grid["val_metric"].values())
    assert grid["val_metric"][f"{grid['chosen']:g}"] == best
    assert chosen[0]["logit_scale"] == grid["chosen"]
    assert "## tiny" in (tmp_path / "b" / "report.md").read_text()


def _plan(full: bool, quick: bool = False) -> dict:
    from centrobind.bench.jobs import BenchSettings
    from centrobind.bench.suites import suite_jobs

    s = BenchSettings.make(None, quick=quick, full=full)
    return {(j.suite, j.setting, j.method.name, j.seed): j for j in suite_jobs("all", s)}


def test_the_main_job_runs_full_protocol_cells_and_the_m_suite_cost():
    """Every trained cell of the default main job is a cell of the full protocol (same data,
    seed, budget and evaluation: with the same scale, the same numbers); the M-suite's cells
    measure the step cost without training; --full adds the studies the main job leaves out."""
    import dataclasses

    for quick in (False, True):
        main, full = _plan(False, quick), _plan(True, quick)
        assert len(main) < len(full)
        for key, job in main.items():
            if job.suite == "modalities":
                assert not job.train and job.memory and full[key].train
                assert dataclasses.replace(job, train=True) == full[key]
            else:
                assert job == full[key]
        left_out = {(k[0], k[1].split(" ")[0], k[2]) for k in full.keys() - main.keys()}
        assert ("missing", "p=0.6", "CentroBind") in left_out
        assert ("synthetic", "clean", "CentroBind") in left_out
        assert ("mfeat", "mfeat", "CentroBind[paper]") in left_out
        assert ("mfeat", "mfeat", "Gram(fac)[official]") in left_out
    main = _plan(False)
    assert {k[3] for k in main} == {0, 1, 2}
    mfeat = {k[2] for k in main if k[0] == "mfeat"}
    assert {"CentroBind", "AllPairs", "Symile", "Gram(fac)", "GCCA", "Raw"} <= mfeat
    assert {f"FixedAnchor({v})" for v in ("fac", "fou", "kar", "mor", "pix", "zer")} <= mfeat
    assert {k[1] for k in main if k[0] == "synthetic"} == {"weak-anchor"}
    assert not any(k[0] == "missing" for k in main)
    # one suite by name runs its whole protocol
    from centrobind.bench.jobs import BenchSettings

    assert BenchSettings.make(None, quick=False, extended=True).full


def test_a_cost_only_cell_measures_the_step_and_its_report_section(tmp_path):
    from centrobind.bench.jobs import BenchSettings, Job, synthetic_key
    from centrobind.bench.methods import Method
    from centrobind.bench.report import render_report

    base = BenchSettings.make(None, quick=True).train_config()
    rows = []
    for m in (2, 4):
        for method in (Method("CentroBind"), Method("AllPairs", objective="all_pairs")):
            job = Job(
                "modalities", f"weak M={m}", method.with_scale(3.0), 0,
                synthetic_key(2.0, 300, m), extra=(("M", m),), probe_tasks=0, memory=True,
                train=False,
            )  # fmt: skip
            r = job.run(base)
            assert r["epochs"] == 0 and "R@1" not in r and r["step_cpu_ms"] > 0 < r["peak_mib"]
            rows.append({**r, "M": m, "logit_scale": 3.0})
    ap = {r["M"]: r["peak_mib"] for r in rows if r["method"] == "AllPairs"}
    cb = {r["M"]: r["peak_mib"] for r in rows if r["method"] == "CentroBind"}
    assert ap[4] / cb[4] > ap[2] / cb[2]  # M(M-1)/2 terms against M
    meta = {
        "command": "test", "seeds": 1, "quick": True, "epochs": 15, "synthetic_epochs": 15,
        "patience": 15, "batch_size": 256, "embed_dim": 64, "lr": 1e-3, "plan": "main",
        "machine": "test", "wall_seconds": 1.0, "reference_method": "CentroBind",
    }  # fmt: skip
    report = render_report(rows, meta, tmp_path)
    assert "### weak: cost only (1 seed per M)" in report and "Plan: the main job" in report
    assert "Mean R@1" not in report
    assert (tmp_path / "modalities_weak_cost.png").stat().st_size > 5000
