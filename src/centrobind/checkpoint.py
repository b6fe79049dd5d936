"""Safe, atomic persistence: safetensors for tensors, JSON for everything else. No pickle anywhere.

A checkpoint is ONE ``.safetensors`` file: tensors under prefixed keys (``model.*``, ``optim.*``,
``rng.*``, ...) and a JSON document in the safetensors metadata (``{"state": "<json>"}``). Files are
written to a temporary name in the same folder and renamed over the target, so a crash never leaves
a half-written file.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open, save_file
from torch import Tensor

from .diskfull import disk_full_errors
from .errors import CentrobindError

__all__ = [
    "atomic_write",
    "atomic_write_text",
    "save_tensors",
    "load_tensors",
    "optimizer_to_flat",
    "optimizer_from_flat",
    "prefixed",
    "unprefixed",
    "non_finite_tensors",
    "all_finite",
]


def _atomic_replace(path: Path, write) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with disk_full_errors(path):  # ENOSPC -> one line, after the temp file is removed
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        try:
            write(tmp)
            with open(tmp, "rb") as f:  # on disk before the rename makes it visible
                os.fsync(f.fileno())
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the usual permissions
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


def atomic_write(path: str | os.PathLike, write) -> None:
    """``write(file_object)`` into a temporary file, then rename it to ``path``."""

    def to_tmp(tmp: str) -> None:
        with open(tmp, "wb") as f:
            write(f)

    _atomic_replace(Path(path), to_tmp)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write a text file atomically (temp file + rename)."""
    _atomic_replace(Path(path), lambda tmp: Path(tmp).write_text(text))


def save_tensors(
    path: str | os.PathLike, tensors: dict[str, Tensor], state: dict[str, Any] | None = None
) -> None:
    """Atomically save ``tensors`` (made contiguous, on CPU) plus a JSON ``state`` as metadata."""
    flat = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    meta = {"state": json.dumps(state or {})}
    _atomic_replace(Path(path), lambda tmp: save_file(flat, tmp, metadata=meta))


def load_tensors(path: str | os.PathLike) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Load what :func:`save_tensors` wrote: ``(tensors, state)``."""
    path = Path(path)
    if not path.is_file():
        raise CentrobindError(f"{path}: no such file")
    try:
        tensors = load_file(str(path))
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        state = json.loads(meta.get("state", "{}"))
    except (SafetensorError, OSError, ValueError, json.JSONDecodeError) as e:
        raise CentrobindError(f"{path}: not a readable safetensors checkpoint ({e})") from None
    return tensors, state


def optimizer_to_flat(opt: torch.optim.Optimizer, prefix: str = "optim.") -> tuple[dict, dict]:
    """Split an optimizer state dict into tensors (for safetensors) and JSON-able rest."""
    sd = opt.state_dict()
    tensors: dict[str, Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for idx, st in sd["state"].items():
        for k, v in st.items():
            if isinstance(v, Tensor):
                tensors[f"{prefix}{idx}.{k}"] = v
            else:
                scalars.setdefault(str(idx), {})[k] = v
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def optimizer_from_flat(
    opt: torch.optim.Optimizer, tensors: dict[str, Tensor], rest: dict, prefix: str = "optim."
) -> None:
    """Inverse of :func:`optimizer_to_flat`."""
    state: dict[int, dict[str, Any]] = {}
    for key, v in tensors.items():
        if key.startswith(prefix):
            idx, k = key[len(prefix) :].split(".", 1)
            state.setdefault(int(idx), {})[k] = v
    for idx, st in rest.get("scalars", {}).items():
        state.setdefault(int(idx), {}).update(st)
    groups = rest["param_groups"]
    for g in groups:
        if "betas" in g:
            g["betas"] = tuple(g["betas"])
    opt.load_state_dict({"state": state, "param_groups": groups})


def prefixed(prefix: str, tensors: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """``{f"{prefix}.{k}": v}``: a state dict under a checkpoint prefix (``model``, ...).

    Example:
        >>> prefixed("model", {"w": torch.zeros(1)})
        {'model.w': tensor([0.])}
    """
    return {f"{prefix}.{k}": v for k, v in tensors.items()}


def unprefixed(prefix: str, tensors: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """The tensors under ``prefix.`` with the prefix removed (inverse of :func:`prefixed`).

    Example:
        >>> unprefixed("best", {"best.model.w": torch.ones(1), "model.w": torch.zeros(1)})
        {'model.w': tensor([1.])}
    """
    head = f"{prefix}."
    return {k[len(head) :]: v for k, v in tensors.items() if k.startswith(head)}


def non_finite_tensors(tensors: Mapping[str, Tensor]) -> list[str]:
    """Names of the floating-point tensors in ``tensors`` that hold NaN or inf (sorted)."""
    bad = [
        k
        for k, v in tensors.items()
        if isinstance(v, Tensor)
        and (v.is_floating_point() or v.is_complex())
        and not bool(torch.isfinite(v).all())
    ]
    return sorted(bad)


def all_finite(tensors: Mapping[str, Tensor]) -> bool:
    """True when every floating-point tensor of ``tensors`` is finite."""
    return not non_finite_tensors(tensors)
