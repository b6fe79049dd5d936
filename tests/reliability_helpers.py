"""Shared helpers of the tests/test_reliability_*.py modules (issue 12): run the CLI as a user
would, and check that a refusal is exactly one ``error:`` line with exit code 2."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
from safetensors.torch import load_file

from centrobind.featurize import Encoder, register_encoder

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


def inproc(*args: object) -> tuple[int, str, str]:
    """``centrobind.cli.main(ARGS)`` in this process, its stdout and stderr captured:
    ``(returncode, stdout, stderr)``, as :func:`cli` gives for a fresh process, without the
    interpreter and torch start-up. For refusals and quick runs; anything that needs a process
    of its own (locks held by another process, signals, a patched module) uses :func:`cli`."""
    import contextlib
    import io

    from centrobind.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            rc = main([str(a) for a in args])
        except SystemExit as e:  # argparse
            rc = int(e.code or 0)
    return rc, out.getvalue(), err.getvalue()


def main_cli(capsys: Any, *args: object) -> tuple[int, str, str]:
    """``centrobind.cli.main(ARGS)`` in this process (no interpreter start-up, and encoders
    registered here are known): ``(returncode, stdout, stderr)``."""
    from centrobind.cli import main

    capsys.readouterr()
    try:
        rc = main([str(a) for a in args])
    except SystemExit as e:  # argparse
        rc = int(e.code or 0)
    out, err = capsys.readouterr()
    return rc, out, err


class CharsEncoder(Encoder):
    """A test text encoder (no model to load): a 16-bin histogram of character codes."""

    spec, kind, dim, version, options = "chars", "text", 16, "chars/1", {}

    def forward(self, prepared: list[Any]) -> np.ndarray:
        out = np.zeros((len(prepared), self.dim), np.float32)
        for i, text in enumerate(prepared):
            for ch in text:
                out[i, ord(ch) % self.dim] += 1.0
        return out / np.maximum(out.sum(axis=1, keepdims=True), 1.0)


register_encoder("chars", lambda arg, **kw: CharsEncoder())


def featurized(root: Path, n: int = 24, image: str = "pixels:4", **options: Any) -> Path:
    """Raw captions + PNG images (``featurize_helpers.make_raw``) featurized into ``root/ds``
    (text ``chars``, ``image`` for the images, label ``colour``); returns the dataset folder."""
    from centrobind.featurize import featurize
    from featurize_helpers import make_raw, write_manifest

    rows = make_raw(root / "raw", n=n)
    cols = ("caption", "image", "colour")
    man = write_manifest(root / "raw" / "m.csv", [{c: r[c] for c in cols} for r in rows])
    featurize(
        man,
        root / "ds",
        encoders={"caption": "chars", "image": image},
        labels=["colour"],
        progress=False,
        **options,
    )
    return root / "ds"


_CORPUS: list[tuple[Path, Path]] = []


def corpus_and_run() -> tuple[Path, Path]:
    """A featurized corpus (:func:`featurized`, 24 rows) and a run trained on it, built once
    per test process in a temporary folder (removed at exit). Tests copy before they change
    anything."""
    if not _CORPUS:
        import atexit
        import shutil
        import tempfile

        from centrobind.cli import main

        root = Path(tempfile.mkdtemp(prefix="centrobind-corpus-"))
        atexit.register(shutil.rmtree, root, ignore_errors=True)
        corpus = featurized(root, n=24)
        assert main(["train", "--data", str(corpus), "--out", str(root / "run"), *FAST]) == 0
        _CORPUS.append((corpus, root / "run"))
    return _CORPUS[0]
