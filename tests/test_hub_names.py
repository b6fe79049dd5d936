"""Pretrained models by their hub names: the cache, offline mode, and the timm / open_clip
loading paths (those two libraries mocked: they are not installed here). Nothing downloads."""

from __future__ import annotations

import sys
import types

import numpy as np
import pytest
import torch
from torch import nn

from centrobind.cli import main
from centrobind.errors import CentrobindError
from centrobind.featurize import load_encoder
from centrobind.featurize.encoders import hub


def _cache(root, repo, files):
    """A Hugging Face hub cache holding ``repo`` (files: name -> bytes or a source path)."""
    snap = root / f"models--{repo.replace('/', '--')}" / "snapshots" / "abc123"
    snap.mkdir(parents=True)
    (snap.parents[1] / "refs").mkdir()
    (snap.parents[1] / "refs" / "main").write_text("abc123")
    for name, content in files.items():
        target = snap / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            target.write_bytes(content)
        else:
            target.symlink_to(content)
    return snap


@pytest.fixture
def offline_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    (tmp_path / "hub").mkdir()
    return tmp_path / "hub"


@pytest.mark.parametrize(
    "spec, repo",
    [
        ("st:sentence-transformers/all-mpnet-base-v2", "sentence-transformers/all-mpnet-base-v2"),
        ("st:all-mpnet-base-v2", "sentence-transformers/all-mpnet-base-v2"),
        ("hf:facebook/wav2vec2-base", "facebook/wav2vec2-base"),
    ],
)
def test_offline_names_the_missing_model_in_one_line(offline_cache, spec, repo):
    with pytest.raises(CentrobindError) as e:
        load_encoder(spec)
    msg = str(e.value)
    assert f"model {repo!r} is not in the local Hugging Face cache" in msg
    assert "HF_HUB_OFFLINE=1" in msg and "\n" not in msg


def test_a_cached_hub_model_loads_offline_and_records_its_name(offline_cache, tmp_path):
    from transformers import BertConfig, BertModel, BertTokenizerFast

    local = tmp_path / "tiny-bert"
    torch.manual_seed(0)
    BertModel(
        BertConfig(
            vocab_size=30,
            hidden_size=16,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=32,
        )
    ).save_pretrained(local)
    (local / "vocab.txt").write_text("\n".join(
        ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "red", "blue", "thing"]))  # fmt: skip
    BertTokenizerFast(vocab_file=str(local / "vocab.txt")).save_pretrained(local)
    _cache(offline_cache, "org/tiny-bert", {f.name: f for f in local.iterdir()})
    enc = load_encoder("hf:org/tiny-bert", kind="text")
    assert enc.spec == "hf:org/tiny-bert" and enc.dim == 16
    by_path = load_encoder(f"hf:{local}", kind="text")
    texts = ["a red thing", "a blue thing"]
    np.testing.assert_allclose(enc.encode(texts), by_path.encode(texts), atol=1e-6)


def test_online_download_goes_to_the_cache_without_duplicate_weights(tmp_path, monkeypatch):
    import huggingface_hub as hh
    from huggingface_hub.errors import LocalEntryNotFoundError

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    calls = []

    def snapshot(repo, local_files_only=False, **kw):
        calls.append((repo, local_files_only, kw))
        if local_files_only:
            raise LocalEntryNotFoundError("not cached")
        return str(tmp_path / "hub" / "snap")

    monkeypatch.setattr(hh, "snapshot_download", snapshot)
    monkeypatch.setattr(
        hh, "list_repo_files", lambda repo: ["model.safetensors", "pytorch_model.bin"]
    )
    assert hub.hub_snapshot("st:x", "org/x") == tmp_path / "hub" / "snap"
    (repo, local, kw) = calls[-1]
    assert repo == "org/x" and not local and kw["cache_dir"] == str(tmp_path / "hub")
    assert "*.bin" in kw["ignore_patterns"] and "*.onnx" in kw["ignore_patterns"]
    monkeypatch.setattr(
        hh, "list_repo_files", lambda repo: (_ for _ in ()).throw(OSError("no net"))
    )
    with pytest.raises(CentrobindError, match="cannot download 'org/x' from the Hugging Face hub"):
        hub.hub_snapshot("st:x", "org/x")


class _Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.blocks = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Conv2d(4, 4, 3))
        self.pretrained_cfg = {"input_size": (3, 16, 16)}

    def forward(self, x):
        return self.blocks(x).mean((-2, -1))


def test_timm_pretrained_name_through_the_cache(offline_cache, monkeypatch):
    made = {}
    fake = types.ModuleType("timm")
    fake.models = types.SimpleNamespace(
        get_pretrained_cfg=lambda name: types.SimpleNamespace(
            hf_hub_id="timm/resnet50.a1_in1k", hf_hub_filename=None
        )
    )

    def create_model(name, pretrained=False, num_classes=None, **kw):
        made.update(name=name, pretrained=pretrained, **kw)
        return _Net()

    fake.create_model = create_model
    monkeypatch.setitem(sys.modules, "timm", fake)
    with pytest.raises(CentrobindError, match="model 'timm/resnet50.a1_in1k' is not in the local"):
        load_encoder("timm:resnet50")
    snap = _cache(offline_cache, "timm/resnet50.a1_in1k", {"model.safetensors": b"w"})
    enc = load_encoder("timm:resnet50")
    assert made["pretrained"] and made["pretrained_cfg_overlay"] == {
        "file": str(snap / "model.safetensors")
    }
    assert enc.spec == "timm:resnet50" and enc.dim == 4 and enc.input_shape == (3, 16, 16)
    assert enc.options["random_weights"] is False and isinstance(enc.module, nn.Module)


def test_open_clip_tag_through_the_cache(offline_cache, monkeypatch):
    made = {}
    fake = types.ModuleType("open_clip")
    fake.get_pretrained_cfg = lambda name, tag: (
        {"hf_hub": "laion/CLIP-ViT-B-32-laion2B-s34B-b79K/"} if tag == "laion2b_s34b_b79k" else {}
    )
    fake.list_pretrained_tags_by_model = lambda name: ["laion2b_s34b_b79k", "openai"]

    def create(name, pretrained=None, device="cpu"):
        made.update(name=name, pretrained=pretrained)
        model = nn.Module()
        model.visual = _Net()
        model.visual.image_size = (16, 16)
        return model, None, lambda im: torch.zeros(3, 16, 16)

    fake.create_model_and_transforms = create
    monkeypatch.setitem(sys.modules, "open_clip", fake)
    with pytest.raises(
        CentrobindError, match="no tag 'laion9' for 'ViT-B-32' \\(laion2b_s34b_b79k, openai\\)"
    ):
        load_encoder("open_clip:ViT-B-32@laion9")
    with pytest.raises(CentrobindError, match="'laion/CLIP-ViT-B-32-laion2B-s34B-b79K' is not in"):
        load_encoder("open_clip:ViT-B-32@laion2b_s34b_b79k")
    snap = _cache(offline_cache, "laion/CLIP-ViT-B-32-laion2B-s34B-b79K",
                  {"open_clip_model.safetensors": b"w"})  # fmt: skip
    enc = load_encoder("open_clip:ViT-B-32@laion2b_s34b_b79k")
    assert made["pretrained"] == str(snap / "open_clip_model.safetensors")
    assert enc.spec == "open_clip:ViT-B-32@laion2b_s34b_b79k" and enc.dim == 4


def test_cli_offline_flag(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    man = tmp_path / "m.csv"
    man.write_text("caption,other\na,b\nc,d\n")
    code = main(
        [
            "featurize",
            str(man),
            "--out",
            str(tmp_path / "ds"),
            "--quiet",
            "--offline",
            "--encoder",
            "caption=st:org/absent",
            "--encoder",
            "other=st:org/absent",
        ]
    )
    assert code == 2
    err = capsys.readouterr().err
    assert (
        "model 'org/absent' is not in the local Hugging Face cache" in err and err.count("\n") == 1
    )
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)  # main() set it for its process
