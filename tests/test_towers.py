"""Towers: the registry, Binder(encoders=...), freezing, run records and their errors."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from centrobind.config import TrainConfig
from centrobind.data import MultimodalDataset
from centrobind.errors import CentrobindError, ConfigError
from centrobind.models import Binder
from centrobind.runs import load_run, train_run
from centrobind.towers import (
    TowerContext,
    TowerError,
    apply_freeze,
    build_tower,
    parse_tower_spec,
    tower_spec_of,
)
from tower_helpers import TinyIMU


def test_spec_parsing_round_trip_and_errors():
    s = parse_tower_spec("conv1d,width=32,shape=[3,128],freeze")
    assert (s.name, s.arg, s.options) == (
        "conv1d",
        None,
        {"width": 32, "shape": [3, 128], "freeze": True},
    )
    assert parse_tower_spec(str(s)).options == s.options
    b = parse_tower_spec("backbone:timm:resnet18@w.pt,train_last=2")
    assert (b.arg, b.freeze) == ("timm:resnet18@w.pt", False)
    assert parse_tower_spec("backbone:minilm").freeze  # a backbone is frozen unless told
    with pytest.raises(TowerError, match="unknown tower 'lstm'"):
        parse_tower_spec("lstm")
    with pytest.raises(TowerError, match="unknown option 'widht'"):
        build_tower("conv1d,widht=3", TowerContext(48, 8, (3, 16)))
    with pytest.raises(ConfigError, match="unknown tower"):  # checked with the config
        TrainConfig(towers={"a": "resnet"}).check()


@pytest.mark.parametrize(
    "spec, shape, in_dim",
    [
        ("conv1d,width=8,layers=2", (3, 16), 48),
        ("cnn,width=4,layers=2", (3, 8, 8), 192),
        ("bow,width=8,vocab=64", None, 6),
        ("mlp,depth=1", None, 5),
    ],
)
def test_registry_towers_map_flat_and_shaped_batches(spec, shape, in_dim):
    tower = build_tower(spec, TowerContext(in_dim, 4, shape))
    x = torch.rand(3, in_dim) * (10 if spec.startswith("bow") else 1)
    assert tuple(tower(x).shape) == (3, 4)
    if shape is not None:  # the shaped batch gives the same rows
        assert torch.allclose(tower(x.reshape(3, *shape)), tower(x))
    assert tower_spec_of(tower) == spec


def test_binder_takes_any_module_and_checks_its_width():
    binder = Binder({"text": 5}, embed_dim=8, encoders={"imu": TinyIMU(out=8)})
    assert binder.modalities == ["text", "imu"] and binder.dims["imu"] == 0
    z = binder({"text": torch.randn(4, 5), "imu": torch.randn(4, 48)})
    assert tuple(z.shape) == (2, 4, 8)
    assert binder.towers["imu"] == "module:tower_helpers:TinyIMU,out=8,channels=3"
    wrong = Binder({"text": 5}, embed_dim=8, encoders={"imu": TinyIMU(out=6)})
    with pytest.raises(
        TowerError, match=r"'imu'.*returns \[4, 6\] for 4 rows; the shared space needs \[4, 8\]"
    ):
        wrong({"text": torch.randn(4, 5), "imu": torch.randn(4, 48)})
    with pytest.raises(TowerError, match="identity tower keeps its input space"):
        Binder({"a": 5, "b": 8}, embed_dim=8, encoders={"a": "identity"})


def test_train_last_freezes_all_but_the_last_blocks_and_keeps_them_in_eval():
    net = nn.Sequential()
    net.blocks = nn.Sequential(
        *[nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4)) for _ in range(3)]
    )
    net.head = nn.Linear(4, 4)
    apply_freeze(net, train_last=1)
    trains = [any(p.requires_grad for p in b.parameters()) for b in net.blocks]
    assert trains == [False, False, True] and net.head.weight.requires_grad
    binder = Binder({"b": 4}, embed_dim=4, encoders={"a": net}).train()
    assert not net.blocks[0].training and net.blocks[2].training  # frozen BN stats stay fixed
    with pytest.raises(TowerError, match="the network has 3 blocks"):
        apply_freeze(net, train_last=5)
    assert binder.is_frozen("b") is False


def _toy(n=60, seed=0):
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 2
    imu = torch.randn(n, 48, generator=g) + y[:, None].float()
    txt = torch.randn(n, 5, generator=g) + y[:, None].float()
    return MultimodalDataset({"imu": imu, "text": txt}, labels={"y": y})


def test_custom_module_run_records_its_path_and_reloads(tmp_path):
    cfg = TrainConfig(epochs=2, batch_size=14, embed_dim=8, quiet=True)
    run, _ = train_run(_toy(), cfg, tmp_path / "r", encoders={"imu": TinyIMU(out=8)})
    saved = json.loads((tmp_path / "r" / "config.json").read_text())
    assert saved["towers"]["imu"] == "module:tower_helpers:TinyIMU,out=8,channels=3"
    assert json.loads((tmp_path / "r" / "run.json").read_text())["towers"]["text"] == "mlp"
    again = load_run(tmp_path / "r")
    x = _toy().features["imu"][:3]
    assert torch.allclose(again.binder.embed("imu", x), run.binder.embed("imu", x), atol=1e-6)
    saved["towers"]["imu"] = "module:no_such_pkg.towers:Gone"
    (tmp_path / "r" / "config.json").write_text(json.dumps(saved))
    with pytest.raises(CentrobindError, match="cannot import 'no_such_pkg.towers'") as e:
        load_run(tmp_path / "r")
    assert "\n" not in str(e.value)


def test_wrong_width_tower_fails_before_training(tmp_path):
    cfg = TrainConfig(epochs=1, batch_size=16, embed_dim=8, quiet=True)
    with pytest.raises(TowerError, match=r"returns \[2, 3\]"):
        train_run(_toy(), cfg, tmp_path / "r", encoders={"imu": TinyIMU(out=3)})
    assert not (tmp_path / "r" / "config.json").exists()
    with pytest.raises(ConfigError, match="'sound', which is not a modality"):
        train_run(_toy(), TrainConfig(towers={"sound": "conv1d"}, quiet=True), tmp_path / "s")


def test_backbone_tower_frozen_features_or_trained_end_to_end(tmp_path):
    """A featurize encoder family (registered here: a tiny conv net on 8x8 images) as a tower:
    frozen, its features are computed once and only the head trains; with train_last it runs on
    the decoded items and its last block trains."""
    import numpy as np
    from PIL import Image

    from centrobind.data.raw import ColumnPlan, load_raw
    from centrobind.featurize import register_encoder
    from centrobind.featurize.encoders.image_backbone import BackboneEncoder
    from centrobind.featurize.encoders.image_common import cnn_input, seeded_init

    def tiny(arg, *, device, allow_random, kind):
        def build():
            net = nn.Module()
            net.blocks = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 6, 3))
            net.forward = lambda x: net.blocks(x).mean((-2, -1))
            return net

        net = seeded_init(build)
        return BackboneEncoder("tinynet", net, lambda p: cnn_input(p, 8), 8, device, "t/1", {})

    register_encoder("tinynet", tiny)
    rng = np.random.default_rng(0)
    for i in range(4):
        Image.fromarray(rng.integers(0, 255, (10, 10, 3), dtype=np.uint8)).save(
            tmp_path / f"{i}.png"
        )
    (tmp_path / "m.csv").write_text("image,t\n" + "".join(f"{i}.png,{i}\n" for i in range(4)))
    frozen = load_raw(tmp_path / "m.csv", {"image": ColumnPlan("features", spec="tinynet"),
                                           "t": ColumnPlan("text", {"length": 2})})  # fmt: skip
    assert frozen.dims["image"] == 6 and frozen.meta["featurizers"]["image"]["spec"] == "tinynet"
    b = Binder(frozen.dims, embed_dim=4, encoders={"image": "backbone:tinynet"})
    assert b.towers["image"] == "backbone:tinynet" and b.encoders["image"].in_dim == 6
    raw = load_raw(tmp_path / "m.csv", {"image": ColumnPlan("backbone", spec="tinynet"),
                                        "t": ColumnPlan("text", {"length": 2})})  # fmt: skip
    assert raw.meta["shapes"]["image"] == [3, 8, 8]
    b = Binder(raw.dims, embed_dim=4, encoders={"image": "backbone:tinynet,train_last=1"},
               shapes=raw.meta["shapes"])  # fmt: skip
    net = b.encoders["image"].backbone
    assert [p.requires_grad for p in net.blocks[0].parameters()] == [False, False]
    assert all(p.requires_grad for p in net.blocks[2].parameters())
    z = b.encode("image", raw.features["image"])
    z.sum().backward()
    assert net.blocks[2].weight.grad is not None and net.blocks[0].weight.grad is None


def test_an_unknown_timm_model_is_one_error_line(tmp_path, monkeypatch, capsys):
    """``--tower image=backbone:timm:nosuch`` (frozen or trained): timm's unknown model, bad
    tag and missing weights become one ``error:`` line each, never a traceback."""
    import sys
    import types

    from centrobind.cli import main
    from tower_helpers import make_manifest

    fake = types.ModuleType("timm")  # timm's own behaviour for these names (timm not installed)

    def get_pretrained_cfg(name):
        arch, _, tag = name.partition(".")
        if arch in fake.list_models() and tag:
            raise RuntimeError(f"Invalid pretrained tag ({tag}) for {arch}.")
        return None  # unknown architectures, and ones without pretrained weights

    fake.models = types.SimpleNamespace(get_pretrained_cfg=get_pretrained_cfg)
    fake.list_models = lambda: ["resnet18", "resnet50", "vit_tiny_patch16_224"]
    fake.is_model = lambda name: name.partition(".")[0] in fake.list_models()
    monkeypatch.setitem(sys.modules, "timm", fake)
    man = make_manifest(tmp_path / "raw", n=8)
    cases = {
        "backbone:timm:nosuch": "timm has no model named 'nosuch'",
        "backbone:timm:resnet5,train_last=1": "did you mean resnet50, resnet18?",
        "backbone:timm:resnet18.nosuch": "Invalid pretrained tag (nosuch) for resnet18",
        "backbone:timm:resnet50": "no pretrained weights for 'resnet50'; give a weights file",
    }
    for spec, why in cases.items():
        args = ["train", "--data", str(man), "--out", str(tmp_path / "r"), "--quiet",
                "--tower", f"image={spec}", "--offline"]  # fmt: skip
        assert main(args) == 2, spec
        err = capsys.readouterr().err
        assert err.startswith("error: ") and err.count("\n") == 1, err
        assert why in err and "Traceback" not in err, err
    assert not (tmp_path / "r" / "config.json").exists()


def test_search_with_a_custom_module_tower_run(tmp_path, capsys):
    """Train with a user's module, then ``centrobind search`` loads the run (importing the
    module by its recorded path) and ranks the corpus exactly as the module's embeddings do."""
    import numpy as np

    from centrobind.cli import main
    from centrobind.data import save_dataset

    ds = _toy(n=40, seed=1)
    save_dataset(ds, tmp_path / "ds")
    cfg = TrainConfig(epochs=4, batch_size=7, embed_dim=8, quiet=True, seed=2, lr=5e-3)
    train_run(ds, cfg, tmp_path / "r", encoders={"imu": TinyIMU(out=8)})
    capsys.readouterr()
    args = ["search", "--run", str(tmp_path / "r"), "--corpus", str(tmp_path / "ds"), "--target",
            "imu", "--query-data", str(tmp_path / "ds"), "--query-modality", "text", "-k", "3",
            "--json"]  # fmt: skip
    assert main(args) == 0
    lines = [json.loads(s) for s in capsys.readouterr().out.splitlines() if s.strip()]
    assert len(lines) == 40 and all(len(hits) == 3 for hits in lines)
    run = load_run(tmp_path / "r")
    assert isinstance(run.binder.encoders["imu"], TinyIMU)
    zi = run.binder.embed("imu", run.standardizer.apply(ds).features["imu"]).numpy()
    zt = run.binder.embed("text", run.standardizer.apply(ds).features["text"]).numpy()
    top = np.argsort(-(zt @ zi.T), axis=1, kind="stable")[:, :3]
    assert [[h["id"] for h in hits] for hits in lines] == top.tolist()
    y = ds.labels["y"].numpy()
    assert np.mean(y[top[:, 0]] == y) > 0.6  # the trained towers match classes


def _kept_space_data(root, n, seed, columns):
    """``n`` rows of 4 classes: a caption, a 12-d "picture" vector and a ``[3, 16]`` trace (its
    frequency is the class), as ``.npy`` items; only ``columns`` are written."""
    import csv

    import numpy as np

    captions = ["someone walking slowly", "a person running fast", "a cat asleep on a sofa",
                "a red car on a road"]  # fmt: skip
    centres = np.random.default_rng(99).standard_normal((4, 12)).astype(np.float32)
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    rows, t = [], np.arange(16)
    for i in range(n):
        c = i % 4
        np.save(root / f"p{i}.npy", centres[c] + 0.3 * rng.standard_normal(12).astype(np.float32))
        x = np.sin(2 * np.pi * (c + 1) * t / 16 + rng.uniform(0, 6.3))
        np.save(root / f"s{i}.npy", np.stack([x, x, -x]).astype(np.float32))
        rows.append({"caption": captions[c], "image": f"p{i}.npy", "imu": f"s{i}.npy", "y": c})
    with open(root / "m.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=[*columns, "y"], extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    return root / "m.csv", captions


def test_kept_pretrained_space_binds_a_new_modality_to_text_it_never_met(tmp_path, capsys):
    """The two-stage recipe of docs/encoders.md from the CLI: stage 1 maps pictures into MiniLM's
    caption space (``identity`` tower); stage 2 freezes that picture tower and binds the IMU to
    pictures only. Captions (stage 1) then find IMU traces (stage 2) of their class, although no
    caption-IMU pair was ever seen; the control (stage 2 from a random frozen picture tower) is
    at chance."""
    import warnings

    import numpy as np

    import centrobind
    from centrobind.cli import main

    one, captions = _kept_space_data(tmp_path / "one", 64, 0, ["caption", "image"])
    two, _ = _kept_space_data(tmp_path / "two", 64, 1, ["image", "imu"])
    test, _ = _kept_space_data(tmp_path / "test", 32, 2, ["image", "imu"])
    common = ["--embed-dim", "384", "--epochs", "10", "--batch-size", "16", "--quiet",
              "--label", "y", "--seed", "0", "--lr", "0.01"]  # fmt: skip
    stage2 = ["--data", str(two), "--tower", "image=mlp,freeze", "--tower",
              "imu=conv1d,width=8,layers=2", "--objective", "fixed_anchor", "--anchor", "image",
              "--anchor-init", "none", *common]  # fmt: skip
    runs = {
        "stage1": [
            "--data",
            str(one),
            "--tower",
            "caption=identity",
            "--tower",
            "image=mlp",
            "--objective",
            "all_pairs",
            *common,
        ],  # fmt: skip
        "stage2": [*stage2, "--init-from", str(tmp_path / "stage1")],
        "control": stage2,
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name, args in runs.items():
            assert main(["train", *args, "--out", str(tmp_path / name)]) == 0, name
    capsys.readouterr()
    text = centrobind.load(tmp_path / "stage1").encode("caption", captions)
    items = [str(tmp_path / "test" / f"s{i}.npy") for i in range(32)]
    y = np.arange(32) % 4
    acc = {}
    for name in ("stage2", "control"):
        imu = centrobind.load(tmp_path / name).encode("imu", items)
        acc[name] = float(((imu @ text.T).argmax(1) == y).mean())
    assert acc["stage2"] >= 0.75 and acc["control"] <= 0.5, acc
