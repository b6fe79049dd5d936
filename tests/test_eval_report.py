"""The ``evaluate`` aggregate: stable layout, JSON-safety, consistency, formatting, layering."""

import json
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from centrobind.eval import (
    classification_metrics,
    cross_modal_retrieval,
    evaluate,
    format_metrics,
    geometry_metrics,
    latent_recovery,
    leave_one_out_retrieval,
)


def _split(n, seed, names=("img", "txt", "aud")):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, 8, generator=g)
    emb = {m: F.normalize(z + 0.7 * torch.randn(n, 8, generator=g), dim=1) for m in names}
    mask = torch.rand(len(names), n, generator=g) > 0.25
    for i, m in enumerate(names):
        emb[m][~mask[i]] = float("nan")
    labels = {"coarse": (z[:, 0] > 0).long(), "fine": (z[:, :2] > 0).long() @ torch.tensor([1, 2])}
    factors = {"content": z[:, :4], "style": z[:, 4:]}
    return emb, mask, labels, factors


@pytest.fixture(scope="module")
def splits():
    return _split(120, 0), _split(80, 1)


@pytest.fixture(scope="module")
def metrics(splits):
    (tre, trm, trl, trf), (tee, tem, tel, tef) = splits
    return evaluate(tre, trm, trl, tee, tem, tel, trf, tef, anchor="img", seed=0)


def test_layout(metrics):
    assert set(metrics) == {"retrieval", "classification", "geometry", "latent_recovery"}
    ret = metrics["retrieval"]
    pairs = {f"{a}->{b}" for a in ("img", "txt", "aud") for b in ("img", "txt", "aud") if a != b}
    assert set(ret) == pairs | {"mean", "mean_excluding", "mean_excluding_anchor", "leave_one_out"}
    assert set(ret["img->txt"]) == {"R@1", "R@5", "R@10", "MRR", "median_rank", "n_queries"}
    assert ret["mean_excluding_anchor"] == ret["mean_excluding"]["img"]
    assert set(ret["leave_one_out"]) == {"img", "txt", "aud", "mean"}
    assert set(metrics["classification"]) == {"coarse", "fine"}
    assert set(metrics["classification"]["fine"]) == {"linear_probe", "knn", "prototype"}
    assert set(metrics["geometry"]) == {"uniformity", "alignment", "modality_gap"}
    assert set(metrics["latent_recovery"]) == {"img", "txt", "aud", "fused"}
    assert set(metrics["latent_recovery"]["fused"]) == {"content", "style"}


def test_json_serialisable_plain_python(metrics):
    text = json.dumps(metrics, allow_nan=False)
    assert json.loads(text) == metrics

    def walk(v):
        if isinstance(v, dict):
            assert all(isinstance(k, str) for k in v)
            for x in v.values():
                walk(x)
        else:
            assert v is None or type(v) in (int, float), type(v)

    walk(metrics)


def test_values_equal_the_individual_functions(splits, metrics):
    (tre, trm, trl, trf), (tee, tem, tel, tef) = splits
    ret = cross_modal_retrieval(tee, tem)
    assert metrics["retrieval"]["txt->aud"] == pytest.approx(ret["txt->aud"])
    assert metrics["retrieval"]["mean"] == pytest.approx(ret["mean"])
    loo = leave_one_out_retrieval(tee, tem)
    assert metrics["retrieval"]["leave_one_out"]["aud"] == pytest.approx(loo["aud"])
    cls = classification_metrics(tre, trm, trl, tee, tem, tel, seed=0)
    assert metrics["classification"]["fine"]["knn"] == pytest.approx(cls["fine"]["knn"])
    assert metrics["classification"]["coarse"]["prototype"] == pytest.approx(
        cls["coarse"]["prototype"]
    )
    geo = geometry_metrics(tee, tem)
    assert metrics["geometry"]["uniformity"] == pytest.approx(geo["uniformity"])
    lat = latent_recovery(tre, trm, trf, tee, tem, tef)
    assert metrics["latent_recovery"]["txt"] == pytest.approx(lat["txt"])


def test_optional_parts_and_validation(splits):
    (tre, trm, _, _), (tee, tem, _, _) = splits
    out = evaluate(tre, trm, None, tee, tem, None)
    assert "latent_recovery" not in out
    assert out["classification"] == {}
    assert out["retrieval"]["mean_excluding_anchor"] is None
    json.dumps(out, allow_nan=False)
    with pytest.raises(ValueError, match="anchor"):
        evaluate(tre, trm, None, tee, tem, None, anchor="video")
    with pytest.raises(ValueError, match="factors"):
        evaluate(tre, trm, None, tee, tem, None, train_factors={"z": torch.zeros(120, 1)})


def test_two_modalities_without_mask():
    (tre, _, trl, _), (tee, _, tel, _) = _split(50, 2, ("a", "b")), _split(40, 3, ("a", "b"))
    tre = {m: torch.nan_to_num(x) for m, x in tre.items()}
    tee = {m: torch.nan_to_num(x) for m, x in tee.items()}
    out = evaluate(tre, None, trl, tee, None, tel, anchor="a")
    assert out["retrieval"]["mean_excluding"] == {"a": None, "b": None}
    assert out["retrieval"]["mean_excluding_anchor"] is None
    json.dumps(out, allow_nan=False)
    row = next(line for line in format_metrics(out).splitlines() if "mean excl. a" in line)
    assert set(row.split()[3:]) == {"-"}


def test_format_metrics(metrics):
    text = format_metrics(metrics)
    for needle in (
        "Retrieval R@1",
        "query\\gallery",
        "mean excl. img",
        "mean excl. anchor",
        "others -> txt",
        "Classification: fine",
        "linear_probe",
        "proto\\query",
        "uniformity",
        "modality_gap",
        "img-txt",
        "Latent recovery",
        "content",
        "fused",
    ):
        assert needle in text, needle
    r1 = f"{metrics['retrieval']['img->txt']['R@1']:.1f}"
    img_row = next(line for line in text.splitlines() if line.startswith("img "))
    assert img_row.split()[1:] == ["-", r1, f"{metrics['retrieval']['img->aud']['R@1']:.1f}"]
    assert format_metrics({"geometry": metrics["geometry"]}).startswith("== Geometry")


def test_eval_does_not_import_model_or_training_code():
    code = (
        "import sys, centrobind.eval\n"
        "bad = [m for m in ('models', 'train', 'bench', 'cli')\n"
        "       if 'centrobind.' + m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
