"""Training UX (issue 13): warm-up scaled to the run, batching warnings, resume with the original
command and resume-extend, --init-from, --device auto, TensorBoard, gallery sizes."""

import csv
import json
import os
import subprocess
import sys
import warnings

import pytest
import torch

from centrobind.cli import main
from centrobind.config import TrainConfig
from centrobind.data import make_synthetic, save_dataset
from centrobind.distributed import resolve_device
from centrobind.errors import ConfigError
from centrobind.models import Binder
from centrobind.objectives import make_objective
from centrobind.runs import init_from_run, load_run
from centrobind.train import TrainingWarning, _lr_at, fit, warmup_steps

SMALL = ["--embed-dim", "8", "--hidden", "16", "--quiet"]


def _synth(n, dims, seed=0):
    pair = {} if len(dims) > 2 else {"pair_dim": 0}
    return make_synthetic(n_samples=n, n_modalities=len(dims), dims=dims, seed=seed, **pair)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "synth3"
    save_dataset(_synth(200, [10, 8, 6]), path)
    return path


def _train(data_dir, out, *extra):
    args = ["train", "--data", str(data_dir), "--out", str(out), "--batch-size", "32"]
    return main([*args, "--warmup-steps", "2", *SMALL, *extra])


def _log(out):
    with open(out / "log.csv") as f:
        return list(csv.DictReader(f))


def _fit(ds, val=None, out=None, resume=False, validate=None, **kw):
    cfg = TrainConfig(**{"embed_dim": 8, "hidden": 16, "quiet": True, **kw})
    torch.manual_seed(cfg.seed)
    binder = Binder(ds.dims, embed_dim=8, hidden=16)
    res = fit(binder, make_objective("centrobind"), ds, val, cfg, out, resume, validate)
    return binder, res


# --------------------------------------------------------------------------- warm-up, batching


def test_warmup_is_a_tenth_of_a_short_run_at_most():
    cfg = TrainConfig(warmup_steps=50, lr=1e-3)
    assert [warmup_steps(cfg, n) for n in (1, 9, 30, 500, 5000)] == [1, 1, 3, 50, 50]
    assert warmup_steps(TrainConfig(warmup_steps=0), 30) == 0
    lrs = [_lr_at(s, 30, cfg) for s in range(30)]
    assert lrs[2] == pytest.approx(1e-3) and max(lrs) == pytest.approx(1e-3)
    assert lrs[-1] < 0.01 * 1e-3 and all(a >= b for a, b in zip(lrs[2:], lrs[3:], strict=False))


def test_tiny_data_run_reaches_the_lr_and_decays(tmp_path):
    """The issue's case: 350 training rows, batch 256, drop_last -> 1 step per epoch."""
    ds = _synth(350, [8, 6, 5])
    with pytest.warns(TrainingWarning, match=r"leaves out 94 of the 350 training rows \(27%\)"):
        _, res = _fit(ds, out=tmp_path, epochs=30, batch_size=256, lr=1e-3)
    lr = [float(r["lr"]) for r in _log(tmp_path)]
    assert res.steps == 30 and max(lr) == pytest.approx(1e-3, rel=1e-4)
    assert lr.index(max(lr)) == 2 and lr[-1] < 1e-5  # peak after 3 warm-up steps, then decay


def test_batch_warnings(recwarn):
    with pytest.warns(TrainingWarning, match="batch size 128 exceeds the 96 training rows"):
        _fit(_synth(96, [8, 6, 5]), epochs=1, batch_size=128)
    with warnings.catch_warnings():
        warnings.simplefilter("error", TrainingWarning)
        _fit(_synth(96, [8, 6, 5]), epochs=1, batch_size=32)  # 96 = 3 x 32: nothing dropped
        _fit(_synth(100, [8, 6, 5]), epochs=1, batch_size=32)  # 4 of 100 dropped: fine


def test_cli_prints_the_warning_as_one_line(data_dir, tmp_path, capsys):
    assert _train(data_dir, tmp_path / "r", "--epochs", "1", "--batch-size", "512") == 0
    err = capsys.readouterr().err
    assert "warning: batch size 512 exceeds the 140 training rows" in err, err


# --------------------------------------------------------------------------- resume


def test_resume_with_the_original_command(data_dir, tmp_path, capsys):
    out = tmp_path / "run"
    flags = ["--epochs", "3", "--objective", "all_pairs", "--seed", "4", "--lr", "0.002"]
    assert _train(data_dir, out, *flags) == 0
    before = (out / "model.safetensors").read_bytes()
    assert _train(data_dir, out, *flags, "--resume") == 0  # identical flags: accepted
    assert (out / "model.safetensors").read_bytes() == before and len(_log(out)) == 3
    capsys.readouterr()
    assert _train(data_dir, out, *flags[:-1], "0.003", "--resume") == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err
    assert "--lr (0.003, saved 0.002)" in err and "--seed" not in err, err
    assert _train(data_dir, out, "--resume", "--epochs", "2") == 2  # shortening is a conflict
    assert "--epochs (2, saved 3)" in capsys.readouterr().err


def test_resume_extends_the_run(data_dir, tmp_path, capsys):
    out = tmp_path / "run"
    assert _train(data_dir, out, "--epochs", "4") == 0
    capsys.readouterr()
    args = ["train", "--data", str(data_dir), "--out", str(out), "--resume", "--epochs", "7"]
    assert main(args) == 0  # not --quiet: the re-planned schedule is said on stderr
    err = capsys.readouterr().err
    assert "extending the run from 4 to 7 epochs at step 16" in err and "re-planned" in err
    log = _log(out)
    assert [int(r["epoch"]) for r in log] == list(range(1, 8))
    lr = [float(r["lr"]) for r in log]
    assert lr[4] > 10 * lr[3] and lr[6] < lr[4]  # a new warm-up + cosine from step 16
    assert json.loads((out / "config.json").read_text())["epochs"] == 7
    meta = json.loads((out / "run.json").read_text())
    assert meta["steps"] == 28 and meta["extended"] == [{"at_step": 16, "epochs": 7}]
    assert load_run(out).config.epochs == 7


def test_an_early_stopped_run_extended_trains_on(tmp_path):
    ds = _synth(160, [8, 6, 5])
    split = ds.split(seed=0)
    scores = iter([1.0, 5.0, 3.0, 2.0] + [float(i) for i in range(10, 30)])
    kw = dict(epochs=8, early_stopping=2, batch_size=32, min_steps=0)
    _, res = _fit(split["train"], split["val"], tmp_path, validate=lambda b, v: next(scores), **kw)
    assert res.stopped_early and len(res.history) == 4
    kw["epochs"] = 10
    _, res2 = _fit(split["train"], split["val"], tmp_path, True, lambda b, v: next(scores), **kw)
    assert not res2.stopped_early and len(res2.history) == 10
    assert res2.schedule_start == res.steps and res2.best_epoch == 10


# --------------------------------------------------------------------------- init-from


def test_init_from_warm_starts_shared_modalities(data_dir, tmp_path):
    two = tmp_path / "two"
    save_dataset(_synth(120, [10, 8], seed=1), two)
    src = tmp_path / "src"
    assert _train(two, src, "--epochs", "2") == 0
    out = tmp_path / "ft"
    assert _train(data_dir, out, "--epochs", "1", "--lr", "1e-9", "--init-from", str(src)) == 0
    meta = json.loads((out / "run.json").read_text())
    assert meta["init_from"] == {"run": str(src.resolve()), "loaded": ["m1", "m2"], "fresh": ["m3"]}
    a, b = load_run(src).binder, load_run(out).binder
    for m in ("m1", "m2"):  # lr 1e-9: the loaded weights barely move
        for k, v in a.encoders[m].state_dict().items():
            torch.testing.assert_close(b.encoders[m].state_dict()[k], v, atol=1e-6, rtol=0)
    fresh = Binder({"m1": 10, "m2": 8, "m3": 6}, embed_dim=8, hidden=16)
    info = init_from_run(fresh, src)
    assert info["fresh"] == ["m3"]
    for k, v in a.encoders["m1"].state_dict().items():
        assert torch.equal(fresh.encoders["m1"].state_dict()[k], v), k


def test_init_from_mismatches_are_one_line_errors(data_dir, tmp_path, capsys):
    src = tmp_path / "src"
    assert _train(data_dir, src, "--epochs", "1") == 0
    wide = tmp_path / "wide"
    save_dataset(_synth(100, [12, 8, 6]), wide)
    capsys.readouterr()
    assert _train(wide, tmp_path / "a", "--epochs", "1", "--init-from", str(src)) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"error: --init-from {src}: modality 'm1' has width 12 here but 10 in that run"
    args = ["--epochs", "1", "--init-from", str(src)]
    assert _train(data_dir, tmp_path / "b", *args, "--hidden", "32") == 2
    assert "the encoder of 'm1' has another shape there" in capsys.readouterr().err
    assert not (tmp_path / "a").exists() and not (tmp_path / "b" / "model.safetensors").exists()
    assert _train(data_dir, src, "--resume", "--init-from", str(src)) == 2
    assert "--init-from starts a new run" in capsys.readouterr().err


# --------------------------------------------------------------------------- device


def test_device_auto(data_dir, tmp_path, capsys):
    assert TrainConfig().device == "auto"
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    out = tmp_path / "run"
    args = ["train", "--data", str(data_dir), "--out", str(out), "--epochs", "1"]
    assert main([*args, "--embed-dim", "8", "--hidden", "16"]) == 0
    used = "cuda:0" if torch.cuda.is_available() else "cpu"
    first = capsys.readouterr().err.strip().splitlines()[0]
    assert first.startswith(f"training centrobind on {used} (--device auto)"), first
    assert json.loads((out / "config.json").read_text())["device"] == "auto"
    assert json.loads((out / "run.json").read_text())["device"] == used


def test_torchrun_trains_with_one_command(data_dir, tmp_path):
    """Two CPU ranks (gloo) through the CLI: one run folder, written once, 2 x fewer rows/rank."""
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    cmd += ["-m", "centrobind.cli", "train", "--data", str(data_dir), "--out", str(out)]
    cmd += ["--epochs", "2", "--batch-size", "32", "--device", "cpu", *SMALL]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert p.returncode == 0, p.stderr[-2000:]
    assert p.stdout.count("trained centrobind") == 1  # rank 0 reports and writes
    meta = json.loads((out / "run.json").read_text())
    assert meta["steps"] == 8 and len(_log(out)) == 2


# --------------------------------------------------------------------------- watching a run


def test_tensorboard_event_files(data_dir, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "run"
    assert _train(data_dir, out, "--epochs", "2", "--tensorboard") == 0
    acc = EventAccumulator(str(out / "tensorboard"))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    want = {"loss", "lr", "logit_scale", "val/R@1", "loss/c-m1", "loss/c-m2", "loss/c-m3"}
    assert want <= tags, tags
    log = _log(out)
    r1 = [e.value for e in acc.Scalars("val/R@1")]
    assert r1 == pytest.approx([float(r["val_metric"]) for r in log], rel=1e-4)
    assert [e.step for e in acc.Scalars("loss")] == [int(r["step"]) for r in log]


def test_tensorboard_missing_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import fails
    with pytest.raises(ConfigError, match=r"pip install 'centrobind\[tensorboard\]'"):
        _fit(_synth(64, [8, 6, 5]), out=tmp_path, epochs=1, batch_size=32, tensorboard=True)


def test_progress_bar_and_galleries(data_dir, tmp_path, capsys):
    out = tmp_path / "run"
    args = ["train", "--data", str(data_dir), "--out", str(out), "--epochs", "2"]
    assert main([*args, "--embed-dim", "8", "--hidden", "16", "--batch-size", "32",
                 "--val-metric", "R@1"]) == 0  # fmt: skip
    captured = capsys.readouterr()
    assert "val R@1=" in captured.err and "% (gallery 20)" in captured.err, captured.err[-500:]
    assert "over a gallery of 20 validation rows" in captured.out
    meta = json.loads((out / "run.json").read_text())
    assert meta["val_gallery"] == meta["splits"]["val"] == 20
    assert main(["evaluate", "--run", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "R@1 above: a gallery of 40 test rows" in printed and "searched 20 rows" in printed
    gallery = json.loads((out / "metrics.json").read_text())["gallery"]
    assert gallery == {"test": 40, "validation": 20}
