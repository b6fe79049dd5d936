"""Saved indexes: `centrobind index build` then `search --index DIR` without re-embedding; the
same hits as the in-memory search; refusals (other weights, changed corpus); disk full."""

from __future__ import annotations

import errno
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

import centrobind
from centrobind import saved_index
from centrobind.checkpoint import load_tensors, save_tensors
from centrobind.cli import main
from centrobind.data import make_synthetic, save_dataset
from centrobind.digests import record_digests
from centrobind.diskfull import DiskFullError
from centrobind.errors import CentrobindError, CentrobindWarning
from centrobind.inference import search_corpus
from centrobind.runs import train_run
from centrobind.search import topk_exact
from centrobind.train import TrainConfig

CFG = dict(epochs=2, batch_size=32, warmup_steps=2, embed_dim=16, hidden=32, quiet=True)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("saved_index")
    ds = make_synthetic(n_samples=300, n_modalities=3, dims=[10, 8, 6], seed=0)
    data = save_dataset(ds.with_missing(0.2, seed=0), root / "data")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as fast for this size, and steady on a busy machine
    try:
        train_run(data, TrainConfig(**CFG), root / "run")
    finally:
        torch.set_num_threads(threads)
    model = centrobind.load(root / "run", device="cpu")
    index = model.build_index(data, "m2", root / "index")
    return root, data, model, index


def _queries(model, data, n=40):
    x = np.load(Path(data) / "modalities" / "m1.npy")[:n]
    return model.encode("m1", x[~np.isnan(x).all(1)])


def test_round_trip_equals_the_in_memory_search(trained):
    root, data, model, index = trained
    q = _queries(model, data)
    ref_s, ref_i = model.index(data, "m2").search(q, 10)
    s, i = centrobind.load_index(root / "index").search(q, 10)
    np.testing.assert_array_equal(i, ref_i)
    np.testing.assert_allclose(s, ref_s, atol=1e-6)
    meta = json.loads((root / "index" / "index.json").read_text())
    mask = ~np.isnan(np.load(Path(data) / "modalities" / "m2.npy")).all(1)
    assert meta["count"] == len(index) == mask.sum() and meta["corpus"]["rows"] == 300
    np.testing.assert_array_equal(index.ids, np.flatnonzero(mask))  # the rows that have m2
    assert meta["corpus"]["digest"].startswith("d2:") and meta["target"] == "m2"


def test_blockwise_build_and_search_equal_one_block(trained, tmp_path, monkeypatch):
    root, data, model, index = trained
    monkeypatch.setattr(saved_index, "BUILD_ROWS", 37)  # blocks of corpus rows while embedding
    small = model.build_index(data, "m2", tmp_path / "small")
    np.testing.assert_allclose(small.embeddings, index.embeddings, atol=1e-6)
    q = _queries(model, data)
    ref = index.search(q, 25)
    got = small.search(q, 25, corpus_chunk=13, query_chunk=7)
    np.testing.assert_array_equal(got[1], ref[1])
    np.testing.assert_allclose(got[0], ref[0], atol=1e-6)
    assert small.search(q, 10_000)[1].shape == (len(q), len(index))  # k > count: every row


@pytest.mark.parametrize("seed", range(3))
def test_streamed_topk_ties_equal_topk_exact(seed):
    """Small-integer vectors: many equal scores across block borders; same order as Index."""
    rng = np.random.default_rng(seed)
    corpus = torch.from_numpy(rng.integers(-1, 2, size=(90, 3)).astype(np.float32))
    queries = torch.from_numpy(rng.integers(-1, 2, size=(11, 3)).astype(np.float32))
    blocks = ((a, corpus[a : a + 8]) for a in range(0, 90, 8))
    s, i = saved_index.topk_blocks(blocks, queries, 20, query_chunk=4)
    ref_s, ref_i = topk_exact(corpus, queries, 20)
    assert torch.equal(i, ref_i) and torch.equal(s, ref_s)


def test_float16_index_is_close(trained, tmp_path):
    root, data, model, index = trained
    half = centrobind.build_index(root / "run", data, "m2", tmp_path / "half", dtype="float16")
    assert half.embeddings.dtype == np.float16
    assert (tmp_path / "half" / "embeddings.npy").stat().st_size < 0.6 * (
        root / "index" / "embeddings.npy"
    ).stat().st_size
    q = _queries(model, data)
    s32, i32 = index.search(q, 10)
    s16, i16 = half.search(q, 10)
    np.testing.assert_allclose(s16, s32, atol=2e-3)
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(i16, i32, strict=True)])
    assert recall >= 0.95


def test_cli_build_then_search_index(trained, tmp_path, capsys):
    root, data, model, _ = trained
    out = tmp_path / "cli-index"
    build = ["--run", str(root / "run"), "--corpus", str(data), "--target", "m2"]
    assert main(["index", "build", *build, "--out", str(out), "--quiet"]) == 0
    assert f"wrote {out}:" in capsys.readouterr().out
    query = ["--query-data", str(data), "--query-modality", "m1", "-k", "5", "--json"]
    assert main(["search", "--index", str(out), *query]) == 0  # the run comes from the index
    saved = capsys.readouterr().out.splitlines()
    assert main(["search", *build, *query]) == 0  # the corpus embedded again
    fresh = capsys.readouterr().out.splitlines()
    assert len(saved) == len(fresh) > 0 and saved == fresh
    assert len(json.loads(saved[0])) == 5
    assert main(["search", "--index", str(out), "--exact", *query]) == 0
    assert capsys.readouterr().out.splitlines() == saved
    assert main(["search", *build, "--exact", *query]) == 2
    assert "go with --index" in _one_error_line(capsys)
    assert main(["search", "--index", str(out), "--target", "m1", *query]) == 2
    assert "drop --corpus and --target" in _one_error_line(capsys)


def _one_error_line(capsys) -> str:
    err = [x for x in capsys.readouterr().err.strip().splitlines() if "row/s]" not in x]
    assert len(err) == 1 and err[0].startswith("error: "), err
    return err[0]


def test_refuses_an_index_built_by_another_run(trained, tmp_path, capsys):
    root, data, model, _ = trained
    other = tmp_path / "other"
    shutil.copytree(root / "run", other)
    tensors, state = load_tensors(other / "model.safetensors")
    key = next(k for k in tensors if k.startswith("model.") and tensors[k].is_floating_point())
    tensors[key] = tensors[key] + 0.01
    save_tensors(other / "model.safetensors", tensors, state)
    with pytest.raises(CentrobindError, match="other weights"):
        centrobind.load(other, device="cpu").load_index(root / "index")
    query = ["--query-data", str(data), "--query-modality", "m1"]
    assert main(["search", "--index", str(root / "index"), "--run", str(other), *query]) == 2
    assert "built with other weights" in _one_error_line(capsys)
    # the recorded run retrained in place: refused without --run too
    idx = model.build_index(data, "m2", tmp_path / "idx", dtype="float16")
    meta = json.loads((idx.path / "index.json").read_text())
    meta["run"]["path"] = str(other)
    (idx.path / "index.json").write_text(json.dumps(meta))
    assert main(["search", "--index", str(idx.path), *query]) == 2
    assert "rebuild it" in _one_error_line(capsys)


def test_refuses_a_changed_corpus(trained, tmp_path, capsys):
    root, data, model, _ = trained
    copy = Path(shutil.copytree(data, tmp_path / "data"))
    model.build_index(copy, "m2", tmp_path / "idx")
    centrobind.load_index(tmp_path / "idx")  # unchanged: fine
    x = np.load(copy / "modalities" / "m2.npy")
    np.save(copy / "modalities" / "m2.npy", x[::-1])  # same size, rows reordered
    record_digests(copy)  # even with fresh digests: not the corpus the index holds
    query = ["--query-data", str(data), "--query-modality", "m1"]
    assert main(["search", "--index", str(tmp_path / "idx"), *query]) == 2
    assert "changed since the index was built" in _one_error_line(capsys)
    # a corpus without digests.json: sizes and sampled windows
    bare = Path(shutil.copytree(data, tmp_path / "bare"))
    (bare / "digests.json").unlink()
    idx = model.build_index(bare, "m2", tmp_path / "bare-idx")
    assert idx.meta["corpus"]["digest"].startswith("s1:")
    x = np.load(bare / "modalities" / "m2.npy")
    x[5] += 1.0
    np.save(bare / "modalities" / "m2.npy", x)
    with pytest.raises(CentrobindError, match="changed since the index was built"):
        centrobind.load_index(tmp_path / "bare-idx")


def test_items_are_read_by_offset_and_checked(trained, tmp_path):
    root, data, model, _ = trained
    copy = Path(shutil.copytree(data, tmp_path / "data"))
    (copy / "items").mkdir()
    texts = [f"item é {r}" if r % 7 else None for r in range(300)]
    (copy / "items" / "m2.jsonl").write_text("".join(json.dumps(t) + "\n" for t in texts))
    model.build_index(copy, "m2", tmp_path / "idx")
    res = search_corpus(model, copy, "m2", k=4, query_data=data, query_modality="m1",
                        saved=tmp_path / "idx")  # fmt: skip
    hits = [h for r in res for h in r["hits"]]
    assert hits and all(h.get("item") == texts[h["id"]] for h in hits)
    (copy / "items" / "m2.jsonl").write_text("".join(json.dumps(t) + "\n" for t in texts[::-1]))
    with pytest.raises(CentrobindError, match="changed since"):
        centrobind.load_index(tmp_path / "idx")


def test_a_gone_corpus_warns_and_still_searches(trained, tmp_path):
    root, data, model, _ = trained
    copy = shutil.copytree(data, tmp_path / "data")
    model.build_index(copy, "m2", tmp_path / "idx")
    shutil.rmtree(copy)
    with pytest.warns(CentrobindWarning, match="is gone"):
        idx = model.load_index(tmp_path / "idx")
    assert idx.search(_queries(model, data, 3), 2)[1].shape[1] == 2


def test_disk_full_while_building_leaves_nothing(trained, tmp_path, monkeypatch):
    root, data, model, index = trained
    real = saved_index.NpyWriter.write
    calls = {"n": 0}

    def full(self, rows):
        calls["n"] += 1
        if calls["n"] == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(self, rows)

    monkeypatch.setattr(saved_index.NpyWriter, "write", full)
    with pytest.raises(DiskFullError, match="no space left on device") as e:
        model.build_index(data, "m2", tmp_path / "idx")
    assert "\n" not in str(e.value)
    assert list(tmp_path.iterdir()) == []  # no index folder, no temporary folder
    # a rebuild over an existing index that runs out of space keeps the old index whole
    shutil.copytree(root / "index", tmp_path / "old")
    calls["n"] = 0
    with pytest.raises(DiskFullError):
        model.build_index(data, "m2", tmp_path / "old")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["old"]
    centrobind.load_index(tmp_path / "old").search(_queries(model, data, 2), 3)


def test_disk_full_while_writing_faiss_or_embeddings(trained, tmp_path, monkeypatch, capsys):
    faiss = pytest.importorskip("faiss")
    root, data, model, _ = trained

    def full(index, path):
        raise RuntimeError(
            f"Error in write at io.cpp:1: write error in {path}: No space left on device"
        )

    monkeypatch.setattr(faiss, "write_index", full)
    with pytest.raises(DiskFullError):
        model.build_index(data, "m2", tmp_path / "idx", faiss="IVF4,Flat")
    assert list(tmp_path.iterdir()) == []
    # embed --out FOLDER writes sequentially too: one line, nothing left
    import centrobind.data.npywriter as npywriter

    def no_space(self, rows):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(npywriter.NpyWriter, "write", no_space)
    out = tmp_path / "emb"
    assert main(["embed", "--run", str(root / "run"), "--data", str(data), "--out", str(out)]) == 2
    assert "no space left on device" in _one_error_line(capsys)
    assert list(tmp_path.iterdir()) == []


def test_faiss_index_is_saved_and_searched(trained, tmp_path):
    pytest.importorskip("faiss")
    root, data, model, index = trained
    idx = model.build_index(
        data, "m2", tmp_path / "idx", faiss="IVF4,Flat", faiss_params="nprobe=4"
    )
    assert (tmp_path / "idx" / "faiss.index").is_file()
    q = _queries(model, data)
    s, i = centrobind.load_index(tmp_path / "idx").search(q, 10)  # nprobe = all lists: exact
    ref_s, ref_i = index.search(q, 10)
    np.testing.assert_allclose(s, ref_s, atol=1e-5)
    assert np.mean(i == ref_i) > 0.97
    assert np.array_equal(idx.search(q, 10, backend="exact")[1], ref_i)


def test_broken_index_folders_are_one_line(trained, tmp_path):
    root, data, model, _ = trained
    bad = Path(shutil.copytree(root / "index", tmp_path / "bad"))
    with open(bad / "embeddings.npy", "r+b") as f:
        f.truncate(200)
    with pytest.raises(CentrobindError, match="truncated"):
        centrobind.load_index(bad)
    (bad / "index.json").write_text("{}")
    with pytest.raises(CentrobindError, match="not a valid index"):
        centrobind.load_index(bad)
    with pytest.raises(CentrobindError, match="not an index folder"):
        centrobind.load_index(tmp_path)
    with pytest.raises(CentrobindError, match="not an index folder"):
        model.build_index(data, "m2", root / "run")  # never over another folder


def test_npy_writer_appends_blocks_of_any_size(tmp_path):
    from centrobind.data.npywriter import NpyWriter

    x = np.random.default_rng(0).standard_normal((7, 3))
    with NpyWriter(tmp_path / "x.npy", np.float16, (3,)) as w:
        for a, b in [(0, 0), (0, 2), (2, 7)]:
            w.write(x[a:b])
    np.testing.assert_array_equal(np.load(tmp_path / "x.npy"), x.astype(np.float16))
    with NpyWriter(tmp_path / "empty.npy", np.int64):
        pass
    assert np.load(tmp_path / "empty.npy", mmap_mode="r").shape == (0,)


def test_serve_uses_a_saved_index(trained):
    pytest.importorskip("fastapi")
    from centrobind.serve import Explorer

    root, data, model, index = trained
    saved = Explorer(root / "run", data, device="cpu", index_dirs=[root / "index"])
    fresh = Explorer(root / "run", data, device="cpu")
    assert isinstance(saved.targets["m2"].index, saved_index.SavedIndex)
    q = _queries(model, data, 3)[0]
    a, b = saved.search(q, "m2", 5), fresh.search(q, "m2", 5)
    assert a == b and len(a) == 5  # rows, scores, labels: the same hits
    row = int(index.ids[4])
    np.testing.assert_allclose(saved.item_vector("m2", row), fresh.item_vector("m2", row))
