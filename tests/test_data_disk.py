"""Dataset folders: save/load round trip and one clear error per kind of malformed folder.

``BAD_CASES`` is shared with ``test_cli_inspect.py``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from centrobind.data import MultimodalDataset, load, load_dataset, save_dataset
from centrobind.errors import DatasetError

N = 10


def _write_good(root: Path, n: int = N) -> Path:
    rng = np.random.default_rng(0)
    (root / "modalities").mkdir(parents=True)
    np.save(root / "modalities" / "a.npy", rng.normal(size=(n, 3)).astype(np.float32))
    np.save(root / "modalities" / "b.npy", rng.normal(size=(n, 2)))
    return root


def _with(name: str, array: np.ndarray, sub: str = "modalities", **save_kw) -> Callable:
    def build(tmp: Path) -> Path:
        root = _write_good(tmp / "ds")
        (root / sub).mkdir(exist_ok=True)
        np.save(root / sub / name, array, **save_kw)
        return root

    return build


def _partial_nan() -> np.ndarray:
    b = np.ones((N, 2))
    b[3, 1] = np.nan
    return b


def _inf_row() -> np.ndarray:
    b = np.ones((N, 2))
    b[4, 0] = np.inf
    return b


def _missing_folder(tmp: Path) -> Path:
    return tmp / "nope"


def _no_modalities(tmp: Path) -> Path:
    (tmp / "ds" / "labels").mkdir(parents=True)
    return tmp / "ds"


def _one_modality(tmp: Path) -> Path:
    root = _write_good(tmp / "ds")
    (root / "modalities" / "b.npy").unlink()
    return root


def _empty(tmp: Path) -> Path:
    return _write_good(tmp / "ds", n=0)


def _truncated(tmp: Path) -> Path:
    root = _write_good(tmp / "ds")
    p = root / "modalities" / "b.npy"
    p.write_bytes(p.read_bytes()[:150])
    return root


def _truncated_header(tmp: Path) -> Path:
    root = _write_good(tmp / "ds")
    p = root / "modalities" / "a.npy"
    p.write_bytes(p.read_bytes()[:40])
    return root


def _junk(tmp: Path) -> Path:
    root = _write_good(tmp / "ds")
    (root / "modalities" / "b.npy").write_bytes(b"this is not numpy data at all")
    return root


def _no_modality_for_sample(tmp: Path) -> Path:
    root = _write_good(tmp / "ds")
    for name in ("a", "b"):
        x = np.load(root / "modalities" / f"{name}.npy")
        x[2] = np.nan
        np.save(root / "modalities" / f"{name}.npy", x)
    return root


def _bad_meta(tmp: Path) -> Path:
    root = _write_good(tmp / "ds")
    (root / "meta.json").write_text("{not json")
    return root


def _meta_lists_unknown(tmp: Path) -> Path:
    root = _write_good(tmp / "ds")
    (root / "meta.json").write_text(json.dumps({"modalities": ["a", "b", "zz"]}))
    return root


# (id, builder(tmp) -> folder, substrings the one-line message must contain)
BAD_CASES: list[tuple[str, Callable[[Path], Path], list[str]]] = [
    ("missing_folder", _missing_folder, ["nope", "does not exist"]),
    ("no_modalities_dir", _no_modalities, ["modalities", "missing folder"]),
    ("one_modality", _one_modality, ["modalities", "at least 2", "a.npy"]),
    ("row_mismatch", _with("b.npy", np.ones((N - 1, 2))), ["b.npy", "9 rows", "a.npy"]),
    (
        "object_array",
        _with("b.npy", np.array([[1, "x"]] * N, dtype=object), allow_pickle=True),
        ["b.npy", "object arrays are not allowed"],
    ),
    ("string_array", _with("b.npy", np.array([["x", "y"]] * N)), ["b.npy", "non-numeric"]),
    ("features_1d", _with("b.npy", np.ones(N)), ["b.npy", "2-D", "1-D"]),
    ("features_3d", _with("b.npy", np.ones((N, 2, 2))), ["b.npy", "2-D", "3-D"]),
    ("partial_nan_row", _with("b.npy", _partial_nan()), ["b.npy", "row 3", "NaN"]),
    ("inf_in_row", _with("b.npy", _inf_row()), ["b.npy", "row 4", "inf"]),
    ("all_missing", _with("b.npy", np.full((N, 2), np.nan)), ["b.npy", "missing for all"]),
    ("empty_dataset", _empty, ["a.npy", "empty", "0 rows"]),
    ("no_modality_for_sample", _no_modality_for_sample, ["sample 2", "no modality present"]),
    (
        "label_wrong_length",
        _with("digit.npy", np.zeros(N - 1, np.int64), sub="labels"),
        ["digit.npy", "9 labels", "expected 10"],
    ),
    (
        "label_float_nonint",
        _with("digit.npy", np.linspace(0, 1, N), sub="labels"),
        ["digit.npy", "non-integer"],
    ),
    (
        "label_2d",
        _with("digit.npy", np.zeros((N, 2), np.int64), sub="labels"),
        ["digit.npy", "1-D"],
    ),
    (
        "factor_wrong_rows",
        _with("z.npy", np.zeros((N + 1, 2)), sub="factors"),
        ["z.npy", "11 rows"],
    ),
    (
        "split_out_of_range",
        _with("train.npy", np.array([0, 1, N]), sub="splits"),
        ["train.npy", "index 10 out of range"],
    ),
    (
        "split_negative",
        _with("test.npy", np.array([-1, 2]), sub="splits"),
        ["test.npy", "index -1 out of range"],
    ),
    (
        "split_duplicate",
        _with("train.npy", np.array([0, 3, 3]), sub="splits"),
        ["train.npy", "duplicate index 3"],
    ),
    ("truncated_npy", _truncated, ["b.npy", "unreadable", "truncated"]),
    ("truncated_header", _truncated_header, ["a.npy", "unreadable", "truncated"]),
    ("not_npy", _junk, ["b.npy", "not a .npy file"]),
    ("bad_meta_json", _bad_meta, ["meta.json", "invalid JSON"]),
    ("meta_lists_missing", _meta_lists_unknown, ["zz.npy", "listed in meta.json"]),
]


@pytest.mark.parametrize("mmap", [True, False])
@pytest.mark.parametrize("case_id, build, needles", BAD_CASES, ids=[c[0] for c in BAD_CASES])
def test_load_dataset_rejects(tmp_path, case_id, build, needles, mmap):
    path = build(tmp_path)
    with pytest.raises(DatasetError) as info:
        load_dataset(path, mmap=mmap)
    msg = str(info.value)
    assert "\n" not in msg
    for needle in needles:
        assert needle in msg, (needle, msg)


def _rich_dataset() -> MultimodalDataset:
    rng = np.random.default_rng(1)
    n = 40
    x = rng.normal(size=(n, 5))
    y = rng.normal(size=(n, 3)).astype(np.float32)
    w = rng.integers(0, 9, size=(n, 2))  # integer features are fine
    x[[1, 5]] = np.nan
    y[[2, 7, 9]] = np.nan
    splits = {"train": rng.permutation(n)[:30], "test": np.arange(30, 40)}
    return MultimodalDataset(
        {"zeta": x, "alpha": y, "mid": w},  # deliberately not alphabetical
        labels={"kind": rng.integers(0, 4, n), "aux": np.arange(n) % 2},
        factors={"shared": rng.normal(size=(n, 2)), "one": rng.normal(size=n)},
        splits=splits,
        name="rich",
    )


def _assert_same(a: MultimodalDataset, b: MultimodalDataset) -> None:
    assert a.name == b.name
    assert a.modalities == b.modalities
    assert torch.equal(a.mask, b.mask)
    for m in a.modalities:
        assert a.features[m].dtype == b.features[m].dtype
        assert torch.equal(a.features[m], b.features[m])
    for attr in ("labels", "factors", "splits"):
        da, db = getattr(a, attr), getattr(b, attr)
        assert list(da) == list(db), attr
        for k in da:
            assert da[k].dtype == db[k].dtype and torch.equal(da[k], db[k]), (attr, k)


@pytest.mark.parametrize("mmap", [True, False])
def test_round_trip_identical(tmp_path, mmap):
    ds = _rich_dataset()
    assert not bool(ds.mask.all())
    save_dataset(ds, tmp_path / "rich")
    back = load_dataset(tmp_path / "rich", mmap=mmap)
    _assert_same(ds, back)
    # missing rows are stored as NaN on disk
    assert np.isnan(np.load(tmp_path / "rich" / "modalities" / "zeta.npy")[1]).all()
    # through the generic entry point too
    _assert_same(ds, load(str(tmp_path / "rich")))
    # a second save/load cycle is still identical
    save_dataset(back, tmp_path / "rich", overwrite=True)
    _assert_same(ds, load_dataset(tmp_path / "rich"))


def test_save_refuses_to_clobber(tmp_path):
    ds = _rich_dataset()
    save_dataset(ds, tmp_path / "d")
    with pytest.raises(DatasetError, match="overwrite=True"):
        save_dataset(ds, tmp_path / "d")


def test_folder_without_meta_sorts_modalities_and_names_from_folder(tmp_path):
    root = _write_good(tmp_path / "plain")
    np.save(root / "modalities" / "0first.npy", np.zeros((N, 1)))
    np.save(root / "modalities" / "a-b.npy", np.zeros((N, 1)))  # sorted by name: a < a-b < b
    (root / "modalities" / "README.txt").write_text("ignored")
    (root / "labels").mkdir()
    np.save(root / "labels" / "y.npy", np.arange(N, dtype=np.float64))  # integer-valued floats ok
    ds = load_dataset(root)
    assert ds.modalities == ["0first", "a", "a-b", "b"]
    assert ds.name == "plain"
    assert ds.labels["y"].tolist() == list(range(N))
    assert bool(ds.mask.all())


def test_meta_json_sets_order(tmp_path):
    root = _write_good(tmp_path / "ordered")
    (root / "meta.json").write_text(json.dumps({"name": "x", "modalities": ["b", "a"]}))
    ds = load_dataset(root)
    assert ds.modalities == ["b", "a"] and ds.name == "x"
    assert torch.equal(ds.features["a"], torch.from_numpy(np.load(root / "modalities" / "a.npy")))
