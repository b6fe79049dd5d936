"""End to end through the CLI: train -> evaluate -> embed, resume, and one-line errors."""

import json
import subprocess
import sys

import numpy as np
import pytest

from centrobind.cli import main
from centrobind.data import make_synthetic, save_dataset


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "synth"
    ds = make_synthetic(n_samples=200, n_modalities=3, dims=[10, 8, 6], seed=0)
    save_dataset(ds.with_missing(0.1, seed=0), path)
    return path


def _train(data_dir, out, *extra):
    return main(
        [
            "train",
            "--data",
            str(data_dir),
            "--out",
            str(out),
            "--epochs",
            "15",
            "--warmup-steps",
            "5",
            "--batch-size",
            "32",
            "--quiet",
            "--early-stopping",
            "5",
            *extra,
        ]
    )


def test_train_evaluate_embed(data_dir, tmp_path, capsys):
    out = tmp_path / "run"
    assert _train(data_dir, out, "--objective", "centrobind") == 0
    for name in (
        "config.json",
        "run.json",
        "model.safetensors",
        "splits.safetensors",
        "log.csv",
        "checkpoints/latest.safetensors",
        "checkpoints/best.safetensors",
    ):
        assert (out / name).is_file(), name
    assert main(["evaluate", "--run", str(out), "--data", str(data_dir)]) == 0
    printed = capsys.readouterr().out
    assert "R@1" in printed
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics) >= {"retrieval", "classification", "geometry", "latent_recovery"}
    r1 = metrics["retrieval"]["mean"]["R@1"]
    n_test = json.loads((out / "run.json").read_text())["splits"]["test"]
    assert r1 > 3 * 100 / n_test  # trained well above chance
    emb = tmp_path / "emb.npz"
    assert main(["embed", "--run", str(out), "--data", str(data_dir), "--out", str(emb)]) == 0
    arrays = np.load(emb)
    assert set(arrays.files) == {"m1", "m2", "m3", "fused.mean"}
    assert arrays["m1"].shape == (200, 64)
    # missing rows are NaN, present rows unit norm
    assert np.isnan(arrays["m1"]).all(1).sum() > 0
    ok = ~np.isnan(arrays["m1"]).any(1)
    assert np.allclose(np.linalg.norm(arrays["m1"][ok], axis=1), 1, atol=1e-5)


def test_fixed_anchor_by_name_and_toml_config(data_dir, tmp_path):
    cfg = tmp_path / "cfg.toml"
    cfg.write_text('objective = "fixed_anchor"\nanchor = "m2"\nanchor_pretrain_epochs = 2\n')
    out = tmp_path / "fa"
    assert _train(data_dir, out, "--config", str(cfg)) == 0
    saved = json.loads((out / "config.json").read_text())
    assert saved["objective"] == "fixed_anchor" and saved["anchor"] == "m2"


@pytest.mark.parametrize(
    "args, message",
    [
        (["--objective", "nope"], "unknown objective"),
        (["--objective", "fixed_anchor", "--anchor", "zz"], "anchor 'zz' is not a modality"),
        (["--epochs", "0"], "epochs must be >= 1"),
        (["--resume"], "--resume"),
        (["--config", "missing.toml"], "no such config file"),
    ],
)
def test_train_errors_are_one_line(data_dir, tmp_path, args, message):
    from reliability_helpers import inproc  # the CLI's main in this process

    rc, _, err = inproc("train", "--data", data_dir, "--out", tmp_path / "bad", "--quiet", *args)
    assert rc == 2
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0], err


def test_evaluate_bad_run_folder(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "centrobind.cli", "evaluate", "--run", str(tmp_path)],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2 and "not a run folder" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def _cli(*args):
    """The CLI's main in this process (the tests above run it as a process of its own)."""
    from reliability_helpers import inproc

    rc, _, err = inproc(*args)
    assert "Traceback" not in err, err
    return rc, err.strip()


def test_run_folder_safety(data_dir, tmp_path):
    out = tmp_path / "run"
    assert _train(data_dir, out) == 0
    rc, err = _cli("train", "--data", data_dir, "--out", out, "--quiet", "--epochs", "2")
    assert rc == 2 and "already holds a run" in err
    rc, err = _cli("train", "--data", data_dir, "--out", out, "--resume", "--epochs", "9")
    assert rc == 2 and "drop --epochs" in err
    rc, err = _cli("train", "--data", data_dir, "--out", out, "--resume", "--quiet")
    assert rc == 0, err  # finished run: resume is a no-op, not an error
    rc, err = _cli(  # the original command plus --resume: flags equal to the saved config
        "train",
        "--data",
        data_dir,
        "--out",
        out,
        "--resume",
        "--quiet",
        "--epochs",
        "15",
        "--warmup-steps",
        "5",
    )
    assert rc == 0, err
    # evaluate against other data with the same shape: refused (split indices would lie)
    other = tmp_path / "other"
    save_dataset(make_synthetic(n_samples=200, n_modalities=3, dims=[10, 8, 6], seed=1), other)
    rc, err = _cli("evaluate", "--run", out, "--data", other)
    assert rc == 2 and "not the data this run was trained on" in err
    rc, err = _cli("embed", "--run", out, "--data", data_dir, "--out", tmp_path)
    assert rc == 2 and "not an empty folder" in err  # a folder out: streamed, must be new


def test_overlapping_dataset_splits_are_refused(tmp_path):
    ds = make_synthetic(n_samples=100, n_modalities=2, dims=[5, 4], pair=None, seed=0)
    from centrobind.data import MultimodalDataset

    bad = MultimodalDataset(
        ds.features,
        ds.mask,
        ds.labels,
        splits={"train": np.arange(0, 80), "test": np.arange(70, 100)},
    )
    save_dataset(bad, tmp_path / "d")
    rc, err = _cli("train", "--data", tmp_path / "d", "--out", tmp_path / "r", "--quiet")
    assert rc == 2 and "overlap in 10 rows" in err
    rc, err = _cli(
        "train",
        "--data",
        tmp_path / "d",
        "--out",
        tmp_path / "r",
        "--quiet",
        "--early-stopping",
        "3",
    )
    assert rc == 2
