"""2 gloo ranks (DDP + gathered objectives) train exactly like one process on the same global
batches."""

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from safetensors.torch import load_file, save_file

from centrobind.data import make_synthetic
from centrobind.models import Binder
from centrobind.objectives import make_objective
from centrobind.train import TrainConfig, fit


def _setup(objective):
    ds = make_synthetic(
        n_samples=128,
        n_modalities=3,
        dims=[8, 6, 5],
        shared_dim=2,
        pair_dim=2,
        private_dim=2,
        seed=0,
    )
    ds = ds.with_missing(0.2, seed=3)  # masks must be gathered too
    cfg = TrainConfig(
        epochs=2,
        batch_size=32,
        embed_dim=8,
        hidden=16,
        warmup_steps=2,
        quiet=True,
        objective=objective,
    )
    torch.manual_seed(0)
    binder = Binder(ds.dims, embed_dim=8, hidden=16)
    return ds, cfg, binder


def _worker(rank, world, port, objective, path):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        ds, cfg, binder = _setup(objective)
        fit(binder, make_objective(objective), ds, None, cfg)
        if rank == 0:
            save_file({k: v.contiguous() for k, v in binder.state_dict().items()}, path)
    finally:
        dist.destroy_process_group()


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("objective", ["centrobind", "all_pairs"])
def test_two_ranks_match_single_process(tmp_path, objective):
    path = str(tmp_path / "ddp.safetensors")
    mp.spawn(_worker, args=(2, _free_port(), objective, path), nprocs=2, join=True)
    ds, cfg, binder = _setup(objective)
    before = {k: v.clone() for k, v in binder.state_dict().items()}
    fit(binder, make_objective(objective), ds, None, cfg)
    ddp = load_file(path)
    moved = 0.0
    for k, v in binder.state_dict().items():
        assert torch.allclose(v, ddp[k], atol=2e-5, rtol=1e-4), k
        moved = max(moved, float((v - before[k]).abs().max()))
    assert moved > 1e-3  # training really changed the weights


def test_two_nodes_stream_through_the_cli_like_one_process(tmp_path):
    """`torchrun --nnodes 2 --nproc-per-node 1` (two agents, c10d rendezvous on localhost, gloo),
    streaming from disk: each rank reads its share of every global batch, and the run equals a
    one-process run on the same global batches."""
    import subprocess
    import sys

    from centrobind.data import save_dataset

    ds = make_synthetic(n_samples=256, n_modalities=3, dims=8, seed=0).with_missing(0.2, seed=1)
    data = save_dataset(ds, tmp_path / "data")
    flags = ["--epochs", "2", "--batch-size", "32", "--hidden", "16", "--embed-dim", "8"]
    flags += ["--loader", "stream", "--block-rows", "16", "--shuffle-blocks", "2", "--quiet"]
    train = ["-m", "centrobind.cli", "train", "--data", str(data)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    port = _free_port()
    nodes = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "torch.distributed.run",
                "--nnodes",
                "2",
                "--nproc-per-node",
                "1",
                "--rdzv-backend",
                "c10d",
                "--rdzv-endpoint",
                f"127.0.0.1:{port}",
                "--rdzv-id",
                "cbtest",
                *train,
                "--out",
                str(tmp_path / "ddp"),
                *flags,
            ],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=240)[0] for p in nodes]
    assert all(p.returncode == 0 for p in nodes), outs
    one = subprocess.run(
        [sys.executable, *train, "--out", str(tmp_path / "one"), *flags],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert one.returncode == 0, one.stderr
    a = load_file(tmp_path / "ddp" / "model.safetensors")
    b = load_file(tmp_path / "one" / "model.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.allclose(a[k], b[k], atol=2e-5, rtol=1e-4), k
