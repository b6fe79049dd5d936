"""``centrobind example imu --tiny``, the smoke test its help promises: the whole example runs
through the CLI in this process and its report holds every figure it promises."""

from __future__ import annotations

import json
import re
from pathlib import Path

from reliability_helpers import main_cli

PNG = b"\x89PNG\r\n\x1a\n"


def test_example_imu_tiny_writes_a_report_with_its_figures(tmp_path: Path, capsys) -> None:
    out = tmp_path / "imu"
    rc, stdout, stderr = main_cli(capsys, "example", "imu", "--tiny", "--out", out)
    assert rc == 0, stderr
    assert "Traceback" not in stderr
    report = out / "report.md"
    assert stdout.strip() == f"wrote {report}"
    text = report.read_text()
    res = json.loads((out / "results.json").read_text())

    # the tiny settings of cli._cmd_example
    assert (res["n_train"], res["n_test"], res["epochs"], res["seed"]) == (120, 30, 2, 0)
    assert "120 training and 30 test items, 2 epochs, seed 0" in text
    assert "(chance 16.7%)" in text

    # the tower comparison: one row per IMU tower, every score of results.json, in [0, 100]
    towers = res["towers"]
    assert set(towers) == {"conv1d", "mlp"}
    keys = list(towers["conv1d"])
    assert keys[:3] == [
        "zero-shot text->imu accuracy",
        "imu->caption top-1 same activity",
        "imu->image top-1 same activity",
    ]
    assert "| IMU tower | " + " | ".join(keys) + " |" in text
    for name, scores in towers.items():
        assert list(scores) == keys
        assert all(0 <= scores[k] <= 100 for k in keys[:3]), scores
        assert scores["train seconds"] > 0
        assert f"| {name} | " + " | ".join(f"{scores[k]:.1f}" for k in keys) + " |" in text

    # the kept pretrained space: stage 2 bound through stage 1's pictures, and the control
    ps = res["pretrained_space"]
    metrics = list(ps["control"])
    assert metrics == keys[:3]
    for row, key in (("from stage 1, frozen", "bound"), ("random, frozen (control)", "control")):
        assert all(0 <= ps[key][m] <= 100 for m in metrics), ps[key]
        assert f"| {row} | " + " | ".join(f"{ps[key][m]:.1f}" for m in metrics) + " |" in text
    zs = "zero-shot text->imu accuracy"
    assert (
        f"Zero-shot text -> IMU: {ps['bound'][zs]:.1f}% bound vs {ps['control'][zs]:.1f}% control."
        in text
    )

    # the two figures the report shows exist and are PNG images
    shown = re.findall(r"!\[[^]]*\]\(([^)]+)\)", text)
    assert shown == ["imu_examples.png", "imu_results.png"]
    for name in shown:
        assert (out / name).read_bytes()[:8] == PNG, name
    # the five runs it trains are real run folders
    for run in ("imu-conv1d", "imu-mlp", "space-stage1", "space-stage2", "space-control"):
        assert (out / "runs" / run / "model.safetensors").is_file(), run
