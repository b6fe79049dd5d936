"""Shared helpers of the tests/test_reliability_*.py modules (issue 12): run the CLI as a user
would, and check that a refusal is exactly one ``error:`` line with exit code 2."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from safetensors.torch import load_file

FAST = ["--epochs", "3", "--warmup-steps", "2", "--batch-size", "32", "--quiet"]


def cli(*args: object, timeout: float = 600, env: dict | None = None) -> tuple[int, str, str]:
    """``python -m centrobind.cli ARGS`` in a fresh process: ``(returncode, stdout, stderr)``."""
    full_env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    proc = subprocess.run(
        [sys.executable, "-m", "centrobind.cli", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=full_env,
    )
    return proc.returncode, proc.stdout, proc.stderr


def error_line(rc: int, stderr: str, *needles: str) -> str:
    """Assert a refusal: exit 2, no traceback, one ``error:`` line (``warning:`` lines aside)
    containing every needle; return that line."""
    assert "Traceback" not in stderr, stderr
    lines = [ln for ln in stderr.strip().splitlines() if not ln.startswith("warning:")]
    assert rc == 2, (rc, stderr)
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


def train(data: Path | str, out: Path, *extra: object) -> tuple[int, str, str]:
    return cli("train", "--data", data, "--out", out, *FAST, *extra)


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (relative path -> bytes), to prove nothing changed."""
    return {
        str(p.relative_to(folder)): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and not p.is_symlink()
    }


def weights(path: Path) -> dict:
    return load_file(str(path))
