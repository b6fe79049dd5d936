"""Gathering embeddings over ``torch.distributed`` ranks, with gradient.

When ``torch.distributed`` is initialised with world size ``W > 1`` and an objective has
``gather=True`` (the default), it scores against the *global* batch, open_clip "local loss" style:

* every rank gathers the embeddings ``[M, n, D]`` (and masks) of all ranks into ``[M, W n, D]``
  (rank ``r``'s samples occupy slots ``r n .. (r+1) n - 1``). The gather is an autograd function
  whose backward **all-reduces (sums)** the gradient of the gathered tensor and keeps this rank's
  slice, so each rank receives the gradient that *every* rank's loss sends to its samples;
* the rows of each term are this rank's samples, the columns are global (labels offset by
  ``r n``); the symmetric InfoNCE's second direction uses this rank's ``b`` rows against the global
  ``a`` (two ``[n, W n]`` logit matrices per term);
* rank ``r``'s term value is ``L_r = (W / n_valid_global) * sum_{i local, valid} loss_i``, so
  ``mean_r L_r`` equals the single-process term on the concatenated batch (also with masks: the
  valid count is global). Term presence (>= 2 valid samples) is decided on global counts, so every
  rank has the same terms.

Gradient convention (what makes DDP exact): after ``backward`` the gradient of rank ``r``'s local
embeddings is ``sum_r' dL_r'/dz_r = W * dL_single/dz_r``; DDP *averages* parameter gradients over
ranks, which divides by ``W`` again, so every parameter receives exactly the single-process
gradient ``dL_single/dtheta``. A replicated ``logit_scale`` gets ``dL_r/ds`` on rank ``r`` whose
rank average is ``dL_single/ds``. Do not divide the loss by ``W`` yourself.

Assumes equal local batch sizes on every rank (checked; a ``ValueError`` otherwise). Every rank
must call the objective and ``backward`` (the backward runs a collective).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor

from ..distributed import rank_and_world

__all__ = [
    "DistInfo",
    "all_gather_no_grad",
    "all_gather_with_grad",
    "broadcast_",
    "check_equal_sizes",
    "dist_info",
]


@dataclass(frozen=True)
class DistInfo:
    """World size ``W`` and this process's rank in the default process group."""

    world_size: int
    rank: int
    group: Any = None


def dist_info(gather: bool = True) -> DistInfo | None:
    """The distributed context to gather over, or None (not requested, not initialised, ``W = 1``).

    Example:
        >>> dist_info() is None  # plain single process
        True
    """
    rank, world = rank_and_world()
    if not gather or world <= 1:
        return None
    return DistInfo(world, rank)


class _AllGatherWithGrad(torch.autograd.Function):
    """``cat(all_gather(x), dim)``; backward: all-reduce (sum) the gradient, keep local slice."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, dim: int, world: int, rank: int, group: Any) -> Tensor:
        x = x.contiguous()
        parts = [torch.empty_like(x) for _ in range(world)]
        dist.all_gather(parts, x, group=group)
        ctx.dim, ctx.rank, ctx.n, ctx.group = dim, rank, x.shape[dim], group
        return torch.cat(parts, dim)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None, None, None, None]:
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM, group=ctx.group)
        return grad.narrow(ctx.dim, ctx.rank * ctx.n, ctx.n), None, None, None, None


def all_gather_with_grad(x: Tensor, dim: int, info: DistInfo) -> Tensor:
    """Concatenate ``x`` from all ranks along ``dim``, differentiably.

    Shapes: ``x [..., n, ...]`` -> ``[..., W n, ...]`` (rank ``r`` at ``r n .. (r+1) n - 1``).
    The backward sums the incoming gradient over ranks (all-reduce) and returns this rank's slice,
    i.e. ``d(sum_r L_r)/dx``. Needs an initialised process group (see :func:`dist_info`).

    Example (inside an initialised 2-process group)::

        zg = all_gather_with_grad(z, 1, dist_info())   # [M, n, D] -> [M, 2n, D]
    """
    # torch leaves ``Function.apply`` unannotated (an untyped classmethod returning Any).
    out: Tensor = _AllGatherWithGrad.apply(  # type: ignore[no-untyped-call]
        x, dim, info.world_size, info.rank, info.group
    )
    return out


def all_gather_no_grad(x: Tensor, dim: int, info: DistInfo) -> Tensor:
    """Concatenate ``x`` (no gradient) from all ranks along ``dim``; bool tensors allowed.

    Example (inside an initialised group): ``mask_g = all_gather_no_grad(mask, 1, info)``.
    """
    is_bool = x.dtype == torch.bool
    y = (x.to(torch.uint8) if is_bool else x.detach()).contiguous()
    parts = [torch.empty_like(y) for _ in range(info.world_size)]
    dist.all_gather(parts, y, group=info.group)
    out = torch.cat(parts, dim)
    return out.bool() if is_bool else out


def check_equal_sizes(n: int, device: torch.device, info: DistInfo) -> None:
    """Raise ``ValueError`` unless every rank has the same local batch size ``n``.

    Example (inside an initialised group): ``check_equal_sizes(z.shape[1], z.device, info)``.
    """
    sizes = all_gather_no_grad(torch.tensor([n], dtype=torch.long, device=device), 0, info)
    if bool((sizes != n).any()):
        raise ValueError(
            f"gathering objectives need the same local batch size on every rank; got "
            f"{sizes.tolist()} (drop the last incomplete batch or use gather=False)"
        )


def broadcast_(x: Tensor, info: DistInfo | None, src: int = 0) -> Tensor:
    """In-place broadcast of ``x`` from rank ``src`` to all ranks (returns ``x``); the identity
    on one rank (``info`` None).

    Example (inside an initialised group): ``broadcast_(perms, info)``.
    """
    if info is not None:
        dist.broadcast(x, src=src, group=info.group)
    return x
