"""Property-based tests of the dataset loader (hypothesis).

Whatever a folder holds (random shapes, dtypes, NaN/inf patterns, entry names and kinds, meta.json
values) and whatever is passed to ``MultimodalDataset``, the result is either a valid dataset that
round-trips through ``save_dataset``/``load_dataset``, or a one-line ``CentrobindError``; never any
other exception. Each test runs 100 generated cases (a few seconds in all).
"""

from __future__ import annotations

import json
import math
import os
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from centrobind.data import MultimodalDataset, describe, load_dataset, save_dataset
from centrobind.data.checks import MAX_META_DEPTH, RESERVED_META_KEYS
from centrobind.errors import CentrobindError

# Derandomized (a fixed, seeded sequence of cases: the suite gives the same result every run);
# CENTROBIND_HYPOTHESIS_EXAMPLES=5000 explores more, with fresh random cases.
_EXAMPLES = int(os.environ.get("CENTROBIND_HYPOTHESIS_EXAMPLES", "100"))
SETTINGS = settings(
    max_examples=_EXAMPLES,
    derandomize=_EXAMPLES == 100,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

DTYPES = [
    np.float16,
    np.float32,
    np.float64,
    np.dtype(">f8"),
    np.int8,
    np.int64,
    np.uint8,
    np.uint64,
    np.bool_,
    np.complex64,
    np.dtype("<U2"),
    np.dtype("M8[s]"),
]
FLOATS = [np.float16, np.float32, np.float64]

names = st.text(
    alphabet=st.characters(blacklist_characters="/\0", blacklist_categories=("Cs",)),
    min_size=1,
    max_size=10,
).filter(lambda s: s not in (".", "..") and len(s.encode("utf-8")) < 200)

json_scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=6)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=12,
)


@st.composite
def any_array(draw: st.DrawFn, n: int | None) -> np.ndarray:
    """A random array; given ``n``, usually an ``[n, d]`` float matrix with NaN-row patterns."""
    if n is not None and draw(st.integers(0, 4)) > 0:
        d = draw(st.integers(0, 3))
        dtype = draw(st.sampled_from(FLOATS + [np.int64, np.bool_]))
        arr = draw(hnp.arrays(dtype, (n, d), elements=_elements(dtype, draw(st.booleans()))))
        if arr.dtype.kind == "f" and n:
            rows = draw(st.lists(st.integers(0, n - 1), max_size=n))
            arr[rows] = np.nan  # missing samples (whole rows)
        return arr
    dtype = draw(st.sampled_from(DTYPES))
    shape = draw(hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=4))
    return draw(hnp.arrays(dtype, shape))


def _elements(dtype: Any, finite: bool) -> st.SearchStrategy[Any] | None:
    if np.dtype(dtype).kind != "f":
        return None
    width = 8 * np.dtype(dtype).itemsize
    return st.floats(allow_nan=not finite, allow_infinity=not finite, width=width)


@st.composite
def label_array(draw: st.DrawFn, n: int) -> np.ndarray:
    """Labels: usually ints in [-1, 3], sometimes floats (1.5, 1e20, NaN) or odd dtypes."""
    kind = draw(st.integers(0, 5))
    if kind == 0:
        return draw(any_array(None))
    if kind == 1:
        values = st.sampled_from([0.0, 1.0, -1.0, 1.5, 1e20, 2.0**63, -(2.0**63), math.nan])
        return np.array(draw(st.lists(values, min_size=n, max_size=n)), dtype=np.float64)
    if kind == 2:
        values = st.sampled_from([0, 1, 2**63 - 1, 2**64 - 1])
        return np.array(draw(st.lists(values, min_size=n, max_size=n)), dtype=np.uint64)
    return np.array(draw(st.lists(st.integers(-1, 3), min_size=n, max_size=n)), dtype=np.int64)


@st.composite
def split_array(draw: st.DrawFn, n: int) -> np.ndarray:
    if draw(st.integers(0, 4)) == 0:
        return draw(any_array(None))
    idx = draw(st.lists(st.integers(-1, n), max_size=n + 1))
    return np.array(idx, dtype=draw(st.sampled_from([np.int64, np.float64, np.int8])))


ENTRY_KINDS = ["array"] * 6 + ["folder", "dangling", "loop", "garbage", "truncated", "text"]


@st.composite
def valid_matrix(draw: st.DrawFn, n: int) -> np.ndarray:
    """A float ``[n, d]`` matrix, finite except for some all-NaN (missing) rows."""
    d = draw(st.integers(1, 3))
    dtype = draw(st.sampled_from([np.float32, np.float64, np.dtype(">f4")]))
    arr = draw(hnp.arrays(dtype, (n, d), elements=st.floats(-1e6, 1e6, width=32)))
    rows = draw(st.lists(st.integers(0, n - 1), max_size=n - 1))
    arr[rows] = np.nan
    return arr


@st.composite
def folder_spec(draw: st.DrawFn) -> dict[str, Any]:
    """A description of a dataset folder: entries per sub-folder, meta.json content.

    Half the cases are "plausible" (regular .npy files of the right shapes, a JSON object in
    meta.json) so that valid datasets are common; the rest draw every entry kind and dtype.
    """
    plausible = draw(st.booleans())
    n = draw(st.integers(1, 5) if plausible else st.integers(0, 5))
    spec: dict[str, Any] = {"n": n, "entries": {}}
    mods = (1, 3) if plausible else (0, 4)
    for sub, count in (("modalities", mods), ("labels", (0, 2)), ("factors", (0, 1))):
        entries = []
        for name in draw(st.lists(names, min_size=count[0], max_size=count[1], unique=True)):
            if plausible:
                kind, suffix = "array", ".npy"
            else:
                kind = draw(st.sampled_from(ENTRY_KINDS))
                suffix = draw(st.sampled_from([".npy"] * 5 + [".csv", ""]))
            if sub == "labels":
                arr = draw(label_array(n))
            elif plausible:
                arr = draw(valid_matrix(n))
            else:
                arr = draw(any_array(n))
            entries.append((name + suffix, kind, arr))
        spec["entries"][sub] = entries
    spec["entries"]["splits"] = [
        (name + ".npy", "array", draw(split_array(n)))
        for name in draw(st.lists(names, max_size=2, unique=True))
    ]
    mod_names = [e[0][:-4] for e in spec["entries"]["modalities"] if e[0].endswith(".npy")]
    meta_kind = draw(st.integers(3, 5) if plausible else st.integers(0, 5))
    if meta_kind == 0:
        spec["meta"] = None
    elif meta_kind == 1:
        spec["meta"] = draw(st.binary(max_size=20))
    elif meta_kind == 2:
        depth = draw(st.integers(1, 5000))
        spec["meta"] = ("[" * depth + "]" * depth).encode()
    else:
        keys = st.text(max_size=4)
        if not plausible:
            keys = st.sampled_from([*RESERVED_META_KEYS, "featurizers", "x"]) | keys
        meta = draw(st.dictionaries(keys, json_values, max_size=4))
        if draw(st.booleans()):
            meta["modalities"] = draw(st.permutations(mod_names))
        if draw(st.booleans()):
            meta["format"] = "centrobind-dataset/1"
        spec["meta"] = json.dumps(meta).encode()
    return spec


def _write(root: Path, spec: dict[str, Any]) -> None:
    root.mkdir()
    (root / "modalities").mkdir()
    for sub, entries in spec["entries"].items():
        (root / sub).mkdir(exist_ok=True)
        for filename, kind, arr in entries:
            p = root / sub / filename
            if kind == "array":
                with open(p, "wb") as f:
                    np.save(f, arr)
            elif kind == "folder":
                p.mkdir()
            elif kind == "dangling":
                p.symlink_to(root / "nowhere")
            elif kind == "loop":
                p.symlink_to(p.name)
            elif kind == "garbage":
                p.write_bytes(b"\x93NUMPY\x01\x00garbage")
            elif kind == "truncated":
                with open(p, "wb") as f:
                    np.save(f, arr)
                p.write_bytes(p.read_bytes()[: max(1, p.stat().st_size // 2)])
            else:
                p.write_text("1,2,3\n")
    if spec["meta"] is not None:
        (root / "meta.json").write_bytes(spec["meta"])


def _kind(e: BaseException) -> str:
    """The gist of an error message, for hypothesis' statistics (paths and values dropped)."""
    words = str(e).split(": ")[-1].split()[:4]
    return " ".join(w for w in words if not any(c.isdigit() for c in w))


def _meta_json(meta: dict[str, Any]) -> str:
    return json.dumps(meta, sort_keys=True)  # NaN-aware equality (NaN != NaN as floats)


def _check_valid(ds: MultimodalDataset, min_modalities: int) -> None:
    n, m = len(ds), ds.num_modalities
    assert n >= 1 and m >= min_modalities
    assert ds.mask.dtype == torch.bool and ds.mask.shape == (m, n)
    assert bool(ds.mask.any(dim=0).all()) and bool(ds.mask.any(dim=1).all())
    for i, name in enumerate(ds.modalities):
        x = ds.features[name]
        assert x.dtype == torch.float32 and x.shape[0] == n and x.shape[1] >= 1
        assert bool(torch.isfinite(x).all())
        assert bool((x[~ds.mask[i]] == 0).all())
    for y in ds.labels.values():
        assert y.dtype == torch.int64 and y.shape == (n,)
    for f in ds.factors.values():
        assert f.dtype == torch.float32 and f.shape[0] == n and bool(torch.isfinite(f).all())
    for s in ds.splits.values():
        assert s.dtype == torch.int64 and len(set(s.tolist())) == s.numel()
        assert all(0 <= int(v) < n for v in s)
    assert not set(ds.meta) & set(RESERVED_META_KEYS)
    describe(ds).encode("utf-8")  # printable


def _round_trip(ds: MultimodalDataset, where: Path, min_modalities: int) -> None:
    save_dataset(ds, where)
    back = load_dataset(where, min_modalities=min_modalities)
    assert back.modalities == ds.modalities
    assert back.name == (ds.name or where.name)  # no name: the folder's
    assert torch.equal(back.mask, ds.mask)
    for name in ds.modalities:
        assert torch.equal(back.features[name], ds.features[name])
    for attr in ("labels", "factors", "splits"):
        a, b = getattr(ds, attr), getattr(back, attr)
        assert list(a) == list(b) and all(torch.equal(a[k], b[k]) for k in a), attr
    assert _meta_json(back.meta) == _meta_json(ds.meta)


@SETTINGS
@given(spec=folder_spec(), mmap=st.booleans(), min_modalities=st.sampled_from([1, 2]))
def test_loader_gives_a_valid_dataset_or_a_one_line_error(spec, mmap, min_modalities):
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "ds"
        _write(root, spec)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                ds = load_dataset(root, mmap=mmap, min_modalities=min_modalities)
            except CentrobindError as e:
                assert "\n" not in str(e) and str(e)
                event(f"error: {_kind(e)}")
                return
        event("valid dataset")
        _check_valid(ds, min_modalities)
        _round_trip(ds, Path(tmp) / "copy", min_modalities)


@st.composite
def constructor_args(draw: st.DrawFn) -> dict[str, Any]:
    plausible = draw(st.booleans())
    n = draw(st.integers(1, 4) if plausible else st.integers(0, 4))
    modality = valid_matrix(n) if plausible else any_array(n)
    feats = {name: draw(modality) for name in draw(st.lists(names, max_size=3))}
    kwargs: dict[str, Any] = {"features": feats}
    if draw(st.booleans()):
        kwargs["labels"] = {
            name: draw(label_array(n)) for name in draw(st.lists(names, max_size=2))
        }
    if draw(st.booleans()):
        kwargs["splits"] = {
            name: draw(split_array(n)) for name in draw(st.lists(names, max_size=2))
        }
    if not plausible and draw(st.booleans()):
        kwargs["mask"] = draw(any_array(None))
    if draw(st.booleans()):
        kwargs["meta"] = draw(st.dictionaries(st.text(max_size=5), json_values, max_size=3))
    if draw(st.booleans()):
        kwargs["name"] = draw(names)
    kwargs["min_modalities"] = draw(st.sampled_from([1, 2]))
    return kwargs


@SETTINGS
@given(kwargs=constructor_args())
def test_constructor_gives_a_valid_dataset_or_a_one_line_error(kwargs):
    try:
        ds = MultimodalDataset(**kwargs)
    except CentrobindError as e:
        assert "\n" not in str(e) and str(e)
        event(f"error: {_kind(e)}")
        return
    event("valid dataset")
    _check_valid(ds, kwargs["min_modalities"])
    with tempfile.TemporaryDirectory() as tmp:
        try:
            save_dataset(ds, Path(tmp) / "ds")
        except CentrobindError as e:
            assert "not usable as a file name" in str(e)  # the only thing save may still refuse
            return
        _round_trip(ds, Path(tmp) / "again", kwargs["min_modalities"])


@SETTINGS
@given(depth=st.integers(1, 3000) | st.integers(95, 105), container=st.sampled_from(["[", "{"]))
def test_meta_json_nesting_never_raises_anything_else(depth, container):
    if container == "[":
        doc, levels = '{"x": ' + "[" * depth + "]" * depth + "}", depth + 1
    else:
        doc, levels = '{"x": ' * depth + "1" + "}" * depth, depth
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "modalities").mkdir()
        for m in "ab":
            np.save(root / "modalities" / f"{m}.npy", np.ones((2, 1)))
        (root / "meta.json").write_text(doc)
        try:
            ds = load_dataset(root)
        except CentrobindError as e:
            assert "nested" in str(e) and "\n" not in str(e)
            assert levels > MAX_META_DEPTH
            return
        assert levels <= MAX_META_DEPTH
        save_dataset(ds, root / "copy")
        assert _meta_json(load_dataset(root / "copy").meta) == _meta_json(ds.meta)
