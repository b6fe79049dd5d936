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
