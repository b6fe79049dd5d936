"""The encoder contract and the registry of encoder families.

A spec is ``FAMILY`` or ``FAMILY:ARG`` (``minilm``, ``st:PATH``, ``hf:PATH``, ``pixels:16:gray``,
``timm:NAME@WEIGHTS``, ``torchvision:NAME@WEIGHTS``, ``open_clip:NAME@WEIGHTS``, ``logmel:64``).
Each family lives in its own module and is imported only when used, so heavy or optional
packages (sentence-transformers, transformers, timm, ...) are never imported for other specs.
"""

from __future__ import annotations

import importlib
import os
import stat
import warnings
from collections.abc import Callable, Mapping, Sequence
from importlib import metadata
from typing import Any

import numpy as np

from centrobind.errors import CentrobindError

__all__ = [
    "Encoder",
    "EncoderError",
    "KINDS",
    "check_spec",
    "load_encoder",
    "encoder_from_meta",
    "register_encoder",
    "check_item_file",
    "device_name",
    "package_version",
    "require",
]

KINDS = ("text", "image", "audio")


class EncoderError(CentrobindError, ValueError):
    """A bad encoder spec, a missing package or missing weights (one-line message)."""


class Encoder:
    """Turns raw items into feature vectors.

    Subclasses set ``spec``, ``kind`` (``"text" | "image" | "audio"``), ``dim``, ``version``
    and implement :meth:`prepare` (one item: decode the text/file; may raise for a bad item) and
    :meth:`forward` (a batch of prepared items -> float32 ``[n, dim]``).
    """

    spec: str
    kind: str
    dim: int
    version: str
    options: dict[str, Any]

    def prepare(self, item: str) -> Any:
        """Decode one item (a text, or an absolute file path). Raises on an unreadable item."""
        return item

    def forward(self, prepared: list[Any]) -> np.ndarray:
        """``prepared`` (n items from :meth:`prepare`) -> float32 ``[n, dim]``."""
        raise NotImplementedError

    def encode(self, items: list[str]) -> np.ndarray:
        """Texts or absolute file paths -> float32 ``[n, dim]``.

        An item that cannot be read raises :class:`EncoderError` naming it (one line).
        """
        if not items:
            return np.zeros((0, self.dim), dtype=np.float32)
        prepared = []
        for i, item in enumerate(items):
            try:
                if self.kind != "text":
                    check_item_file(item)  # a named pipe would block open() forever
                prepared.append(self.prepare(item))
            except Exception as e:
                why = "file not found" if isinstance(e, FileNotFoundError) else str(e)
                raise EncoderError(
                    f"{self.spec}: item {i} ({item!r:.200}) cannot be read: {' '.join(why.split())}"
                ) from None
        out = np.asarray(self.forward(prepared), dtype=np.float32)
        if out.shape != (len(items), self.dim):
            raise RuntimeError(
                f"{self.spec}: produced {out.shape}, expected {(len(items), self.dim)}"
            )
        return out

    # -- training on raw items (a trainable ``backbone:`` tower, :mod:`centrobind.towers`)

    def train_shape(self, options: Mapping[str, Any]) -> tuple[int, ...] | None:
        """The fixed shape of one training input (:meth:`train_input`) for a tower's data
        ``options`` (text ``length``, audio ``seconds``); None: the encoder cannot be trained on
        raw items (it is not a torch network)."""
        return None

    def train_input(self, prepared: Any, shape: Sequence[int]) -> np.ndarray:
        """One item from :meth:`prepare` (a text after augmentation, or an audio clip cut to at
        most the window) -> float32 ``shape``, the input of :meth:`train_module`."""
        return np.asarray(prepared, dtype=np.float32).reshape(tuple(shape))

    def train_module(self) -> Any:
        """The ``nn.Module`` a trainable tower trains: ``[N, *shape]`` inputs of
        :meth:`train_input` -> ``[N, dim]``, in eval mode the same vectors as :meth:`forward`."""
        return None

    def entry(self) -> dict[str, Any]:
        """What ``meta.json`` records for this encoder (``encoder_from_meta`` reads it back)."""
        return {
            "spec": self.spec,
            "kind": self.kind,
            "version": self.version,
            "dim": int(self.dim),
            "options": dict(getattr(self, "options", {})),
        }

    def __repr__(self) -> str:
        return f"{type(self).__name__}(spec={self.spec!r}, kind={self.kind!r}, dim={self.dim})"


_NOT_FILES = (
    (stat.S_ISDIR, "a folder"),
    (stat.S_ISFIFO, "a named pipe"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def check_item_file(path: str) -> None:
    """Refuse an image/audio item that is not a regular file (through symlinks) before anything
    opens it: opening a named pipe blocks forever, a device never ends.

    Raises:
        FileNotFoundError: no such file. EncoderError: not a regular file (named).
    """
    st = os.stat(path)
    if not stat.S_ISREG(st.st_mode):
        kind = next((name for test, name in _NOT_FILES if test(st.st_mode)), "not a file")
        raise EncoderError(f"is {kind}, not a regular file")


Factory = Callable[..., Encoder]
"""``factory(arg: str | None, *, device: str, allow_random: bool, kind: str | None) -> Encoder``"""

# family -> "module:function" (imported lazily) or a callable registered at run time
_REGISTRY: dict[str, str | Factory] = {
    "minilm": "text_st:minilm",
    "st": "text_st:sentence_transformer",
    "hf": "hf:hf_encoder",
    "pixels": "image_pixels:pixels",
    "imstats": "image_stats:image_stats",
    "timm": "image_timm:timm_encoder",
    "torchvision": "image_torchvision:torchvision_encoder",
    "open_clip": "image_open_clip:open_clip_encoder",
    "logmel": "audio_logmel:logmel",
}


def register_encoder(family: str, factory: Factory) -> None:
    """Add (or replace) an encoder family: ``factory(arg, *, device, allow_random, kind)``."""
    if not family or ":" in family:
        raise ValueError(f"bad encoder family name {family!r}")
    _REGISTRY[family] = factory


def device_name(device: str) -> str:
    """The device an encoder runs on, as a name (``auto`` -> ``cuda`` or ``cpu``): the package's
    one :func:`centrobind.distributed.resolve_device`, imported here so that torch loads only
    once an encoder does."""
    from centrobind.distributed import resolve_device

    return str(resolve_device(device))


def package_version(dist: str) -> str:
    """Installed version of a distribution, or ``"?"``."""
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "?"


def require(module: str, spec: str, extra: str) -> Any:
    """Import an optional package or raise a one-line :class:`EncoderError` naming the install."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise EncoderError(
            f"encoder {spec!r} needs the Python package {module!r}, which could not be imported "
            f"({' '.join(str(e).split())}); install it with: pip install {extra}"
        ) from None


def offline() -> None:
    """Quiet, telemetry-free loading of a model from a local folder (the callers pass
    ``local_files_only=True``). The user's offline switch (``HF_HUB_OFFLINE``) is left as it is:
    hub names (:mod:`.hub`) read it to decide whether a model may be downloaded."""
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    try:  # no "Loading weights" bars inside centrobind's own progress bar
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        hf_logging.set_verbosity_error()
    except ImportError:
        pass


def check_spec(spec: str) -> None:
    """Raise :class:`EncoderError` if ``spec`` names no registered family (loads nothing)."""
    family = spec.strip().partition(":")[0]
    if family not in _REGISTRY:
        raise EncoderError(
            f"unknown encoder {spec!r} (families: {', '.join(sorted(_REGISTRY))}; "
            "e.g. minilm, st:PATH, hf:PATH, pixels, timm:NAME@WEIGHTS, logmel)"
        )


def load_encoder(
    spec: str, *, device: str = "cpu", allow_random: bool = False, kind: str | None = None
) -> Encoder:
    """Build the encoder named by ``spec`` (see the module docstring).

    ``kind`` is a hint for families that serve several kinds (``hf:`` text or audio); it is
    checked against the encoder's own kind otherwise. ``allow_random`` lets image backbones run
    with seeded random weights when no weights file is given (tests only).
    """
    if not isinstance(spec, str) or not spec.strip():
        raise EncoderError("empty encoder spec")
    spec = spec.strip()
    family, _, arg = spec.partition(":")
    if kind is not None and kind not in KINDS:
        raise EncoderError(f"unknown kind {kind!r} (use one of {', '.join(KINDS)})")
    check_spec(spec)
    target = _REGISTRY[family]
    if isinstance(target, str):
        mod, fn = target.split(":")
        target = getattr(importlib.import_module(f"{__package__}.{mod}"), fn)
    enc = target(arg or None, device=device_name(device), allow_random=allow_random, kind=kind)
    if kind is not None and enc.kind != kind:
        raise EncoderError(f"encoder {spec!r} encodes {enc.kind}, but the column holds {kind}")
    return enc


def encoder_from_meta(entry: dict[str, Any], *, device: str = "cpu") -> Encoder:
    """Rebuild the encoder recorded in a dataset's ``meta.json`` ``featurizers[modality]``.

    Raises :class:`EncoderError` when the rebuilt encoder's width differs from the recorded one;
    warns when the recorded version differs (the features may then drift slightly).
    """
    if not isinstance(entry, dict) or "spec" not in entry:
        raise EncoderError(f"not a featurizer entry (needs 'spec'): {entry!r}")
    enc = load_encoder(
        entry["spec"],
        device=device,
        allow_random=bool(entry.get("options", {}).get("random_weights", False)),
        kind=entry.get("kind"),
    )
    if "dim" in entry and int(entry["dim"]) != enc.dim:
        raise EncoderError(
            f"encoder {entry['spec']!r} now gives {enc.dim} features, the dataset recorded "
            f"{entry['dim']}"
        )
    if entry.get("version") not in (None, enc.version):
        warnings.warn(
            f"encoder {entry['spec']!r}: dataset made with {entry['version']!r}, now "
            f"{enc.version!r}; features may differ slightly",
            stacklevel=2,
        )
    return enc
