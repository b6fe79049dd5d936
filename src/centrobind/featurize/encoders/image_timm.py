"""``timm:NAME[@WEIGHTS]``: a timm backbone's pooled features (``num_classes=0``).

Weights come from a local state-dict file only (nothing is downloaded); without one, an error
unless ``allow_random`` (seeded random weights, for tests). Input: the model's own pretrained
config size/mean/std when timm knows them, else 224 and ImageNet statistics.
"""

from __future__ import annotations

from .base import Encoder, EncoderError, package_version, require
from .image_backbone import BackboneEncoder
from .image_common import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    cnn_input,
    load_state_dict,
    no_weights,
    seeded_init,
    split_weights,
)


def timm_encoder(arg: str | None, *, device: str, allow_random: bool, kind: str | None) -> Encoder:
    spec = f"timm:{arg or ''}"
    name, weights = split_weights(spec, arg, "timm")
    if weights is None and not allow_random:
        raise no_weights(spec, "timm")
    timm = require("timm", spec, "timm")
    try:
        model = seeded_init(lambda: timm.create_model(name, pretrained=False, num_classes=0))
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
    return BackboneEncoder(
        spec,
        model,
        lambda p: cnn_input(p, size, mean, std),
        size,
        device,
        f"{name} (timm {package_version('timm')})",
        {"size": size, "random_weights": weights is None},
    )
