"""Builtin datasets (mfeat, synthetic) and the ``load`` entry point."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from centrobind.data import BUILTINS, load, load_builtin, save_dataset
from centrobind.errors import DatasetError

MFEAT_DIMS = {"fac": 216, "fou": 76, "kar": 64, "mor": 6, "pix": 240, "zer": 47}


def test_builtin_names():
    assert set(BUILTINS) == {"mfeat", "synthetic"}


def test_mfeat_shapes_labels_order():
    ds = load_builtin("mfeat")
    assert ds.name == "mfeat"
    assert ds.modalities == list(MFEAT_DIMS)
    assert ds.dims == MFEAT_DIMS
    assert len(ds) == 2000
    assert bool(ds.mask.all())
    y = ds.labels["digit"]
    assert y.dtype == torch.int64
    assert torch.equal(y, torch.arange(10).repeat_interleave(200))  # 10 x 200 in class order
    assert list(ds.labels) == ["digit"] and ds.factors == {}
    for m, x in ds.features.items():
        assert x.dtype == torch.float32 and bool(torch.isfinite(x).all())
        assert float(x.std()) > 0, m
    # pixel view: 240 averages of 2x3 windows, integers 0..6
    pix = ds.features["pix"]
    assert float(pix.min()) == 0.0 and float(pix.max()) == 6.0
    assert torch.equal(pix, pix.round())


def test_mfeat_views_carry_class_information():
    ds = load_builtin("mfeat")
    y = ds.labels["digit"].numpy()
    x = ds.features["kar"].numpy()
    # nearest class mean on the Karhunen-Loeve view: far above the 10% chance level
    means = np.stack([x[y == c].mean(0) for c in range(10)])
    pred = ((x[:, None, :] - means[None]) ** 2).sum(-1).argmin(1)
    assert (pred == y).mean() > 0.8


def test_load_dispatches_builtin_and_folder(tmp_path):
    syn = load("synthetic", n_samples=100, n_modalities=3, dims=[5, 6, 7])
    assert syn.dims == {"m1": 5, "m2": 6, "m3": 7} and len(syn) == 100
    save_dataset(syn, tmp_path / "syn")
    back = load(str(tmp_path / "syn"))
    assert back.modalities == syn.modalities
    assert torch.equal(back.features["m2"], syn.features["m2"])
    assert load(tmp_path / "syn", mmap=False).name == "synthetic"


def test_load_errors_name_the_builtins():
    with pytest.raises(DatasetError, match="mfeat, synthetic") as info:
        load("definitely_not_a_dataset")
    assert "definitely_not_a_dataset" in str(info.value)
    with pytest.raises(DatasetError, match="unknown builtin"):
        load_builtin("mnist")
    with pytest.raises(DatasetError, match="unknown parameter"):
        load_builtin("synthetic", n_sample=10)
    with pytest.raises(DatasetError, match="no parameters"):
        load_builtin("mfeat", seed=1)
