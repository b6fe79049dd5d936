"""Issue 12, class 2: never score the wrong thing silently (through the CLI)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from centrobind.checkpoint import load_tensors, save_tensors
from centrobind.cli import main
from centrobind.data import MultimodalDataset, make_synthetic, save_dataset
from reliability_helpers import FAST, cli, error_line, train


@pytest.fixture(scope="module")
def ds():
    return make_synthetic(n_samples=200, n_modalities=3, dims=[10, 8, 6], seed=0)


@pytest.fixture(scope="module")
def data(ds, tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "synth"
    save_dataset(ds, path)
    return path


@pytest.fixture(scope="module")
def run(data, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "run"
    rc, _, err = train(data, out)
    assert rc == 0, err
    assert main(["evaluate", "--run", str(out)]) == 0
    return out


def _main(*args: object) -> int:
    return main([str(a) for a in args])


def _variant(ds, kind: str) -> MultimodalDataset:
    """The same arrays with one defect that keeps every shape, dtype and sum."""
    n = len(ds)
    p = torch.from_numpy(np.random.default_rng(0).permutation(n))
    feats, labels = dict(ds.features), dict(ds.labels)
    mask = ds.mask
    if kind == "rows permuted":
        return ds.subset(p)
    if kind == "one modality shuffled":
        feats["m2"] = ds.features["m2"][p]
    elif kind == "labels shuffled":
        task = next(iter(labels))
        labels[task] = labels[task][p]
    elif kind == "one value changed":
        x = ds.features["m1"].clone()
        x[3, 2] += 0.5
        x[4, 2] -= 0.5  # same sum
        feats["m1"] = x
    return MultimodalDataset(feats, mask=mask, labels=labels, factors=ds.factors)


KINDS = ["rows permuted", "one modality shuffled", "labels shuffled", "one value changed"]


@pytest.mark.parametrize("kind", KINDS)
def test_evaluate_refuses_other_data_of_the_same_shape(ds, run, tmp_path, kind):
    assert ds.labels, "the synthetic data must have labels for this test"
    other = tmp_path / "other"
    save_dataset(_variant(ds, kind), other)
    before = (run / "metrics.json").read_bytes()
    rc, _, err = cli("evaluate", "--run", run, "--data", other)
    error_line(rc, err, "not the data this run was trained on")
    assert (run / "metrics.json").read_bytes() == before  # not overwritten


def test_evaluate_accepts_a_copy_of_the_same_data(ds, run, tmp_path):
    copy = tmp_path / "copy"
    save_dataset(ds, copy)
    assert _main("evaluate", "--run", run, "--data", copy) == 0


@pytest.mark.parametrize("kind", ["rows permuted", "one value changed", "other data"])
def test_resume_refuses_other_data_of_the_same_shape(ds, data, tmp_path, kind):
    out = tmp_path / "run"
    assert _main("train", "--data", data, "--out", out, *FAST) == 0
    other = tmp_path / "other"
    if kind == "other data":
        save_dataset(make_synthetic(n_samples=200, n_modalities=3, dims=[10, 8, 6], seed=1), other)
    else:
        save_dataset(_variant(ds, kind), other)
    before = (out / "model.safetensors").read_bytes()
    rc, _, err = cli("train", "--data", other, "--out", out, "--resume", "--quiet")
    error_line(rc, err, "not the data this run was trained on")
    assert (out / "model.safetensors").read_bytes() == before


@pytest.mark.parametrize("split", [[1.0, 0.0, 0.0], [0.9, 0.1, 0.0]])
def test_empty_test_split_refused_at_train_time(data, tmp_path, split):
    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps({"split": split}))
    out = tmp_path / "run"
    rc, _, err = train(data, out, "--config", cfg)
    error_line(rc, err, "test split is empty")
    assert not out.exists()  # refused before anything was written


def test_empty_test_split_of_the_dataset_refused(ds, tmp_path):
    n = len(ds)
    with_splits = MultimodalDataset(
        ds.features,
        mask=ds.mask,
        labels=ds.labels,
        splits={"train": np.arange(n - 20), "val": np.arange(n - 20, n), "test": np.arange(0)},
    )
    save_dataset(with_splits, tmp_path / "d")
    rc, _, err = train(tmp_path / "d", tmp_path / "run")
    error_line(rc, err, "test split is empty")


def test_tiny_splits_warn(ds, tmp_path):
    n = len(ds)
    tiny = MultimodalDataset(
        ds.features,
        mask=ds.mask,
        labels=ds.labels,
        splits={
            "train": np.arange(n - 10),
            "val": np.arange(n - 10, n - 7),
            "test": np.arange(n - 7, n),
        },
    )
    save_dataset(tiny, tmp_path / "d")
    rc, out, err = train(tmp_path / "d", tmp_path / "run")
    assert rc == 0, err
    warnings = [ln for ln in err.splitlines() if ln.startswith("warning: ")]
    assert any("test split has only 7 rows" in w for w in warnings), err
    assert any("validation split has only 3 rows" in w for w in warnings), err
    assert "Traceback" not in err and "UserWarning" not in err


def test_evaluate_refuses_a_run_with_an_empty_test_split(run, tmp_path):
    import shutil

    old = tmp_path / "old"  # a run written before empty test splits were refused
    shutil.copytree(run, old)
    tensors, state = load_tensors(old / "splits.safetensors")
    tensors["test"] = torch.empty(0, dtype=torch.long)
    save_tensors(old / "splits.safetensors", tensors, state)
    rc, _, err = cli("evaluate", "--run", old)
    error_line(rc, err, "test split is empty")


# ------------------------------------------------------------------- fixed by other layers,
# checked here through the CLI so that the whole class stays covered in one place


def _copy_with(ds, tmp_path, name, change):
    path = tmp_path / name
    save_dataset(ds, path)
    change(path)
    return path


def _npy_dir(p):
    (p / "modalities" / "m3.npy").unlink()
    (p / "modalities" / "m3.npy").mkdir()


def _npy_dangling(p):
    (p / "modalities" / "m3.npy").unlink()
    (p / "modalities" / "m3.npy").symlink_to(p / "nowhere.npy")


def _npy_loop(p):
    (p / "modalities" / "m3.npy").unlink()
    (p / "modalities" / "m3.npy").symlink_to("m3.npy")


def _label_1e20(p):
    y = np.ones(200)
    y[0] = 1e20
    np.save(p / "labels" / "big.npy", y)


@pytest.mark.parametrize(
    "change, needle",
    [
        (_npy_dir, "m3.npy: is a folder"),
        (_npy_dangling, "m3.npy: dangling symlink"),
        (_npy_loop, "m3.npy: symlink loop"),
        (_label_1e20, "outside the int64 range"),
    ],
    ids=["npy is a folder", "dangling symlink", "symlink loop", "label 1e20"],
)
def test_malformed_dataset_entries_are_named(ds, tmp_path, change, needle):
    bad = _copy_with(ds, tmp_path, "bad", change)
    rc, _, err = train(bad, tmp_path / "run")
    error_line(rc, err, needle)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    "given, needle",
    [
        ({"standardize": "false"}, "standardize must be true or false"),
        ({"drop_last": "no"}, "drop_last must be true or false"),
        ({"hidden": "16"}, "hidden must be an integer"),
        ({"split": [0.5, 0.5]}, "split must be 3 values"),
        ({"objective": 5}, "objective must be a string"),
    ],
)
def test_config_file_fields_are_type_checked(data, tmp_path, given, needle):
    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps(given))
    rc, _, err = train(data, tmp_path / "run", "--config", cfg)
    error_line(rc, err, needle)


@pytest.mark.parametrize("flag", ["--lr", "--weight-decay", "--intra-weight"])
@pytest.mark.parametrize("value", ["nan", "inf"])
def test_non_finite_floats_refused_before_anything_is_written(data, tmp_path, flag, value):
    rc, _, err = train(data, tmp_path / "run", flag, value)
    error_line(rc, err, "finite")
    assert not (tmp_path / "run").exists()
