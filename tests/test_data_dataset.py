"""MultimodalDataset: validation, subsets, splits, missing modalities, standardisation, meta."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from centrobind.data import MultimodalDataset, Standardizer, describe
from centrobind.errors import ConfigError, DatasetError


def _toy(n: int = 50, seed: int = 0, missing: bool = True) -> MultimodalDataset:
    rng = np.random.default_rng(seed)
    a = rng.normal(3.0, 2.0, (n, 3))
    b = rng.normal(-5.0, 0.5, (n, 4))
    c = rng.normal(10.0, 4.0, (n, 2))
    if missing:
        b[::5] = np.nan  # every 5th sample lacks b
        c[1::7] = np.nan
    y = np.arange(n) % 3
    return MultimodalDataset(
        {"a": a, "b": b, "c": c},
        labels={"y": y},
        factors={"f": rng.normal(size=(n, 2))},
        name="toy",
    )


# -- construction -----------------------------------------------------------------------------


def test_basic_attributes_and_mask_inference():
    ds = _toy()
    assert ds.modalities == ["a", "b", "c"]
    assert len(ds) == 50 and ds.num_modalities == 3
    assert ds.dims == {"a": 3, "b": 4, "c": 2}
    assert ds.mask.dtype == torch.bool and ds.mask.shape == (3, 50)
    assert all(x.dtype == torch.float32 for x in ds.features.values())
    assert ds.labels["y"].dtype == torch.int64
    assert ds.factors["f"].dtype == torch.float32 and ds.factors["f"].shape == (50, 2)
    expected_b = np.ones(50, bool)
    expected_b[::5] = False
    assert np.array_equal(ds.mask[1].numpy(), expected_b)
    assert int(ds.mask[2].sum()) == 50 - len(range(1, 50, 7))
    # missing rows are zero, never NaN
    assert not any(torch.isnan(x).any() for x in ds.features.values())
    assert torch.all(ds.features["b"][~ds.mask[1]] == 0)
    assert ds.splits == {} and ds.name == "toy"


def test_explicit_mask_zero_fills_masked_rows():
    x = torch.randn(6, 2)
    y = torch.randn(6, 3)
    mask = torch.ones(2, 6, dtype=torch.bool)
    mask[0, 2] = False
    ds = MultimodalDataset({"x": x, "y": y}, mask=mask)
    assert torch.all(ds.features["x"][2] == 0)
    assert torch.equal(ds.features["x"][0], x[0])
    assert x[2].abs().sum() > 0  # caller's tensor not modified
    assert torch.equal(ds.mask, mask)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(features={"a": np.ones((4, 2))}), "at least 2 modalities"),
        (dict(features={"a": np.ones((4, 2)), "b": np.ones((5, 2))}), "5 rows"),
        (dict(features={"a": np.ones((0, 2)), "b": np.ones((0, 2))}), "empty"),
        (dict(features={"a": np.ones(4), "b": np.ones((4, 2))}), "2-D"),
        (dict(features={"a": np.array([[1.0, np.nan]] * 3), "b": np.ones((3, 2))}), "row 0"),
        (dict(features={"a": np.array([[1.0, np.inf]] * 3), "b": np.ones((3, 2))}), "NaN/inf"),
        (dict(features={"a": np.full((3, 2), np.nan), "b": np.ones((3, 2))}), "every sample"),
        (
            dict(features={"a": np.array([[1.0], [np.nan]]), "b": np.array([[1.0], [np.nan]])}),
            "sample 1 has no modality",
        ),
        (
            dict(features={"a": np.ones((3, 2)), "b": np.ones((3, 2))}, labels={"y": [0, 1]}),
            "label 'y'",
        ),
        (
            dict(features={"a": np.ones((3, 2)), "b": np.ones((3, 2))}, labels={"y": [0, 1.5, 2]}),
            "non-integer value 1.5",
        ),
        (
            dict(features={"a": np.ones((3, 2)), "b": np.ones((3, 2))}, mask=np.ones((3, 2), bool)),
            "mask: shape",
        ),
        (dict(features={"a": np.array([["x"]] * 2), "b": np.ones((2, 2))}), "non-numeric"),
        (
            dict(features={"a": np.ones((3, 2)), "b": np.ones((3, 2))}, splits={"t": [0, 3]}),
            "out of range",
        ),
        (
            dict(features={"a": np.ones((3, 2)), "b": np.ones((3, 2))}, splits={"t": [1, 1]}),
            "duplicate",
        ),
    ],
)
def test_constructor_rejects_bad_input(kwargs, message):
    with pytest.raises(DatasetError, match=message) as info:
        MultimodalDataset(**kwargs)
    assert "\n" not in str(info.value)


def test_float_labels_with_integer_values_are_accepted():
    ds = MultimodalDataset({"a": np.ones((3, 1)), "b": np.ones((3, 1))}, labels={"y": [0.0, 2, 1]})
    assert ds.labels["y"].tolist() == [0, 2, 1]


@pytest.mark.parametrize(
    "y, needle",
    [
        (np.array([0.0, 1e20, 1.0]), r"1e\+20 at position 1 is outside the int64 range"),
        (np.array([0.0, 2.0**63, 1.0]), "outside the int64 range"),
        (np.array([0.0, -(2.0**64), 1.0]), "outside the int64 range"),
        (np.array([0.0, 1.5, 1.0]), "non-integer value 1.5"),
        (np.array([0.0, np.nan, 1.0]), "NaN/inf at position 1"),
        (np.array([0.0, -np.inf, 1.0]), "NaN/inf"),
        (np.array([0, 2**64 - 1, 1], dtype=np.uint64), "outside the int64 range"),
        (torch.tensor([0.0, 1e20, 1.0]), "outside the int64 range"),
        (torch.tensor([0, 2**63 + 5, 1], dtype=torch.uint64), "outside the int64 range"),
        (torch.tensor([0.0, 0.5, 1.0], dtype=torch.bfloat16), "non-integer value 0.5"),
    ],
)
def test_labels_not_exactly_int64_are_rejected(y, needle):
    feats = {"a": np.ones((3, 1)), "b": np.ones((3, 1))}
    with pytest.raises(DatasetError, match=needle):
        MultimodalDataset(feats, labels={"y": y})


def test_labels_at_the_int64_edges_are_exact():
    feats = {"a": np.ones((3, 1)), "b": np.ones((3, 1))}
    y = MultimodalDataset(feats, labels={"y": np.array([-(2.0**63), 2.0**62, 3.0])}).labels["y"]
    assert y.tolist() == [-(2**63), 2**62, 3]
    big = np.array([0, 2**63 - 1, 5], dtype=np.uint64)
    assert MultimodalDataset(feats, labels={"y": big}).labels["y"].tolist() == [0, 2**63 - 1, 5]


# -- subset / split ---------------------------------------------------------------------------


def test_subset_keeps_labels_factors_and_rows():
    ds = _toy()
    ds.splits["train"] = torch.arange(5)
    idx = np.array([7, 3, 10])
    sub = ds.subset(idx)
    assert len(sub) == 3 and sub.splits == {}
    for m in ds.modalities:
        assert torch.equal(sub.features[m], ds.features[m][idx])
    assert torch.equal(sub.mask, ds.mask[:, idx])
    assert torch.equal(sub.labels["y"], ds.labels["y"][idx])
    assert torch.equal(sub.factors["f"], ds.factors["f"][idx])
    assert len(ds.subset(torch.zeros(50, dtype=torch.bool))) == 0
    with pytest.raises(DatasetError, match="out of range"):
        ds.subset([0, 50])


def test_split_indices_disjoint_covering_deterministic():
    ds = _toy(n=103)
    s1 = ds.split_indices((0.6, 0.15, 0.25), seed=3)
    s2 = ds.split_indices((0.6, 0.15, 0.25), seed=3)
    s3 = ds.split_indices((0.6, 0.15, 0.25), seed=4)
    assert set(s1) == {"train", "val", "test"}
    for k in s1:
        assert torch.equal(s1[k], s2[k]) and s1[k].dtype == torch.int64
    assert not torch.equal(s1["train"], s3["train"])
    allidx = torch.cat(list(s1.values()))
    assert sorted(allidx.tolist()) == list(range(103))
    assert [len(s1[k]) for k in ("train", "val", "test")] == [62, 15, 26]
    assert len(ds.split_indices((0.8, 0.0, 0.2))["val"]) == 0


def test_split_stratified_proportions():
    n = 300
    y = np.repeat([0, 1, 2], [200, 70, 30])
    ds = MultimodalDataset(
        {"a": np.random.default_rng(0).normal(size=(n, 2)), "b": np.ones((n, 1))},
        labels={"y": y},
    )
    s = ds.split_indices((0.5, 0.2, 0.3), seed=1, stratify="y")
    for c, size in zip([0, 1, 2], [200, 70, 30], strict=True):
        for k, f in zip(["train", "val", "test"], [0.5, 0.2, 0.3], strict=True):
            count = int((ds.labels["y"][s[k]] == c).sum())
            assert abs(count - f * size) <= 1, (c, k, count)
    with pytest.raises(ConfigError, match="unknown label task"):
        ds.split_indices(stratify="nope")


def test_split_stratified_unlabelled_rows_are_one_random_pool():
    n = 400
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1, -1], [100, 20, 280])
    ds = MultimodalDataset({"a": rng.normal(size=(n, 2)), "b": np.ones((n, 1))}, labels={"y": y})
    fr = (0.5, 0.2, 0.3)
    s = ds.split_indices(fr, seed=2, stratify="y")
    assert sorted(torch.cat(list(s.values())).tolist()) == list(range(n))  # every row used
    for c, size in ((0, 100), (1, 20), (-1, 280)):
        for k, f in zip(["train", "val", "test"], fr, strict=True):
            count = int((ds.labels["y"][s[k]] == c).sum())
            assert abs(count - f * size) <= 1, (c, k, count)
    # the labelled classes are allocated exactly as without any unlabelled rows
    lab = ds.subset(np.flatnonzero(y != -1))
    s_lab = lab.split_indices(fr, seed=2, stratify="y")
    for k in s:
        assert int((ds.labels["y"][s[k]] != -1).sum()) == len(s_lab[k])
    with pytest.raises(ConfigError, match="sum to 1"):
        ds.split_indices((0.5, 0.2, 0.2))


def test_split_returns_subsets():
    ds = _toy()
    parts = ds.split(seed=0)
    idx = ds.split_indices(seed=0)
    for k in ("train", "val", "test"):
        assert torch.equal(parts[k].features["a"], ds.features["a"][idx[k]])


# -- with_missing -----------------------------------------------------------------------------


def test_with_missing_rate_and_no_empty_samples():
    rng = np.random.default_rng(0)
    n, m = 4000, 4
    ds = MultimodalDataset({f"m{i}": rng.normal(size=(n, 3)) + 1.0 for i in range(m)})
    rate = 0.6
    dm = ds.with_missing(rate, seed=1)
    assert bool(dm.mask.any(dim=0).all())
    expected = rate - rate**m / m  # re-kept modality of fully dropped samples
    assert abs((~dm.mask).float().mean().item() - expected) < 0.02
    for i, name in enumerate(dm.modalities):
        assert torch.all(dm.features[name][~dm.mask[i]] == 0)
        assert torch.equal(dm.features[name][dm.mask[i]], ds.features[name][dm.mask[i]])
    assert torch.equal(dm.mask, ds.with_missing(rate, seed=1).mask)
    assert not torch.equal(dm.mask, ds.with_missing(rate, seed=2).mask)
    assert bool(ds.with_missing(0.0, seed=0).mask.all())
    full = ds.with_missing(1.0, seed=0)
    assert full.mask.sum(dim=0).tolist() == [1] * n


def test_with_missing_keeps_already_missing_entries_missing():
    ds = _toy(n=200)
    dm = ds.with_missing(0.5, seed=0)
    assert not bool((dm.mask & ~ds.mask).any())
    assert bool(dm.mask.any(dim=0).all())


# -- Standardizer -----------------------------------------------------------------------------


def test_standardizer_fits_present_training_rows_only():
    ds = _toy(n=120, missing=True)
    idx = ds.split_indices(seed=0)
    train = ds.subset(idx["train"])
    std = Standardizer.fit(train)
    for i, m in enumerate(ds.modalities):
        rows = idx["train"].numpy()
        present = ds.mask[i].numpy()[rows]
        x = ds.features[m].numpy()[rows][present].astype(np.float64)
        np.testing.assert_allclose(std.mean[m].numpy(), x.mean(axis=0), rtol=1e-5)
        np.testing.assert_allclose(std.std[m].numpy(), x.std(axis=0), rtol=1e-5)
    # b has missing (zero) rows: including them would drag the mean (~-5) towards 0
    assert abs(std.mean["b"].mean().item() + 5.0) < 0.3
    out = std.apply(train)
    for i, m in enumerate(train.modalities):
        present = train.mask[i]
        assert torch.all(out.features[m][~present] == 0)
        z = out.features[m][present].double()
        assert torch.allclose(z.mean(0), torch.zeros(z.shape[1], dtype=torch.float64), atol=1e-5)
        assert torch.allclose(
            z.std(0, unbiased=False), torch.ones(z.shape[1], dtype=torch.float64), atol=1e-4
        )
    assert torch.equal(out.mask, train.mask)
    assert torch.allclose(std.transform("a", train.features["a"]), out.features["a"])


def test_standardizer_constant_feature_and_state_dict(tmp_path):
    x = np.ones((10, 2))
    x[:, 1] = np.arange(10)
    ds = MultimodalDataset({"x": x, "y": np.random.default_rng(0).normal(size=(10, 3))})
    std = Standardizer.fit(ds)
    assert std.std["x"][0].item() == pytest.approx(1e-6)
    assert torch.isfinite(std.apply(ds).features["x"]).all()
    sd = std.state_dict()
    assert set(sd) == {"x.mean", "x.std", "y.mean", "y.std"}
    save_file(sd, str(tmp_path / "std.safetensors"))
    back = Standardizer.from_state_dict(load_file(str(tmp_path / "std.safetensors")))
    assert sorted(back.modalities) == sorted(std.modalities)
    for m in ("x", "y"):
        assert torch.equal(back.mean[m], std.mean[m]) and torch.equal(back.std[m], std.std[m])


# -- misc -------------------------------------------------------------------------------------


def test_to_device_copy():
    ds = _toy()
    ds.splits["train"] = torch.arange(3)
    cp = ds.to("cpu")
    assert cp is not ds and cp.modalities == ds.modalities
    assert torch.equal(cp.features["a"], ds.features["a"]) and "train" in cp.splits


def test_describe_reports_counts():
    ds = _toy(n=50)
    ds.splits["train"] = torch.arange(35)
    text = describe(ds)
    assert "toy" in text and "50" in text
    for m, d in ds.dims.items():
        line = next(row for row in text.splitlines() if row.split()[:1] == [m])
        present = int(ds.mask[ds.modalities.index(m)].sum())
        assert line.split()[1:3] == [str(d), str(present)]
    assert "20.0%" in text  # b missing for every 5th sample
    assert "0:17 1:17 2:16" in text
    assert "f" in text and "train" in text and "35" in text


def test_describe_counts_unlabelled_rows_apart_from_classes():
    y = np.array([2, -1, 0, -1, 2, 2])
    ds = MultimodalDataset({"a": np.ones((6, 1)), "b": np.ones((6, 1))}, labels={"y": y})
    row = next(r.split() for r in describe(ds).splitlines() if r.split()[:1] == ["y"])
    assert row == ["y", "2", "2", "0:1", "2:3"]
    ds = MultimodalDataset({"a": np.ones((2, 1)), "b": np.ones((2, 1))}, labels={"y": [-1, -1]})
    row = next(r.split() for r in describe(ds).splitlines() if r.split()[:1] == ["y"])
    assert row == ["y", "0", "2", "-"]
