"""Trainer: determinism, exact resume, early stopping, non-finite loss, config I/O."""

import json

import pytest
import torch

from centrobind.data import MultimodalDataset, make_synthetic
from centrobind.errors import CentrobindError, ConfigError
from centrobind.models import Binder
from centrobind.objectives import make_objective
from centrobind.train import TrainConfig, TrainingError, fit


def _data(n=96, seed=0):
    return make_synthetic(
        n_samples=n,
        n_modalities=3,
        dims=[8, 6, 5],
        shared_dim=2,
        pair_dim=2,
        private_dim=2,
        seed=seed,
    )


def _cfg(**kw):
    base = dict(
        epochs=3,
        batch_size=32,
        embed_dim=8,
        hidden=16,
        warmup_steps=2,
        quiet=True,
        intra_weight=0.3,
        dropout=0.1,
    )
    base.update(kw)
    return TrainConfig(**base)


def _train(cfg, ds, out=None, resume=False, objective="centrobind"):
    torch.manual_seed(cfg.seed)
    binder = Binder(ds.dims, embed_dim=cfg.embed_dim, hidden=cfg.hidden, dropout=cfg.dropout)
    obj = make_objective(objective)
    res = fit(binder, obj, ds, None, cfg, out_dir=out, resume=resume)
    return binder, res


def test_same_seed_same_weights_and_training_changes_them():
    ds = _data()
    a, _ = _train(_cfg(), ds)
    b, _ = _train(_cfg(), ds)
    c, _ = _train(_cfg(seed=1), ds)
    for k, v in a.state_dict().items():
        assert torch.equal(v, b.state_dict()[k]), k
    assert any(not torch.equal(v, c.state_dict()[k]) for k, v in a.state_dict().items())


def test_resume_mid_epoch_is_exact(tmp_path):
    ds = _data()
    full, res_full = _train(_cfg(epochs=4), ds)
    # Interrupted run: stop after 2 epochs + 1 step, via a checkpoint every step and a crash.
    out = tmp_path / "run"
    cfg = _cfg(epochs=4, checkpoint_every=1)
    torch.manual_seed(cfg.seed)
    binder = Binder(ds.dims, embed_dim=cfg.embed_dim, hidden=cfg.hidden, dropout=cfg.dropout)
    obj = make_objective("centrobind")
    calls = {"n": 0}
    orig = obj.forward

    def crashing(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2 * 3 + 2:  # 3 steps/epoch: crash during epoch 3, step 2
            raise KeyboardInterrupt
        return orig(*args, **kwargs)

    obj.forward = crashing
    with pytest.raises(KeyboardInterrupt):
        fit(binder, obj, ds, None, cfg, out_dir=out)
    resumed, res = _train(cfg, ds, out=out, resume=True)
    assert res.steps == res_full.steps == 12
    for k, v in full.state_dict().items():
        assert torch.equal(v, resumed.state_dict()[k]), k


def test_early_stopping_keeps_best_epoch(tmp_path):
    ds = _data(n=160)
    split = ds.split(seed=0)
    calls = []

    def validate(binder, val):  # a metric that peaks at epoch 2, then falls
        calls.append(len(calls) + 1)
        return [1.0, 5.0, 3.0, 2.0, 1.0, 0.5][len(calls) - 1]

    cfg = _cfg(epochs=6, early_stopping=2, min_steps=0)
    torch.manual_seed(0)
    binder = Binder(ds.dims, embed_dim=8, hidden=16)
    snapshots = {}
    orig = validate

    def recording(b, v):
        m = orig(b, v)
        snapshots[len(calls)] = {k: t.clone() for k, t in b.state_dict().items()}
        return m

    res = fit(
        binder,
        make_objective("centrobind"),
        split["train"],
        split["val"],
        cfg,
        out_dir=tmp_path,
        validate=recording,
    )
    assert res.best_epoch == 2 and res.stopped_early and len(res.history) == 4
    for k, v in binder.state_dict().items():
        assert torch.equal(v, snapshots[2][k])
    assert (tmp_path / "checkpoints" / "best.safetensors").is_file()
    log = (tmp_path / "log.csv").read_text().splitlines()
    assert log[0].startswith("epoch,") and len(log) == 5


def test_non_finite_loss_names_the_step(tmp_path):
    ds = _data()
    feats = dict(ds.features)
    cfg = _cfg(lr=1e30, intra_weight=0.0, checkpoint_every=1, warmup_steps=0, schedule="constant")
    ds2 = MultimodalDataset(feats, ds.mask, ds.labels)
    with pytest.raises(TrainingError, match=r"non-finite loss .* at step \d+"):
        _train(cfg, ds2, out=tmp_path)
    assert (tmp_path / "checkpoints" / "latest.safetensors").is_file()


def test_config_round_trip_and_validation():
    cfg = _cfg(objective="all_pairs", split=(0.8, 0.1, 0.1))
    again = TrainConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert again == cfg
    with pytest.raises(ConfigError, match="unknown config keys: bogus"):
        TrainConfig.from_dict({"bogus": 1})
    with pytest.raises(ConfigError, match="epochs"):
        TrainConfig.from_dict({"epochs": 0})


def test_resume_after_early_stopping_trains_no_more(tmp_path):
    ds = _data(n=160)
    split = ds.split(seed=0)
    scores = iter([1.0, 5.0, 3.0, 2.0] + [9.0] * 10)
    cfg = _cfg(epochs=8, early_stopping=2, min_steps=0)
    torch.manual_seed(0)
    binder = Binder(ds.dims, embed_dim=8, hidden=16, dropout=0.1)
    res = fit(
        binder,
        make_objective("centrobind"),
        split["train"],
        split["val"],
        cfg,
        out_dir=tmp_path,
        validate=lambda b, v: next(scores),
    )
    assert res.stopped_early and len(res.history) == 4
    torch.manual_seed(0)
    again = Binder(ds.dims, embed_dim=8, hidden=16, dropout=0.1)
    res2 = fit(
        again,
        make_objective("centrobind"),
        split["train"],
        split["val"],
        cfg,
        out_dir=tmp_path,
        resume=True,
        validate=lambda b, v: next(scores),
    )
    assert res2.stopped_early and len(res2.history) == 4 and res2.steps == res.steps
    for k, v in binder.state_dict().items():  # the best epoch's weights, restored on resume too
        assert torch.equal(v, again.state_dict()[k]), k


def test_resume_refuses_a_checkpoint_of_another_config(tmp_path):
    ds = _data()
    _train(_cfg(epochs=1), ds, out=tmp_path)
    with pytest.raises(CentrobindError, match="different config"):
        _train(_cfg(epochs=2, seed=5), ds, out=tmp_path, resume=True)


def test_bad_config_values_are_config_errors():
    for bad in (
        {"embed_dim": 0},
        {"dropout": 1.5},
        {"epochs": "3"},
        {"seed": 1.5},
        {"device": "nonsense"},
        {"objective_options": {"anchor": 1}},
        {"weight_decay": -1},
        {"chunk_size": 0},
        {"split": 5},
    ):
        with pytest.raises(ConfigError):
            TrainConfig.from_dict(bad)
    with pytest.raises(ConfigError, match="must be a table"):
        TrainConfig.from_dict([1, 2])


def test_train_state_checkpoint_round_trip():
    from centrobind.train import TrainState

    state = TrainState(
        epoch=3,
        batch=2,
        step=11,
        best_metric=5.0,
        best_epoch=2,
        best_state={"model.w": torch.ones(2)},
        bad_epochs=1,
        history=[{"epoch": 1.0}],
        elapsed=1.5,
        stopped_early=False,
        partial={"loss_sum": 1.0, "n_steps": 2, "terms": {}},
    )
    w = torch.nn.Parameter(torch.zeros(2))
    opt = torch.optim.AdamW([w])
    tensors, meta = state.to_checkpoint(
        {"model.w": w.detach()}, opt, torch.Generator(), TrainConfig(), []
    )
    assert {"model.w", "best.model.w", "rng.torch", "rng.aug"} <= set(tensors)
    again = TrainState.from_checkpoint(tensors, json.loads(json.dumps(meta)))
    assert torch.equal(again.best_state["model.w"], torch.ones(2))
    again.best_state = state.best_state
    assert again == state


def test_log_names_terms_by_modality(tmp_path):
    _train(_cfg(epochs=1), _data(), out=tmp_path)
    header = (tmp_path / "log.csv").read_text().splitlines()[0].split(",")
    assert {"loss/c-m1", "loss/c-m2", "loss/c-m3", "loss/intra"} <= set(header), header
