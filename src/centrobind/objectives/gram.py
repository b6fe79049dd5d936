"""GRAM (Cicchetti et al., ICLR 2025): contrast by the volume spanned by all the modalities.

For anchor sample ``i`` and candidate sample ``j``, ``V_ij = sqrt(det G_ij)`` where ``G_ij`` is the
``M x M`` Gram matrix of ``z_anchor,i`` and ``z_m,j`` for every other ``m``; logits ``-s V``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .base import Batch, Objective, ScoreFn, complete_samples, resolve_modality
from .infonce import row_cross_entropy

__all__ = ["Gram", "adjugate_det", "gram_pair_scores", "gram_volumes"]


def gram_pair_scores(q: Tensor, g: Tensor) -> Tensor:
    """GRAM's pairwise score: minus the area spanned by two unit vectors, ``-sqrt(1 - cos^2)``,
    ranks exactly as ``cos^2``: ``[c, D] x [g, D] -> [c, g]``."""
    return (q @ g.T) ** 2


def adjugate_det(B: Tensor) -> tuple[Tensor, Tensor]:
    """Adjugate and determinant of a batch of small square matrices, with finite gradients.

    ``adj(B) = det(B) B^{-1}`` computed from cofactors (closed form up to ``3 x 3``, batched
    ``torch.linalg.det`` of the ``(L-1) x (L-1)`` minors beyond), so it is defined and smooth for
    singular ``B``; ``det(B) = sum_c B_0c C_0c``.

    Args:
        B: ``[..., L, L]``.

    Returns:
        ``(adj [..., L, L], det [...])``.

    Example:
        >>> adj, det = adjugate_det(torch.tensor([[2., 1.], [1., 1.]]))
        >>> adj, det
        (tensor([[ 1., -1.],
                [-1.,  2.]]), tensor(1.))
    """
    L = B.shape[-1]
    if L == 1:
        return torch.ones_like(B), B[..., 0, 0]
    if L == 2:
        a, b, c, d = B[..., 0, 0], B[..., 0, 1], B[..., 1, 0], B[..., 1, 1]
        adj = torch.stack([torch.stack([d, -b], -1), torch.stack([-c, a], -1)], -2)
        return adj, a * d - b * c
    keep = [[k for k in range(L) if k != r] for r in range(L)]
    idx = torch.tensor(keep, device=B.device)  # [L, L-1]
    # minors[..., r, c, :, :] = B without row r and column c
    minors = B[..., idx[:, None, :, None], idx[None, :, None, :]]  # [..., L, L, L-1, L-1]
    if L == 3:
        md = minors[..., 0, 0] * minors[..., 1, 1] - minors[..., 0, 1] * minors[..., 1, 0]
    else:
        md = torch.linalg.det(minors)
    sign = torch.tensor(
        [[(-1.0) ** (r + c) for c in range(L)] for r in range(L)], dtype=B.dtype, device=B.device
    )
    cof = md * sign
    det = (B[..., 0, :] * cof[..., 0, :]).sum(-1)
    return cof.transpose(-1, -2), det


def gram_volumes(anchor: Tensor, others: Tensor, eps: float = 1e-6) -> Tensor:
    """Volumes ``V_ij = sqrt(max(det G_ij, eps))`` between anchors and candidate tuples.

    ``G_ij`` is the Gram matrix of ``(u_i, v_1j, ..., v_Lj)`` with ``u = anchor``,
    ``v_l = others[l]``. With ``B_j = V_j V_j^T`` (the candidate block, independent of ``i``) and
    ``a_ij = V_j u_i`` the Schur complement gives
    ``det G_ij = det(B_j) (u_i . u_i) - a_ij^T adj(B_j) a_ij``, i.e. ``L`` matmuls ``[na, D] x
    [D, nc]`` plus ``O(na nc L^2)`` elementwise work, never an ``[na, nc, M, M]`` tensor. The
    adjugate form stays finite when ``B_j`` is singular. ``det`` is clamped at ``eps`` before the
    square root (gradient 0 below it), so gradients stay finite for (nearly) collinear vectors.
    For ``L = 1``: ``V_ij = sqrt(|u_i|^2 |v_j|^2 - (u_i . v_j)^2)`` (``sqrt(1 - cos^2)`` for unit
    vectors).

    Args:
        anchor: ``[na, D]``.
        others: ``[L, nc, D]``, ``L = M - 1 >= 1``.
        eps: clamp of the determinant.

    Returns:
        ``[na, nc]``.

    Example:
        >>> u = torch.tensor([[1., 0.]]); v = torch.tensor([[[0., 1.], [1., 0.]]])
        >>> gram_volumes(u, v, eps=0.0)
        tensor([[1., 0.]])
    """
    L, nc, D = others.shape
    na = anchor.shape[0]
    C = others.transpose(0, 1)  # [nc, L, D]
    A = torch.mm(C.reshape(nc * L, D), anchor.t()).view(nc, L, na)  # a_ij: [j, l, i]
    adj, det = adjugate_det(torch.matmul(C, C.transpose(1, 2)))  # [nc, L, L], [nc]
    if L == 1:
        q = A[:, 0].square()
    else:
        q = (torch.matmul(adj, A) * A).sum(1)  # [nc, na]
    uu = (anchor * anchor).sum(-1)  # [na]
    detg = det[:, None] * uu[None, :] - q  # [nc, na]
    return detg.clamp_min(eps).sqrt().t()


class Gram(Objective):
    """GRAM objective: volume-based contrast of an anchor modality against all the others jointly.

    ``V_ij = sqrt(det G_ij)``, ``G_ij`` = Gram matrix of ``z_k,i`` (anchor ``k``) and ``z_m,j``
    for every ``m != k`` (``M x M``); ``logits = -s V``. Two terms: ``"k->rest"`` =
    ``mean_i CE(logits_i., i)`` (anchor sample against candidate tuples) and ``"rest->k"`` =
    ``mean_j CE(logits_.j, j)`` (candidate tuple against anchor samples); ``loss`` = their mean.
    Only samples with all ``M`` modalities present count. Volumes come from
    :func:`gram_volumes` (Schur complement / adjugate, ``M - 1`` matmuls, any ``M >= 2``); with
    ``M = 2``, ``V_ij = sqrt(1 - cos^2(z_k,i, z_m,j))``.

    Args:
        anchor: the anchor modality: an index or, for dict input, a name.
        eps: clamp of ``det G`` before the square root (``V >= sqrt(eps)``).
        gather: compute against the batch gathered over ``torch.distributed`` ranks (two
            ``[n, W n]`` volume matrices per rank: local anchors vs global candidates and global
            anchors vs local candidates).

    Shapes: ``z [M, N, D]`` (or dict), ``mask [M, N]`` -> ``loss []``.

    Example:
        >>> import torch.nn.functional as F
        >>> z = F.normalize(torch.randn(3, 16, 8), dim=-1)
        >>> sorted(Gram(anchor=1)(z, 10.0).terms)
        ['1->rest', 'rest->1']
    """

    takes_anchor = True

    @classmethod
    def pair_score_fn(cls) -> ScoreFn | None:
        return gram_pair_scores

    @classmethod
    def leave_one_out_query(cls, others: Tensor) -> tuple[Tensor, ScoreFn | None] | None:
        """The candidate whose parallelotope with the other ``M-1`` embeddings has the smallest
        volume. ``det G = det(B) (1 - ||P z||^2)`` with ``B`` the others' Gram matrix and ``P``
        the projection onto their span, so the ranking is by ``||P z_j||^2 = sum_k (q_k . z_j)^2``
        over an orthonormal basis ``q_k`` of that span: queries ``[N, (M-1) D]`` (the bases)."""
        stacked = others.permute(1, 2, 0)  # [N, D, M-1]
        basis = torch.linalg.qr(stacked.double())[0].to(stacked.dtype)  # [N, D, M-1]
        k = basis.shape[2]
        queries = basis.transpose(1, 2).reshape(basis.shape[0], -1)  # [N, (M-1) D]

        def score(qb: Tensor, g: Tensor) -> Tensor:
            return (torch.einsum("ckd,gd->ckg", qb.view(qb.shape[0], k, -1), g) ** 2).sum(1)

        return queries, score

    requires_all_modalities = True

    @classmethod
    def default_logit_scale(cls, num_modalities: int, embed_dim: int) -> float:
        """``s = 14``: chosen by the scale research before the committed benchmark. In it
        (``docs/benchmark``, mean validation shortfall from each setting's best scale on mfeat and
        the synthetic clean and weak-anchor settings, seed 0) 14 is 1.75 val R@1 points short and
        20 is 1.58; the benchmark picks each setting's scale on the grid anyway."""
        return 14.0

    def __init__(self, anchor: int | str = 0, eps: float = 1e-6, gather: bool = True) -> None:
        super().__init__(gather)
        self.anchor = anchor
        self.eps = float(eps)

    def _terms(self, batch: Batch) -> dict[str, Tensor]:
        s, names = batch.s, batch.names
        M = batch.z.shape[0]
        k = resolve_modality(self.anchor, batch.names)
        others = [m for m in range(M) if m != k]
        zr, zc, offset, scale = complete_samples(batch)
        nl, ng = zr.shape[1], zc.shape[1]
        if ng < 2:
            return {}
        target = torch.arange(nl, device=zr.device) + offset
        logits = gram_volumes(zr[k], zc[others], self.eps) * -s  # local anchors, all candidates
        # local candidates vs all anchors; on one rank (columns = rows) the same matrix
        logits_t = logits.t() if zc is zr else gram_volumes(zc[k], zr[others], self.eps).t() * -s
        name = names[k]
        return {
            f"{name}->rest": row_cross_entropy(logits, target, scale),
            f"rest->{name}": row_cross_entropy(logits_t, target, scale),
        }

    def extra_repr(self) -> str:
        return f"anchor={self.anchor!r}, eps={self.eps}"
