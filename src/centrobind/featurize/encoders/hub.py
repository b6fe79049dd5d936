"""Pretrained models by their usual hub names, through the Hugging Face hub cache.

``st:sentence-transformers/all-mpnet-base-v2``, ``hf:facebook/wav2vec2-base``, ``timm:resnet50``
(timm's default pretrained tag, or ``timm:resnet50.a1_in1k``) and
``open_clip:ViT-B-32@laion2b_s34b_b79k`` name models on the hub. The model's files are taken from
the local Hugging Face cache (``HF_HUB_CACHE``, else ``HF_HOME/hub``, else
``~/.cache/huggingface/hub``) and downloaded into it first when they are not there yet, so a
model downloads once and is cached after. Then it loads from that local folder, exactly like a
local path.

Offline: with ``HF_HUB_OFFLINE=1`` in the environment (``--offline`` on the command line sets
it) nothing is downloaded, and a model missing from the cache is one
:class:`~.base.EncoderError` line naming it. Weights: safetensors where the repository has them;
``.bin`` / ``.pth`` files are read by the libraries with ``weights_only`` loading (tensors, no
code). ONNX, TensorFlow, Flax and other exports are never downloaded.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from .base import EncoderError, require

__all__ = ["hub_cache", "hub_snapshot", "is_hub_id", "is_offline"]

_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
_SKIP = [
    "*.h5", "*.msgpack", "*.onnx", "*.ot", "*.tflite", "*.mlmodel", "*.gguf", "onnx/*",
    "openvino/*", "coreml/*", "tf_model*", "flax_model*", "rust_model*", "*.md", "*.png",
]  # fmt: skip


def is_offline() -> bool:
    """Whether downloads are off: ``HF_HUB_OFFLINE`` (or ``TRANSFORMERS_OFFLINE``) is set to a
    true value now."""
    vals = (os.environ.get("HF_HUB_OFFLINE", ""), os.environ.get("TRANSFORMERS_OFFLINE", ""))
    return any(v.strip().lower() in ("1", "true", "yes", "on") for v in vals)


def hub_cache() -> Path:
    """The Hugging Face hub cache folder, read from the environment now."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    home = os.environ.get("HF_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "huggingface"
    )
    return Path(home).expanduser() / "hub"


def is_hub_id(arg: str) -> bool:
    """``org/name`` (or a bare ``name``) that is not an existing local path."""
    if not arg or arg.startswith((".", "/", "~")) or os.path.exists(os.path.expanduser(arg)):
        return False
    return bool(_ID.match(arg))


def _offline_error(spec: str, repo_id: str, cache: Path) -> EncoderError:
    return EncoderError(
        f"encoder {spec!r}: model {repo_id!r} is not in the local Hugging Face cache ({cache}) "
        "and downloads are off (HF_HUB_OFFLINE=1 / --offline); run once online to cache it, "
        "or give a local path"
    )


def hub_snapshot(spec: str, repo_id: str, allow: list[str] | None = None) -> Path:
    """The local folder of hub model ``repo_id``: the cached snapshot, else downloaded into the
    cache (unless offline: then one line naming the model). ``allow``: file patterns to fetch."""
    hh = require("huggingface_hub", spec, "huggingface_hub")
    from huggingface_hub.errors import LocalEntryNotFoundError

    cache = hub_cache()
    kw = {"cache_dir": str(cache), "allow_patterns": allow, "ignore_patterns": _SKIP}
    try:
        return Path(hh.snapshot_download(repo_id, local_files_only=True, **kw))
    except (LocalEntryNotFoundError, FileNotFoundError, OSError):
        if is_offline():
            raise _offline_error(spec, repo_id, cache) from None
    try:
        files = hh.list_repo_files(repo_id)
        skip = list(_SKIP)
        if any(f.endswith(".safetensors") for f in files):  # never both copies of the weights
            skip += ["*.bin", "*.pth", "*.pt"]
        return Path(hh.snapshot_download(repo_id, cache_dir=str(cache), allow_patterns=allow,
                                         ignore_patterns=skip))  # fmt: skip
    except Exception as e:  # noqa: BLE001 - network, auth, missing repo: one line
        raise EncoderError(
            f"encoder {spec!r}: cannot download {repo_id!r} from the Hugging Face hub "
            f"({' '.join(str(e).split())[:200]}); check the name, or give a local path"
        ) from None


def weights_file(spec: str, folder: Path, names: list[str]) -> Path:
    """The first of ``names`` present in ``folder`` (a snapshot), else one line."""
    for n in names:
        if (folder / n).is_file():
            return folder / n
    raise EncoderError(f"encoder {spec!r}: {folder} holds none of {', '.join(names)}")
