"""Issue 12, class 2: never score the wrong thing silently (through the CLI)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from centrobind.checkpoint import load_tensors, save_tensors
from centrobind.cli import main
from centrobind.data import MultimodalDataset, make_synthetic, save_dataset
from reliability_helpers import FAST, corpus_and_run, error_line, inproc, main_cli

# The refusals here need no process of their own: the CLI's main runs in this process.
cli = inproc


def train(data: object, out: object, *extra: object) -> tuple[int, str, str]:
    return inproc("train", "--data", data, "--out", out, *FAST, *extra)


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


# ------------------------------------------------------------------- search, featurize (issue 19)


@pytest.fixture(scope="module")
def corpus_run():
    return corpus_and_run()


def test_index_reads_a_string_as_a_dataset_only(corpus_run, tmp_path):
    """A misspelled corpus folder is an error, never a one-row index of the path as a caption."""
    import centrobind
    from centrobind.errors import CentrobindError

    corpus, run = corpus_run
    model = centrobind.load(run)
    typo = str(corpus) + "_typo"
    for given in (typo, Path(typo), "captions.txt"):
        with pytest.raises(CentrobindError, match="does not exist"):
            model.index(given, modality="caption")
    assert len(model.index(str(corpus), modality="caption")) == 24
    assert len(model.index(["a red square", "a blue square"], modality="caption")) == 2


def test_search_on_a_run_that_is_still_training(corpus_run, tmp_path, capsys):
    import fcntl
    import os
    import shutil

    corpus, run = corpus_run
    busy = tmp_path / "busy"
    busy.mkdir()
    shutil.copy(run / "config.json", busy / "config.json")
    fd = os.open(busy / ".lock", os.O_RDWR | os.O_CREAT)  # held as by a training process
    fcntl.flock(fd, fcntl.LOCK_EX)
    info = {"pid": 4242, "host": "h", "started": "2026-01-01 00:00:00 UTC", "purpose": "train"}
    os.write(fd, json.dumps(info).encode())
    args = ["search", "--run", busy, "--corpus", corpus, "--target", "image", "--query", "red"]
    try:
        rc, _, err = main_cli(capsys, *args)
        error_line(rc, err, "is still training", "train pid 4242")
    finally:
        os.close(fd)
    rc, _, err = main_cli(capsys, *args)  # stopped before the end
    error_line(rc, err, "training did not finish", "--resume")


def test_stratified_split_on_one_row_classes_names_the_cause(ds, tmp_path, capsys):
    one_each = MultimodalDataset(
        dict(ds.features), mask=ds.mask, labels={"id": np.arange(len(ds))}, name="ids"
    )
    save_dataset(one_each, tmp_path / "d")
    rc, _, err = main_cli(capsys, "train", "--data", tmp_path / "d", "--out", tmp_path / "r")
    error_line(rc, err, "test split is empty", "stratified on label 'id'", "single row")
    assert not (tmp_path / "r").exists()


def test_rows_with_no_modality_are_warned_and_left_out(corpus_run, tmp_path, capsys):
    """A manifest row whose every cell is empty (or unreadable): featurize says so, inspect
    counts it, training and evaluation leave it out, embed gives it NaN."""
    corpus, _ = corpus_run
    raw = corpus.parent / "raw"
    lines = (raw / "m.csv").read_text().splitlines()
    lines[3] = ",,"  # row 2: every cell empty
    lines[6] = '"",img/nowhere.png,'  # row 5: no caption, an image that is not there
    man = raw / "holes.csv"
    man.write_text("\n".join(lines) + "\n")
    out = tmp_path / "ds"
    rc, _, err = main_cli(
        capsys, "featurize", man, "--out", out, "--encoder", "caption=chars",
        "--encoder", "image=pixels:4", "--label", "colour", "--quiet",
    )  # fmt: skip
    assert rc == 0, err
    assert "warning: 2 row(s) have no modality: every cell is empty or unreadable (row 2, 5)" in err
    rc, text, err = main_cli(capsys, "inspect", out)
    assert rc == 0 and "samples with no modality: 2" in text, err
    assert "warning:" in err and "have no modality present" in err
    run = tmp_path / "run"
    rc, _, err = main_cli(capsys, "train", "--data", out, "--out", run, *FAST)
    assert rc == 0, err
    splits, _ = load_tensors(run / "splits.safetensors")
    used = torch.cat([splits[k] for k in ("train", "val", "test")]).tolist()
    assert sorted(used) == [r for r in range(24) if r not in (2, 5)]
    assert main_cli(capsys, "evaluate", "--run", run)[0] == 0
    rc, _, err = main_cli(capsys, "embed", "--run", run, "--data", out, "--out", tmp_path / "e.npz")
    assert rc == 0, err
    fused = np.load(tmp_path / "e.npz")["fused.mean"]
    assert np.isnan(fused[[2, 5]]).all() and np.isfinite(np.delete(fused, [2, 5], 0)).all()


def test_benchmark_record_edited_or_not_utf8_is_redone(tmp_path):
    """runs.jsonl lines are checksummed: a result edited by hand (a number, or its type) or a
    line that is not UTF-8 is never used (its run is redone) and is warned about; a line cut
    short by a crash is skipped quietly."""
    from centrobind.bench.cache import RunCache
    from centrobind.errors import CentrobindWarning

    path = tmp_path / "runs.jsonl"
    c = RunCache(path)
    for i in range(4):
        c.put(("job", i), {"R@1": 10.0 + i})
    lines = path.read_bytes().splitlines(keepends=True)
    lines[0] = lines[0].replace(b'"R@1": 10.0', b'"R@1": 99.0')
    lines[1] = lines[1].replace(b'{"R@1": 11.0}', b"5")
    lines[2] = b"\xff\xfe" + lines[2]
    path.write_bytes(b"".join(lines))
    with pytest.warns(CentrobindWarning, match=r"3 line\(s\) are not records .* line 1, 2, 3"):
        again = RunCache(path)
    assert [again.get(("job", i)) for i in range(4)] == [None, None, None, {"R@1": 13.0}]
    path.write_bytes(lines[3] + b'{"key": "abc", "resu')  # a crash mid-write: no warning
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert RunCache(path).get(("job", 3)) == {"R@1": 13.0}
