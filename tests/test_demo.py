"""The tri-modal demo end to end on a tiny set: raw files -> featurize -> train -> report."""

from __future__ import annotations

import json

import numpy as np

from centrobind.data import load
from centrobind.featurize import read_items
from featurize_helpers import cli


def test_demo_tiny_end_to_end(tmp_path):
    out = tmp_path / "demo"
    proc = cli("demo", "--out", str(out), "--tiny", "--quiet", timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == f"wrote {out / 'report.md'}"
    # raw material: PNG images, WAV speech, a manifest
    assert len(list((out / "raw/images").glob("*.png"))) == 40
    assert len(list((out / "raw/speech").glob("*.wav"))) == 40
    ds = load(str(out / "dataset"))
    assert ds.modalities == ["image", "caption", "speech"] and len(ds) == 40
    assert ds.mask.all()  # every item was readable
    caps = read_items(out / "dataset", "caption")
    digits = ds.labels["digit"].numpy()
    words = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
    assert all(words[d] in c for c, d in zip(caps, digits, strict=True))
    meta = json.loads((out / "dataset/meta.json").read_text())
    assert meta["featurizers"]["caption"]["spec"] == "minilm"
    # five runs, a report with the three methods and the picture
    res = json.loads((out / "results.json").read_text())
    assert len(res["best_anchor"]) == 1 and res["best_anchor"][0].startswith("FixedAnchor(")
    assert list(res["methods"]) == ["CentroBind", "AllPairs", "FixedAnchor (best on val)"]
    for row in res["methods"].values():
        for pair in ("caption->image", "speech->image", "image->caption"):
            m = row[pair]
            assert 0 <= m["R@1"] <= m["R@5"] <= 100 and m["n"] == res["n_test"]
    assert len(res["queries"]) == 4
    for q in res["queries"]:
        assert len(q["images"]) == 5 and len(q["speech"]) == 3
        assert all(0 <= x["digit"] <= 9 for x in q["images"])
    text = (out / "report.md").read_text()
    assert "| CentroBind |" in text and "| AllPairs |" in text and "![retrieved images]" in text
    from PIL import Image

    with Image.open(out / "retrieval.png") as im:
        assert im.size[0] > 200 and np.asarray(im).std() > 10  # a real picture, not blank


def test_demo_refuses_non_empty_out(tmp_path):
    (tmp_path / "x.txt").write_text("keep")
    proc = cli("demo", "--out", str(tmp_path), "--tiny")
    assert proc.returncode == 2 and "is not empty" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
