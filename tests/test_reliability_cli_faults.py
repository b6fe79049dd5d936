"""Issue 19 item 5, through the CLI in this process (``centrobind.cli.main``): a damaged benchmark
record and a TensorBoard folder that cannot be written. Each is a clean line, never a
traceback."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import pytest

from centrobind.bench.base import Suite
from centrobind.bench.jobs import Job, synthetic_key
from centrobind.bench.methods import Method
from centrobind.bench.suites import SUITES
from centrobind.data import make_synthetic, save_dataset
from reliability_helpers import error_line, main_cli


class _RawSuite(Suite):
    """Three untrained jobs ("Raw": scores of the raw features) on small synthetic data: the
    benchmark's whole path (output folder, record, report) in about a second."""

    name = "reliability-raw"

    def jobs(self, s):
        for seed in range(3):
            data = synthetic_key(0.1, 200)
            yield Job(self.name, "clean", Method("Raw", kind="raw"), seed, data, loo=False)


PROBE = "probe/shared/fused"  # a score a Raw job records (linear probe of the shared factor, %)


def _rows(out: Path) -> list[dict]:
    return json.loads((out / "results.json").read_text())["rows"]


def test_a_damaged_benchmark_record_is_one_warning_line_and_redone(tmp_path, capsys, monkeypatch):
    """A runs.jsonl record whose result was edited (a number, or its type) or that is not UTF-8
    once raised AttributeError / UnicodeDecodeError. It is one ``warning:`` line naming the
    lines, and those runs are redone: the edited numbers never reach the results."""
    suite = _RawSuite()
    monkeypatch.setitem(SUITES, suite.name, suite)
    out = tmp_path / "bench"
    args = ["benchmark", "--suite", suite.name, "--out", out, "--workers", "1", "--quiet"]
    rc, _, err = main_cli(capsys, *args)
    assert rc == 0 and err == "", err
    first = _rows(out)
    assert len(first) == 3 and all(r[PROBE] < 99 for r in first)

    record = out / "runs.jsonl"
    lines = record.read_bytes().splitlines(keepends=True)
    assert len(lines) == 3
    number = f'"{PROBE}": {json.dumps(first[0][PROBE])}'.encode()
    assert number in lines[0]
    lines[0] = lines[0].replace(number, f'"{PROBE}": 99.5'.encode())  # a number edited
    key = json.loads(lines[1])["key"]  # the result replaced by another type
    lines[1] = json.dumps({"key": key, "result": [1, 2], "check": "0"}).encode() + b"\n"
    lines[2] = b"\xff\xfe" + lines[2]  # not UTF-8
    record.write_bytes(b"".join(lines))

    rc, _, err = main_cli(capsys, *args)
    assert rc == 0, err
    assert "Traceback" not in err and "error:" not in err, err
    assert err.count("\n") == 1 and err.startswith("warning: "), err
    assert f"{record}: 3 line(s) are not records the benchmark wrote" in err
    assert "line 1, 2, 3); their runs are redone" in err
    again = _rows(out)
    assert again == [{**r, "seconds": a["seconds"]} for r, a in zip(first, again, strict=True)]
    assert "99.5" not in (out / "results.csv").read_text()
    assert len(record.read_bytes().splitlines()) == 6  # the three runs, redone, recorded again


@pytest.fixture
def run(tmp_path, capsys):
    data = tmp_path / "synth"
    save_dataset(make_synthetic(n_samples=120, n_modalities=3, dims=[10, 8, 6], seed=0), data)
    out = tmp_path / "run"
    args = ["--epochs", "1", "--batch-size", "32", "--warmup-steps", "1", "--quiet"]
    rc, _, err = main_cli(capsys, "train", "--data", data, "--out", out, *args)
    assert rc == 0, err
    return data, out


def _unwritable_folder(tmp_path: Path) -> Path:
    """A folder that exists but takes no new file, for this user: a read-only folder; as root
    (whom permissions do not stop) a sysfs folder, where no one can create files."""
    if os.geteuid() != 0:
        folder = tmp_path / "read-only"
        folder.mkdir()
        folder.chmod(0o555)
        return folder
    folder = Path("/sys/kernel")
    if not folder.is_dir():
        pytest.skip(
            "as root this test needs /sys/kernel (sysfs) to have a folder root cannot write"
        )
    return folder


def test_tensorboard_on_a_folder_that_takes_no_file_is_one_line(run, tmp_path, capsys, monkeypatch):
    """``--tensorboard`` where ``tensorboard/`` exists but cannot be written once printed the
    writer thread's traceback and a ``b'...'`` file name. The probe refuses it in one line before
    the writer starts (a file in the way of the folder is the other case:
    test_reliability_tracebacks.py::test_tensorboard_that_cannot_be_written_is_one_line)."""
    data, out = run
    (out / "tensorboard").symlink_to(_unwritable_folder(tmp_path), target_is_directory=True)
    args = ["train", "--data", data, "--out", out, "--resume", "--tensorboard", "--quiet"]
    failed: list[BaseException | None] = []  # exceptions of threads (printed as tracebacks)
    monkeypatch.setattr(threading, "excepthook", lambda a: failed.append(a.exc_value))
    before = set(threading.enumerate())
    rc, _, err = main_cli(capsys, *args)
    for t in set(threading.enumerate()) - before:  # a writer thread would fail soon after
        t.join(timeout=5)
    assert failed == []
    line = error_line(rc, err, "--tensorboard: cannot write to", "tensorboard (")
    assert "b'" not in line and "Errno" not in line
    assert line.endswith(("(Permission denied)", "(Read-only file system)")), line
