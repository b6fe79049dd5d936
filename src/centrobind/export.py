"""``centrobind export --format onnx``: each modality's encoder as a standalone ONNX file.

Each file maps raw input features, float32 ``[n, D_m]`` exactly as stored in the dataset (input
``features``), to the unit-norm embedding float32 ``[n, D]`` (output ``embedding``): the run's
standardisation ``(x - mean) / std`` is inside the graph, then the encoder, then the L2
normalisation, so ``onnxruntime`` alone gives what ``centrobind.load(run).encode`` gives. The
batch dimension is dynamic. ``export.json`` lists the files, their inputs and, for a run trained
on featurized data, the featurizer that makes ``features`` from raw items.

Needs the ``export`` extra (``onnx``; ``onnxruntime`` for the parity check that every export
runs when it is installed).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from . import __version__
from .errors import CentrobindError
from .models import Binder

__all__ = ["export_onnx", "FORMAT", "OPSET"]

FORMAT = "centrobind-onnx/1"
OPSET = 17
CHECK_ROWS = 64
TOLERANCE = 1e-4  # max abs difference to encode() that the parity check accepts
_SAFE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,100}$")


class _StandardisedEncoder(nn.Module):
    """Raw features ``[n, D_m]`` -> ``(x - mean) / std`` -> the Binder's own ``encode``
    (encoder + L2 normalisation) -> ``[n, D]``."""

    def __init__(self, binder: Binder, modality: str, mean: Tensor, std: Tensor) -> None:
        super().__init__()
        self.binder, self.modality = binder, modality
        self.register_buffer("mean", mean.detach().float().clone())
        self.register_buffer("std", std.detach().float().clone())

    def forward(self, x: Tensor) -> Tensor:
        mean, std = self.get_buffer("mean"), self.get_buffer("std")
        return self.binder.encode(self.modality, (x - mean) / std)


def _file_name(modality: str, index: int, taken: set[str]) -> str:
    stem = modality if _SAFE.match(modality) else f"modality{index}"
    name = f"{stem}.onnx"
    while name.lower() in taken:  # case-insensitive file systems
        stem += "_"
        name = f"{stem}.onnx"
    taken.add(name.lower())
    return name


def export_onnx(
    run_dir: str | os.PathLike[str], out: str | os.PathLike[str], check: bool = True
) -> dict[str, Any]:
    """Write ``<out>/<modality>.onnx`` for every modality of the run and ``<out>/export.json``;
    returns the manifest.

    ``out`` must be absent or empty. With ``check`` (and onnxruntime installed) every file is run
    on :data:`CHECK_ROWS` seeded rows around the training mean and compared with
    ``centrobind.load(run_dir).encode``; a difference above :data:`TOLERANCE` is an error.
    """
    from .inference import load

    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise CentrobindError(f"{out} is not an empty folder; choose a new --out")
    try:
        import onnx  # noqa: F401  (torch's exporter writes through it)
    except ImportError:
        raise CentrobindError('export needs onnx: pip install "centrobind[export]"') from None
    model = load(run_dir, device="cpu")
    binder = model.binder.eval()
    out.mkdir(parents=True, exist_ok=True)
    manifest: dict[str, Any] = {
        "format": FORMAT,
        "centrobind": __version__,
        "run": str(run_dir),
        "embed_dim": model.embed_dim,
        "opset": OPSET,
        "input": "features",
        "output": "embedding",
        "modalities": {},
    }
    taken: set[str] = set()
    samples: dict[str, np.ndarray] = {}
    for i, m in enumerate(model.modalities):
        mean, std = _statistics(model, m)
        module = _StandardisedEncoder(binder, m, mean, std).eval()
        name = _file_name(m, i, taken)
        _write_onnx(module, model.dims[m], out / name)
        samples[m] = _sample(mean, std, seed=i)
        manifest["modalities"][m] = {
            "file": name,
            "input_dim": model.dims[m],
            "featurizer": model.featurizers.get(m),
            "sha256": hashlib.sha256((out / name).read_bytes()).hexdigest(),
        }
    if check:
        manifest["check"] = _check(model, out, manifest, samples)
    from .checkpoint import atomic_write_text

    atomic_write_text(out / "export.json", json.dumps(manifest, indent=2) + "\n")
    return manifest


def _statistics(model: Any, m: str) -> tuple[Tensor, Tensor]:
    """The run's standardisation of ``m`` (identity when the run has none)."""
    std = model.standardizer
    d = model.dims[m]
    if std is None or m not in std.mean:
        return torch.zeros(d), torch.ones(d)
    return std.mean[m].cpu(), std.std[m].cpu()


def _write_onnx(module: nn.Module, dim: int, path: Path) -> None:
    """TorchScript-based exporter (stable for these graphs, no onnxscript needed), written to
    a temporary name first so a killed export leaves no half file under the final name."""
    tmp = path.with_name(path.name + ".tmp")
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the exporter's deprecation notice
        torch.onnx.export(
            module,
            (torch.zeros(2, dim),),
            str(tmp),
            dynamo=False,
            input_names=["features"],
            output_names=["embedding"],
            dynamic_axes={"features": {0: "n"}, "embedding": {0: "n"}},
            opset_version=OPSET,
        )
    os.replace(tmp, path)


def _sample(mean: Tensor, std: Tensor, seed: int) -> np.ndarray:
    """float32 ``[CHECK_ROWS, D_m]`` seeded rows ``mean + std * N(0, 1)``."""
    g = np.random.default_rng(seed)
    z = g.standard_normal((CHECK_ROWS, mean.shape[0]))
    return (mean.numpy()[None] + std.numpy()[None] * z).astype(np.float32)


def _check(
    model: Any, out: Path, manifest: dict[str, Any], samples: dict[str, np.ndarray]
) -> dict[str, Any] | None:
    """Max abs difference between onnxruntime and ``model.encode`` over every modality's
    sample rows; None when onnxruntime is not installed. Raises above :data:`TOLERANCE`."""
    try:
        import onnxruntime as ort
    except ImportError:
        return None
    worst = 0.0
    for m, entry in manifest["modalities"].items():
        sess = ort.InferenceSession(str(out / entry["file"]), providers=["CPUExecutionProvider"])
        got = sess.run(["embedding"], {"features": samples[m]})[0]
        want = np.asarray(model.encode(m, samples[m]))
        diff = float(np.abs(got - want).max())
        if not diff <= TOLERANCE:
            raise CentrobindError(
                f"export check: {entry['file']} differs from encode() by {diff:.2e} "
                f"(> {TOLERANCE:g}); the encoder has an operation ONNX does not reproduce"
            )
        worst = max(worst, diff)
    return {"rows": CHECK_ROWS, "max_abs_diff": worst, "onnxruntime": ort.__version__}
