"""Unit tests of the run-folder safety pieces: locks (runlock), folder and output checks and temp
files (runfolder), fingerprint (data.fingerprint), finite weights (checkpoint), memory estimate
(memory), disk-full errors (diskfull)."""

from __future__ import annotations

import errno
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from centrobind.checkpoint import all_finite, non_finite_tensors
from centrobind.data import make_synthetic, save_dataset
from centrobind.data.disk import load_dataset
from centrobind.data.fingerprint import fingerprint
from centrobind.diskfull import DiskFullError, disk_full_errors, is_disk_full
from centrobind.errors import CentrobindError, ConfigError
from centrobind.memory import check_parameter_memory, count_parameters, memory_capacity
from centrobind.models import Binder
from centrobind.runfolder import (
    check_new_run_dir,
    check_output_file,
    is_run_dir,
    is_temp_file_name,
    remove_stale_temp_files,
)
from centrobind.runlock import LOCK_NAME, RunLock, RunLockedError

SRC = str(Path(__file__).resolve().parents[1] / "src")


def _fake_run(path: Path) -> Path:
    (path / "checkpoints").mkdir(parents=True)
    (path / "config.json").write_text("{}")
    (path / "model.safetensors").write_bytes(b"model")
    return path


# ---------------------------------------------------------------------------- lock


def _holder(path: Path) -> subprocess.Popen:
    """A second process that takes the lock and waits (prints 'locked' once it holds it)."""
    code = textwrap.dedent(
        f"""
        import sys, time
        sys.path.insert(0, {SRC!r})
        from centrobind.runlock import RunLock
        with RunLock({str(path)!r}, purpose="train"):
            print("locked", flush=True)
            time.sleep(60)
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "locked"
    return proc


def test_lock_second_holder_fails_at_once_naming_the_first(tmp_path):
    run = tmp_path / "run"
    proc = _holder(run)
    try:
        t0 = time.perf_counter()
        with pytest.raises(RunLockedError) as e:
            RunLock(run).acquire()
        assert time.perf_counter() - t0 < 2  # fails at once, never waits
        msg = str(e.value)
        assert "\n" not in msg
        assert f"pid {proc.pid}" in msg and socket.gethostname() in msg and "UTC" in msg
    finally:
        proc.kill()
        proc.wait()


def test_lock_released_when_holder_is_killed(tmp_path):
    run = tmp_path / "run"
    proc = _holder(run)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    with RunLock(run) as lock:  # the kernel dropped the flock with the process
        assert lock.held
        assert str(os.getpid()) in (run / LOCK_NAME).read_text()
    assert (run / LOCK_NAME).read_text() == ""  # no stale holder info after release


def test_lock_is_reentrant_in_one_process_and_creates_the_folder(tmp_path):
    run = tmp_path / "a" / "run"
    with RunLock(run) as outer:
        with RunLock(run) as inner:
            assert inner.held
        assert outer.held
        (run / "config.json").write_text("{}")
        # still held by this process after the inner release: another process is refused
        code = (
            f"import sys; sys.path.insert(0, {SRC!r}); from centrobind.runlock import RunLock\n"
            f"RunLock({str(run)!r}).acquire()"
        )
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
        assert proc.returncode != 0 and "RunLockedError" in proc.stderr
    assert is_run_dir(run)
    RunLock(run).acquire().release()  # free again


def test_lock_removes_a_folder_it_created_when_nothing_was_written(tmp_path):
    with RunLock(tmp_path / "a" / "unused"):
        pass
    assert not (tmp_path / "a" / "unused").exists() and (tmp_path / "a").is_dir()
    with RunLock(tmp_path / "used"):
        (tmp_path / "used" / "config.json").write_text("{}")
    assert (tmp_path / "used" / LOCK_NAME).is_file()
    (tmp_path / "mine").mkdir()
    with RunLock(tmp_path / "mine"):  # existed before: kept, with the lock file
        pass
    assert (tmp_path / "mine").is_dir()


def test_lock_disabled_is_a_no_op(tmp_path):
    with RunLock(tmp_path / "r", enabled=False) as lock:
        assert not lock.held
    assert not (tmp_path / "r").exists()


def test_lock_file_symlink_is_refused(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / LOCK_NAME).symlink_to(tmp_path / "elsewhere")
    with pytest.raises(CentrobindError, match="cannot open the run lock"):
        RunLock(run).acquire()
    assert not (tmp_path / "elsewhere").exists()


# ---------------------------------------------------------------------------- new run folder


def test_check_new_run_dir_accepts_absent_empty_and_lock_only(tmp_path):
    check_new_run_dir(tmp_path / "absent")
    (tmp_path / "empty").mkdir()
    check_new_run_dir(tmp_path / "empty")
    d = tmp_path / "killed"
    d.mkdir()
    (d / LOCK_NAME).write_text("")
    (d / ".config.json.ab12cd_3.tmp").write_text("partial")
    check_new_run_dir(d)


def test_check_new_run_dir_refuses_user_files_and_keeps_them(tmp_path):
    d = tmp_path / "mine"
    d.mkdir()
    (d / "log.csv").write_text("precious")
    (d / "metrics.json").write_text("{}")
    with pytest.raises(CentrobindError, match="not empty and not a run folder") as e:
        check_new_run_dir(d)
    assert "log.csv" in str(e.value) and "metrics.json" in str(e.value)
    assert (d / "log.csv").read_text() == "precious"


def test_check_new_run_dir_points_a_run_at_resume(tmp_path):
    with pytest.raises(CentrobindError, match="--resume"):
        check_new_run_dir(_fake_run(tmp_path / "run"))


def test_check_new_run_dir_refuses_a_folder_inside_a_run(tmp_path):
    run = _fake_run(tmp_path / "run")
    for inner in (run / "checkpoints", run / "new", run / "a" / "b"):
        with pytest.raises(CentrobindError, match="inside the run folder"):
            check_new_run_dir(inner)


def test_check_new_run_dir_names_the_process_making_it(tmp_path):
    run = tmp_path / "run"
    proc = _holder(run)
    try:
        (run / "config.json").write_text("{}")
        with pytest.raises(RunLockedError, match=f"pid {proc.pid}"):
            check_new_run_dir(run)
    finally:
        proc.kill()
        proc.wait()
    with pytest.raises(CentrobindError, match="already holds a run"):
        check_new_run_dir(run)


def test_check_new_run_dir_refuses_a_file(tmp_path):
    f = tmp_path / "f"
    f.write_text("x")
    with pytest.raises(CentrobindError, match="not a folder"):
        check_new_run_dir(f)


def test_is_run_dir(tmp_path):
    assert not is_run_dir(tmp_path)
    (tmp_path / LOCK_NAME).write_text("")  # pytest's own folders hold a .lock: not a run
    assert not is_run_dir(tmp_path)
    (tmp_path / "config.json").write_text("{}")  # with our lock: killed before splits
    assert is_run_dir(tmp_path)
    (tmp_path / LOCK_NAME).unlink()  # a user's config.json alone is not a run
    assert not is_run_dir(tmp_path)
    (tmp_path / "run.json").write_text("{}")
    assert is_run_dir(tmp_path)


# ---------------------------------------------------------------------------- output files


@pytest.mark.parametrize("name", ["out.npy", "out", "out.npz.tmp", ".npz"])
def test_output_must_be_npz(tmp_path, name):
    with pytest.raises(CentrobindError, match=r"\.npz file name"):
        check_output_file(tmp_path / name)


def test_output_new_and_existing_regular_file_ok(tmp_path):
    assert check_output_file(tmp_path / "sub" / "e.npz") == tmp_path / "sub" / "e.npz"
    (tmp_path / "e.npz").write_bytes(b"old")
    assert check_output_file(tmp_path / "e.NPZ".lower()) == tmp_path / "e.npz"


def test_output_device_dir_fifo_refused(tmp_path):
    if Path("/dev/null").exists():
        link = tmp_path / "null.npz"
        link.symlink_to("/dev/null")
        with pytest.raises(CentrobindError, match="character device"):
            check_output_file(link)
    for d in (tmp_path / "d.npz", tmp_path / "d"):
        d.mkdir()
        with pytest.raises(CentrobindError, match="is a folder"):
            check_output_file(d)
    fifo = tmp_path / "p.npz"
    os.mkfifo(fifo)
    with pytest.raises(CentrobindError, match="named pipe"):
        check_output_file(fifo)


def test_output_dangling_and_looping_symlinks_refused(tmp_path):
    (tmp_path / "dangling.npz").symlink_to(tmp_path / "nowhere.npz")
    with pytest.raises(CentrobindError, match="dangling or looping"):
        check_output_file(tmp_path / "dangling.npz")
    (tmp_path / "a.npz").symlink_to(tmp_path / "b.npz")
    (tmp_path / "b.npz").symlink_to(tmp_path / "a.npz")
    with pytest.raises(CentrobindError, match="dangling or looping"):
        check_output_file(tmp_path / "a.npz")


def test_output_symlink_to_regular_file_is_followed(tmp_path):
    (tmp_path / "real.npz").write_bytes(b"old")
    (tmp_path / "link.npz").symlink_to(tmp_path / "real.npz")
    assert check_output_file(tmp_path / "link.npz") == (tmp_path / "real.npz").resolve()


def test_output_inside_a_run_refused(tmp_path):
    run = _fake_run(tmp_path / "run")
    (run / "model.npz").write_bytes(b"x")
    for target in (
        run / "model.npz",  # an existing file of the run
        run / "new.npz",  # a new file in the run
        run / "checkpoints" / "x.npz",  # in a sub-folder
        run / "deeper" / "new" / "x.npz",  # in folders that do not exist yet
    ):
        with pytest.raises(CentrobindError, match="inside the run folder"):
            check_output_file(target)
    (tmp_path / "sneaky.npz").symlink_to(run / "model.npz")
    with pytest.raises(CentrobindError, match="inside the run folder"):
        check_output_file(tmp_path / "sneaky.npz")


# ---------------------------------------------------------------------------- temp files


def test_remove_stale_temp_files(tmp_path):
    run = _fake_run(tmp_path / "run")
    stale = [
        run / "checkpoints" / ".latest.safetensors.k2j_x9a1.tmp",
        run / ".config.json.abcdefgh.tmp",
    ]
    kept = [run / "notes.tmp", run / LOCK_NAME, run / ".hidden", run / "checkpoints" / "x.tmp"]
    for f in stale + kept:
        f.write_bytes(b"x" * 10)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / ".latest.safetensors.k2j_x9a1.tmp").write_bytes(b"x")
    (run / "link").symlink_to(outside)  # never followed
    removed = remove_stale_temp_files(run)
    assert sorted(removed) == sorted(stale)
    assert all(not f.exists() for f in stale) and all(f.exists() for f in kept)
    assert (outside / ".latest.safetensors.k2j_x9a1.tmp").exists()
    assert remove_stale_temp_files(tmp_path / "absent") == []


def test_temp_name_pattern_matches_checkpoint_writes(tmp_path):
    """The pattern recognises exactly what checkpoint's atomic writes name their temp files."""
    import tempfile

    fd, name = tempfile.mkstemp(prefix=".latest.safetensors.", suffix=".tmp", dir=tmp_path)
    os.close(fd)
    assert is_temp_file_name(Path(name).name)
    assert not is_temp_file_name("latest.safetensors")
    assert not is_temp_file_name(".latest.safetensors.tmp")


# ---------------------------------------------------------------------------- fingerprint


@pytest.fixture(scope="module")
def ds():
    d = make_synthetic(n_samples=120, n_modalities=3, dims=[6, 5, 4], seed=1)
    return d.with_missing(0.2, seed=2)


def _perm(n, seed=0):
    return torch.from_numpy(np.random.default_rng(seed).permutation(n))


def test_fingerprint_stable_across_disk_and_mmap(ds, tmp_path):
    fp = fingerprint(ds)
    assert fp.startswith("b2:") and len(fp) == 3 + 32
    assert fingerprint(ds) == fp
    save_dataset(ds, tmp_path / "d")
    assert fingerprint(load_dataset(tmp_path / "d")) == fp
    assert fingerprint(load_dataset(tmp_path / "d", mmap=False)) == fp


def test_fingerprint_sees_row_order_and_every_array(ds):
    from centrobind.data import MultimodalDataset

    fp = fingerprint(ds)
    n = len(ds)
    p = _perm(n)
    assert fingerprint(ds.subset(p)) != fp  # all rows permuted

    def variant(features=None, mask=None, labels=None, factors=None):
        return MultimodalDataset(
            features if features is not None else ds.features,
            mask=mask if mask is not None else ds.mask,
            labels=labels if labels is not None else ds.labels,
            factors=factors if factors is not None else ds.factors,
            name="other name",
        )

    assert fingerprint(variant()) == fp  # the name does not matter
    m0 = ds.modalities[0]
    feats = dict(ds.features)
    feats[m0] = ds.features[m0][p]  # one modality's rows shuffled
    assert fingerprint(variant(features=feats)) != fp
    mask = ds.mask.clone()
    mask[1, 0] = ~mask[1, 0]
    assert fingerprint(variant(mask=mask)) != fp
    task = next(iter(ds.labels))
    assert fingerprint(variant(labels={task: ds.labels[task][p]})) != fp  # labels shuffled
    group = next(iter(ds.factors))
    factors = dict(ds.factors)
    factors[group] = ds.factors[group] + 1e-3
    assert fingerprint(variant(factors=factors)) != fp
    one_bit = dict(ds.features)
    x = ds.features[m0].clone()
    x.view(torch.int32)[5, 0] ^= 1  # a single flipped bit
    one_bit[m0] = x
    assert fingerprint(variant(features=one_bit)) != fp


def test_fingerprint_ignores_modality_order(ds):
    from centrobind.data import MultimodalDataset

    rev = ds.modalities[::-1]
    other = MultimodalDataset(
        {m: ds.features[m] for m in rev},
        mask=ds.mask.flip(0),
        labels=ds.labels,
        factors=ds.factors,
    )
    assert fingerprint(other) == fingerprint(ds)


# ---------------------------------------------------------------------------- finite weights


def test_non_finite_tensors():
    sd = {
        "a": torch.ones(3),
        "b": torch.tensor([1.0, float("nan")]),
        "c": torch.tensor([float("inf")]),
        "i": torch.tensor([1, 2]),
        "h": torch.tensor([1.0], dtype=torch.bfloat16),
    }
    assert non_finite_tensors(sd) == ["b", "c"]
    assert not all_finite(sd)
    assert all_finite({k: sd[k] for k in ("a", "i", "h")})


# ---------------------------------------------------------------------------- memory


def test_count_parameters_is_exact_and_allocates_nothing():
    dims = {"a": 10, "b": 5}
    real = sum(p.numel() for p in Binder(dims, embed_dim=16, hidden=32).parameters())
    assert count_parameters(lambda: Binder(dims, embed_dim=16, hidden=32)) == real
    t0 = time.perf_counter()
    huge = count_parameters(lambda: Binder(dims, embed_dim=100_000_000))
    assert time.perf_counter() - t0 < 5
    # two heads of depth 2 (hidden 256): D_m*256 + 256 + 256*D + D each, plus the logit scale
    assert huge == sum(d * 256 + 256 + 256 * 10**8 + 10**8 for d in dims.values()) + 1


def test_check_parameter_memory():
    cap = memory_capacity("cpu")
    assert cap is not None and cap > 2**20
    assert check_parameter_memory(1000, "cpu") == 1000 * 4 * 5
    with pytest.raises(ConfigError, match="parameters") as e:
        check_parameter_memory(cap, "cpu")  # 20 bytes per parameter cannot fit
    assert "\n" not in str(e.value) and "GiB" in str(e.value)


# ---------------------------------------------------------------------------- disk full


def test_disk_full_from_a_real_enospc_write(tmp_path):
    if not Path("/dev/full").is_char_device():
        raise AssertionError("this test needs the /dev/full device (Linux)")
    with pytest.raises(DiskFullError) as e:
        with disk_full_errors(tmp_path / "x.safetensors"):
            with open("/dev/full", "wb") as f:  # plain write, never a rename onto the device
                f.write(b"x" * 100_000)
                f.flush()
    msg = str(e.value)
    assert "\n" not in msg and "no space left on device" in msg and "--resume" in msg
    assert isinstance(e.value, CentrobindError)


def test_disk_full_from_safetensors_error_text():
    from safetensors import SafetensorError

    # the exact text safetensors 0.8 raises on a full tmpfs (measured with a 64 KiB mount)
    err = SafetensorError(
        "Error while serializing: I/O error: No space left on device (os error 28)"
    )
    assert is_disk_full(err)
    assert is_disk_full(OSError(errno.ENOSPC, "No space left on device"))
    with pytest.raises(DiskFullError):
        with disk_full_errors("x"):
            raise err


def test_other_errors_pass_through():
    with pytest.raises(PermissionError):
        with disk_full_errors("x"):
            raise PermissionError(errno.EACCES, "Permission denied")
    assert not is_disk_full(ValueError("bad"))
