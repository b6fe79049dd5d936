"""Issue 12, class 4: portable runs. A run trained on a GPU (``device: "cuda"`` in config.json)
evaluates and embeds on a machine without one; ``--device`` overrides."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from centrobind.cli import main
from centrobind.data import make_synthetic, save_dataset
from centrobind.runs import load_run, run_device
from reliability_helpers import cli, error_line, train


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "synth"
    save_dataset(make_synthetic(n_samples=200, n_modalities=3, dims=[10, 8, 6], seed=0), path)
    return path


@pytest.fixture(scope="module")
def cpu_run(data, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "run"
    rc, _, err = train(data, out)
    assert rc == 0, err
    return out


def _moved(cpu_run, tmp_path, device: str):
    """The same run as if trained on ``device`` (what config.json records)."""
    copy = tmp_path / f"run-{device.replace(':', '')}"
    shutil.copytree(cpu_run, copy)
    cfg = json.loads((copy / "config.json").read_text())
    cfg["device"] = device
    (copy / "config.json").write_text(json.dumps(cfg))
    return copy


def _here(device: str) -> str:
    """Where a run saved with ``device`` runs on this machine."""
    dev = torch.device(device)
    if dev.type == "cuda":
        ok = torch.cuda.is_available() and (dev.index or 0) < torch.cuda.device_count()
        return device if ok else "cpu"
    if dev.type == "mps":
        return device if torch.backends.mps.is_available() else "cpu"
    return device


@pytest.mark.parametrize("device", ["cuda", "cuda:1", "mps"])
def test_gpu_run_evaluates_and_embeds_here(cpu_run, data, tmp_path, device):
    run = _moved(cpu_run, tmp_path, device)
    assert main(["evaluate", "--run", str(run)]) == 0
    assert json.loads((run / "metrics.json").read_text())["retrieval"]["mean"]["R@1"] > 0
    emb = tmp_path / "e.npz"
    assert main(["embed", "--run", str(run), "--data", str(data), "--out", str(emb)]) == 0
    assert np.load(emb)["m1"].shape == (200, 64)
    loaded = load_run(run)
    assert loaded.config.device == _here(device)
    assert next(loaded.binder.parameters()).device.type == torch.device(_here(device)).type


def test_same_numbers_on_the_mapped_device(cpu_run, data, tmp_path):
    assert main(["evaluate", "--run", str(cpu_run)]) == 0
    ref = json.loads((cpu_run / "metrics.json").read_text())
    run = _moved(cpu_run, tmp_path, "cuda")
    assert main(["evaluate", "--run", str(run), "--device", "cpu"]) == 0
    got = json.loads((run / "metrics.json").read_text())
    assert got["retrieval"]["mean"] == ref["retrieval"]["mean"]
    a, b = tmp_path / "a.npz", tmp_path / "b.npz"
    assert main(["embed", "--run", str(cpu_run), "--data", str(data), "--out", str(a)]) == 0
    assert (
        main(["embed", "--run", str(run), "--data", str(data), "--out", str(b), "--device", "cpu"])
        == 0
    )
    np.testing.assert_array_equal(np.load(a)["m1"], np.load(b)["m1"])


def test_device_flag(cpu_run, data, tmp_path):
    rc, _, err = cli("evaluate", "--run", cpu_run, "--device", "auto")
    assert rc == 0, err
    rc, _, err = cli("evaluate", "--run", cpu_run, "--device", "cuda")
    if torch.cuda.is_available():
        assert rc == 0, err
    else:
        error_line(rc, err, "CUDA is not available")
    rc, _, err = cli(
        "embed",
        "--run",
        cpu_run,
        "--data",
        data,
        "--out",
        tmp_path / "e.npz",
        "--device",
        "nonsense",
    )
    error_line(rc, err, "nonsense")


def test_run_device():
    assert run_device("cpu") == "cpu"
    assert run_device("cuda", "cpu") == "cpu"
    assert run_device("cpu", "auto") == ("cuda" if torch.cuda.is_available() else "cpu")
    assert run_device("cuda") == ("cuda" if torch.cuda.is_available() else "cpu")
    assert run_device("tpu!") == "tpu!"  # not a device: left for validation to name


def test_python_load_and_search_map_the_device(cpu_run, data, tmp_path):
    import centrobind

    run = _moved(cpu_run, tmp_path, "cuda")
    model = centrobind.load(run)  # device "auto"
    assert model.device.type == ("cuda" if torch.cuda.is_available() else "cpu")
    x = np.random.default_rng(0).normal(size=(5, 10)).astype(np.float32)
    assert model.encode("m1", x).shape == (5, 64)
    rc, out, err = cli(
        "search",
        "--run",
        run,
        "--corpus",
        data,
        "--target",
        "m2",
        "--query-data",
        data,
        "--query-modality",
        "m1",
        "-k",
        "3",
        "--json",
    )
    assert rc == 0, err
