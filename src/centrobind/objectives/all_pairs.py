"""All-pairs binding (CMC's full graph): symmetric InfoNCE between every pair of modalities.

``loss = mean_{a < b} nce_sym(z_a, z_b)`` over the pairs with >= 2 samples having both modalities.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from .base import Batch, Objective, gather_batch
from .infonce import symmetric_infonce, symmetric_infonce_global

__all__ = ["AllPairs", "pair_terms"]


def pair_terms(batch: Batch, pairs: Sequence[tuple[int, int]], chunk_size: int | None = None
               ) -> dict[str, Tensor]:
    """``nce_sym(z_i, z_j)`` for each pair ``(i, j)``, batched through the fused kernel.

    A pair uses the samples where both modalities are present (rows and columns); pairs with fewer
    than 2 such samples (globally, under ``torch.distributed``) are left out.

    Args:
        batch: normalised inputs (``z [M, N, D]``, ``s``, ``mask [M, N]`` or None, names).
        pairs: ``(i, j)`` modality index pairs; the term is named ``"{name_i}-{name_j}"``.
        chunk_size: row-block size of the kernel (memory bound), see
            :func:`~centrobind.objectives.infonce.symmetric_infonce`.

    Returns:
        name -> 0-dim loss (this rank's share under ``torch.distributed``).

    Example:
        >>> import torch.nn.functional as F
        >>> z = F.normalize(torch.randn(3, 8, 4), dim=-1)
        >>> sorted(pair_terms(Batch(z, torch.tensor(5.0), None, ["a", "b", "c"]), [(0, 1), (0, 2)]))
        ['a-b', 'a-c']
    """
    z, s, mask = batch.z, batch.s, batch.mask
    N = z.shape[1]
    ia = [i for i, _ in pairs]
    ib = [j for _, j in pairs]
    if batch.dist is None:
        valid = None if mask is None else mask[ia] & mask[ib]
        counts = [N] * len(pairs) if valid is None else valid.sum(1).tolist()
    else:
        zg, mask_loc, mask_g, offset = gather_batch(batch)
        valid_g = mask_g[ia] & mask_g[ib]
        counts = valid_g.sum(1).tolist()
    keep = [t for t, c in enumerate(counts) if c >= 2]
    if not keep:
        return {}
    ka = [ia[t] for t in keep]
    kb = [ib[t] for t in keep]

    def pick(x: Tensor, idx: list[int]) -> Tensor:
        # a shared modality (fixed anchor) is broadcast as [1, N, D] instead of copied
        return x[idx[0]][None] if len(set(idx)) == 1 else x[idx]

    if batch.dist is None:
        losses = symmetric_infonce(pick(z, ka), pick(z, kb), s,
                                   None if valid is None else valid[keep], chunk_size)
    else:
        world = batch.dist.world_size
        cnt = torch.tensor([counts[t] for t in keep], dtype=z.dtype, device=z.device)
        weight = (mask_loc[ka] & mask_loc[kb]).to(z.dtype) * (world / cnt)[:, None]
        losses = symmetric_infonce_global(pick(z, ka), pick(z, kb), pick(zg, ka), pick(zg, kb), s,
                                          weight, valid_g[keep], offset, chunk_size)
    names = batch.names
    return {
        f"{names[i]}-{names[j]}": losses[t]
        for t, (i, j) in enumerate(zip(ka, kb, strict=True))
    }


class AllPairs(Objective):
    """CMC full-graph objective: mean of ``nce_sym(z_a, z_b)`` over all modality pairs ``a < b``.

    ``loss = mean_{a<b} nce_sym(z_a, z_b)``, ``nce_sym(a, b) = (nce(a, b) + nce(b, a)) / 2``,
    ``nce(a, b) = mean_i CE(s a_i . b_j over j, target i)``; terms ``"a-b"``. ``M (M - 1) / 2``
    terms, so the cost grows quadratically with ``M``. With ``M = 2`` it is the CLIP loss.

    Args:
        chunk_size: row-block size of the InfoNCE kernel (bounds memory to ``~2 chunk_size N``).
        gather: compute against the batch gathered over ``torch.distributed`` ranks.

    Shapes: ``z [M, N, D]`` (or dict), ``mask [M, N]`` -> ``loss []``.

    Example:
        >>> import torch.nn.functional as F
        >>> z = F.normalize(torch.randn(3, 16, 8), dim=-1)
        >>> out = AllPairs()(z, 10.0)
        >>> sorted(out.terms), out.loss.shape
        (['0-1', '0-2', '1-2'], torch.Size([]))
    """

    supports_chunking = True

    def __init__(self, chunk_size: int | None = None, gather: bool = True) -> None:
        super().__init__(gather)
        self.chunk_size = chunk_size

    def _terms(self, batch: Batch) -> dict[str, Tensor]:
        M = batch.z.shape[0]
        return pair_terms(batch, [(a, b) for a in range(M) for b in range(a + 1, M)],
                          self.chunk_size)
