"""Issue 20, the first hour on your own small data: label-like columns, manifest line numbers,
label names, label-level retrieval, search by split, small-data training defaults, log-friendly
progress bars, the imstats image encoder, speech from pip, the rawdata suite."""

from __future__ import annotations

import json
import wave

import numpy as np
import pytest
import torch

from centrobind.cli import build_parser, main
from centrobind.config import TrainConfig
from centrobind.data import describe, make_synthetic, save_dataset
from centrobind.errors import CentrobindError, CentrobindWarning
from centrobind.eval import (
    cross_modal_retrieval,
    format_metrics,
    label_precision,
    label_retrieval,
    mean_pairwise_mrr,
)
from centrobind.featurize import featurize, load_encoder, register_encoder
from centrobind.featurize.encoders import Encoder
from centrobind.models import Binder
from centrobind.objectives import make_objective
from centrobind.train import fit
from featurize_helpers import write_manifest

# --------------------------------------------------------------------------- featurize


class _Len(Encoder):
    kind = "text"

    def __init__(self) -> None:
        self.spec, self.dim, self.version, self.options = "len", 2, "1", {}

    def forward(self, prepared):
        return np.array([[len(t), t.count("e")] for t in prepared], np.float32)


@pytest.fixture(scope="module", autouse=True)
def _len_encoder():
    register_encoder("len", lambda arg, **kw: _Len())


def test_label_like_columns_warn_and_the_lists_are_printed(tmp_path, capsys):
    rows = [
        {"caption": f"caption number {i} of many", "shape": "circle square triangle".split()[i % 3],
         "y": str(i % 2)}
        for i in range(12)
    ]  # fmt: skip
    man = write_manifest(tmp_path / "m.csv", rows)
    enc = {c: "len" for c in rows[0]}
    with pytest.warns(CentrobindWarning) as caught:
        s = featurize(man, tmp_path / "ds", encoders=enc, progress=False)
    said = " ".join(str(w.message) for w in caught)
    assert sorted(s.label_like) == ["shape", "y"]  # few short values; a label's name
    assert "column 'shape' looks like a label" in said and "--label shape" in said
    assert "'caption'" not in said
    assert s.lists() == "modalities: caption (len), shape (len), y (len); labels: none " + (
        "(--label COLUMN adds one)"
    )
    # the CLI: the warning as one line on stderr, the lists after the summary
    argv = ["featurize", str(man), "--out", str(tmp_path / "ds2"), "--quiet", "--label", "y"]
    assert main([*argv, "--encoder", "caption=len", "--encoder", "shape=len"]) == 0
    out, err = capsys.readouterr()
    assert out.splitlines()[1] == "modalities: caption (len), shape (len); labels: y"
    assert err.count("warning: column 'shape' looks like a label") == 1 and "'y'" not in err


def test_unreadable_items_are_named_by_manifest_line(tmp_path, capsys):
    from PIL import Image

    Image.new("RGB", (8, 8), (200, 0, 0)).save(tmp_path / "ok.png")
    # a quoted caption over two lines: row 2 starts on line 5, not "row 2"
    (tmp_path / "m.csv").write_text(
        'caption,image\nfirst,ok.png\n"second\nover two lines",ok.png\nthird,missing.png\n'
    )
    featurize(tmp_path / "m.csv", tmp_path / "ds", encoders={"caption": "len"})
    err = capsys.readouterr().err
    assert "line 5, image: unreadable, stored as missing" in err, err


def test_inspect_names_labels_from_meta(tmp_path):
    ds = make_synthetic(n_samples=30, n_modalities=2, dims=[3, 3], pair_dim=0, seed=0)
    y = torch.arange(30) % 2
    ds = type(ds)(ds.features, ds.mask, labels={"kind": y}, name="x",
                  meta={"label_maps": {"kind": {"cat": 0, "dog": 1}}})  # fmt: skip
    assert "cat:15 dog:15" in describe(ds)


# --------------------------------------------------------------------------- label retrieval


def _brute_force(q, yq, g, yg, ks):
    scores = q @ g.T
    prec = {k: [] for k in ks}
    aps = []
    for i in range(len(q)):
        order = sorted(range(len(g)), key=lambda j: (-scores[i, j], j))
        rel = [yg[j] == yq[i] for j in order]
        for k in ks:
            kk = min(k, len(g))
            prec[k].append(sum(rel[:kk]) / kk)
        hits, ap = 0, 0.0
        for r, is_rel in enumerate(rel, 1):
            if is_rel:
                hits += 1
                ap += hits / r
        aps.append(ap / max(1, sum(rel)))
    out = {f"P@{k}": 100 * np.mean(v) for k, v in prec.items()}
    out["mAP"] = 100 * np.mean(aps)
    return out


@pytest.mark.parametrize("seed", [0, 1])
def test_label_precision_matches_brute_force(seed):
    rng = np.random.default_rng(seed)
    q = rng.integers(-2, 3, (23, 4)).astype(np.float64)  # small integers: exact scores, ties
    g = rng.integers(-2, 3, (31, 4)).astype(np.float64)
    yq, yg = rng.integers(0, 3, 23), rng.integers(0, 4, 31)
    got = label_precision(q, yq, g, yg, ks=(1, 5, 40), chunk_size=7)
    want = _brute_force(q, yq, g, yg, (1, 5, 40))
    for key, v in want.items():
        assert got[key] == pytest.approx(v, abs=1e-9), key
    assert got["n_queries"] == 23


def test_label_retrieval_pairs_skip_missing_and_unlabelled_rows():
    rng = np.random.default_rng(0)
    emb = {m: torch.nn.functional.normalize(torch.randn(20, 5), dim=1) for m in "ab"}
    mask = torch.ones(2, 20, dtype=torch.bool)
    mask[0, :4] = False
    y = torch.as_tensor(rng.integers(0, 3, 20))
    y[4:6] = -1
    res = label_retrieval(emb, mask, {"y": y}, ks=(1, 5))["y"]
    keep_a = np.arange(20) >= 6  # a is missing in rows 0-3, rows 4-5 are unlabelled
    keep_b = (np.arange(20) < 4) | (np.arange(20) >= 6)
    want = label_precision(emb["a"][keep_a], y[keep_a], emb["b"][keep_b], y[keep_b], ks=(1, 5))
    assert res["a->b"] == want and res["a->b"]["n_queries"] == 14
    assert res["mean"]["P@5"] == pytest.approx((res["a->b"]["P@5"] + res["b->a"]["P@5"]) / 2)
    text = format_metrics({"label_retrieval": {"y": res}})
    assert "Label retrieval: y" in text and "a->b" in text


def test_mean_pairwise_mrr_matches_cross_modal_retrieval():
    z = torch.nn.functional.normalize(torch.randn(3, 17, 4), dim=-1)
    mask = torch.rand(3, 17) > 0.2
    ref = cross_modal_retrieval({str(i): z[i] for i in range(3)}, mask, ks=(1,))["mean"]["MRR"]
    assert mean_pairwise_mrr(z, mask) == pytest.approx(ref, abs=1e-9)


# --------------------------------------------------------------------------- runs, search


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("run")
    ds = make_synthetic(n_samples=120, n_modalities=2, dims=[6, 5], pair_dim=0, seed=1)
    ds = type(ds)(ds.features, ds.mask, labels={"kind": torch.arange(120) % 3}, name="s",
                  meta={"label_maps": {"kind": {"red": 0, "green": 1, "blue": 2}}})  # fmt: skip
    save_dataset(ds, root / "data")
    argv = ["train", "--data", str(root / "data"), "--out", str(root / "run"), "--epochs", "3"]
    assert main([*argv, "--embed-dim", "8", "--hidden", "16", "--quiet"]) == 0
    return root


def test_evaluate_reports_label_retrieval(small_run, capsys):
    assert main(["evaluate", "--run", str(small_run / "run")]) == 0
    out = capsys.readouterr().out
    assert "== Label retrieval: kind" in out and "mAP" in out
    metrics = json.loads((small_run / "run/metrics.json").read_text())
    lab = metrics["label_retrieval"]["kind"]
    assert set(lab) == {"m1->m2", "m2->m1", "mean"} and lab["m1->m2"]["n_queries"] == 24


def test_search_by_split_shows_split_and_label(small_run, capsys):
    import centrobind
    from centrobind.inference import search_corpus

    model = centrobind.load(small_run / "run", device="cpu")
    data = small_run / "data"
    test_rows = set(model.run.splits["test"].tolist())
    res = search_corpus(model, data, "m2", k=30, query_data=data, query_modality="m1",
                        split="test")  # fmt: skip
    hits = [h for r in res for h in r["hits"]]
    assert {h["id"] for h in hits} <= test_rows and len(res[0]["hits"]) == 24
    assert {h["split"] for h in hits} == {"test"}
    assert all(h["labels"]["kind"] == ["red", "green", "blue"][h["id"] % 3] for h in hits)
    assert len(model.index(data, "m2", split="train")) == 84
    with pytest.warns(CentrobindWarning, match="84 of its 120 rows are training rows"):
        search_corpus(model, data, "m2", k=3, query_data=data, query_modality="m1")
    other = small_run / "other"
    save_dataset(make_synthetic(n_samples=120, n_modalities=2, dims=[6, 5], pair_dim=0), other)
    with pytest.raises(CentrobindError, match="needs the corpus to be the dataset this run"):
        model.index(other, "m2", split="test")
    argv = ["search", "--run", str(small_run / "run"), "--corpus", str(data), "--target", "m2"]
    assert main([*argv, "--query-data", str(data), "--query-modality", "m1", "-k", "2",
                 "--split", "val"]) == 0  # fmt: skip
    out, err = capsys.readouterr()
    assert " val " in out.splitlines()[2] and err == ""
    help_text = build_parser()._subparsers._group_actions[0].choices["search"].format_help()
    assert "JSON Lines" in " ".join(help_text.split())


# --------------------------------------------------------------------------- training defaults


def _tiny(n):
    return make_synthetic(n_samples=n, n_modalities=2, dims=[6, 5], pair_dim=0, seed=2)


def test_small_data_defaults_batch_min_steps_and_validation_metric(tmp_path):
    assert (
        TrainConfig().batch_rows(216) == 54 and TrainConfig(batch_size=256).batch_rows(216) == 216
    )
    assert TrainConfig().validation_metric(30) == "MRR"
    assert TrainConfig().validation_metric(200) == "R@1"
    train, val = _tiny(80), _tiny(20)
    cfg = TrainConfig(embed_dim=8, hidden=16, quiet=True, epochs=40, early_stopping=1,
                      min_steps=16, lr=1e-9)  # fmt: skip  # lr ~ 0: val never improves
    res = fit(Binder(train.dims, embed_dim=8, hidden=16), make_objective("centrobind"), train, val,
              cfg)  # fmt: skip
    # batch 20 -> 4 steps/epoch; patience 1 would stop at epoch 2, min_steps holds it to step 16
    assert res.stopped_early and res.steps == 16 and len(res.history) == 4
    assert res.val_metric == "MRR" and 0 < res.best_metric <= 100


def test_progress_is_sparse_plain_lines_off_a_terminal(capsys):
    train = _tiny(64)
    cfg = TrainConfig(embed_dim=8, hidden=16, epochs=5, batch_size=16)
    fit(Binder(train.dims, embed_dim=8, hidden=16), make_objective("centrobind"), train, None, cfg)
    err = capsys.readouterr().err
    bar = [ln for ln in err.splitlines() if ln.startswith("train centrobind")]
    assert "\r" not in err and 2 <= len(bar) <= 3, err  # a start and an end line (< 30 s)
    assert "20/20" in bar[-1]


# --------------------------------------------------------------------------- imstats


def _shape_png(path, shape, cx, cy, r, size=48):
    from PIL import Image, ImageDraw

    im = Image.new("RGB", (size, size), (235, 235, 235))
    d = ImageDraw.Draw(im)
    if shape == "circle":
        d.ellipse([cx - r, cy - r, cx + r, cy + r], fill=(200, 40, 40))
    else:
        d.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=(200, 40, 40))
    im.save(path)
    return str(path)


def test_imstats_is_robust_to_position_and_scale_where_pixels_is_not(tmp_path):
    a = _shape_png(tmp_path / "a.png", "circle", 12, 12, 6)
    b = _shape_png(tmp_path / "b.png", "circle", 32, 30, 13)  # moved and bigger
    c = _shape_png(tmp_path / "c.png", "triangle", 12, 14, 7)  # another shape, same place
    for spec, robust in (("imstats", True), ("pixels", False)):
        x = load_encoder(spec).encode([a, b, c]).astype(np.float64)
        x = (x - x.mean(0)) / (x.std(0) + 1e-9)
        same, other = np.linalg.norm(x[0] - x[1]), np.linalg.norm(x[0] - x[2])
        assert (same < other) == robust, (spec, same, other)
    assert load_encoder("imstats").dim == 120


# --------------------------------------------------------------------------- speech, suite


def test_speech_from_pip_is_deterministic(tmp_path):
    from centrobind.espeak import Speaker

    sizes = []
    for run in range(2):
        sp = Speaker()
        for i, voice in enumerate(["en-us", "en+f4"]):
            sizes.append(sp.say("seven. bold", tmp_path / f"{run}-{i}.wav", voice, 170, 40))
    assert sizes[:2] == sizes[2:] and min(sizes) > 5000
    for i in range(2):
        assert (tmp_path / f"0-{i}.wav").read_bytes() == (tmp_path / f"1-{i}.wav").read_bytes()
    with wave.open(str(tmp_path / "0-0.wav")) as w:
        assert w.getframerate() == sp.sample_rate == 22050 and w.getsampwidth() == 2
    with pytest.raises(CentrobindError, match="no voice 'xx-nope'"):
        sp.say("x", tmp_path / "x.wav", "xx-nope")


def test_rawdata_suite_end_to_end_and_its_benchmark_hook(tmp_path, monkeypatch):
    from centrobind.bench import rawdata, run_benchmark

    man = rawdata.make_shapes(tmp_path / "raw", n=12, seed=0)
    rows = man.read_text().splitlines()
    assert rows[0] == "image,caption,sound,label" and len(rows) == 13
    enc = {"caption": "len"}  # no MiniLM in this test; image and sound: the defaults
    small = {"epochs": 2, "embed_dim": 8, "hidden": 16}
    res = rawdata.run_rawdata(tmp_path / "suite", n=24, seeds=1, grid=({"lr": 3e-3},),
                              encoders=enc, base=small)  # fmt: skip
    assert res["encoders"] == {"image": "imstats", "caption": "len", "sound": "logmel"}
    assert set(res["summary"]) == {"defaults", "lr=0.003"} and len(res["rows"]) == 2
    p5 = {k: v["P@5"][0] for k, v in res["summary"].items()}
    assert res["gap"] == pytest.approx(max(p5.values()) - p5["defaults"])
    assert all(0 <= r["P@5"] <= 100 for r in res["rows"])
    md = rawdata.rawdata_markdown(res)
    assert "| defaults |" in md and "| lr=0.003 |" in md
    monkeypatch.setattr(rawdata, "run_rawdata", lambda *a, **kw: res)
    assert run_benchmark(suite="rawdata", out=tmp_path / "bench", quiet=True) == res["rows"]
    assert (tmp_path / "bench/rawdata.md").read_text() == md


def test_a_run_saved_before_the_new_defaults_keeps_its_old_behaviour(tmp_path):
    from centrobind.runs import read_run_config

    old = TrainConfig(epochs=3).to_dict()
    del old["min_steps"], old["val_metric"]
    (tmp_path / "config.json").write_text(json.dumps(old))
    cfg = read_run_config(tmp_path)
    assert (cfg.min_steps, cfg.val_metric) == (0, "R@1")  # as such runs trained
    assert (TrainConfig().min_steps, TrainConfig().val_metric) == (100, "auto")
