"""``open_clip:NAME@TAG`` or ``open_clip:NAME@PATH``: an OpenCLIP image tower (``visual``).

``@TAG`` (``open_clip:ViT-B-32@laion2b_s34b_b79k``): open_clip's pretrained weights, from the
Hugging Face hub cache, downloaded once (:mod:`.hub`; offline: one line naming the model).
``@PATH``: a local checkpoint file. Without either, an error unless ``allow_random`` (tests).
Preprocessing: open_clip's own eval transform.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from .base import Encoder, EncoderError, package_version, require
from .hub import hub_snapshot, is_offline, weights_file
from .image_backbone import BackboneEncoder
from .image_common import no_weights, open_image, seeded_init, split_weights


def _is_path(text: str) -> bool:
    return os.sep in text or text.startswith((".", "~")) or Path(text).suffix != ""


def open_clip_encoder(
    arg: str | None, *, device: str, allow_random: bool, kind: str | None
) -> Encoder:
    spec = f"open_clip:{arg or ''}"
    tag = None
    if arg and "@" in arg and not _is_path(arg.partition("@")[2]):
        name, tag, weights = arg.partition("@")[0], arg.partition("@")[2], None
    else:
        name, weights = split_weights(spec, arg, "open_clip")
    if weights is None and tag is None and not allow_random:
        raise no_weights(spec, "open_clip")
    oc = require("open_clip", spec, "open_clip_torch")
    source: str | None = str(weights) if weights else None
    if tag is not None:
        source = _pretrained_file(oc, spec, name, tag)
    try:
        model, _, preprocess = seeded_init(
            lambda: oc.create_model_and_transforms(name, pretrained=source, device=device)
        )
    except Exception as e:
        raise EncoderError(f"encoder {spec!r}: open_clip cannot build {name!r}: {e}") from None
    model.eval()
    size = int(getattr(model.visual, "image_size", (224, 224))[0])

    def prep(path: str) -> np.ndarray:
        return preprocess(open_image(path, "RGB")).numpy()

    spec = f"open_clip:{name}" + (f"@{weights}" if weights else f"@{tag}" if tag else "")
    return BackboneEncoder(
        spec,
        model.visual,
        prep,
        size,
        device,
        f"{name} (open_clip {package_version('open_clip_torch')})",
        {"size": size, "random_weights": weights is None and tag is None},
    )


def _pretrained_file(oc: Any, spec: str, name: str, tag: str) -> str:
    """The local file of open_clip's pretrained ``name@tag``: from the hub cache (downloaded
    once), or the tag itself for weights that only live at a URL (open_clip downloads them)."""
    cfg = oc.get_pretrained_cfg(name, tag) or {}
    if not cfg:
        tags = ", ".join(oc.list_pretrained_tags_by_model(name)) or "none"
        raise EncoderError(f"encoder {spec!r}: open_clip has no tag {tag!r} for {name!r} ({tags})")
    repo = str(cfg.get("hf_hub") or "").strip("/")
    if not repo:
        if is_offline():
            raise EncoderError(
                f"encoder {spec!r}: {name}@{tag} is not on the Hugging Face hub and downloads are "
                "off (HF_HUB_OFFLINE=1 / --offline); give open_clip:NAME@PATH"
            )
        return tag
    folder = hub_snapshot(spec, repo, allow=["open_clip_*", "*.json"])
    names = ["open_clip_model.safetensors", "open_clip_pytorch_model.bin"]
    return str(weights_file(spec, folder, names))
