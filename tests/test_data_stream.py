"""Out-of-core data: shard storage, digests, the streaming source and its equality with memory."""

from __future__ import annotations

import dataclasses
import errno
import os
import shutil

import numpy as np
import pytest
import torch

import centrobind.runs as runs_module
from centrobind.config import TrainConfig
from centrobind.data import load_dataset, make_synthetic, save_dataset
from centrobind.data.ondisk import open_dataset
from centrobind.data.source import BlockShuffle, batch_positions
from centrobind.data.store import ModalityStore, append_rows
from centrobind.data.stream import DataChangedError, StreamingSource
from centrobind.digests import data_digest, quick_check, record_digests, verify
from centrobind.errors import CentrobindError, DatasetError
from centrobind.pipeline import choose_loader
from centrobind.runs import embed_run, evaluate_run, load_run, train_run


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """A 3-modality synthetic dataset (some rows missing) saved with digests."""
    ds = make_synthetic(n_samples=600, n_modalities=3, dims=16, seed=0).with_missing(0.2, seed=1)
    root = tmp_path_factory.mktemp("stream") / "ds"
    save_dataset(ds, root)
    return root, ds


def _shards(root, name, parts, dtype=np.float32):
    d = root / "modalities" / name
    d.mkdir(parents=True)
    for i, p in enumerate(parts):
        np.save(d / f"{i:05d}.npy", p.astype(dtype))


class TestShardStore:
    def test_reads_across_shards_and_float16(self, tmp_path):
        rng = np.random.default_rng(0)
        x = rng.normal(size=(25, 3)).astype(np.float16)
        _shards(tmp_path, "a", [x[:10], x[10:11], x[11:]], np.float16)
        store = ModalityStore(tmp_path / "modalities" / "a")
        assert (store.n_rows, store.dim, store.dtype) == (25, 3, np.float16)
        assert np.array_equal(store.read(7, 14), x[7:14].astype(np.float32))
        rows = np.array([0, 9, 10, 11, 24])
        assert np.array_equal(store.take(rows), x[rows].astype(np.float32))

    def test_read_rows_takes_runs_dense_spans_and_scattered_rows_alike(self, tmp_path):
        from centrobind.data import stream

        rng = np.random.default_rng(0)
        x = rng.normal(size=(2000, 4)).astype(np.float16)
        _shards(tmp_path, "a", [x[:700], x[700:1500], x[1500:]], np.float16)
        store = ModalityStore(tmp_path / "modalities" / "a")
        runs = np.concatenate([np.arange(100, 200), np.arange(650, 750), np.arange(1890, 1990)])
        cases = {  # each path of read_rows: runs across shard ends, a dense span, a gather
            "runs": runs, "dense": np.arange(10, 600, 2), "scattered": np.arange(0, 2000, 97),
        }  # fmt: skip
        for name, rows in cases.items():
            got = stream.read_rows(store, rows)
            assert got.dtype == np.float32 and np.array_equal(got, x[rows].astype(np.float32)), name

    def test_a_sharded_float16_folder_loads_like_one_file(self, tmp_path):
        ds = make_synthetic(n_samples=50, n_modalities=3, dims=16, seed=3)
        save_dataset(ds, tmp_path / "one")
        root = tmp_path / "sharded"
        for m in ds.modalities:
            x = ds.features[m].numpy()
            _shards(root, m, [x[:20], x[20:]], np.float16)
        loaded = load_dataset(root)
        for m in ds.modalities:
            want = ds.features[m].numpy().astype(np.float16).astype(np.float32)
            assert np.array_equal(loaded.features[m].numpy(), want)

    @pytest.mark.parametrize(
        "defect, message",
        [
            ("width", "has 4 columns but 00000.npy has 3"),
            ("dtype", "every shard of a modality has one dtype"),
            ("gap", "shard 00001.npy is missing"),
            ("truncated", "truncated or corrupt"),
        ],
    )
    def test_bad_shards_are_one_line(self, tmp_path, defect, message):
        x = np.ones((4, 3), dtype=np.float32)
        d = tmp_path / "modalities" / "a"
        d.mkdir(parents=True)
        np.save(d / "00000.npy", x)
        second = {
            "width": np.ones((4, 4), np.float32),
            "dtype": x.astype(np.float16),
            "gap": x,
            "truncated": x,
        }[defect]
        name = "00002.npy" if defect == "gap" else "00001.npy"
        np.save(d / name, second)
        if defect == "truncated":
            with open(d / name, "r+b") as f:
                f.truncate(os.path.getsize(d / name) - 5)
        with pytest.raises(DatasetError, match=message) as e:
            ModalityStore(d)
        assert "\n" not in str(e.value)

    def test_modalities_with_different_row_counts(self, tmp_path):
        _shards(tmp_path, "a", [np.ones((5, 2))])
        _shards(tmp_path, "b", [np.ones((4, 2))])
        with pytest.raises(DatasetError, match="has 4 rows but"):
            open_dataset(tmp_path)

    def test_append_rows_adds_a_shard_and_keeps_digests(self, tmp_path):
        ds = make_synthetic(n_samples=40, n_modalities=3, dims=16, seed=0)
        ds.factors = {}
        save_dataset(ds, tmp_path / "d")
        more = make_synthetic(n_samples=40, n_modalities=3, dims=16, seed=1)
        n = append_rows(
            tmp_path / "d",
            {m: more.features[m][:10].numpy() for m in ds.modalities},
            labels={t: y[:10].numpy() for t, y in more.labels.items()},
        )
        assert n == 50
        assert quick_check(tmp_path / "d") == []
        both = load_dataset(tmp_path / "d")
        for m in ds.modalities:
            want = torch.cat([ds.features[m], more.features[m][:10]])
            assert torch.equal(both.features[m], want)
        with pytest.raises(DatasetError, match="every modality"):
            append_rows(tmp_path / "d", {ds.modalities[0]: np.ones((2, 3), np.float32)})


class TestDigests:
    def test_cheap_check_and_full_verify(self, tmp_path):
        ds = make_synthetic(n_samples=3000, n_modalities=3, dims=(128, 16, 16), seed=0)
        root = save_dataset(ds, tmp_path / "d")
        assert quick_check(root) == [] and verify(root) == []
        d0 = data_digest(root)
        assert d0 is not None and d0.startswith("d2:") and data_digest(root) == d0
        f = root / "modalities" / f"{ds.modalities[0]}.npy"
        raw = bytearray(f.read_bytes())
        size = len(raw)
        assert size > 1 << 20  # the sampled (not whole-file) cheap check
        raw[size // 2 + 3] ^= 1  # between the sampled windows: only verify sees it
        f.write_bytes(bytes(raw))
        assert quick_check(root) == []
        assert any("SHA-256 differs" in p for p in verify(root))
        f.write_bytes(bytes(raw[:-8]))  # truncated: the cheap check sees the size
        assert "bytes" in quick_check(root)[0]
        with pytest.raises(DatasetError, match="changed since its digests"):
            data_digest(root)
        record_digests(root)
        np.save(root / "labels" / "extra.npy", np.zeros(3000, np.int64))
        assert "not in digests.json" in quick_check(root)[0]


class TestOrderAndSource:
    def test_block_shuffle_is_a_seeded_permutation(self):
        order = BlockShuffle(block_rows=7, buffer_blocks=3)
        for epoch in (0, 1):
            got = np.concatenate(list(order.chunks(100, seed=4, epoch=epoch)))
            assert sorted(got.tolist()) == list(range(100))
        a = np.concatenate(list(order.chunks(100, 4, 0)))
        assert np.array_equal(a, np.concatenate(list(order.chunks(100, 4, 0))))
        assert not np.array_equal(a, np.concatenate(list(order.chunks(100, 4, 1))))
        batches = list(batch_positions(order, 100, 4, 0, 32, drop_last=True))
        assert [len(b) for b in batches] == [32, 32, 32]

    def test_ranks_read_their_shares_of_the_same_batches(self, folder):
        root, _ = folder
        disk = open_dataset(root)
        scan = disk.scan()
        rows = np.arange(0, 600, 2)
        order = BlockShuffle(block_rows=16, buffer_blocks=2)

        def source():
            return StreamingSource(disk, rows, scan.mask[:, rows], disk.modalities, order=order)

        one = list(source().batches(3, 0, 40, True))
        shares = [list(source().batches(3, 0, 40, True, rank=r, world=2)) for r in (0, 1)]
        assert len(one) == len(shares[0]) == 300 // 40
        for b, (feats, mask) in enumerate(one):
            for m in disk.modalities:
                both = torch.cat([shares[0][b][0][m], shares[1][b][0][m]])
                assert torch.equal(both, feats[m])
            assert torch.equal(torch.cat([shares[0][b][1], shares[1][b][1]], 1), mask)
        # missing rows are zero and masked
        feats, mask = one[0]
        assert bool((feats[disk.modalities[0]][~mask[0]] == 0).all())

    def test_data_changed_while_reading(self, tmp_path):
        ds = make_synthetic(n_samples=100, n_modalities=3, dims=16, seed=0)
        root = save_dataset(ds, tmp_path / "d")
        disk = open_dataset(root)
        scan = disk.scan()
        rows = np.arange(100)
        src = StreamingSource(disk, rows, scan.mask, disk.modalities)
        f = root / "modalities" / f"{ds.modalities[1]}.npy"
        os.utime(f, ns=(1, 1))
        with pytest.raises(DataChangedError, match="changed while training"):
            list(src.batches(0, 0, 10, True))


class TestStreamingTraining:
    @pytest.mark.parametrize("blocks", [False, True])
    def test_stream_and_memory_give_the_same_weights(self, folder, tmp_path, blocks, monkeypatch):
        """The two paths, same order (a uniform shuffle for small data, or the block order
        with small blocks), give bit-identical weights and standardisation."""
        root, _ = folder
        cfg = TrainConfig(epochs=2, batch_size=64, hidden=32, embed_dim=16, quiet=True)
        if blocks:
            cfg = dataclasses.replace(cfg, block_rows=16, shuffle_blocks=3)
        runs = {}
        for loader in ("memory", "stream"):
            c = dataclasses.replace(cfg, loader=loader)
            train_run(root, c, tmp_path / loader)
            runs[loader] = load_run(tmp_path / loader)
        mem, stream = runs["memory"], runs["stream"]
        assert mem.meta["loader"] == "memory" and stream.meta["loader"] == "stream"
        for m in mem.binder.modalities:
            assert torch.equal(mem.standardizer.mean[m], stream.standardizer.mean[m])
            assert torch.equal(mem.standardizer.std[m], stream.standardizer.std[m])
        a, b = mem.binder.state_dict(), stream.binder.state_dict()
        assert all(torch.equal(a[k], b[k]) for k in a)
        assert mem.meta["fingerprint"] == stream.meta["fingerprint"]
        assert mem.meta["fingerprint"].startswith("d2:")
        if blocks:
            return
        # embed into a folder streams block by block and equals the in-memory .npz
        small = embed_run(tmp_path / "stream", root, tmp_path / "e.npz")
        big = embed_run(tmp_path / "stream", root, tmp_path / "emb")
        assert sorted(small) == sorted(big)
        for k in small:
            np.testing.assert_array_equal(np.asarray(big[k]), small[k])
        with pytest.raises(CentrobindError, match="not an empty folder"):
            embed_run(tmp_path / "stream", root, tmp_path / "emb")

        def full(*a, **k):
            raise OSError(errno.ENOSPC, "No space left on device")

        monkeypatch.setattr(runs_module, "_new_npy", full)
        with pytest.raises(CentrobindError, match="no space left"):
            embed_run(tmp_path / "stream", root, tmp_path / "emb2")
        assert not (tmp_path / "emb2").exists()
        assert not [p for p in tmp_path.iterdir() if p.name.startswith(".emb2")]
        # evaluate reads a copy of the data (same digests) and refuses it once rows change
        copy = tmp_path / "copy"
        shutil.copytree(root, copy)
        assert evaluate_run(tmp_path / "stream", copy, write=False)["gallery"]["test"] > 0
        f = copy / "modalities" / f"{mem.binder.modalities[0]}.npy"
        x = np.load(f)
        np.save(f, x[::-1].copy())  # the same size, other rows
        with pytest.raises(CentrobindError, match="changed since its digests"):
            evaluate_run(tmp_path / "stream", copy, write=False)

    def test_auto_streams_when_memory_is_short(self, folder, monkeypatch):
        import centrobind.pipeline as pipeline

        disk = open_dataset(folder[0])
        cfg = TrainConfig()
        assert choose_loader(cfg, disk) == "memory"
        monkeypatch.setattr(pipeline, "memory_capacity", lambda device="cpu": disk.float32_bytes)
        assert choose_loader(cfg, disk) == "stream"
        assert choose_loader(dataclasses.replace(cfg, loader="memory"), disk) == "memory"


class TestCgroupLimit:
    def test_v1_and_v2_limits_of_the_process_cgroup_and_ancestors(self, tmp_path):
        from centrobind.memory import cgroup_limits

        root = tmp_path / "cg"
        (root / "job" / "step").mkdir(parents=True)
        (root / "job" / "memory.max").write_text(f"{2 << 30}\n")
        (root / "job" / "step" / "memory.max").write_text("max\n")
        proc = tmp_path / "cgroup"
        proc.write_text("0::/job/step\n")
        assert cgroup_limits(proc, root) == [2 << 30]
        v1 = tmp_path / "v1"
        (v1 / "memory" / "slurm" / "uid_0").mkdir(parents=True)
        (v1 / "memory" / "slurm" / "uid_0" / "memory.limit_in_bytes").write_text(f"{3 << 30}")
        proc.write_text("7:cpu:/other\n4:memory:/slurm/uid_0\n")
        assert cgroup_limits(proc, v1) == [3 << 30]
        proc.write_text("garbage\n")
        assert cgroup_limits(proc, v1) == []
