"""Gathering objectives on 2 gloo ranks (CPU) equal a single process on the concatenated batch.

Convention checked (see ``centrobind.objectives.distributed``): the mean over ranks of the
per-rank losses / terms equals the single-process value; the gradient of each rank's local
embeddings is ``W`` times the single-process gradient of those rows (so DDP's averaging gives the
exact gradient); a replicated parameter's (logit scale, learned weights) rank-mean gradient equals
the single-process one; and a real DDP model ends with exactly the single-process gradients.
"""

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

from centrobind.objectives import CentroBind
from dist_worker_objectives import (
    N_LOCAL,
    Encoder,
    cases,
    ddp_inputs,
    ddp_step,
    global_inputs,
    run_case,
)

WORLD = 2
ATOL = 1e-6


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def rank_results(tmp_path_factory):
    if not dist.is_available():
        pytest.skip("torch.distributed unavailable")
    tmp = tmp_path_factory.mktemp("dist")
    worker = Path(__file__).with_name("dist_worker_objectives.py")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for attempt in range(2):  # a port taken between probing and binding: retry once
        port = _free_port()
        procs = [
            subprocess.Popen(
                [
                    sys.executable,
                    str(worker),
                    str(r),
                    str(WORLD),
                    str(port),
                    str(tmp / f"rank{r}.pt"),
                ],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
            for r in range(WORLD)
        ]
        logs = []
        try:
            for p in procs:
                logs.append(p.communicate(timeout=120)[0])
        finally:
            for p in procs:
                if p.poll() is None:
                    p.kill()
        if all(p.returncode == 0 for p in procs):
            break
        if attempt == 1 or "address already in use" not in "".join(logs).lower():
            pytest.fail("distributed worker failed:\n" + "\n".join(logs))
    return [torch.load(tmp / f"rank{r}.pt", weights_only=False) for r in range(WORLD)]


def _close(a, b, what):
    torch.testing.assert_close(a, b, atol=ATOL, rtol=0, msg=lambda m: f"{what}: {m}")


@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("name", list(cases()))
def test_gathered_objective_equals_single_process(rank_results, name, masked):
    z, mask = global_inputs(WORLD)
    single = run_case(cases()[name](), z, mask if masked else None)
    ranks = [r[(name, masked)] for r in rank_results]
    _close(sum(r["loss"] for r in ranks) / WORLD, single["loss"], "loss")
    for r in ranks:
        assert set(r["terms"]) == set(single["terms"])
    for k, v in single["terms"].items():
        _close(sum(r["terms"][k] for r in ranks) / WORLD, v, f"term {k}")
    # each rank's local embedding gradient = W x the single-process gradient of those rows
    _close(torch.cat([r["grad_z"] for r in ranks], 1), WORLD * single["grad_z"], "grad z")
    _close(sum(r["grad_s"] for r in ranks) / WORLD, single["grad_s"], "grad s")
    for k, g in single["params"].items():
        _close(sum(r["params"][k] for r in ranks) / WORLD, g, f"grad {k}")


def test_masked_case_has_a_rank_without_complete_samples(rank_results):
    _, mask = global_inputs(WORLD)
    assert not mask[:, N_LOCAL:].all(0).any()  # rank 1 contributes no Symile/GRAM rows
    assert mask[:, :N_LOCAL].all(0).sum() >= 2


@pytest.mark.parametrize("masked", [False, True])
def test_ddp_gradients_equal_single_process(rank_results, masked):
    _, mask = global_inputs(WORLD)
    single = ddp_step(Encoder(), ddp_inputs(WORLD), mask if masked else None)
    for r in rank_results:
        for k, g in single.items():
            _close(r[("ddp", masked)][k], g, f"DDP grad {k}")


def test_without_gather_each_rank_uses_its_local_batch(rank_results):
    z, mask = global_inputs(WORLD)
    for rank, r in enumerate(rank_results):
        sl = slice(rank * N_LOCAL, (rank + 1) * N_LOCAL)
        local = run_case(CentroBind(), z[:, sl], mask[:, sl])
        _close(r["no_gather"]["loss"], local["loss"], "local loss")
        _close(r["no_gather"]["grad_z"], local["grad_z"], "local grad")
