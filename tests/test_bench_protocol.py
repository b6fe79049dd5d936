"""The benchmark's temperature protocol: the scale grid, the chooser, the published scales and
the job plan."""

import math

import pytest

from centrobind.bench import _at_scale
from centrobind.bench.jobs import BenchSettings, synthetic_key
from centrobind.bench.methods import Method
from centrobind.bench.protocol import (
    QUICK_SCALE_GRID,
    SCALE_GRID,
    choose_scale,
    default_scale,
    plan_scales,
    published_scales,
    scale_grid,
    transfer_scale,
)
from centrobind.bench.suites import suite_jobs


def test_choose_scale_takes_the_best_validation_score():
    assert choose_scale({2.0: 30.0, 5.0: 41.5, 7.0: 40.0, 20.0: 12.0}, default=7.0) == 5.0


def test_choose_scale_ties_go_to_the_scale_nearer_the_default():
    scores = {3.0: 50.0, 5.0: 51.0, 10.0: 51.0, 14.0: 49.0}
    assert choose_scale(scores, default=7.0) == 5.0  # |log(5/7)| < |log(10/7)|
    assert choose_scale(scores, default=10.0) == 10.0
    assert choose_scale({2.0: 40.0, 10.0: 40.0}, default=5.0) == 10.0  # log-distance, not linear
    assert choose_scale({3.5: 40.0, 14.0: 40.0}, default=7.0) == 3.5  # equal distance: smaller
    # float noise in a mean of percentages is a tie, not a win
    assert choose_scale({3.0: 28.209459459459463, 7.0: 28.209459459459456}, default=7.0) == 7.0


def test_choose_scale_ignores_missing_scores():
    assert choose_scale({3.0: None, 7.0: 20.0, 10.0: math.nan}, default=10.0) == 7.0
    assert choose_scale({3.0: None, 20.0: None}, default=5.0) == 3.0
    with pytest.raises(ValueError):
        choose_scale({}, default=5.0)


def test_scale_grid_cosine_and_relative():
    cb, sym = Method("CentroBind"), Method("Symile", objective="symile")
    gram = Method("Gram(fac)", objective="gram", anchor="fac")
    assert scale_grid(cb, ("mfeat",), 64) == list(SCALE_GRID)
    assert scale_grid(cb, ("mfeat",), 64, quick=True) == list(QUICK_SCALE_GRID)
    d = default_scale(sym, ("mfeat",), 64)
    assert d == pytest.approx(5.0 * 64**2)  # M = 6
    assert scale_grid(sym, ("mfeat",), 64) == pytest.approx([d * s / 7 for s in SCALE_GRID])
    assert 7.0 in SCALE_GRID and d in scale_grid(sym, ("mfeat",), 64)
    assert scale_grid(gram, ("mfeat",), 64)[3] == pytest.approx(14.0)


def test_plan_tunes_every_binding_method_once_per_data_and_learned_scale_shares_it():
    s = BenchSettings.make(None, quick=True, extended=True, choose_scales=True)
    jobs = suite_jobs("all", s)
    plan = plan_scales(jobs, s)
    assert not plan.published
    names = {(k[0].name, k[1]) for k in plan.grid}
    for m in ("CentroBind", "CentroBind[paper]", "CentroBind[loo]", "AllPairs", "Symile"):
        assert (m, ("mfeat",)) in names, m
    # the learnable-scale variants start from the fixed-scale method's choice: no grid of their own
    assert not any("learned-scale" in n for n, _ in names)
    # Gram[official] learns its own temperature: no grid, no scale
    assert not any("official" in n for n, _ in names)
    grid = plan.grid_jobs
    assert all(not j.method.learn_scale and j.seed == 0 and j.drop == 0 for j in grid)
    assert {j.method.logit_scale for j in grid if j.method.name == "CentroBind"} == set(
        QUICK_SCALE_GRID
    )
    # the missing suite (p > 0) uses the choice made on complete mfeat, the M-suite the one made
    # on the 4-modality synthetic setting (the synthetic suite's own data)
    miss = [j for j in jobs if j.suite == "missing" and j.drop > 0]
    assert miss and all(j.tuning_key() in plan.grid for j in miss)
    mods = [j for j in jobs if j.suite == "modalities"]
    assert mods and all(j.tuning_key()[1] == synthetic_key(j.data[1], 1500) for j in mods)
    assert all(not j.method.tuned or j.tuning_key() in plan.grid for j in jobs)


def test_default_run_uses_published_scales_for_every_method_and_no_grid():
    for quick in (False, True):
        s = BenchSettings.make(None, quick=quick, extended=True)
        jobs = suite_jobs("all", s)
        plan = plan_scales(jobs, s)
        assert not plan.grid and not plan.grid_jobs
        final = [_at_scale(j, plan.published, s.embed_dim) for j in jobs]
        for j in final:
            assert j.method.tuned == (j.method.logit_scale is not None), j.method.name
    # the committed full run's choices, e.g. CentroBind 7 on mfeat, 3 on the weak setting
    s = BenchSettings.make(None, quick=False)
    plan = plan_scales(suite_jobs("mfeat", s) + suite_jobs("synthetic", s), s)
    got = {(k[0].name, k[1][:2]): v for k, v in plan.published.items()}
    assert got[("CentroBind", ("mfeat",))] == 7.0
    assert got[("AllPairs", ("mfeat",))] == 10.0
    assert got[("CentroBind", ("synthetic", 2.0))] == 3.0


def test_published_scales_are_the_grid_choices_they_record():
    doc = published_scales()
    assert "c5432cc" in doc["source"] and len(doc["scales"]) >= 50
    for e in doc["scales"]:
        scores = {float(k): v for k, v in e["val_metric"].items()}
        # the keys are the scales printed to 6 digits (Symile's 457.143 for 3200/7)
        assert choose_scale(scores, e["default"]) == pytest.approx(e["chosen"], rel=1e-5)


def test_a_changed_method_definition_is_not_given_a_published_scale():
    s = BenchSettings.make(None, quick=True)
    other = Method("CentroBind", options=(("self_weight", 0.5),))  # same name, new definition
    from centrobind.bench.jobs import MFEAT, Job

    plan = plan_scales([Job("mfeat", "mfeat", other, 0, MFEAT)], s)
    assert not plan.published and len(plan.grid_jobs) == len(QUICK_SCALE_GRID)


def test_transfer_scale_keeps_cosine_scales_and_the_relative_factor():
    cb, sym = Method("CentroBind"), Method("Symile", objective="symile")
    four, eight = synthetic_key(2.0, 3000), synthetic_key(2.0, 1500, 8)
    assert transfer_scale(cb, 3.0, four, eight, 64) == 3.0
    d4, d8 = default_scale(sym, four, 64), default_scale(sym, eight, 64)
    assert transfer_scale(sym, 2 * d4, four, eight, 64) == pytest.approx(2 * d8)


def test_with_scale_sets_the_config_and_the_learned_clamp():
    m = Method("CentroBind[learned-scale]", learn_scale=True, scale_from="CentroBind")
    assert m.tuning_method() == Method("CentroBind")
    o = dict(m.with_scale(5.0).overrides)
    assert o == {"logit_scale_init": 5.0, "learn_logit_scale": True, "max_logit_scale": 10.0}
    assert Method("AllPairs", objective="all_pairs").with_scale(7.0).logit_scale == 7.0
