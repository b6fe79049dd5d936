"""The config module: validation generated from the field types, one-line errors naming the
field, CLI flags generated from the fields (defaults in --help), --version."""

import dataclasses
import json
import math
import typing

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from centrobind.cli import build_parser, main
from centrobind.config import INT_MAX, TrainConfig
from centrobind.errors import ConfigError

FIELDS = {f.name: f for f in dataclasses.fields(TrainConfig)}
HINTS = typing.get_type_hints(TrainConfig)


def _kind(name):
    tp = HINTS[name]
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    return args[0] if typing.get_origin(tp) in (typing.Union, __import__("types").UnionType) else tp


@pytest.mark.parametrize("name", [n for n in FIELDS if _kind(n) is bool])
def test_string_and_int_booleans_are_refused(name):
    for bad in ("false", "true", 0, 1, None):
        with pytest.raises(ConfigError, match=rf"^{name} "):
            TrainConfig.from_dict({name: bad})


@pytest.mark.parametrize("name", [n for n in FIELDS if _kind(n) is float])
def test_non_finite_floats_are_refused_for_every_float_field(name):
    for bad in (math.nan, math.inf, -math.inf, "1.0", True):
        with pytest.raises(ConfigError, match=rf"^{name} "):
            TrainConfig.from_dict({name: bad})


@pytest.mark.parametrize("name", [n for n in FIELDS if _kind(n) is int])
def test_ints_are_typed_and_bounded(name):
    for bad in (1.5, "3", True, 2**70, -(2**70)):
        with pytest.raises(ConfigError, match=rf"^{name} "):
            TrainConfig.from_dict({name: bad})


def test_seed_range_and_split():
    assert TrainConfig.from_dict({"seed": INT_MAX}).seed == INT_MAX
    for bad in (-1, INT_MAX + 1):
        with pytest.raises(ConfigError, match="^seed must be"):
            TrainConfig.from_dict({"seed": bad})
    for bad in (5, [0.5, 0.5], [0.5, 0.5, math.nan], [0.5, 0.6, -0.1], [0.5, 0.2, 0.2]):
        with pytest.raises(ConfigError, match="^split"):
            TrainConfig.from_dict({"split": bad})
    with pytest.raises(ConfigError, match="^unknown objective 'nope'"):
        TrainConfig.from_dict({"objective": "nope"})
    with pytest.raises(ConfigError, match="^anchor_init must be one of ssl, none"):
        TrainConfig.from_dict({"anchor_init": "pretrained"})


def test_existing_config_json_still_loads():
    """config.json of runs written before the config module (flat keys, split as a list)."""
    old = {
        "objective": "fixed_anchor",
        "objective_options": {},
        "anchor": "pix",
        "freeze_anchor": True,
        "anchor_init": "ssl",
        "anchor_pretrain_epochs": 20,
        "intra_weight": 0.0,
        "aug_noise": 0.3,
        "aug_mask": 0.2,
        "embed_dim": 64,
        "hidden": 256,
        "depth": 2,
        "dropout": 0.0,
        "logit_scale_init": None,
        "max_logit_scale": None,
        "learn_logit_scale": False,
        "epochs": 100,
        "batch_size": 256,
        "lr": 0.001,
        "weight_decay": 0.0,
        "warmup_steps": 50,
        "schedule": "cosine",
        "chunk_size": None,
        "seed": 0,
        "device": "cpu",
        "bf16": True,
        "early_stopping": None,
        "checkpoint_every": None,
        "split": [0.7, 0.1, 0.2],
        "standardize": True,
        "drop_last": True,
        "quiet": False,
    }
    cfg = TrainConfig.from_dict(old)
    now, defaults = cfg.to_dict(), TrainConfig().to_dict()
    assert {k: now[k] for k in old} == old
    assert {k: v for k, v in now.items() if k not in old} == {  # newer fields: their default
        k: v for k, v in defaults.items() if k not in old
    }
    assert cfg.split == (0.7, 0.1, 0.2)


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
    lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=5), c, max_size=3),
    max_leaves=6,
)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(sorted(FIELDS) + ["bogus"]), JSON, max_size=4))
def test_any_json_table_gives_a_config_or_a_config_error(table):
    try:
        cfg = TrainConfig.from_dict(table)
    except ConfigError as e:
        assert "\n" not in str(e)
        return
    assert TrainConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg


def test_every_cli_field_has_a_flag_with_its_default_in_help():
    helps = {}
    for action in build_parser()._subparsers._group_actions[0].choices["train"]._actions:
        for opt in action.option_strings:
            helps[opt] = action.help or ""
    for name in FIELDS:
        if name in ("objective_options", "towers"):
            continue  # --option KEY=VALUE, --tower MODALITY=SPEC
        flag = "--" + name.replace("_", "-")
        assert flag in helps, flag
        assert "(default: " in helps[flag], flag


def test_help_of_every_verb_shows_defaults_and_version(capsys):
    with pytest.raises(SystemExit):
        main(["--version"])
    assert capsys.readouterr().out.startswith("centrobind ")
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "{centrobind,fixed_anchor,all_pairs,symile,gram}" in out
    assert "(default: 256)" in out and "(default: cosine)" in out
    with pytest.raises(SystemExit):
        main(["benchmark", "--help"])
    assert "(default: bench_out)" in capsys.readouterr().out


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--lr", "nan"], "lr must be a finite number"),
        (["--seed", str(2**70)], "seed must be <="),
        (["--seed", "abc"], "invalid int value"),
        (["--split", "0.5,0.5"], "split must be 3 values"),
        (["--no-standardize", "--dropout", "1"], "dropout must be < 1"),
    ],
)
def test_cli_config_errors_are_one_line(tmp_path, flags, message):
    from reliability_helpers import inproc  # the CLI's main in this process

    rc, _, err = inproc("train", "--data", "mfeat", "--out", tmp_path / "r", *flags)
    lines = err.strip().splitlines()
    assert rc == 2 and len(lines) == 1, err
    assert lines[0].startswith("error:") and message in lines[0], lines[0]
    assert not (tmp_path / "r").exists()  # refused before anything is written
