"""``centrobind inspect``: a readable summary for good data, ONE clean error line for bad data.

Every case runs ``python -m centrobind.cli inspect ...`` in a real subprocess; the processes are
started together (one pool per module). A malformed folder is reported before torch is imported,
so each error case costs ~0.15 s; only ``inspect mfeat`` pays for the torch import.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest


def _sibling(name: str):
    """Import a sibling test module by path (works with any pytest import mode)."""
    spec = importlib.util.spec_from_file_location(
        f"_cli_{Path(name).stem}", Path(__file__).with_name(name)
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


BAD_CASES = _sibling("test_data_disk.py").BAD_CASES


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
    for case_id, build, _ in BAD_CASES:
        jobs[case_id] = str(build(tmp_path_factory.mktemp(case_id)))
    jobs["mfeat"] = "mfeat"
    jobs["unknown_name"] = "no_such_dataset_xyz"
    cwd = tmp_path_factory.mktemp("cwd")
    with ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 2)) as pool:
        futures = {k: pool.submit(_inspect, v, cwd) for k, v in jobs.items()}
        return {k: f.result() for k, f in futures.items()}


@pytest.mark.parametrize(
    "case_id, needles", [(c[0], c[2]) for c in BAD_CASES], ids=[c[0] for c in BAD_CASES]
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


@pytest.mark.parametrize("case_id", ["missing_folder", "partial_nan_row", "split_duplicate"])
def test_bad_folder_is_reported_before_importing_torch(tmp_path, case_id):
    build = next(c[1] for c in BAD_CASES if c[0] == case_id)
    folder = build(tmp_path)
    code = (
        "import sys\n"
        "from centrobind.data import load\n"
        "from centrobind.errors import DatasetError\n"
        "try:\n"
        f"    load({str(folder)!r})\n"
        "except DatasetError:\n"
        "    print('error')\n"
        "print('torch' in sys.modules)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["error", "False"]
