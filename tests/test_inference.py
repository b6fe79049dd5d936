"""centrobind.load(...).encode / encode_dataset / index, and the `embed` verb they must match."""

from __future__ import annotations

import json
import subprocess
import sys
import types

import numpy as np
import pytest
import torch

import centrobind
from centrobind.cli import main
from centrobind.data import MultimodalDataset, load_dataset, make_synthetic, save_dataset
from centrobind.inference import Model, search_corpus
from centrobind.runs import FUSED_KEY, load_run, train_run
from centrobind.train import TrainConfig

CFG = dict(epochs=3, batch_size=32, warmup_steps=2, embed_dim=16, hidden=32, quiet=True)


def _shifted(ds: MultimodalDataset) -> MultimodalDataset:
    """Features far from zero mean / unit scale, so that a missing standardisation shows."""
    feats = {m: ds.features[m] * 7.0 + 3.0 for m in ds.modalities}
    return MultimodalDataset(feats, mask=ds.mask, labels=ds.labels, name=ds.name)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("inference")
    ds = make_synthetic(n_samples=240, n_modalities=3, dims=[10, 8, 6], seed=0)
    ds = _shifted(ds.with_missing(0.15, seed=0))
    data = save_dataset(ds, root / "data")
    train_run(data, TrainConfig(**CFG), root / "run")
    return root, data, root / "run"


def _cos(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def test_encode_matches_embed_cli(trained):
    root, data, run = trained
    out = root / "emb.npz"
    proc = subprocess.run(
        [sys.executable, "-m", "centrobind.cli", "embed", "--run", str(run), "--data", str(data)]
        + ["--out", str(out)],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    written = np.load(out)
    assert set(written.files) == {"m1", "m2", "m3", FUSED_KEY}
    ds = load_dataset(data)
    model = centrobind.load(run)
    assert isinstance(model, Model) and model.modalities == ["m1", "m2", "m3"]
    assert model.embed_dim == 16 and model.dims == {"m1": 10, "m2": 8, "m3": 6}
    for m in model.modalities:
        present = ds.present(m).numpy()
        x = ds.features[m].numpy()[present]
        for inp in (x.astype(np.float64), x.astype(np.float32), torch.from_numpy(x)):
            z = model.encode(m, inp, batch_size=17)
            assert z.dtype == np.float32 and z.shape == (present.sum(), 16)
            np.testing.assert_allclose(np.linalg.norm(z, axis=1), 1.0, atol=1e-5)
            assert _cos(z, written[m][present]).min() >= 0.9999
        assert np.isnan(written[m][~present]).all()
    enc = model.encode_dataset(data)
    assert enc.modalities == ["m1", "m2", "m3"]
    for m in model.modalities:
        np.testing.assert_array_equal(enc.masks[m], ds.present(m).numpy())
        np.testing.assert_allclose(enc[m], written[m], atol=1e-6)
    np.testing.assert_allclose(enc.fused, written[FUSED_KEY], atol=1e-6)


def test_binder_embed_is_the_low_level_method(trained):
    """Binder.embed expects standardised features: on raw features it gives other vectors."""
    _, data, run = trained
    ds = load_dataset(data)
    model = centrobind.load(run, device="cpu")
    x = ds.features["m1"][ds.present("m1")]
    good = model.encode("m1", x)
    raw = model.binder.embed("m1", x).numpy()
    std = model.binder.embed("m1", model.standardizer.transform("m1", x)).numpy()
    assert _cos(std, good).min() >= 0.9999
    assert _cos(raw, good).mean() < 0.99


def test_encode_options_and_errors(trained):
    _, data, run = trained
    model = centrobind.load(run, device="cpu")
    x = np.random.default_rng(0).standard_normal((5, 10))
    t = model.encode("m1", x, convert_to_tensor=True)
    assert isinstance(t, torch.Tensor) and t.dtype == torch.float32 and t.shape == (5, 16)
    np.testing.assert_allclose(t.numpy(), model.encode("m1", x, device="cpu"), atol=1e-6)
    assert model.encode("m1", np.zeros((0, 10))).shape == (0, 16)
    with pytest.raises(ValueError, match="'m1'.*expected 10 features per row, got 9"):
        model.encode("m1", x[:, :9])
    bad = x.copy()
    bad[3, 2] = np.nan
    with pytest.raises(ValueError, match="'m1': row 3 has NaN"):
        model.encode("m1", bad)
    with pytest.raises(ValueError, match="unknown modality 'zz'"):
        model.encode("zz", x)
    with pytest.raises(ValueError, match="'m1': expected a 2-D array"):
        model.encode("m1", x[0])
    with pytest.raises(ValueError, match="'m1': expected a 2-D array"):
        model.encode("m1", x[None])
    with pytest.raises(ValueError, match="not trained on featurized data"):
        model.encode("m1", ["some text"])
    with pytest.raises(ValueError, match="expected a numeric array"):
        model.encode("m1", np.array([["a"] * 10]))
    with pytest.raises(ValueError, match="batch_size"):
        model.encode("m1", x, batch_size=0)


def test_single_modality_dataset_embeds(trained, tmp_path):
    _, data, run = trained
    ds = load_dataset(data)
    one = tmp_path / "one"
    (one / "modalities").mkdir(parents=True)
    ok = ds.present("m2").numpy()
    np.save(one / "modalities" / "m2.npy", ds.features["m2"].numpy()[ok])
    out = tmp_path / "one.npz"
    assert main(["embed", "--run", str(run), "--data", str(one), "--out", str(out)]) == 0
    arrays = np.load(out)
    assert set(arrays.files) == {"m2", FUSED_KEY}
    full = centrobind.load(run).encode_dataset(data)
    np.testing.assert_allclose(arrays["m2"], full["m2"][ok], atol=1e-6)
    np.testing.assert_allclose(arrays[FUSED_KEY], arrays["m2"], atol=1e-6)
    # the strict loader default is unchanged
    with pytest.raises(Exception, match="at least 2 modality"):
        load_dataset(one)


def test_embed_refuses_unknown_modality_and_wrong_width(trained, tmp_path):
    _, _, run = trained
    for name, width, msg in (("zz", 10, "not trained on"), ("m1", 7, "dim 7 in the data")):
        d = tmp_path / f"bad_{name}"
        (d / "modalities").mkdir(parents=True)
        np.save(d / "modalities" / f"{name}.npy", np.ones((4, width), np.float32))
        proc = subprocess.run(
            [sys.executable, "-m", "centrobind.cli", "embed", "--run", str(run), "--data", str(d)]
            + ["--out", str(tmp_path / "x.npz")],
            capture_output=True,
            text=True,
        )
        assert proc.returncode == 2 and msg in proc.stderr, proc.stderr
        assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("error: ")


def test_a_modality_named_fused_is_not_replaced(tmp_path):
    ds = make_synthetic(n_samples=120, n_modalities=2, dims=[6, 5], pair=None, seed=1)
    ds = MultimodalDataset({"fused": ds.features["m1"], "b": ds.features["m2"]})
    data = save_dataset(ds, tmp_path / "data")
    train_run(data, TrainConfig(**CFG), tmp_path / "run")
    out = tmp_path / "e.npz"
    assert (
        main(["embed", "--run", str(tmp_path / "run"), "--data", str(data), "--out", str(out)]) == 0
    )
    arrays = np.load(out)
    assert set(arrays.files) == {"fused", "b", FUSED_KEY}
    model = centrobind.load(tmp_path / "run")
    z = model.encode("fused", ds.features["fused"])
    assert _cos(z, arrays["fused"]).min() >= 0.9999
    assert _cos(arrays["fused"], arrays[FUSED_KEY]).mean() < 0.9999


def test_index_from_model_matches_brute_force(trained):
    _, data, run = trained
    ds = load_dataset(data)
    model = centrobind.load(run)
    index = model.index(data, modality="m2")
    rows = ds.present("m2").nonzero().squeeze(1).numpy()
    assert len(index) == len(rows)
    q = model.encode("m1", ds.features["m1"][:7])
    scores, ids = index.search(q, k=5)
    corpus = model.encode("m2", ds.features["m2"][rows])
    full = q @ corpus.T
    ref = np.argsort(-full, axis=1, kind="stable")[:, :5]
    np.testing.assert_array_equal(ids, rows[ref])
    np.testing.assert_allclose(scores, np.take_along_axis(full, ref, 1), atol=1e-5)
    # an array corpus: ids default to 0..N-1
    s2, i2 = model.index(ds.features["m2"][rows], modality="m2").search(q, k=5)
    np.testing.assert_array_equal(i2, ref)


def test_weights_from_a_gpu_run_load_on_cpu(trained, tmp_path):
    """A run is saved with CPU tensors whatever device trained it; load maps to the device."""
    _, _, run = trained
    model = centrobind.load(run, device="cpu")
    assert all(p.device.type == "cpu" for p in model.binder.parameters())
    assert model.device.type == "cpu"
    auto = centrobind.load(run)
    assert auto.device.type == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(Exception, match="CUDA is not available"):
            centrobind.load(run, device="cuda")


# -- raw items: a run trained on featurized data (fake featurizer, interface of featurize) -----


class _FakeEncoder:
    """Deterministic text -> [n, 6] features (character statistics)."""

    spec, kind, dim, version = "fake", "text", 6, "0"

    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    def encode(self, items: list[str]) -> np.ndarray:
        self.calls.append(list(items))
        rows = [
            [len(s), s.count("a"), s.count("e"), s.count(" "), sum(map(ord, s)) % 97, len(set(s))]
            for s in items
        ]
        return np.asarray(rows, dtype=np.float32).reshape(len(items), 6)


TEXTS = [
    f"{w} {c} number {i}"
    for i, (w, c) in enumerate(
        (w, c) for w in ("a cat", "the dog", "an eel", "some bee") for c in ("sat", "ran", "ate")
    )
] * 10


@pytest.fixture
def featurized(tmp_path, monkeypatch):
    enc = _FakeEncoder()
    entries: list[dict] = []

    def encoder_from_meta(entry, *, device="cpu"):
        entries.append(dict(entry, device=device))
        return enc

    def read_items(dataset_dir, modality):
        return list(TEXTS) if modality == "txt" else None

    fake = types.ModuleType("centrobind.featurize")
    fake.encoder_from_meta = encoder_from_meta
    fake.read_items = read_items
    monkeypatch.setitem(sys.modules, "centrobind.featurize", fake)
    txt = enc.encode(TEXTS)
    rng = np.random.default_rng(0)
    img = txt @ rng.standard_normal((6, 9)) + 0.1 * rng.standard_normal((len(TEXTS), 9))
    data = save_dataset(MultimodalDataset({"txt": txt, "img": img}), tmp_path / "data")
    train_run(data, TrainConfig(**CFG), tmp_path / "run")
    info = json.loads((tmp_path / "run" / "run.json").read_text())
    info["featurizers"] = {"txt": {"spec": "fake", "kind": "text", "version": "0", "dim": 6}}
    (tmp_path / "run" / "run.json").write_text(json.dumps(info))
    enc.calls.clear()
    return tmp_path, data, enc, entries, txt


def test_raw_text_is_featurized_first(featurized):
    root, _, enc, entries, txt = featurized
    model = centrobind.load(root / "run", device="cpu")
    assert model.featurizers["txt"]["spec"] == "fake"
    z = model.encode("txt", TEXTS[:4])
    np.testing.assert_allclose(z, model.encode("txt", txt[:4]), atol=1e-6)
    assert enc.calls == [TEXTS[:4]] and entries[0]["device"] == "cpu"
    assert model.encode("txt", TEXTS[0]).shape == (1, 16)  # one string = one item
    with pytest.raises(ValueError, match="not trained on featurized data"):
        model.encode("img", ["x.png"])
    with pytest.raises(ValueError, match="raw items must be strings"):
        model.encode("txt", ["ok", None])


def test_file_items_are_passed_as_absolute_paths(featurized, monkeypatch, tmp_path):
    root, _, enc, _, _ = featurized
    model = centrobind.load(root / "run", device="cpu")
    model.featurizers["txt"] = dict(model.featurizers["txt"], kind="image")
    monkeypatch.chdir(tmp_path)
    model.encode("txt", ["pics/a.png"])
    assert enc.calls[-1] == [str(tmp_path / "pics" / "a.png")]


def test_featurizer_width_mismatch_is_an_error(featurized):
    root, _, enc, _, _ = featurized
    model = centrobind.load(root / "run", device="cpu")
    enc.dim = 5
    enc.encode = lambda items: np.zeros((len(items), 5), np.float32)
    with pytest.raises(ValueError, match=r"returned shape \(2, 5\)"):
        model.encode("txt", ["a", "b"])


def test_search_cli_raw_text_query(featurized, capsys):
    root, data, _, _, txt = featurized
    run = str(root / "run")
    argv = ["search", "--run", run, "--corpus", str(data), "--target", "txt", "-k", "3"]
    assert main([*argv, "--query", TEXTS[5], TEXTS[7], "--json"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2
    hits = [json.loads(line) for line in lines]
    model = centrobind.load(run)
    corpus = model.encode("txt", txt)
    for q, got in zip((5, 7), hits, strict=True):
        scores = corpus @ model.encode("txt", [TEXTS[q]])[0]
        ref = np.lexsort((np.arange(len(scores)), -np.round(scores, 5)))[:3]
        assert [h["id"] for h in got] == ref.tolist()
        assert all(h["item"] == TEXTS[h["id"]] for h in got)
        np.testing.assert_allclose([h["score"] for h in got], scores[ref], atol=1e-5)
    assert main([*argv, "--query", TEXTS[5]]) == 0
    table = capsys.readouterr().out
    assert f"query 0: {TEXTS[5]!r}" in table and "score" in table and TEXTS[5] in table
    # the image corpus has no raw items: no item column
    res = search_corpus(model, data, "img", k=2, queries=["a cat"])
    assert len(res) == 1 and all("item" not in h for h in res[0]["hits"])


def test_search_cli_errors(featurized, trained, capsys):
    root, data, _, _, _ = featurized
    _, plain_data, plain_run = trained
    cases = [
        (
            [
                "--run",
                str(plain_run),
                "--corpus",
                str(plain_data),
                "--target",
                "m1",
                "--query",
                "x",
            ],
            "needs a run trained on featurized data with a text modality",
        ),
        (
            [
                "--run",
                str(root / "run"),
                "--corpus",
                str(data),
                "--target",
                "txt",
                "--query",
                "x",
                "--query-modality",
                "img",
            ],
            "not a featurized text modality",
        ),
        (
            [
                "--run",
                str(plain_run),
                "--corpus",
                str(plain_data),
                "--target",
                "m1",
                "--query-data",
                str(plain_data),
            ],
            "needs --query-modality",
        ),
        (
            [
                "--run",
                str(plain_run),
                "--corpus",
                str(plain_data),
                "--target",
                "zz",
                "--query-data",
                str(plain_data),
                "--query-modality",
                "m1",
            ],
            "unknown modality 'zz'",
        ),
        (
            [
                "--run",
                str(plain_run),
                "--corpus",
                str(plain_data),
                "--target",
                "m1",
                "--query-data",
                str(plain_data),
                "--query-modality",
                "m1",
                "-k",
                "0",
            ],
            "-k must be",
        ),
    ]
    cases.append(
        (
            [
                "--run",
                str(plain_run),
                "--corpus",
                str(root / "nope"),
                "--target",
                "m1",
                "--query-data",
                str(plain_data),
                "--query-modality",
                "m1",
            ],
            "does not exist",
        )
    )
    for argv, msg in cases:
        assert main(["search", *argv]) == 2
        err = capsys.readouterr().err
        assert msg in err and err.startswith("error: ") and err.count("\n") == 1, err


def test_search_cli_query_data_matches_index(trained, tmp_path):
    _, data, run = trained
    proc = subprocess.run(
        [sys.executable, "-m", "centrobind.cli", "search", "--run", str(run), "--corpus"]
        + [str(data), "--target", "m2", "--query-data", str(data), "--query-modality", "m1"]
        + ["-k", "4", "--json"],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    lines = [json.loads(x) for x in proc.stdout.strip().splitlines()]
    ds = load_dataset(data)
    qrows = ds.present("m1").nonzero().squeeze(1)
    assert len(lines) == len(qrows)
    model = centrobind.load(run)
    scores, ids = model.index(data, modality="m2").search(
        model.encode("m1", ds.features["m1"][qrows]), k=4
    )
    assert [[h["id"] for h in hits] for hits in lines] == ids.tolist()
    np.testing.assert_allclose([[h["score"] for h in x] for x in lines], scores, atol=1e-5)


def test_load_errors_are_one_line(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "centrobind.cli", "search", "--run", str(tmp_path), "--corpus"]
        + ["mfeat", "--target", "pix", "--query", "x"],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2 and "not a run folder" in proc.stderr
    assert proc.stderr.count("\n") == 1
    assert load_run  # the low-level loader stays available
