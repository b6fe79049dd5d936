"""Issue 12, class 1: never lose or corrupt what the user owns (through the CLI)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from centrobind.cli import main
from centrobind.data import make_synthetic, save_dataset
from centrobind.runlock import LOCK_NAME, RunLock
from reliability_helpers import (
    FAST,
    cli,
    error_line,
    featurized,
    main_cli,
    snapshot,
    train,
    weights,
)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "synth"
    save_dataset(make_synthetic(n_samples=200, n_modalities=3, dims=[10, 8, 6], seed=0), path)
    return path


@pytest.fixture(scope="module")
def run(data, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "run"
    rc, _, err = train(data, out)
    assert rc == 0, err
    return out


def _main(*args: object) -> int:
    return main([str(a) for a in args])


# ------------------------------------------------------------------- train --out


def test_train_refuses_a_non_empty_folder_that_is_not_a_run(data, tmp_path):
    mine = tmp_path / "results"
    mine.mkdir()
    (mine / "log.csv").write_text("my precious log\n")
    (mine / "metrics.json").write_text('{"mine": 1}')
    before = sorted(os.listdir(mine)), snapshot(mine)
    rc, _, err = train(data, mine)
    error_line(rc, err, "not empty and not a run folder", "log.csv")
    assert (sorted(os.listdir(mine)), snapshot(mine)) == before  # not even a .lock


def test_train_refuses_a_new_run_inside_a_run(data, run):
    rc, _, err = train(data, run / "checkpoints" / "nested")
    error_line(rc, err, "inside the run folder")
    assert not (run / "checkpoints" / "nested").exists()


def test_evaluate_never_writes_into_a_folder_that_is_not_a_run(tmp_path, capsys):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("x")
    rc, _, err = main_cli(capsys, "evaluate", "--run", mine)
    error_line(rc, err, "not a run folder")
    assert sorted(os.listdir(mine)) == ["notes.txt"]  # no .lock, no metrics.json


# ------------------------------------------------------------------- embed --out


def _refuse_embed(capsys, run: Path, data: Path, out: Path, *needles: str) -> None:
    before = snapshot(run)
    rc, _, err = main_cli(capsys, "embed", "--run", run, "--data", data, "--out", out)
    error_line(rc, err, *needles)
    assert snapshot(run) == before


def test_embed_refuses_the_runs_own_files(run, data, capsys):
    _refuse_embed(capsys, run, data, run / "model.safetensors", ".npz file name")
    _refuse_embed(capsys, run, data, run / "checkpoints" / "latest.safetensors", ".npz file name")
    _refuse_embed(capsys, run, data, run / "emb.npz", "inside the run folder")
    _refuse_embed(capsys, run, data, run / "checkpoints" / "emb.npz", "inside the run folder")
    assert not (run / "emb.npz").exists()


def test_embed_refuses_non_regular_targets(run, data, tmp_path, capsys):
    null = tmp_path / "null.npz"
    null.symlink_to("/dev/null")
    _refuse_embed(capsys, run, data, null, "character device")
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode)
    fifo = tmp_path / "pipe.npz"
    os.mkfifo(fifo)
    _refuse_embed(capsys, run, data, fifo, "named pipe")
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
    folder = tmp_path / "folder.npz"
    folder.mkdir()
    _refuse_embed(capsys, run, data, folder, "is a folder")
    dangling = tmp_path / "dangling.npz"
    dangling.symlink_to(tmp_path / "missing" / "x.npz")
    _refuse_embed(capsys, run, data, dangling, "dangling or looping symlink")
    into_run = tmp_path / "into_run.npz"
    into_run.symlink_to(run / "model.safetensors")
    _refuse_embed(capsys, run, data, into_run, "inside the run folder")


def test_embed_writes_npz_only(run, data, tmp_path, capsys):
    _refuse_embed(capsys, run, data, tmp_path / "emb.npy", ".npz file name")
    assert _main("embed", "--run", run, "--data", data, "--out", tmp_path / "emb.npz") == 0
    assert np.load(tmp_path / "emb.npz")["m1"].shape == (200, 64)


def test_a_modality_named_fused_is_kept(tmp_path):
    from centrobind.runs import FUSED_KEY

    ds = make_synthetic(n_samples=120, n_modalities=2, dims=[6, 5], pair=None, seed=0)
    ds = type(ds)(
        {"fused": ds.features["m1"], "b": ds.features["m2"]}, mask=ds.mask, labels=ds.labels
    )
    save_dataset(ds, tmp_path / "d")
    out = tmp_path / "run"
    assert _main("train", "--data", tmp_path / "d", "--out", out, *FAST) == 0
    assert _main("embed", "--run", out, "--data", tmp_path / "d", "--out", tmp_path / "e.npz") == 0
    arrays = np.load(tmp_path / "e.npz")
    assert set(arrays.files) == {"fused", "b", FUSED_KEY}
    from centrobind.runs import load_run

    r = load_run(out)
    x = r.standardizer.apply(ds).features["fused"] if r.standardizer else ds.features["fused"]
    expected = r.binder.embed("fused", x).numpy()
    np.testing.assert_allclose(arrays["fused"], expected, atol=1e-5)  # the modality, unreplaced
    assert not np.allclose(arrays["fused"], arrays[FUSED_KEY], atol=1e-3)


# ------------------------------------------------------------------- lock


def _wait_for_holder(run: Path, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        lock = run / LOCK_NAME
        if lock.is_file() and f'"pid": {proc.pid}' in lock.read_text():
            return
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.05)
    raise AssertionError("the first training never took the lock")


def test_two_trainings_into_one_folder(data, tmp_path):
    out = tmp_path / "run"
    first = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "centrobind.cli",
            "train",
            "--data",
            str(data),
            "--out",
            str(out),
            *FAST[:-1],
            "--epochs",
            "100000",  # still running when the second one starts
            "--quiet",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    try:
        _wait_for_holder(out, first)
        t0 = time.monotonic()
        rc, _, err = train(data, out, "--seed", "5")
        line = error_line(rc, err, "in use by another process", f"pid {first.pid}", "UTC")
        assert "train" in line
        rc, _, err = cli("train", "--data", data, "--out", out, "--resume", "--quiet")
        error_line(rc, err, "in use by another process")
        rc, _, err = cli("evaluate", "--run", out)  # writes metrics.json: locked out too
        error_line(rc, err, "in use by another process")
        assert time.monotonic() - t0 < 120  # refused at once, not after waiting
        assert json.loads((out / "config.json").read_text())["seed"] == 0  # the first one's
        assert first.poll() is None
    finally:
        first.send_signal(signal.SIGKILL)  # a crash: the kernel releases the lock
        first.wait()
    with RunLock(out) as lock:
        assert lock.held


# ------------------------------------------------------------------- temp files


def test_stale_temp_files_removed_on_resume_and_start(data, run, tmp_path):
    stale = [
        run / "checkpoints" / ".latest.safetensors.k2j_x9a1.tmp",
        run / ".model.safetensors.abcdefgh.tmp",
    ]
    for f in stale:
        f.write_bytes(os.urandom(1_200_000))
    assert _main("train", "--data", data, "--out", run, "--resume") == 0
    assert not any(f.exists() for f in stale)
    killed = tmp_path / "killed"  # killed before config.json: only the lock and a temp file
    killed.mkdir()
    (killed / LOCK_NAME).write_text("")
    (killed / ".config.json.zz_zz_zz.tmp").write_text("{")
    assert _main("train", "--data", data, "--out", killed, *FAST) == 0
    assert not (killed / ".config.json.zz_zz_zz.tmp").exists()


# ------------------------------------------------------------------- killed before a checkpoint


@pytest.mark.parametrize("kept", [("config.json",), ("config.json", "splits.safetensors")])
def test_killed_before_first_checkpoint_resumes_from_step_zero(data, run, tmp_path, kept, capsys):
    dead = tmp_path / "dead"
    dead.mkdir()
    (dead / LOCK_NAME).write_text("")
    for name in kept:
        shutil.copy(run / name, dead / name)
    assert _main("train", "--data", data, "--out", dead, *FAST) == 2  # a run: points at --resume
    assert "--resume" in capsys.readouterr().err
    assert _main("train", "--data", data, "--out", dead, "--resume") == 0
    err = capsys.readouterr().err
    assert "warning:" in err and "from step 0" in err
    fresh, resumed = weights(run / "model.safetensors"), weights(dead / "model.safetensors")
    assert fresh.keys() == resumed.keys()
    assert all(torch.equal(fresh[k], resumed[k]) for k in fresh)  # exactly the fresh run
    assert (dead / "splits.safetensors").read_bytes() == (run / "splits.safetensors").read_bytes()


# ------------------------------------------------------------------- non-finite weights


def _assert_kept_checkpoints_finite(out: Path, line: str) -> None:
    from centrobind.checkpoint import load_tensors

    latest = out / "checkpoints" / "latest.safetensors"
    for f in (latest, out / "checkpoints" / "best.safetensors"):
        if f.exists():
            t = weights(f)
            assert all(torch.isfinite(v).all() for k, v in t.items() if v.is_floating_point()), f
    if latest.exists():
        step = load_tensors(latest)[1]["step"]
        assert f"from step {step} (finite weights)" in line, line
    else:
        assert "no checkpoint was written" in line, line
    assert not (out / "model.safetensors").exists()


@pytest.mark.parametrize("lr", ["1e30", "1e38"])  # NaN loss; Adam's step size overflows
def test_diverging_training_keeps_only_finite_checkpoints(data, tmp_path, lr):
    out = tmp_path / "run"
    rc, _, err = train(data, out, "--lr", lr, "--checkpoint-every", "1")
    line = error_line(rc, err, "at step")
    _assert_kept_checkpoints_finite(out, line)


def test_non_finite_weights_are_never_checkpointed(data, tmp_path, monkeypatch, capsys):
    """Weights that turn inf while the loss is still finite (the step after the 2nd)."""
    real_step = torch.optim.AdamW.step
    calls = {"n": 0}

    def poisoned_step(self, *args, **kwargs):
        out = real_step(self, *args, **kwargs)
        calls["n"] += 1
        if calls["n"] == 2:
            with torch.no_grad():
                self.param_groups[0]["params"][0].view(-1)[0] = float("inf")
        return out

    monkeypatch.setattr(torch.optim.AdamW, "step", poisoned_step)
    out = tmp_path / "run"
    assert _main("train", "--data", data, "--out", out, *FAST, "--checkpoint-every", "1") == 2
    line = capsys.readouterr().err.strip()
    assert line.startswith("error: non-finite weights at step 2") and "\n" not in line, line
    _assert_kept_checkpoints_finite(out, line)
    assert "from step 1 (finite weights)" in line


# ------------------------------------------------------------------- disk full


def _failing_save_file(fail_on: int):
    """safetensors' save_file that fails like a full disk on its ``fail_on``-th call, after
    writing part of the temporary file (the message safetensors 0.8 gives on ENOSPC)."""
    from safetensors import SafetensorError
    from safetensors.torch import save_file

    calls = {"n": 0}

    def fake(tensors, filename, metadata=None):
        calls["n"] += 1
        if calls["n"] == fail_on:
            Path(filename).write_bytes(b"\0" * 4096)
            raise SafetensorError(
                "Error while serializing: I/O error: No space left on device (os error 28)"
            )
        return save_file(tensors, filename, metadata=metadata)

    return fake


def test_disk_full_during_checkpoint_leaves_a_resumable_run(data, tmp_path, monkeypatch, capsys):
    import centrobind.checkpoint as ckpt

    whole = tmp_path / "whole"
    args = [*FAST, "--epochs", "4", "--checkpoint-every", "3"]
    assert _main("train", "--data", data, "--out", whole, *args) == 0
    out = tmp_path / "full"
    monkeypatch.setattr(ckpt, "save_file", _failing_save_file(fail_on=4))
    assert _main("train", "--data", data, "--out", out, *args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "no space left on device" in err[0]
    assert "--resume" in err[0]
    assert not [p for p in out.rglob("*") if p.name.endswith(".tmp")]  # temp removed
    monkeypatch.undo()
    assert _main("train", "--data", data, "--out", out, "--resume") == 0
    a, b = weights(whole / "model.safetensors"), weights(out / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)  # the interrupted run ends where it would


# ------------------------------------------------------------------- benchmark --out (issue 19)


def test_benchmark_refuses_a_folder_that_is_not_its_own(tmp_path, capsys):
    from centrobind.bench.cache import RunCache, check_output_folder

    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "report.md").write_text("# my report\n")
    (mine / "results.csv").write_text("a,b\n1,2\n")
    before = snapshot(mine)
    rc, _, err = main_cli(capsys, "benchmark", "--quick", "--out", mine, "--quiet")
    error_line(rc, err, "not empty and not a benchmark output folder", "report.md")
    assert snapshot(mine) == before and sorted(os.listdir(mine)) == ["report.md", "results.csv"]
    # its own folders are fine: a finished one (results.json) or an interrupted one (runs.jsonl)
    check_output_folder(Path(__file__).parents[1] / "docs" / "benchmark")
    ours = tmp_path / "ours"
    RunCache(ours / "runs.jsonl").put(("job", 0), {"R@1": 1.0})
    check_output_folder(ours)
    check_output_folder(tmp_path / "new")


# ------------------------------------------------------------------- featurize (issue 19)


class _Stopper:
    """``pixels:4`` that is interrupted (like Ctrl-C) once ``after`` items were encoded."""

    after: int | None = None
    done = 0

    @classmethod
    def make(cls, arg, **kw):
        from centrobind.featurize.encoders.image_pixels import PixelsEncoder

        class Enc(PixelsEncoder):
            def forward(self, prepared):
                cls.done += len(prepared)
                if cls.after is not None and cls.done > cls.after:
                    raise KeyboardInterrupt
                return super().forward(prepared)

        enc = Enc(4)
        enc.spec = "stopper"
        return enc


def test_featurize_resume_never_mixes_old_and_new_contents_of_a_file(tmp_path):
    """Killed after its first chunk, then an image that rows 1 and 6 both name is overwritten:
    the re-run encodes the first chunk again, so both rows hold the new contents."""
    from PIL import Image

    from centrobind.errors import CentrobindWarning
    from centrobind.featurize import featurize, load_encoder, register_encoder

    register_encoder("stopper", _Stopper.make)
    (tmp_path / "img").mkdir()
    Image.new("RGB", (6, 6), (200, 0, 0)).save(tmp_path / "img" / "shared.png")
    for i in range(8):
        Image.new("RGB", (6, 6), (0, 30 * i, 0)).save(tmp_path / "img" / f"{i}.png")
    names = [f"img/{i}.png" for i in range(8)]
    names[1] = names[6] = "img/shared.png"
    man = tmp_path / "m.csv"
    man.write_text("image\n" + "\n".join(names) + "\n")
    out = tmp_path / "ds"
    _Stopper.after, _Stopper.done = 4, 0
    with pytest.raises(KeyboardInterrupt):  # after the first chunk of 4 rows
        featurize(man, out, encoders={"image": "stopper"}, progress=False, chunk_rows=4)
    assert json.loads((out / "featurize.json").read_text())["modalities"]["image"]["done"] == [0]
    Image.new("RGB", (6, 6), (0, 0, 250)).save(tmp_path / "img" / "shared.png")  # now blue
    _Stopper.after = None
    with pytest.warns(CentrobindWarning, match=r"image: files changed .* rows 0-3"):
        featurize(man, out, encoders={"image": "stopper"}, progress=False, chunk_rows=4)
    x = np.load(out / "modalities" / "image.npy")
    blue = load_encoder("pixels:4").encode([str(tmp_path / "img" / "shared.png")])[0]
    np.testing.assert_array_equal(x[1], x[6])
    np.testing.assert_allclose(x[1], blue, atol=1e-6)


def test_featurize_rebuilds_a_deleted_modality_file(tmp_path, capsys):
    ds = featurized(tmp_path, n=12)
    man = tmp_path / "raw" / "m.csv"
    args = ["featurize", man, "--out", ds, "--encoder", "caption=chars"]
    args += ["--encoder", "image=pixels:4", "--label", "colour", "--quiet"]
    before = np.load(ds / "modalities" / "image.npy")
    (ds / "modalities" / "image.npy").unlink()
    rc, out, err = main_cli(capsys, *args)
    assert rc == 0, err
    assert "image.npy is missing or damaged: encoding image again" in err
    assert "image 12 ok" in out
    np.testing.assert_array_equal(np.load(ds / "modalities" / "image.npy"), before)
    (ds / "modalities" / "image.npy").write_bytes(b"not a numpy file")  # damaged: the same
    rc, _, err = main_cli(capsys, *args)
    assert rc == 0 and "missing or damaged" in err, err
    np.testing.assert_array_equal(np.load(ds / "modalities" / "image.npy"), before)


def test_two_featurizes_into_one_folder(tmp_path, capsys):
    """Featurize holds the same lock as training: a second one on the same --out fails at once
    naming the first (its lock is taken here through another open file, as by a process)."""
    import fcntl

    featurized(tmp_path / "a", n=6)  # raw data and manifest
    out = tmp_path / "ds"
    out.mkdir()
    fd = os.open(out / LOCK_NAME, os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)
    holder = {"pid": 4242, "host": "h", "started": "2026-01-01 00:00:00 UTC"}
    os.write(fd, json.dumps({**holder, "purpose": "featurize"}).encode())
    args = ["featurize", tmp_path / "a" / "raw" / "m.csv", "--out", out, "--quiet"]
    args += ["--encoder", "caption=chars", "--encoder", "image=pixels:4", "--label", "colour"]
    try:
        rc, _, err = main_cli(capsys, *args)
        error_line(rc, err, "in use by another process", "featurize pid 4242")
        assert os.listdir(out) == [LOCK_NAME]
    finally:
        os.close(fd)  # the first one ends: the folder is free
    rc, _, err = main_cli(capsys, *args)
    assert rc == 0, err


def test_featurize_never_writes_outside_its_folder(tmp_path, capsys):
    """A label column named like a path would become labels/<name>.npy: refused."""
    (tmp_path / "m.csv").write_text("text,../../outside\nhello,1\nworld,2\n")
    out = tmp_path / "deep" / "er" / "ds"
    args = ["featurize", tmp_path / "m.csv", "--out", out, "--encoder", "text=chars"]
    rc, _, err = main_cli(capsys, *args, "--label", "../../outside", "--quiet")
    error_line(rc, err, "cannot be a label name")
    assert not out.exists() and not list(tmp_path.rglob("outside*"))
