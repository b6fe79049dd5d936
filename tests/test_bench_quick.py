"""Smoke: `centrobind benchmark --quick` writes a complete report, results.json and results.csv."""

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
            "--out",
            str(out),
            "--quiet",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    results = json.loads((out / "results.json").read_text())
    rows = results["rows"]
    suites = {(r["suite"], r["setting"]) for r in rows}
    assert {
        ("mfeat", "mfeat"),
        ("synthetic", "clean"),
        ("synthetic", "weak-anchor"),
        ("synthetic", "sweep"),
        ("missing", "p=0.0"),
        ("missing", "p=0.6"),
    } <= suites
    methods = {r["method"] for r in rows if r["suite"] == "mfeat"}
    for m in (
        "CentroBind",
        "CentroBind[paper]",
        "CentroBind[loo]",
        "CentroBind[learned-scale]",
        "AllPairs[learned-scale]",
        "AllPairs",
        "Symile",
        "Gram(fac)",
        "GCCA",
        "Raw",
        *(f"FixedAnchor({v})" for v in ("fac", "fou", "kar", "mor", "pix", "zer")),
    ):
        assert m in methods, m
    for r in rows:
        if r["method"] != "Raw":
            assert math.isfinite(r["R@1"]) and 0 <= r["R@1"] <= 100, r
        assert r["seconds"] >= 0
    # the temperature protocol: every binding row carries the scale chosen on validation
    from centrobind.bench.suites import QUICK_SCALE_GRID

    meta = results["meta"]
    assert meta["reference_method"] == "CentroBind"
    for r in rows:
        if r["method"] in ("CentroBind", "AllPairs", "CentroBind[paper]") or r["method"].startswith(
            "FixedAnchor("
        ):
            assert r["logit_scale"] in QUICK_SCALE_GRID, r["method"]
            assert math.isfinite(r["val_metric"])
        if r["method"] in ("GCCA", "Raw"):
            assert "logit_scale" not in r
    grid = {(g["method"], tuple(g["data"])): g for g in meta["logit_scale_grid"]}
    cb = grid[("CentroBind", ("mfeat",))]
    best = max(v for v in cb["val_metric"].values())
    assert cb["val_metric"][f"{cb['chosen']:g}"] == best
    mf = [r for r in rows if r["suite"] == "mfeat" and r["setting"] == "mfeat"]
    learned = next(r for r in mf if r["method"] == "CentroBind[learned-scale]")
    fixed = next(r for r in mf if r["method"] == "CentroBind")
    assert learned["logit_scale"] == fixed["logit_scale"] == cb["chosen"]
    assert learned["logit_scale_final"] <= 2 * learned["logit_scale"] + 1e-6
    with (out / "results.csv").open() as f:
        assert len(list(csv.DictReader(f))) == len(rows)
    report = (out / "report.md").read_text()
    for needle in (
        "## Findings",
        "validation split",
        "## mfeat",
        "## synthetic",
        "## missing modalities",
        "excluding_view.png",
        "pair_heatmaps.png",
        "synthetic_sweep.png",
        "missing.png",
    ):
        assert needle in report, needle
    for png in ("excluding_view.png", "pair_heatmaps.png", "synthetic_sweep.png", "missing.png"):
        assert (out / png).stat().st_size > 5000, png
    _check_resume(out, rows, results["meta"])


def test_benchmark_cell_is_deterministic_and_seed_dependent():
    import dataclasses

    from centrobind.bench.methods import Method
    from centrobind.bench.suites import BenchSettings, Job

    base = dataclasses.replace(BenchSettings.make(None, quick=True).train_config(), epochs=3)
    job = Job("synthetic", "clean", Method("CentroBind"), 0, ("synthetic", 0.1, 300), probe_tasks=1)
    a, b = job.run(base), job.run(base)
    c = dataclasses.replace(job, seed=1).run(base)
    a.pop("seconds"), b.pop("seconds"), c.pop("seconds")
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
        [sys.executable, "-m", "centrobind.cli", "benchmark", "--quick", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    again = json.loads((out / "results.json").read_text())
    assert again["meta"]["runs_in_record_at_start"] == len(kept)
    assert "runs reused from" in proc.stdout
    strip = [{k: v for k, v in r.items() if k != "seconds"} for r in rows]
    assert [{k: v for k, v in r.items() if k != "seconds"} for r in again["rows"]] == strip
    assert len(record.read_text().splitlines()) == len(kept) + 1 + 5  # the torn line stays
