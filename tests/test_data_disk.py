"""Dataset folders: save/load round trip and one clear error per kind of malformed folder.

``BAD_CASES`` is shared with ``test_cli_inspect.py``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from centrobind.data import (
    DatasetWarning,
    MultimodalDataset,
    Standardizer,
    describe,
    load,
    load_dataset,
    save_dataset,
)
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


def _meta_text(text: str | bytes) -> Callable[[Path], Path]:
    def build(tmp: Path) -> Path:
        root = _write_good(tmp / "ds")
        data = text.encode() if isinstance(text, str) else text
        (root / "meta.json").write_bytes(data)
        return root

    return build


def _entry(kind: str, sub: str = "modalities", name: str = "c.npy") -> Callable[[Path], Path]:
    """A dataset whose ``sub/name`` is a folder, a dangling symlink, a symlink loop or a FIFO."""

    def build(tmp: Path) -> Path:
        root = _write_good(tmp / "ds")
        (root / sub).mkdir(exist_ok=True)
        p = root / sub / name
        if kind == "folder":
            p.mkdir()
            np.save(p / "x.npy", np.zeros((N, 2)))
        elif kind == "dangling":
            p.symlink_to(root / "nowhere.npy")
        elif kind == "loop":
            p.symlink_to(p.name)  # c.npy -> c.npy
        elif kind == "fifo":
            os.mkfifo(p)
        return root

    return build


def _labels_is_a_file(tmp: Path) -> Path:
    root = _write_good(tmp / "ds")
    (root / "labels").write_text("0 1 2")
    return root


def _meta_labels_not_names(tmp: Path) -> Path:
    root = _write_good(tmp / "ds")
    (root / "labels").mkdir()
    np.save(root / "labels" / "1.npy", np.zeros(N, np.int64))
    (root / "meta.json").write_text(json.dumps({"labels": [1]}))  # was a KeyError traceback
    return root


def _non_utf8_name(tmp: Path) -> Path:
    root = _write_good(tmp / "ds")
    with open(os.fsencode(root / "modalities") + b"/\xff.npy", "wb") as f:
        np.save(f, np.zeros((N, 2)))
    return root


def _csv_instead_of_npy(tmp: Path) -> Path:
    root = _one_modality(tmp)
    (root / "modalities" / "b.csv").write_text("1,2\n")
    return root


def _nested(depth: int) -> str:
    return '{"x": ' + "[" * depth + "]" * depth + "}"


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
    # issue 12: no traceback, no silent skip, no silent wrap-around
    ("meta_recursion", _meta_text(_nested(100_000)), ["meta.json", "nested too deeply"]),
    ("meta_too_deep", _meta_text(_nested(150)), ["meta.json", "deeper than 100 levels"]),
    ("meta_not_utf8", _meta_text(b'{"name": "\xff"}'), ["meta.json", "invalid JSON"]),
    ("meta_lone_surrogate", _meta_text('{"name": "\\ud800"}'), ["meta.json", "not valid Unicode"]),
    ("meta_huge_int", _meta_text('{"x": ' + "9" * 5000 + "}"), ["meta.json", "invalid JSON"]),
    ("meta_array", _meta_text("[1, 2]"), ["meta.json", "JSON object"]),
    ("meta_name_number", _meta_text('{"name": 3}'), ["meta.json", "'name' must be a string"]),
    (
        "meta_modalities_numbers",
        _meta_text('{"modalities": [1, 2]}'),
        ["meta.json", "'modalities' must be a list"],
    ),
    ("meta_labels_numbers", _meta_labels_not_names, ["meta.json", "'labels' must be a list"]),
    (
        "meta_unknown_format",
        _meta_text('{"format": "centrobind-dataset/9"}'),
        ["meta.json", "unsupported format"],
    ),
    (
        "label_1e20",
        _with("digit.npy", np.full(N, 1e20), sub="labels"),
        ["digit.npy", "1e+20", "outside the int64 range"],
    ),
    (
        "label_2_pow_63",
        _with("digit.npy", np.full(N, 2.0**63), sub="labels"),
        ["digit.npy", "outside the int64 range"],
    ),
    (
        "label_uint64_huge",
        _with("digit.npy", np.full(N, 2**64 - 1, np.uint64), sub="labels"),
        ["digit.npy", "18446744073709551615", "outside the int64 range"],
    ),
    (
        "label_half",
        _with("digit.npy", np.full(N, 1.5), sub="labels"),
        ["digit.npy", "non-integer value 1.5"],
    ),
    (
        "label_nan",
        _with("digit.npy", np.full(N, np.nan), sub="labels"),
        ["digit.npy", "NaN/inf at position 0"],
    ),
    (
        "split_1e20",
        _with("train.npy", np.array([0.0, 1e20]), sub="splits"),
        ["train.npy", "outside the int64 range"],
    ),
    (
        "features_beyond_float32",
        _with("b.npy", np.full((N, 2), 1e300)),
        ["b.npy", "row 0", "beyond float32 range"],
    ),
    ("modality_is_folder", _entry("folder"), ["c.npy", "is a folder"]),
    ("modality_dangling_symlink", _entry("dangling"), ["c.npy", "dangling symlink"]),
    ("modality_symlink_loop", _entry("loop"), ["c.npy", "symlink loop"]),
    ("modality_fifo", _entry("fifo"), ["c.npy", "not a regular file"]),
    ("label_is_folder", _entry("folder", sub="labels", name="y.npy"), ["y.npy", "is a folder"]),
    ("split_dangling", _entry("dangling", sub="splits"), ["c.npy", "dangling symlink"]),
    ("labels_is_a_file", _labels_is_a_file, ["labels", "expected a folder"]),
    ("non_utf8_file_name", _non_utf8_name, ["modalities", "not valid UTF-8", "xff"]),
    ("csv_not_npy", _csv_instead_of_npy, ["at least 2", "a.npy", "ignored (not .npy): b.csv"]),
    (
        "newline_in_file_name",
        _with("c\nd.npy", np.ones((N, 2))),
        ["modalities", "'c\\nd.npy'", "control character"],
    ),
    ("newline_in_folder_name", lambda tmp: _one_modality(tmp / "x\ny"), ["x\\ny", "at least 2"]),
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


def test_a_sample_with_no_modality_loads_as_an_empty_row(tmp_path):
    """A row with no modality present (a featurized row whose every item was unreadable) is
    kept, so rows stay aligned with labels and items, with a warning (issue 19)."""
    with pytest.warns(DatasetWarning, match="1 sample.* no modality present .*row 2"):
        ds = load_dataset(_no_modality_for_sample(tmp_path))
    assert len(ds) == N and not bool(ds.mask[:, 2].any()) and bool(ds.mask[:, 3].all())


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
    with pytest.warns(DatasetWarning, match="README.txt"):
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


# -- meta.json keys beyond the loader's own (interface 1) -------------------------------------


FEATURIZED_META = {
    "featurizers": {"text": {"spec": "st:minilm", "kind": "text", "version": "1", "dim": 3}},
    "label_maps": {"kind": {"cat": 0, "dog": 1}},
    "source": "/data/manifest.csv",
    "nested": [1, 2.5, None, True, {"deep": [["x"]]}],
}


def test_meta_keys_kept_and_round_tripped(tmp_path):
    root = _write_good(tmp_path / "ds")
    (root / "meta.json").write_text(json.dumps({"modalities": ["b", "a"], **FEATURIZED_META}))
    ds = load_dataset(root)
    assert ds.modalities == ["b", "a"]
    assert ds.meta == FEATURIZED_META  # the loader's own keys are not in ds.meta
    save_dataset(ds, tmp_path / "copy")
    written = json.loads((tmp_path / "copy" / "meta.json").read_text())
    assert {k: written[k] for k in FEATURIZED_META} == FEATURIZED_META
    assert written["modalities"] == ["b", "a"]
    back = load_dataset(tmp_path / "copy")
    assert back.meta == FEATURIZED_META
    _assert_same(ds, back)


def test_meta_carried_by_derived_datasets_as_copies():
    ds = _rich_dataset()
    ds2 = MultimodalDataset(ds.features, mask=ds.mask, labels=ds.labels, meta=FEATURIZED_META)
    assert ds2.meta == FEATURIZED_META and ds2.meta is not FEATURIZED_META
    std = Standardizer.fit(ds2)
    derived = [
        ds2.subset([0, 1, 2]),
        ds2.with_missing(0.3, seed=0),
        ds2.to("cpu"),
        std.apply(ds2),
        *ds2.split(seed=0).values(),
    ]
    for d in derived:
        assert d.meta == FEATURIZED_META
    derived[0].meta["featurizers"]["text"]["dim"] = 99  # no aliasing back into the parent
    assert ds2.meta["featurizers"]["text"]["dim"] == 3
    assert MultimodalDataset(ds.features, mask=ds.mask).meta == {}


@pytest.mark.parametrize(
    "meta, needle",
    [
        ({"t": (1, 2)}, "JSON types"),
        ({"s": {1, 2}}, "JSON types"),
        ({1: "x"}, "keys must be strings"),
        ({"x": np.float32(1.0)}, "JSON types"),
        ({"x": "\ud800"}, "not valid Unicode"),
        ("not a dict", "expected a JSON object"),
    ],
)
def test_meta_must_be_json(meta, needle):
    feats = {"a": np.ones((3, 1)), "b": np.ones((3, 1))}
    with pytest.raises(DatasetError, match=needle):
        MultimodalDataset(feats, meta=meta)


def test_save_refuses_reserved_or_non_json_meta_set_after_construction(tmp_path):
    ds = _rich_dataset()
    ds.meta["modalities"] = ["x"]
    with pytest.raises(DatasetError, match="reserved"):
        save_dataset(ds, tmp_path / "a")
    ds.meta = {"x": object()}
    with pytest.raises(DatasetError, match="JSON types"):
        save_dataset(ds, tmp_path / "b")
    deep: list[object] = []
    for _ in range(200):
        deep = [deep]
    ds.meta = {"x": deep}
    with pytest.raises(DatasetError, match="deeper than 100"):
        save_dataset(ds, tmp_path / "c")


def test_items_folder_is_ignored_and_kept_on_overwrite(tmp_path):
    root = _write_good(tmp_path / "ds")
    (root / "items").mkdir()
    (root / "items" / "a.jsonl").write_text('"a cat"\nnull\n')
    (root / "items" / "b.npy").write_bytes(b"not numpy")  # never read
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no warning either: items/ is not a dataset sub-folder
        ds = load_dataset(root)
    assert ds.modalities == ["a", "b"]
    save_dataset(ds, root, overwrite=True)
    assert (root / "items" / "a.jsonl").read_text() == '"a cat"\nnull\n'


# -- ignored entries ----------------------------------------------------------------------------


def test_non_npy_entries_warned_by_name_hidden_ones_skipped(tmp_path):
    root = _write_good(tmp_path / "ds")
    (root / "modalities" / "c.csv").write_text("1,2\n")
    (root / "modalities" / "raw").mkdir()
    (root / "modalities" / ".DS_Store").write_bytes(b"\0")
    (root / "modalities" / "._a.npy").write_bytes(b"AppleDouble")
    (root / "labels").mkdir()
    (root / "labels" / "y.txt").write_text("0\n")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds = load_dataset(root)
    assert ds.modalities == ["a", "b"] and ds.labels == {}
    msgs = [str(w.message) for w in caught]
    assert all(issubclass(w.category, DatasetWarning) for w in caught)
    assert len(msgs) == 2, msgs
    assert "c.csv" in msgs[0] and "raw/" in msgs[0] and "modalities" in msgs[0]
    assert "y.txt" in msgs[1] and "labels" in msgs[1]
    assert not any("DS_Store" in m or "._a" in m for m in msgs)


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "centrobind.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )


def test_cli_inspect_shows_ignored_file_and_unlabelled_count(tmp_path):
    root = _write_good(tmp_path / "ds")
    (root / "modalities" / "notes.csv").write_text("x\n")
    (root / "labels").mkdir()
    np.save(root / "labels" / "kind.npy", np.array([0, 1, -1, -1, -1, 0, 1, 1, 0, 2]))
    proc = _cli("inspect", str(root))
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    assert proc.stderr.splitlines() == [
        f"warning: {root / 'modalities'}: ignored notes.csv (not .npy; the dataset reads only "
        "modalities/<name>.npy files)"
    ]
    row = next(r.split() for r in proc.stdout.splitlines() if r.split()[:1] == ["kind"])
    assert row == ["kind", "3", "3", "0:3", "1:3", "2:1"]  # 3 classes, 3 unlabelled


# -- single-modality datasets (query sets for embed/search) -------------------------------------


def test_single_modality_folder_needs_min_modalities_1(tmp_path):
    root = _one_modality(tmp_path)
    with pytest.raises(DatasetError, match="at least 2"):
        load_dataset(root)
    ds = load_dataset(root, min_modalities=1)
    assert ds.modalities == ["a"] and len(ds) == N
    assert load(str(root), min_modalities=1).modalities == ["a"]
    # the usual operations work on it
    std = Standardizer.fit(ds)
    assert std.apply(ds.subset([0, 1])).modalities == ["a"]
    assert "a" in describe(ds)
    save_dataset(ds, tmp_path / "copy")
    _assert_same(ds, load_dataset(tmp_path / "copy", min_modalities=1))
    with pytest.raises(DatasetError, match="at least 2"):
        load_dataset(tmp_path / "copy")
    with pytest.raises(DatasetError, match="at least 2"):
        MultimodalDataset({"a": np.ones((3, 2))})
    # builtins accept the folder options and ignore them
    assert load("mfeat", min_modalities=1, mmap=False).num_modalities == 6


@pytest.mark.parametrize("bad", [0, -1, True, 1.0, "2"])
def test_min_modalities_validated(tmp_path, bad):
    root = _write_good(tmp_path / "ds")
    with pytest.raises(DatasetError, match="min_modalities"):
        load_dataset(root, min_modalities=bad)


def test_empty_modalities_folder_with_min_1(tmp_path):
    (tmp_path / "ds" / "modalities").mkdir(parents=True)
    with pytest.raises(DatasetError, match="at least 1 modality .npy file, found 0"):
        load_dataset(tmp_path / "ds", min_modalities=1)


# -- names ---------------------------------------------------------------------------------------

ODD_NAMES = [
    "items", "keys", "values", "fused", "mean", "std", "a.mean", "__class__", "features", "mask",
    "modalities", "meta", "0", "-", "with space", "é漢字", "a.npy",
]  # fmt: skip


def test_any_name_the_format_allows_round_trips(tmp_path):
    rng = np.random.default_rng(0)
    feats = {m: rng.normal(size=(6, 2)) for m in ODD_NAMES}
    labels = {m: np.arange(6) % 2 for m in ("items", "keys", "fused")}
    ds = MultimodalDataset(feats, labels=labels, splits={"keys": [0, 1]}, name="odd")
    save_dataset(ds, tmp_path / "odd")
    back = load_dataset(tmp_path / "odd")
    _assert_same(ds, back)
    # the meta.json-free folder gives the same modalities, in sorted order
    (tmp_path / "odd" / "meta.json").unlink()
    assert load_dataset(tmp_path / "odd").modalities == sorted(ODD_NAMES)
    # per-modality state keyed by name (".mean"/".std" suffixes) is unambiguous
    std = Standardizer.fit(back)
    again = Standardizer.from_state_dict(std.state_dict())
    assert again.modalities == std.modalities
    for m in ODD_NAMES:
        assert torch.equal(again.mean[m], std.mean[m]) and torch.equal(again.std[m], std.std[m])
    assert describe(back).count("\n") > len(ODD_NAMES)


@pytest.mark.parametrize("name", ["", ".hidden", "a/b", "nul\0", "x" * 251])
def test_save_refuses_names_that_are_not_file_names(tmp_path, name):
    ds = MultimodalDataset({"ok": np.ones((2, 1)), name or "other": np.ones((2, 1))})
    if not name:
        ds.features[""] = ds.features.pop("other")
        ds.modalities = ["ok", ""]
    with pytest.raises(DatasetError, match="not usable as a file name"):
        save_dataset(ds, tmp_path / "x")


def test_save_io_failure_is_one_line_dataset_error(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(DatasetError, match="cannot write dataset") as info:
        save_dataset(_rich_dataset(), tmp_path / "file" / "ds")
    assert "\n" not in str(info.value)
