"""``timm:NAME[@WEIGHTS]``: a timm backbone's pooled features (``num_classes=0``).

``timm:resnet50`` (timm's default pretrained tag) or ``timm:resnet50.a1_in1k`` (a tag): timm's
pretrained weights from the Hugging Face hub cache, downloaded once (:mod:`.hub`; offline: one
line naming the model). ``timm:NAME@PATH``: a local state-dict file. ``allow_random`` without
``@PATH``: seeded random weights (tests; nothing downloaded). Input: the model's own pretrained
config size/mean/std when timm knows them, else 224 and ImageNet statistics.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any

from .base import Encoder, EncoderError, package_version, require
from .hub import hub_snapshot, is_offline, weights_file
from .image_backbone import BackboneEncoder
from .image_common import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    cnn_input,
    load_state_dict,
    seeded_init,
    split_weights,
)


def timm_encoder(arg: str | None, *, device: str, allow_random: bool, kind: str | None) -> Encoder:
    spec = f"timm:{arg or ''}"
    name, weights = split_weights(spec, arg, "timm")
    timm = require("timm", spec, "timm")
    hub = weights is None and not allow_random
    try:
        if hub:
            model = _pretrained(timm, spec, name)
        else:
            model = seeded_init(lambda: timm.create_model(name, pretrained=False, num_classes=0))
    except EncoderError:
        raise
    except Exception as e:
        raise EncoderError(f"encoder {spec!r}: timm cannot build {name!r}: {e}") from None
    if weights is not None:
        missing, _ = model.load_state_dict(load_state_dict(weights), strict=False)
        if missing:
            raise EncoderError(f"encoder {spec!r}: {weights} lacks {len(missing)} weights")
    model = model.to(device).eval()
    cfg = getattr(model, "pretrained_cfg", {}) or {}
    size = int((cfg.get("input_size") or (3, 224, 224))[-1])
    mean, std = cfg.get("mean", IMAGENET_MEAN), cfg.get("std", IMAGENET_STD)
    spec = f"timm:{name}" + (f"@{weights}" if weights else "")
    random = weights is None and not hub
    return BackboneEncoder(
        spec,
        model,
        lambda p: cnn_input(p, size, mean, std),
        size,
        device,
        f"{name} (timm {package_version('timm')})",
        {"size": size, "random_weights": random},
    )


def _pretrained(timm: Any, spec: str, name: str) -> Any:
    """timm's pretrained ``name`` (``arch`` or ``arch.tag``) with its weights file taken from the
    hub cache (:func:`.hub.hub_snapshot`): downloaded once, then offline-safe."""
    cfg = timm.models.get_pretrained_cfg(name)
    if cfg is None:
        if not timm.is_model(name):
            close = difflib.get_close_matches(name, timm.list_models(), n=3, cutoff=0.6)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise EncoderError(
                f"encoder {spec!r}: timm has no model named {name!r} (timm "
                f"{package_version('timm')}; timm.list_models() lists them){hint}"
            )
        raise EncoderError(
            f"encoder {spec!r}: timm has no pretrained weights for {name!r}; give a weights file "
            f"(timm:{name}@PATH)"
        )
    repo = (getattr(cfg, "hf_hub_id", None) or "").strip("/")
    if not repo:  # weights only at a URL: timm's own download (torch hub cache)
        if is_offline():
            raise EncoderError(
                f"encoder {spec!r}: the weights of {name!r} are not on the Hugging Face hub and "
                "downloads are off (HF_HUB_OFFLINE=1 / --offline); give timm:NAME@PATH"
            )
        return seeded_init(lambda: timm.create_model(name, pretrained=True, num_classes=0))
    folder = hub_snapshot(spec, repo, allow=["*.json", "*.safetensors", "*.bin", "*.pth"])
    given = getattr(cfg, "hf_hub_filename", None)
    names = [n for n in (given, "model.safetensors", "pytorch_model.bin") if n]
    file: Path = weights_file(spec, folder, names)
    return seeded_init(
        lambda: timm.create_model(
            name, pretrained=True, num_classes=0, pretrained_cfg_overlay={"file": str(file)}
        )
    )
