"""One gloo rank for ``test_objectives_distributed.py`` (a helper script, not a test module).

Run as ``python dist_worker_objectives.py RANK WORLD PORT OUT``: every objective case is
evaluated on this rank's slice of a fixed global batch, with gathering, and the losses, terms and
gradients are saved to ``OUT`` for the test to compare with a single process.
"""

from __future__ import annotations

import sys

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from centrobind.objectives import AllPairs, CentroBind, FixedAnchor, Gram, Symile

M, N_LOCAL, D, D_IN = 3, 5, 4, 6
DT = torch.float64


def global_inputs(world: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``z [M, world N_LOCAL, D]`` and a mask where rank 1 never has modality 2 and one sample of
    rank 0 has modality 0 only."""
    g = torch.Generator().manual_seed(0)
    N = world * N_LOCAL
    z = F.normalize(torch.randn(M, N, D, generator=g, dtype=DT), dim=-1)
    mask = torch.rand(M, N, generator=g) < 0.75
    mask[:, :2] = True
    mask[:, N_LOCAL + 1] = True
    mask[2, N_LOCAL : 2 * N_LOCAL] = False  # rank 1: no complete sample, modality 2 absent
    mask[0, 3], mask[1:, 3] = True, False  # rank 0: a sample with modality 0 only
    mask[0, N_LOCAL + 2 : N_LOCAL + 4] = True
    mask[1, N_LOCAL + 2 : N_LOCAL + 4] = True
    return z, mask


def cases() -> dict:
    return {
        "centrobind": lambda: CentroBind(),  # the default: self_weight 0.25
        "centrobind_full": lambda: CentroBind(centroid="full"),
        "centrobind_full_learned": lambda: CentroBind(
            centroid="full", weights="learned", num_modalities=M
        ),
        "centrobind_grad_norm_chunk": lambda: CentroBind(
            detach_anchor=False, normalize_anchor=True, chunk_size=3
        ),
        "centrobind_learned": lambda: CentroBind(weights="learned", num_modalities=M),
        "centrobind_loo": lambda: CentroBind(centroid="leave_one_out"),
        "centrobind_loo_learned_grad_norm_chunk": lambda: CentroBind(
            centroid="leave_one_out",
            weights="learned",
            num_modalities=M,
            detach_anchor=False,
            normalize_anchor=True,
            chunk_size=2,
        ),
        "centrobind_loo_fixed": lambda: CentroBind(centroid="leave_one_out", weights=[0, 1, 2]),
        "fixed_anchor": lambda: FixedAnchor(anchor=1),
        "all_pairs_chunk": lambda: AllPairs(chunk_size=2),
        "symile_n": lambda: Symile("n", generator=torch.Generator().manual_seed(7)),
        "symile_n_squared": lambda: Symile("n_squared"),
        "gram0": lambda: Gram(anchor=0),
        "gram2": lambda: Gram(anchor=2),
    }


def run_case(obj: nn.Module, z: torch.Tensor, mask: torch.Tensor | None) -> dict:
    obj = obj.double()
    with torch.no_grad():  # non-trivial learned weights
        for p in obj.parameters():
            p.copy_(torch.linspace(-0.5, 0.7, p.numel(), dtype=p.dtype).view_as(p))
    z = z.clone().requires_grad_()
    s = torch.tensor(3.0, dtype=DT, requires_grad=True)
    out = obj(z, s, mask=mask)
    out.loss.backward()
    return {
        "loss": out.loss.detach(),
        "terms": {k: v.detach() for k, v in out.terms.items()},
        "grad_z": z.grad,
        "grad_s": s.grad,
        "params": {k: p.grad for k, p in obj.named_parameters()},
    }


class Encoder(nn.Module):
    """A linear encoder per modality plus a learnable log logit scale (what DDP wraps)."""

    def __init__(self) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(1)
        self.w = nn.Parameter(torch.randn(M, D_IN, D, generator=g, dtype=DT))
        self.log_s = nn.Parameter(torch.tensor(1.0, dtype=DT))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return F.normalize(torch.einsum("mni,mid->mnd", x, self.w), dim=-1), self.log_s.exp()


def ddp_inputs(world: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(2)
    return torch.randn(M, world * N_LOCAL, D_IN, generator=g, dtype=DT)


def ddp_step(model: nn.Module, x: torch.Tensor, mask: torch.Tensor | None) -> dict:
    z, s = model(x)
    loss = CentroBind(detach_anchor=False)(z, s, mask=mask).loss
    loss.backward()
    return {k: p.grad.clone() for k, p in model.named_parameters()}


def main(rank: int, world: int, port: int, out: str) -> None:
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world
    )
    z, mask = global_inputs(world)
    sl = slice(rank * N_LOCAL, (rank + 1) * N_LOCAL)
    results: dict = {}
    for name, make in cases().items():
        for masked in (False, True):
            results[(name, masked)] = run_case(make(), z[:, sl], mask[:, sl] if masked else None)
    results["no_gather"] = run_case(CentroBind(gather=False), z[:, sl], mask[:, sl])
    for masked in (False, True):
        model = nn.parallel.DistributedDataParallel(Encoder())
        m = mask[:, sl] if masked else None
        results[("ddp", masked)] = {
            k.removeprefix("module."): v
            for k, v in ddp_step(model, ddp_inputs(world)[:, sl], m).items()
        }
    torch.save(results, out)
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4])
