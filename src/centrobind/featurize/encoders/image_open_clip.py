"""``open_clip:NAME@WEIGHTS``: an OpenCLIP image tower (``encode_image``).

Weights from a local checkpoint file only (passed to ``open_clip.create_model_and_transforms``
as ``pretrained=PATH``); without one, an error unless ``allow_random`` (tests). Preprocessing:
open_clip's own eval transform.
"""

from __future__ import annotations

import numpy as np

from .base import Encoder, EncoderError, package_version, require
from .image_backbone import BackboneEncoder
from .image_common import no_weights, open_image, seeded_init, split_weights


def open_clip_encoder(
    arg: str | None, *, device: str, allow_random: bool, kind: str | None
) -> Encoder:
    spec = f"open_clip:{arg or ''}"
    name, weights = split_weights(spec, arg, "open_clip")
    if weights is None and not allow_random:
        raise no_weights(spec, "open_clip")
    oc = require("open_clip", spec, "open_clip_torch")
    try:
        model, _, preprocess = seeded_init(
            lambda: oc.create_model_and_transforms(
                name, pretrained=str(weights) if weights else None, device=device
            )
        )
    except Exception as e:
        raise EncoderError(f"encoder {spec!r}: open_clip cannot build {name!r}: {e}") from None
    model.eval()
    size = int(getattr(model.visual, "image_size", (224, 224))[0])

    def prep(path: str) -> np.ndarray:
        return preprocess(open_image(path, "RGB")).numpy()

    spec = f"open_clip:{name}" + (f"@{weights}" if weights else "")
    return BackboneEncoder(
        spec,
        model.encode_image,
        prep,
        size,
        device,
        f"{name} (open_clip {package_version('open_clip_torch')})",
        {"size": size, "random_weights": weights is None},
    )
