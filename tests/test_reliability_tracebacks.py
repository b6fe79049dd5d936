"""Issue 12, class 3: never a traceback. Each input below once printed one; each must now be one
``error:`` line with exit code 2 (or, for unusual but legal names, just work).

Most cases call the CLI's ``main`` in this process (``main_cli``: an exception that escaped it
would fail the test as a traceback would); what needs a process of its own (a patched writer, a
killed rank) runs one."""

from __future__ import annotations

import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from centrobind.data import MultimodalDataset, make_synthetic, save_dataset
from reliability_helpers import FAST, cli, corpus_and_run, error_line, main_cli, train


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


def _all_verbs_refuse(capsys, run: Path, data: Path, tmp_path: Path, *needles: str) -> None:
    for args in (
        ("train", "--data", data, "--out", run, "--resume", "--quiet"),
        ("evaluate", "--run", run),
        ("embed", "--run", run, "--data", data, "--out", tmp_path / "e.npz"),
    ):
        rc, _, err = main_cli(capsys, *args)
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
def test_config_json_not_a_config(run, data, tmp_path, capsys, edit, needle):
    _all_verbs_refuse(capsys, _edited(run, tmp_path, edit), data, tmp_path, needle)


def test_config_json_nested_in_a_field(run, data, tmp_path, capsys):
    deep = _edited(
        run,
        tmp_path,
        lambda t: t.replace(
            '"objective_options": {}', '"objective_options": ' + "[" * 50_000 + "]" * 50_000
        ),
    )
    _all_verbs_refuse(capsys, deep, data, tmp_path, "config.json")


def test_config_json_embed_dim_edited(run, data, tmp_path, capsys):
    edited = _edited(run, tmp_path, _set("embed_dim", 32))
    rc, _, err = main_cli(capsys, "train", "--data", data, "--out", edited, "--resume", "--quiet")
    error_line(rc, err, "--resume")
    rc, _, err = main_cli(capsys, "evaluate", "--run", edited)
    error_line(rc, err, "does not match config.json")


def test_config_json_unknown_anchor(run, data, tmp_path, capsys):
    edited = _edited(run, tmp_path, _set("anchor", "nope"))
    rc, _, err = main_cli(capsys, "evaluate", "--run", edited)
    error_line(rc, err, "anchor 'nope' is not a modality")
    e = tmp_path / "e.npz"
    rc, _, err = main_cli(capsys, "embed", "--run", edited, "--data", data, "--out", e)
    error_line(rc, err, "anchor 'nope'")


@pytest.mark.parametrize(
    "field, value", [("device", "tpu"), ("embed_dim", "64"), ("objective", "nope"), ("hidden", -1)]
)
def test_config_json_bad_field(run, data, tmp_path, capsys, field, value):
    edited = _edited(run, tmp_path, _set(field, value))
    _all_verbs_refuse(capsys, edited, data, tmp_path, "config.json")


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


def test_huge_model_in_an_edited_run_refused(run, tmp_path, capsys):
    def edit(text: str) -> str:
        d = json.loads(text)
        d.update(hidden=65536, depth=64)
        return json.dumps(d)

    rc, _, err = main_cli(capsys, "evaluate", "--run", _edited(run, tmp_path, edit))
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
def test_modality_names_that_are_module_attributes(tmp_path, capsys, names):
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
    rc, _, err = main_cli(capsys, "train", "--data", tmp_path / "d", "--out", out, *FAST)
    assert rc == 0, err
    rc, _, err = main_cli(capsys, "evaluate", "--run", out)
    assert rc == 0, err
    e = tmp_path / "e.npz"
    rc, _, err = main_cli(capsys, "embed", "--run", out, "--data", tmp_path / "d", "--out", e)
    assert rc == 0, err
    arrays = np.load(tmp_path / "e.npz")
    assert set(names) <= set(arrays.files)
    assert all(arrays[n].shape == (120, 64) for n in names)


# ------------------------------------------------------------------- fixed by other layers


def test_seed_too_large(data, tmp_path, capsys):
    rc, _, err = main_cli(capsys, "train", "--data", data, "--out", tmp_path / "run", *FAST,
                          "--seed", str(2**70))  # fmt: skip
    error_line(rc, err, "seed must be <=")


def test_deeply_nested_meta_json(tmp_path, capsys):
    save_dataset(
        make_synthetic(n_samples=60, n_modalities=3, dims=[4, 4, 4], seed=0), tmp_path / "d"
    )
    (tmp_path / "d" / "meta.json").write_text('{"x": ' + "[" * 100_000 + "]" * 100_000 + "}")
    for args in (
        ("inspect", tmp_path / "d"),
        ("train", "--data", tmp_path / "d", "--out", tmp_path / "r"),
    ):
        rc, _, err = main_cli(capsys, *args)
        error_line(rc, err, "meta.json")


# ------------------------------------------------------------------- search, featurize (issue 19)


def _search(capsys, corpus, run, *extra):
    args = ["search", "--run", run, "--corpus", corpus, "--target", "image", "--query", "red"]
    return main_cli(capsys, *args, *extra)


def test_search_corpus_defects_are_one_line(tmp_path, capsys):
    corpus, run = corpus_and_run()
    narrow = tmp_path / "narrow"  # the images featurized with another width (pixels:2)
    raw = corpus.parent / "raw"
    rc, _, err = main_cli(
        capsys, "featurize", raw / "m.csv", "--out", narrow, "--encoder", "caption=chars",
        "--encoder", "image=pixels:2", "--label", "colour", "--quiet",
    )  # fmt: skip
    assert rc == 0, err
    error_line(*_search(capsys, narrow, run)[::2], "'image' has 12 features per row", "takes 48")
    cut = tmp_path / "cut"
    shutil.copytree(corpus, cut)
    items = cut / "items" / "image.jsonl"
    items.write_text("".join(items.read_text().splitlines(keepends=True)[:5]))  # cut at a line
    error_line(*_search(capsys, cut, run)[::2], "has 5 lines but the corpus has 24 rows")
    items.write_bytes(b'"\xff\xfe"\n' * 24)
    error_line(*_search(capsys, cut, run)[::2], "line 1 is not UTF-8")
    bad_arg = "red \udcff"  # how Python passes a command-line argument that is not UTF-8
    args = ["search", "--run", run, "--corpus", corpus, "--target", "image", "--query", bad_arg]
    error_line(*main_cli(capsys, *args)[::2], "is not valid Unicode text")


def test_long_csv_cell_is_read_as_in_jsonl(tmp_path):
    import csv

    from centrobind.featurize import read_manifest

    long = "word " * 40_000  # 200,000 characters: over the csv module's default limit
    (tmp_path / "m.csv").write_text('caption,n\n"' + long + '",1\nshort,2\n')
    (tmp_path / "m.jsonl").write_text(json.dumps({"caption": long, "n": 1}) + "\n")
    limit = csv.field_size_limit()
    csv_cell = read_manifest(tmp_path / "m.csv").columns["caption"][0]
    assert csv_cell == read_manifest(tmp_path / "m.jsonl").columns["caption"][0] == long.strip()
    assert csv.field_size_limit() == limit  # the process-wide setting is restored


def test_a_lone_surrogate_in_a_manifest_is_one_line(tmp_path):
    from centrobind.errors import CentrobindError
    from centrobind.featurize import read_manifest

    (tmp_path / "m.jsonl").write_text('{"caption": "ok"}\n{"caption": "a\\ud800b"}\n')
    with pytest.raises(CentrobindError, match="line 2, column 'caption': not valid Unicode"):
        read_manifest(tmp_path / "m.jsonl")


def _image_manifest(root: Path, odd: str) -> Path:
    from PIL import Image

    for i in range(3):
        Image.new("RGB", (12, 10), (80 * i, 0, 0)).save(root / f"{i}.png")
    man = root / "m.csv"
    man.write_text("image\n0.png\n1.png\n" + odd + "\n2.png\n")
    return man


def _featurize_images(capsys, man: Path, out: Path) -> tuple[str, str]:
    args = ["featurize", man, "--out", out, "--encoder", "image=pixels:4", "--quiet"]
    rc, text, err = main_cli(capsys, *args)
    assert rc == 0, err
    assert "image 3 ok, 0 empty, 1 unreadable" in text
    return text, err


def test_a_named_pipe_in_a_manifest_is_refused_not_opened(tmp_path, capsys):
    import os
    import threading

    from centrobind.featurize import EncoderError, load_encoder

    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)

    def unblock() -> None:  # should open() block after all, the test fails instead of hanging
        time.sleep(30)
        try:
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        except OSError:
            pass

    threading.Thread(target=unblock, daemon=True).start()
    _, err = _featurize_images(capsys, _image_manifest(tmp_path, "pipe.png"), tmp_path / "ds")
    assert "line 4, image: unreadable, stored as missing" in err and "is a named pipe" in err
    with pytest.raises(EncoderError, match="is a named pipe, not a regular file"):
        load_encoder("pixels:4").encode([str(fifo)])  # the Python API too


def _png_declaring(width: int, height: int) -> bytes:
    """A tiny PNG whose header declares ``width x height`` pixels (the data is not there)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
        return struct.pack(">I", len(data)) + kind + data + crc

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + chunk(b"IEND", b"")
    )


def test_images_over_the_pixel_budget_are_refused_before_decoding(tmp_path, capsys, monkeypatch):
    from PIL import Image

    from centrobind.featurize import EncoderError, load_encoder

    (tmp_path / "bomb.png").write_bytes(_png_declaring(12000, 12000))
    t0 = time.monotonic()
    _, err = _featurize_images(capsys, _image_manifest(tmp_path, "bomb.png"), tmp_path / "ds")
    assert time.monotonic() - t0 < 60  # never decoded (that took 911 MB)
    assert "declares 12000 x 12000 pixels, over the budget of 64,000,000" in err
    assert "DecompressionBomb" not in err  # Pillow's own warning: the line above says it
    assert all(ln.startswith(("warning: ", "line ")) for ln in err.splitlines()), err
    # the budget is a setting; a JPEG over it is decoded at a scale that fits
    monkeypatch.setenv("CENTROBIND_MAX_IMAGE_PIXELS", "1000")
    Image.new("RGB", (64, 64), (0, 90, 0)).save(tmp_path / "big.jpg")
    small = load_encoder("pixels:4").encode([str(tmp_path / "big.jpg")])
    assert small.shape == (1, 48) and abs(float(small[0, 1]) - 90 / 255) < 0.05
    monkeypatch.setenv("CENTROBIND_MAX_IMAGE_PIXELS", "100")
    with pytest.raises(EncoderError, match="12 x 10 pixels, over the budget of 100 "):
        load_encoder("pixels:4").encode([str(tmp_path / "0.png")])


def test_a_wav_declaring_a_tiny_sample_rate_is_refused(tmp_path):
    """A 2 KB WAV that declares 1 Hz would be resampled to 16,000 times its samples."""
    from centrobind.featurize import EncoderError, load_encoder
    from featurize_helpers import write_wav

    write_wav(tmp_path / "slow.wav", np.zeros(1000), rate=1)
    with pytest.raises(EncoderError, match="implausible sample rate 1 Hz"):
        load_encoder("logmel").encode([str(tmp_path / "slow.wav")])


def test_tensorboard_that_cannot_be_written_is_one_line(run, data, tmp_path, capsys):
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    (copy / "tensorboard").write_text("a file where the folder goes")
    args = ["train", "--data", data, "--out", copy, "--resume", "--tensorboard", "--quiet"]
    rc, _, err = main_cli(capsys, *args)
    line = error_line(rc, err, "--tensorboard: cannot write to", "tensorboard")
    assert "b'" not in line


def test_third_party_warnings_are_warning_lines(tmp_path, capsys, monkeypatch):
    """Warnings of other libraries (Pillow's) and of lower layers are ``warning:`` lines."""
    from centrobind.checkpoint import load_tensors, save_tensors

    monkeypatch.setenv("CENTROBIND_MAX_IMAGE_PIXELS", "200000000")  # above Pillow's own limit
    (tmp_path / "big.png").write_bytes(_png_declaring(9500, 9500))  # 90 M pixels, no data
    _, err = _featurize_images(capsys, _image_manifest(tmp_path, "big.png"), tmp_path / "ds")
    pillow = [ln for ln in err.splitlines() if "90250000 pixels" in ln]
    assert len(pillow) == 1 and pillow[0].startswith("warning: Image size"), err
    corpus, run = corpus_and_run()
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    tensors, meta = load_tensors(copy / "model.safetensors")
    meta["featurizers"]["caption"]["version"] = "chars/0"  # made by an older encoder version
    save_tensors(copy / "model.safetensors", tensors, meta)
    rc, _, err = _search(capsys, corpus, copy)
    assert rc == 0, err
    assert err.splitlines()[0] == (
        "warning: encoder 'chars': dataset made with 'chars/0', now 'chars/1'; features may "
        "differ slightly"
    )
    assert all(ln.startswith("warning: ") for ln in err.splitlines()), err  # + training rows


# ------------------------------------------------------------------- distributed (issue 19)


def _children(pid: int) -> list[int]:
    """Process ids whose parent is ``pid`` (Linux /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                found.append(int(entry.name))
    return found


def _rank_of(pid: int) -> int | None:
    try:
        env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return None
    ranks = [int(e[5:]) for e in env if e.startswith(b"RANK=")]
    return ranks[0] if ranks else None


@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="needs Linux /proc")
def test_a_killed_torchrun_rank_is_one_line(data, tmp_path):
    """torchrun --nproc-per-node 2 (gloo, CPU); rank 1 is killed (-9) once training has written
    a checkpoint: rank 0 prints one line naming rank 1 and --resume, no gloo traceback."""
    import os
    import signal
    import subprocess

    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    cmd += ["-m", "centrobind.cli", "train", "--data", str(data), "--out", str(out), "--quiet"]
    cmd += ["--epochs", "400", "--batch-size", "28", "--hidden", "8", "--embed-dim", "4"]
    cmd += ["--device", "cpu", "--checkpoint-every", "2", "--warmup-steps", "1"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    try:
        deadline = time.monotonic() + 300
        while not (out / "checkpoints" / "latest.safetensors").exists():
            assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()
            time.sleep(0.1)
        rank1 = [p for p in _children(proc.pid) if _rank_of(p) == 1]
        assert len(rank1) == 1
        os.kill(rank1[0], signal.SIGKILL)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    text = err.decode()
    ours = [ln for ln in text.splitlines() if ln.startswith(("error:", "[rank0]", "[rank1]"))]
    assert len(ours) == 1, text  # torchrun's own report of the dead child follows it
    assert "rank 1 of 2 stopped" in ours[0] and "--resume" in ours[0], ours
    assert "Traceback" not in text.split("ChildFailedError")[0].split(ours[0])[0], text
    assert (out / "checkpoints" / "latest.safetensors").is_file()
