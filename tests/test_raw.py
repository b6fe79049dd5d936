"""Raw-item training data: decoders, the in-memory and streaming sources, bad items, and a run
trained from a manifest end to end (CLI)."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch

from centrobind.cli import main
from centrobind.data.raw import (
    AudioDecoder,
    ColumnPlan,
    RawSource,
    TextDecoder,
    load_raw,
    open_raw,
)
from centrobind.errors import CentrobindError, CentrobindWarning, DatasetError
from featurize_helpers import tone, write_wav
from tower_helpers import make_manifest

PLANS = {
    "imu": ColumnPlan("array"),
    "image": ColumnPlan("image", {"size": 8}),
    "caption": ColumnPlan("text", {"length": 6, "vocab": 64}),
}


@pytest.fixture
def manifest(tmp_path):
    return make_manifest(tmp_path / "raw", n=24)


def test_load_raw_decodes_rows_and_counts_unreadable_items(manifest):
    (manifest.parent / "imu" / "3.npy").write_bytes(b"not an array")
    np.save(manifest.parent / "imu" / "5.npy", np.zeros((2, 16), np.float32))  # wrong shape
    (manifest.parent / "img" / "7.png").unlink()
    with pytest.warns(CentrobindWarning, match="row 3, imu: unreadable item skipped"):
        ds = load_raw(manifest, PLANS, labels=["y"])
    assert ds.dims == {"imu": 48, "image": 192, "caption": 6}
    assert ds.meta["skipped_items"] == {"imu": 2, "image": 1}
    assert ds.meta["shapes"] == {"imu": [3, 16], "image": [3, 8, 8], "caption": [6]}
    present = ds.mask.sum(1).tolist()
    assert present == [22, 23, 24]
    assert not ds.mask[0, 3] and not ds.mask[1, 7]
    trace = np.load(manifest.parent / "imu" / "0.npy")
    assert torch.equal(ds.features["imu"][0], torch.from_numpy(trace.reshape(-1)))
    assert ds.labels["y"].tolist()[:4] == [0, 1, 0, 1]


def test_stream_is_seeded_augmented_and_the_same_with_workers(manifest):
    data = open_raw(manifest, PLANS)
    src = RawSource(data, rows=np.arange(20), workers=0)
    a = list(src.batches(0, seed=1, batch_size=8, drop_last=True))
    b = list(src.batches(0, seed=1, batch_size=8, drop_last=True))
    c = list(src.batches(1, seed=1, batch_size=8, drop_last=True))
    assert len(a) == 2 and tuple(a[0][0]["imu"].shape) == (8, 48) and a[0][1].shape == (3, 8)
    assert all(torch.equal(x[0][m], y[0][m]) for x, y in zip(a, b, strict=True) for m in x[0])
    assert not torch.equal(a[0][0]["imu"], c[0][0]["imu"])  # another epoch, other views
    plain = RawSource(data, rows=np.arange(20), workers=0, augment=False)
    p0 = next(iter(plain.batches(0, seed=1, batch_size=8, drop_last=True)))
    assert not torch.equal(p0[0]["image"], a[0][0]["image"])  # augmentation changes pixels
    resumed = list(src.batches(0, seed=1, batch_size=8, drop_last=True, start=1))
    assert torch.equal(resumed[0][0]["imu"], a[1][0]["imu"])  # mid-epoch resume: batch 1
    two = RawSource(data, rows=np.arange(20), workers=2)
    w = list(two.batches(0, seed=1, batch_size=8, drop_last=True))
    assert all(torch.equal(x[0][m], y[0][m]) for x, y in zip(a, w, strict=True) for m in x[0])
    half = list(src.batches(0, seed=1, batch_size=8, drop_last=True, rank=1, world=2))
    assert torch.equal(half[0][0]["imu"], a[0][0]["imu"][4:])


def test_stream_skips_a_corrupt_item_mid_run_and_refuses_a_changed_manifest(manifest):
    data = open_raw(manifest, PLANS)
    src = RawSource(data, workers=0, augment=False)
    (manifest.parent / "img" / "2.png").write_bytes(b"\x89PNG truncated")
    with pytest.warns(CentrobindWarning, match="row 2, image"):
        batches = list(src.batches(0, seed=0, batch_size=24, drop_last=False))
    ((feats, mask),) = batches
    pos = int(np.flatnonzero(np.asarray(src.rows)[src._ds.batches[0]] == 2)[0])
    assert not mask[1, pos] and mask[0, pos] and float(feats["image"][pos].abs().sum()) == 0.0
    assert src.describe()["skipped_items"] == {"image": 1}
    with open(manifest, "a") as f:
        f.write("imu/0.npy,img/0.png,one more,0\n")
    with pytest.raises(DatasetError, match="the manifest changed since the run started"):
        next(iter(src.batches(1, seed=0, batch_size=8, drop_last=True)))


def test_audio_and_text_decoders(tmp_path):
    write_wav(tmp_path / "a.wav", tone(440, 0.3, rate=8000), rate=8000)
    dec = AudioDecoder(rate=8000, seconds=0.5)
    x = dec.decode(str(tmp_path / "a.wav"), None)
    assert x.shape == (1, 4000) and abs(x[0, :2400]).max() > 0.4 and x[0, 2500:].max() == 0
    aug = dec.decode(str(tmp_path / "a.wav"), np.random.default_rng(0))
    assert aug.shape == (1, 4000) and not np.array_equal(aug, x)
    t = TextDecoder(length=4, vocab=100)
    ids = t.decode("Fast Blue fast", None)
    assert ids[0] == ids[2] and ids[3] == 0 and 0 < ids.max() < 100
    with pytest.raises(ValueError, match="PCM WAV"):
        dec.decode(str(tmp_path / "a.mp3"), None)


def test_cli_trains_on_a_manifest_with_raw_towers(manifest, tmp_path, capsys):
    out = tmp_path / "run"
    args = [
        "train",
        "--data",
        str(manifest),
        "--out",
        str(out),
        "--label",
        "y",
        "--tower",
        "imu=conv1d,width=8,layers=2",
        "--tower",
        "image=cnn,width=4,layers=2,size=8",
        "--tower",
        "caption=bow,width=8,vocab=64,length=6",
        "--epochs",
        "2",
        "--batch-size",
        "8",
        "--embed-dim",
        "8",
        "--quiet",
        "--split",
        "0.5,0.25,0.25",
    ]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert main(args) == 0
    meta = json.loads((out / "run.json").read_text())
    assert meta["towers"]["imu"] == "conv1d,width=8,layers=2"
    assert meta["shapes"]["image"] == [3, 8, 8] and meta["raw"]["labels"] == ["y"]
    assert main(["evaluate", "--run", str(out)]) == 0
    import centrobind

    model = centrobind.load(out)
    z = model.encode("imu", [str(manifest.parent / "imu" / "1.npy")])
    assert z.shape == (1, 8) and np.isclose(np.linalg.norm(z), 1.0)
    with open(manifest, "a") as f:
        f.write("imu/0.npy,img/0.png,one more,0\n")
    capsys.readouterr()
    assert main(["evaluate", "--run", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "manifest changed since the run started" in err
    assert err.count("\n") == 1
    assert (
        main(
            ["train", "--data", str(manifest), "--out", str(tmp_path / "x"), "--tower", "imu=lstm"]
        )
        == 2
    )
    assert "unknown tower 'lstm'" in capsys.readouterr().err
    with pytest.raises(CentrobindError, match="not a column"):
        from centrobind.rawruns import plans_for

        plans_for(manifest, {"sound": "conv1d"}, ["y"])


def test_train_streams_raw_items_with_workers_and_records_skips(manifest, tmp_path):
    from centrobind.config import TrainConfig
    from centrobind.runs import evaluate_run, train_run

    (manifest.parent / "imu" / "4.npy").write_bytes(b"corrupt")
    cfg = TrainConfig(
        loader="stream", workers=1, epochs=2, batch_size=8, embed_dim=8, quiet=True,
        split=(0.5, 0.25, 0.25), towers={"imu": "conv1d,width=8,layers=2",
        "image": "cnn,width=4,layers=2,size=8", "caption": "bow,width=8,vocab=64,length=6"},
    )  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        run, result = train_run(manifest, cfg, tmp_path / "s", labels=["y"])
        metrics = evaluate_run(tmp_path / "s")
    meta = json.loads((tmp_path / "s" / "run.json").read_text())
    assert meta["loader"] == "stream" and meta["skipped_items"] == {"imu": 1}
    assert meta["fingerprint"].startswith("m2:") and result.steps == 2 * (12 // 8)
    assert "imu->image" in metrics["retrieval"]


def test_text_augmentation_drops_words_seeded_at_its_rate_and_never_empties():
    """Word drop (``text`` and trainable text backbones): p 0.1 per word, at least one kept."""
    from centrobind.data.raw import _drop_words

    words = [f"w{i}" for i in range(20)]
    runs = [_drop_words(words, np.random.default_rng([7, i])) for i in range(400)]
    again = [_drop_words(words, np.random.default_rng([7, i])) for i in range(400)]
    assert runs == again  # seeded
    rate = 1 - sum(map(len, runs)) / (20 * 400)
    assert 0.08 < rate < 0.12, rate  # documented p 0.1 (8000 draws: sd 0.003)
    assert all(r == [w for w in words if w in r] for r in runs)  # order kept, nothing invented
    short = [_drop_words(["a", "b"], np.random.default_rng(i)) for i in range(300)]
    assert min(map(len, short)) == 1 and max(map(len, short)) == 2  # drops, never empties
    assert _drop_words(["one"], np.random.default_rng(0)) == ["one"]
    assert _drop_words(words, None) == words  # no augmentation
    t = TextDecoder(length=20, vocab=1000)
    aug = [t.decode(" ".join(words), np.random.default_rng(i)) for i in range(50)]
    assert all((a > 0).sum() >= 1 for a in aug) and any((a > 0).sum() < 20 for a in aug)


def _caption_rows(manifest):
    import csv

    with open(manifest, newline="") as f:
        return [r["caption"] for r in csv.DictReader(f)]


def test_minilm_backbone_trains_on_tokenised_texts_and_matches_featurize(manifest, tmp_path):
    """``backbone:minilm,train_last=1``: captions decoded to [2, L] ids + mask; in eval mode the
    tower's network gives featurize's vectors; only the last block (and the head) learns; a run
    trained from the CLI encodes texts again after loading."""
    from centrobind.featurize.encoders import load_encoder
    from centrobind.models import Binder

    plans = {"imu": ColumnPlan("array"), "caption": ColumnPlan("backbone", {"length": 12},
                                                                spec="minilm")}  # fmt: skip
    data = open_raw(manifest, plans)
    assert data.shapes["caption"] == [2, 12] and data.decoders["caption"].reads_text
    x, ok, bad = data.decode_rows("caption", np.arange(4))
    assert ok.all() and not bad
    ids = x.reshape(4, 2, 12)
    assert (ids[:, 0, 0] == 101).all() and set(np.unique(ids[:, 1])) == {0.0, 1.0}  # [CLS], mask
    words = "the quick brown fox jumps over the lazy dog again and again"
    dec = data.decoders["caption"]
    views = {tuple(dec.decode(words, np.random.default_rng(i))[1]) for i in range(8)}
    assert len(views) > 1  # word drop shortens some views
    b = Binder(data.dims, embed_dim=8, encoders={"caption": "backbone:minilm,train_last=1,"
               "length=12", "imu": "conv1d,width=8,layers=2"}, shapes=data.shapes)  # fmt: skip
    net = b.encoders["caption"].backbone
    net.eval()
    with torch.no_grad():
        got = net(torch.from_numpy(x)).numpy()
    want = load_encoder("minilm").encode(_caption_rows(manifest)[:4])
    np.testing.assert_allclose(got, want, atol=2e-5)
    b.train()
    layers = net.train_blocks()
    assert len(layers) == 6 and not layers[0].training and layers[5].training
    b.encode("caption", torch.from_numpy(x)).sum().backward()
    assert layers[5].output.dense.weight.grad is not None
    assert layers[4].output.dense.weight.grad is None


def test_cli_trains_a_sentence_transformers_backbone_on_raw_texts(manifest, tmp_path):
    """``--tower caption=backbone:st:DIR,train_last=1`` from the CLI, streamed: the run records
    the text shape, trains the last block, and a loaded run encodes texts."""
    from safetensors.numpy import load_file

    from featurize_helpers import make_tiny_st

    st = make_tiny_st(tmp_path / "st", "a slow red fast blue thing one more".split())
    out = tmp_path / "run"
    args = ["train", "--data", str(manifest), "--out", str(out), "--label", "y", "--epochs", "2",
            "--tower", f"caption=backbone:st:{st},train_last=1,length=8", "--tower",
            "imu=conv1d,width=8,layers=2", "--tower", "image=cnn,width=4,layers=1,size=8",
            "--batch-size", "8", "--embed-dim", "8", "--quiet", "--split", "0.5,0.25,0.25",
            "--loader", "stream", "--workers", "1", "--lr", "0.05"]  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert main(args) == 0
    import centrobind

    model = centrobind.load(out)
    assert model.run.meta["shapes"]["caption"] == [2, 8]
    z = model.encode("caption", ["a slow red thing", "a fast blue thing"])
    assert z.shape == (2, 8) and np.allclose(np.linalg.norm(z, axis=1), 1.0)
    assert not np.allclose(z[0], z[1])
    w = load_file(str(out / "model.safetensors"))
    last = [k for k in w if "encoder.layer.1.output.dense.weight" in k and "caption" in k]
    first = [k.replace("layer.1.", "layer.0.") for k in last]
    ref = load_file(str(st / "model.safetensors"))
    key = next(k for k in ref if k.endswith("encoder.layer.1.output.dense.weight"))
    assert len(last) == 1 and not np.allclose(w[last[0]], ref[key])  # the last block learned
    assert np.array_equal(w[first[0]], ref[key.replace("layer.1.", "layer.0.")])  # frozen


def test_wav2vec2_backbone_trains_on_raw_audio_and_matches_featurize(tmp_path):
    """``backbone:hf:<tiny wav2vec2>,train_last=1,seconds=0.25``: clips read at 16 kHz, cut to
    4000 samples, normalised and padded; a clip of exactly that length gives featurize's vector;
    only the last transformer layer learns; augmentation is seeded."""
    from centrobind.featurize.encoders import load_encoder
    from centrobind.models import Binder
    from featurize_helpers import make_tiny_wav2vec2

    w2v = make_tiny_wav2vec2(tmp_path / "w2v")
    rows = ["sound,k"]
    for i in range(4):
        write_wav(tmp_path / f"{i}.wav", tone(200.0 + 150 * i, 0.25))  # 4000 samples
        rows.append(f"{i}.wav,{i % 2}")
    write_wav(tmp_path / "long.wav", tone(500.0, 0.6, rate=8000), rate=8000)  # resampled, cut
    rows.append("long.wav,0")
    (tmp_path / "m.csv").write_text("\n".join(rows) + "\n")
    spec = f"hf:{w2v}"
    plans = {"sound": ColumnPlan("backbone", {"seconds": 0.25}, spec=spec),
             "k": ColumnPlan("text", {"length": 2})}  # fmt: skip
    data = open_raw(tmp_path / "m.csv", plans)
    assert data.shapes["sound"] == [1, 4000]
    x, ok, _ = data.decode_rows("sound", np.arange(5))
    assert ok.all() and np.allclose(x[:4].mean(1), 0, atol=1e-3)  # normalised clips
    dec = data.decoders["sound"]
    a = dec.decode(str(tmp_path / "long.wav"), np.random.default_rng(1))
    assert np.array_equal(a, dec.decode(str(tmp_path / "long.wav"), np.random.default_rng(1)))
    assert not np.array_equal(a, x[4].reshape(1, -1))  # another window, gain, noise
    tower = f"backbone:{spec},train_last=1,seconds=0.25"
    b = Binder(data.dims, embed_dim=4, encoders={"sound": tower}, shapes=data.shapes)
    net = b.encoders["sound"].backbone
    net.eval()
    with torch.no_grad():
        got = net(torch.from_numpy(x[:4])).numpy()
    want = load_encoder(spec).encode([str(tmp_path / f"{i}.wav") for i in range(4)])
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    b.train()
    b.encode("sound", torch.from_numpy(x)).sum().backward()
    layers = net.train_blocks()
    assert len(layers) == 2 and layers[0].training is False
    assert all(p.grad is not None for p in layers[1].parameters())
    assert all(p.grad is None for p in layers[0].parameters())
    with pytest.raises(CentrobindError, match="needs at least"):
        load_encoder(spec).train_shape({"seconds": 0.001})


def test_one_run_mixes_precomputed_minilm_features_with_a_trained_conv1d_tower(manifest, tmp_path):
    """Captions: frozen MiniLM features computed once (the default for a text column) under an
    ``mlp`` head; IMU: ``.npy`` items decoded every batch for a ``conv1d`` tower; streamed."""
    from centrobind.config import TrainConfig
    from centrobind.featurize.encoders import load_encoder
    from centrobind.runs import train_run
    from centrobind.towers import TowerContext, build_tower

    cfg = TrainConfig(loader="stream", workers=0, epochs=2, batch_size=8, embed_dim=8, seed=3,
                      quiet=True, split=(0.5, 0.25, 0.25),
                      towers={"imu": "conv1d,width=8,layers=2"})  # fmt: skip
    imu0 = torch.from_numpy(np.stack([np.load(manifest.parent / "imu" / f"{i}.npy").reshape(-1)
                                      for i in range(4)]))  # fmt: skip
    tower = build_tower("conv1d,width=8,layers=2", TowerContext(48, 8, (3, 16)))
    w0 = tower.proj.weight.detach().clone()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        run, _ = train_run(manifest, cfg, tmp_path / "mix", labels=["y"], encoders={"imu": tower})
    meta = json.loads((tmp_path / "mix" / "run.json").read_text())
    assert meta["featurizers"]["caption"]["spec"] == "minilm"
    assert meta["shapes"] == {"imu": [3, 16]} and meta["towers"]["caption"] == "mlp"
    import centrobind

    model = centrobind.load(tmp_path / "mix")
    texts = ["a slow red thing", "a fast blue thing"]
    feats = torch.from_numpy(load_encoder("minilm").encode(texts))
    want = model.run.binder.embed("caption", feats).numpy()  # the head over MiniLM features
    assert np.allclose(model.encode("caption", texts), want, atol=1e-5)
    assert run.binder.encoders["imu"] is tower and not torch.allclose(tower.proj.weight, w0)
    z = model.encode("imu", [str(manifest.parent / "imu" / "0.npy")])
    assert np.allclose(z, run.binder.embed("imu", imu0[:1]).numpy(), atol=1e-5)
