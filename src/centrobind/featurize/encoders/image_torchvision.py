"""``torchvision:NAME[@WEIGHTS]``: a torchvision classifier with its head replaced by identity.

Weights from a local state-dict file only; without one, an error unless ``allow_random``
(seeded random weights, for tests). Input 224 x 224, ImageNet statistics.
"""

from __future__ import annotations

from .base import Encoder, EncoderError, package_version, require
from .image_backbone import BackboneEncoder
from .image_common import cnn_input, load_state_dict, no_weights, seeded_init, split_weights

_HEADS = ("fc", "classifier", "heads", "head")


def torchvision_encoder(
    arg: str | None, *, device: str, allow_random: bool, kind: str | None
) -> Encoder:
    spec = f"torchvision:{arg or ''}"
    name, weights = split_weights(spec, arg, "torchvision")
    if weights is None and not allow_random:
        raise no_weights(spec, "torchvision")
    tv = require("torchvision.models", spec, "torchvision (a build matching your torch)")
    import torch.nn as nn

    try:
        model = seeded_init(lambda: tv.get_model(name, weights=None))
    except Exception as e:
        raise EncoderError(f"encoder {spec!r}: torchvision cannot build {name!r}: {e}") from None
    if weights is not None:
        model.load_state_dict(load_state_dict(weights), strict=True)
    for head in _HEADS:
        if hasattr(model, head):
            setattr(model, head, nn.Identity())
            break
    model = model.to(device).eval()
    spec = f"torchvision:{name}" + (f"@{weights}" if weights else "")
    return BackboneEncoder(
        spec,
        model,
        lambda p: cnn_input(p, 224),
        224,
        device,
        f"{name} (torchvision {package_version('torchvision')})",
        {"size": 224, "random_weights": weights is None},
    )
