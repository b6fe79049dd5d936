"""``centrobind inspect``: a readable summary for good data, ONE clean error line for bad data.

Every case runs ``python -m centrobind.cli inspect ...`` in a real subprocess; the processes are
started together (one pool per module) so the torch imports overlap. Each process costs about a
second (importing torch), so the CLI covers the kinds of bad input listed in the data spec; the
remaining cases of ``BAD_CASES`` are checked in-process by ``test_data_disk.py``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from test_data_disk import BAD_CASES

CLI_CASE_IDS = {
    "missing_folder",
    "no_modalities_dir",
    "one_modality",
    "row_mismatch",
    "object_array",
    "features_1d",
    "features_3d",
    "partial_nan_row",
    "label_wrong_length",
    "label_float_nonint",
    "all_missing",
    "empty_dataset",
    "split_out_of_range",
    "truncated_npy",
}
CASES = [c for c in BAD_CASES if c[0] in CLI_CASE_IDS]


def _inspect(target: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "centrobind.cli", "inspect", target],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=120,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> dict[str, subprocess.CompletedProcess]:
    jobs: dict[str, str] = {}
    for case_id, build, _ in CASES:
        jobs[case_id] = str(build(tmp_path_factory.mktemp(case_id)))
    jobs["mfeat"] = "mfeat"
    jobs["unknown_name"] = "no_such_dataset_xyz"
    cwd = tmp_path_factory.mktemp("cwd")
    with ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 2)) as pool:
        futures = {k: pool.submit(_inspect, v, cwd) for k, v in jobs.items()}
        return {k: f.result() for k, f in futures.items()}


def test_cli_cases_exist():
    assert len(CASES) == len(CLI_CASE_IDS)


@pytest.mark.parametrize(
    "case_id, needles", [(c[0], c[2]) for c in CASES], ids=[c[0] for c in CASES]
)
def test_inspect_bad_folder_one_line_error(results, case_id, needles):
    proc = results[case_id]
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: ")
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    assert proc.stdout == ""


def test_inspect_unknown_name_lists_builtins(results):
    proc = results["unknown_name"]
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert len(proc.stderr.splitlines()) == 1
    assert "no_such_dataset_xyz" in proc.stderr and "mfeat" in proc.stderr
    assert "synthetic" in proc.stderr


def test_inspect_mfeat(results):
    proc = results["mfeat"]
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "mfeat" in out and "2000" in out
    for view, dim in {"fac": 216, "fou": 76, "kar": 64, "mor": 6, "pix": 240, "zer": 47}.items():
        rows = [r.split() for r in out.splitlines() if r.split()[:1] == [view]]
        assert len(rows) == 1 and rows[0][1:3] == [str(dim), "2000"], (view, out)
    assert "digit" in out and "10" in out
