"""``centrobind export --format onnx``: the files match ``centrobind.load(run).encode`` through
onnxruntime, and the README's example runs them with centrobind not importable."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

import centrobind
from centrobind.cli import main
from centrobind.data import load_dataset
from serve_helpers import tiny_space

README = Path(__file__).resolve().parents[1] / "README.md"


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    root, data, run = tiny_space(tmp_path_factory)
    out = root / "onnx"
    assert main(["export", "--run", str(run), "--format", "onnx", "--out", str(out)]) == 0
    return data, run, out


def test_export_matches_encode(exported, capsys):
    data, run, out = exported
    manifest = json.loads((out / "export.json").read_text())
    assert manifest["format"] == "centrobind-onnx/1" and manifest["embed_dim"] == 16
    assert sorted(p.name for p in out.iterdir()) == [
        "caption.onnx",
        "export.json",
        "image.onnx",
        "sound.onnx",
    ]
    assert manifest["check"]["max_abs_diff"] < 1e-5  # the export's own check, seeded rows
    model = centrobind.load(run, device="cpu")
    ds = load_dataset(data)
    for m, entry in manifest["modalities"].items():
        assert entry["input_dim"] == model.dims[m] and entry["featurizer"]["spec"]
        sess = ort.InferenceSession(str(out / entry["file"]), providers=["CPUExecutionProvider"])
        (inp,) = sess.get_inputs()
        assert inp.name == "features" and inp.shape[1] == model.dims[m]
        x = ds.features[m].numpy().astype(np.float32)  # raw features: standardised inside
        for rows in (x[:1], x):  # the batch dimension is dynamic
            (z,) = sess.run(["embedding"], {"features": rows})
            want = model.encode(m, rows)
            assert z.shape == want.shape == (len(rows), 16)
            assert float(np.abs(z - want).max()) < 1e-5, m
            assert np.allclose(np.linalg.norm(z, axis=1), 1, atol=1e-5)
    # a second export into the same folder is refused in one line
    assert main(["export", "--run", str(run), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"error: {out} is not an empty folder; choose a new --out"


def test_readme_runs_an_exported_encoder_without_centrobind(exported, tmp_path):
    data, run, out = exported
    text = README.read_text()
    block = re.search(r"```py\n(.*?)```", text, flags=re.S)
    assert block, "README: the ```py example of an exported encoder"
    (tmp_path / "onnx_out").symlink_to(out)
    (tmp_path / "my_data").symlink_to(data)
    code = "import sys\nsys.modules['centrobind'] = None  # not importable\n" + block.group(1)
    code += "\nnp.save('z.npy', z)\n"
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    z = np.load(tmp_path / "z.npy")
    x = np.load(data / "modalities" / "image.npy")[:4]
    want = centrobind.load(run, device="cpu").encode("image", x)
    assert float(np.abs(z - want).max()) < 1e-5
