"""Bad manifests and bad encoder specs: a one-line error, or a per-row "missing" report."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest

from centrobind.errors import CentrobindError
from centrobind.featurize import featurize, load_encoder
from featurize_helpers import cli, make_raw, tone, write_manifest, write_wav


@pytest.fixture(scope="module")
def raw(tmp_path_factory):
    root = tmp_path_factory.mktemp("raw")
    rows = make_raw(root, n=8)
    (root / "img" / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    data = (root / "img" / "0.png").read_bytes()
    (root / "img" / "truncated.png").write_bytes(data[: len(data) // 2])
    (root / "wav" / "corrupt.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEfmt junk")
    return root, rows


def _one_line_error(proc, *fragments):
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    for frag in fragments:
        assert frag in lines[0], lines[0]


def test_unreadable_items_are_reported_by_row_and_stored_missing(raw, tmp_path):
    root, rows = raw
    rows = [dict(r) for r in rows]
    rows[1]["image"] = "img/missing.png"
    rows[2]["image"] = "img/corrupt.png"
    rows[3]["image"] = "img/truncated.png"
    rows[5]["sound"] = "wav/corrupt.wav"
    man = write_manifest(root / "bad_items.csv", rows)
    proc = cli("featurize", str(man), "--out", str(tmp_path / "ds"), "--quiet")
    assert proc.returncode == 0, proc.stderr
    err = proc.stderr
    # by the manifest's line (the header is line 1): row 1 is line 3
    assert "line 3, image: unreadable, stored as missing:" in err and "file not found" in err
    assert "line 4, image" in err and "line 5, image" in err and "line 7, sound" in err
    assert "image 5 ok, 0 empty, 3 unreadable" in proc.stdout
    assert "sound 7 ok, 0 empty, 1 unreadable" in proc.stdout
    img = np.load(tmp_path / "ds/modalities/image.npy")
    assert np.isnan(img[[1, 2, 3]]).all() and np.isfinite(img[[0, 4, 5, 6, 7]]).all()
    state = json.loads((tmp_path / "ds/featurize.json").read_text())
    assert sorted(state["modalities"]["image"]["failed"]) == ["1", "2", "3"]
    items = [json.loads(x) for x in (tmp_path / "ds/items/image.jsonl").read_text().splitlines()]
    assert items[1] is None and items[0].endswith("0.png")


def test_every_item_unreadable_is_an_error(raw, tmp_path):
    root, _ = raw
    man = write_manifest(root / "dead.csv", [{"image": "img/nope.png"}, {"image": "img/no.png"}])
    with pytest.raises(CentrobindError, match="column 'image': no item could be read"):
        featurize(man, tmp_path / "ds", progress=False)


@pytest.mark.parametrize(
    "args,fragments",
    [
        (["--encoder", "image=resnet9000"], ["unknown encoder 'resnet9000'"]),
        (["--encoder", "imag=pixels"], ["no column 'imag'", "columns: image, sound, colour"]),
        (["--label", "color"], ["no column 'color'"]),
        (["--encoder", "image"], ["--encoder expects MODALITY=SPEC"]),
        (["--encoder", "image=pixels:huge"], ["expected pixels[:SIZE][:gray]"]),
        (["--encoder", "sound=minilm"], ["encodes text, but the column holds audio"]),
        # a timm name without @FILE is timm's pretrained weights from the hub cache (timm is
        # not installed here: the missing package is the one line)
        (["--encoder", "image=timm:resnet18"], ["needs the Python package 'timm'"]),
        (["--encoder", "image=torchvision:resnet18@/no/such.pth"], ["weights file", "not found"]),
        (["--encoder", "image=open_clip:ViT-B-32"], ["has no weights file"]),
        (["--encoder", "caption=st:/no/such/dir"], ["no such folder"]),
        (["--encoder", "caption=hf:/no/such/dir"], ["no config.json"]),
        (["--encoder", "sound=logmel:3"], ["8 <= N <= 256"]),
        (["--batch-size", "0"], ["--batch-size must be >= 1"]),
        (["--device", "tpu"], ["unknown device 'tpu'"]),
        (["--label", "caption", "--encoder", "caption=minilm"], ["both as a label"]),
    ],
)
def test_bad_arguments_one_line_errors(raw, tmp_path, args, fragments):
    root, rows = raw
    if "caption" not in " ".join(args):  # no text column: no MiniLM to load (fast)
        rows = [{k: v for k, v in r.items() if k != "caption"} for r in rows]
    man = write_manifest(root / f"ok-{tmp_path.name}.csv", rows)
    proc = cli("featurize", str(man), "--out", str(tmp_path / "ds"), "--quiet", *args)
    _one_line_error(proc, *fragments)


def test_bad_manifests_one_line_errors(raw, tmp_path):
    root, rows = raw
    _one_line_error(cli("featurize", str(root / "none.csv"), "--out", str(tmp_path / "a")),
                    "manifest not found")  # fmt: skip
    (root / "m.xlsx").write_bytes(b"PK")
    _one_line_error(cli("featurize", str(root / "m.xlsx"), "--out", str(tmp_path / "a")),
                    "unknown manifest format '.xlsx'")  # fmt: skip
    empty_col = [{"caption": r["caption"], "image": ""} for r in rows]
    man = write_manifest(root / "emptycol.csv", empty_col)
    _one_line_error(cli("featurize", str(man), "--out", str(tmp_path / "a")),
                    "column 'image' is empty")  # fmt: skip
    (root / "bad.jsonl").write_text('{"caption": "x"}\n{"caption": \n')
    _one_line_error(cli("featurize", str(root / "bad.jsonl"), "--out", str(tmp_path / "a")),
                    "line 2 is not valid JSON")  # fmt: skip
    (root / "ragged.csv").write_text("caption,image\nhello,img/0.png\nonly-one\n")
    _one_line_error(cli("featurize", str(root / "ragged.csv"), "--out", str(tmp_path / "a")),
                    "has 1 fields, the header has 2")  # fmt: skip
    (root / "bad.parquet").write_bytes(b"PAR1 definitely not parquet")
    _one_line_error(cli("featurize", str(root / "bad.parquet"), "--out", str(tmp_path / "a")),
                    "unreadable Parquet file")  # fmt: skip
    (root / "head.csv").write_text("caption\n")
    _one_line_error(cli("featurize", str(root / "head.csv"), "--out", str(tmp_path / "a")),
                    "no data rows")  # fmt: skip
    (root / "badname.csv").write_text("my caption,x\nhello,1\n")
    _one_line_error(cli("featurize", str(root / "badname.csv"), "--out", str(tmp_path / "a")),
                    "cannot be a modality name")  # fmt: skip


def test_out_folder_not_ours_is_refused(raw, tmp_path):
    root, rows = raw
    man = write_manifest(root / "ok2.csv", [{"image": r["image"]} for r in rows])
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "precious.txt").write_text("keep")
    _one_line_error(cli("featurize", str(man), "--out", str(tmp_path / "busy")),
                    "is not a featurize output")  # fmt: skip


@pytest.mark.parametrize(
    "spec,module",
    [
        ("timm:resnet18", "timm"),
        ("torchvision:resnet18", "torchvision.models"),
        ("open_clip:ViT-B-32", "open_clip"),
    ],
)
def test_missing_backbone_package_is_one_clear_error(monkeypatch, spec, module):
    # Simulate the package being absent (None in sys.modules makes `import` raise ImportError).
    monkeypatch.setitem(sys.modules, module, None)
    with pytest.raises(CentrobindError) as e:
        load_encoder(spec, allow_random=True)
    msg = str(e.value)
    assert f"needs the Python package {module!r}" in msg and "pip install" in msg
    assert "\n" not in msg


def test_missing_pyarrow_is_one_clear_error(monkeypatch, raw, tmp_path):
    root, rows = raw
    man = write_manifest(root / "p.parquet", rows)
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    with pytest.raises(CentrobindError, match=r"Parquet needs pyarrow \(pip install"):
        featurize(man, tmp_path / "ds", progress=False)


def test_missing_sentence_transformers_is_one_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "sentence_transformers", None)
    with pytest.raises(CentrobindError, match=r"centrobind\[text\]"):
        load_encoder("minilm")


def test_wav_with_other_suffix_is_per_row_missing(raw, tmp_path):
    root, _ = raw
    write_wav(tmp_path / "a.wav", tone(440.0, 0.2))
    (tmp_path / "b.flac").write_bytes(b"fLaC")
    man = write_manifest(tmp_path / "m.csv", [{"s": "a.wav"}, {"s": "b.flac"}])
    s = featurize(man, tmp_path / "ds", progress=False)
    assert s.encoded == {"s": 1} and s.failed == {"s": 1}
    state = json.loads((tmp_path / "ds/featurize.json").read_text())
    assert "only PCM WAV" in state["modalities"]["s"]["failed"]["1"]


def test_encode_bad_item_is_one_line_encoder_error(raw, tmp_path):
    root, _ = raw
    with pytest.raises(CentrobindError, match=r"pixels: item 1 \(.*missing.png'\) cannot be read: "
                       "file not found"):  # fmt: skip
        load_encoder("pixels").encode([str(root / "img/0.png"), str(root / "img/missing.png")])
    with pytest.raises(CentrobindError, match="item 0 .* not a readable PCM WAV"):
        load_encoder("logmel").encode([str(root / "wav/corrupt.wav")])
