"""Issue 12, class 3: never a traceback. Each input below once printed one; each must now be one
``error:`` line with exit code 2 (or, for unusual but legal names, just work)."""

from __future__ import annotations

import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from centrobind.data import MultimodalDataset, make_synthetic, save_dataset
from reliability_helpers import FAST, cli, error_line, train


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "synth"
    save_dataset(make_synthetic(n_samples=200, n_modalities=3, dims=[10, 8, 6], seed=0), path)
    return path


@pytest.fixture(scope="module")
def run(data, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "run"
    rc, _, err = train(data, out, "--objective", "fixed_anchor", "--anchor", "m2")
    assert rc == 0, err
    return out


def _edited(run: Path, tmp_path: Path, edit) -> Path:
    """A copy of ``run`` whose config.json text is ``edit(text)``."""
    copy = tmp_path / "edited"
    shutil.copytree(run, copy)
    cfg = copy / "config.json"
    cfg.write_text(edit(cfg.read_text()))
    return copy


def _set(field: str, value):
    def edit(text: str) -> str:
        d = json.loads(text)
        d[field] = value
        return json.dumps(d)

    return edit


def _all_verbs_refuse(run: Path, data: Path, tmp_path: Path, *needles: str) -> None:
    for args in (
        ("train", "--data", data, "--out", run, "--resume", "--quiet"),
        ("evaluate", "--run", run),
        ("embed", "--run", run, "--data", data, "--out", tmp_path / "e.npz"),
    ):
        rc, _, err = cli(*args)
        error_line(rc, err, *needles)


@pytest.mark.parametrize(
    "edit, needle",
    [
        (lambda t: t[: len(t) // 2], "not valid JSON"),  # truncated
        (lambda t: "\udcff not json".encode("utf-8", "surrogateescape").decode("latin-1"), "JSON"),
        (lambda t: "[1, 2]", "JSON object"),
        (lambda t: "[" * 100_000 + "]" * 100_000, "config.json"),  # RecursionError in json
    ],
    ids=["truncated", "garbage", "a list", "deeply nested"],
)
def test_config_json_not_a_config(run, data, tmp_path, edit, needle):
    _all_verbs_refuse(_edited(run, tmp_path, edit), data, tmp_path, needle)


def test_config_json_nested_in_a_field(run, data, tmp_path):
    deep = _edited(
        run,
        tmp_path,
        lambda t: t.replace(
            '"objective_options": {}', '"objective_options": ' + "[" * 50_000 + "]" * 50_000
        ),
    )
    _all_verbs_refuse(deep, data, tmp_path, "config.json")


def test_config_json_embed_dim_edited(run, data, tmp_path):
    edited = _edited(run, tmp_path, _set("embed_dim", 32))
    rc, _, err = cli("train", "--data", data, "--out", edited, "--resume", "--quiet")
    error_line(rc, err, "--resume")
    rc, _, err = cli("evaluate", "--run", edited)
    error_line(rc, err, "does not match config.json")


def test_config_json_unknown_anchor(run, data, tmp_path):
    edited = _edited(run, tmp_path, _set("anchor", "nope"))
    rc, _, err = cli("evaluate", "--run", edited)
    error_line(rc, err, "anchor 'nope' is not a modality")
    rc, _, err = cli("embed", "--run", edited, "--data", data, "--out", tmp_path / "e.npz")
    error_line(rc, err, "anchor 'nope'")


@pytest.mark.parametrize(
    "field, value", [("device", "tpu"), ("embed_dim", "64"), ("objective", "nope"), ("hidden", -1)]
)
def test_config_json_bad_field(run, data, tmp_path, field, value):
    _all_verbs_refuse(_edited(run, tmp_path, _set(field, value)), data, tmp_path, "config.json")


@pytest.mark.parametrize(
    "flags, needles",
    [
        (["--embed-dim", "100000000"], ["embed_dim"]),  # over the config bound
        (["--hidden", "65536", "--depth", "64"], ["parameters", "GiB"]),  # within: ~1 TB
    ],
)
def test_huge_model_refused_before_allocating(data, tmp_path, flags, needles):
    out = tmp_path / "run"
    t0 = time.monotonic()
    rc, _, err = train(data, out, *flags)
    error_line(rc, err, *needles)
    assert time.monotonic() - t0 < 120  # counted on the meta device, never allocated
    assert not out.exists()


def test_huge_model_in_an_edited_run_refused(run, tmp_path):
    def edit(text: str) -> str:
        d = json.loads(text)
        d.update(hidden=65536, depth=64)
        return json.dumps(d)

    rc, _, err = cli("evaluate", "--run", _edited(run, tmp_path, edit))
    error_line(rc, err, "config.json", "parameters")


DISK_FULL = """
import sys
from pathlib import Path
from safetensors import SafetensorError
from safetensors.torch import save_file
import centrobind.checkpoint as ckpt
calls = [0]
def full(tensors, filename, metadata=None):
    calls[0] += 1
    if calls[0] == int(sys.argv[1]):
        Path(filename).write_bytes(b"0" * 4096)
        raise SafetensorError(
            "Error while serializing: I/O error: No space left on device (os error 28)"
        )
    return save_file(tensors, filename, metadata=metadata)
ckpt.save_file = full
from centrobind.cli import main
sys.exit(main(sys.argv[2:]))
"""


@pytest.mark.parametrize("fail_on", [1, 3])  # the splits file; a checkpoint
def test_disk_full_is_one_line(data, tmp_path, fail_on):
    import subprocess

    out = tmp_path / "run"
    args = ["train", "--data", str(data), "--out", str(out), *FAST, "--checkpoint-every", "2"]
    proc = subprocess.run(
        [sys.executable, "-c", DISK_FULL, str(fail_on), *args], capture_output=True, text=True
    )
    error_line(proc.returncode, proc.stderr, "no space left on device")
    assert not [p for p in out.rglob("*") if p.name.endswith(".tmp")]
    rc, _, err = cli("train", "--data", data, "--out", out, "--resume", "--quiet")
    assert rc == 0, err


@pytest.mark.parametrize(
    "names", [["items", "keys"], ["values", "training", "~x"], ["to", "forward"]]
)
def test_modality_names_that_are_module_attributes(tmp_path, names):
    base = make_synthetic(
        n_samples=120, n_modalities=len(names), dims=[6] * len(names), pair=None, seed=0
    )
    ds = MultimodalDataset(
        {n: base.features[m] for n, m in zip(names, base.modalities, strict=True)},
        mask=base.mask,
        labels=base.labels,
    )
    save_dataset(ds, tmp_path / "d")
    out = tmp_path / "run"
    rc, _, err = train(tmp_path / "d", out)
    assert rc == 0, err
    rc, _, err = cli("evaluate", "--run", out)
    assert rc == 0, err
    rc, _, err = cli("embed", "--run", out, "--data", tmp_path / "d", "--out", tmp_path / "e.npz")
    assert rc == 0, err
    arrays = np.load(tmp_path / "e.npz")
    assert set(names) <= set(arrays.files)
    assert all(arrays[n].shape == (120, 64) for n in names)


# ------------------------------------------------------------------- fixed by other layers


def test_seed_too_large(data, tmp_path):
    rc, _, err = train(data, tmp_path / "run", "--seed", str(2**70))
    error_line(rc, err, "seed must be <=")


def test_deeply_nested_meta_json(tmp_path):
    save_dataset(
        make_synthetic(n_samples=60, n_modalities=3, dims=[4, 4, 4], seed=0), tmp_path / "d"
    )
    (tmp_path / "d" / "meta.json").write_text('{"x": ' + "[" * 100_000 + "]" * 100_000 + "}")
    for args in (
        ("inspect", tmp_path / "d"),
        ("train", "--data", tmp_path / "d", "--out", tmp_path / "r"),
    ):
        rc, _, err = cli(*args)
        error_line(rc, err, "meta.json")
