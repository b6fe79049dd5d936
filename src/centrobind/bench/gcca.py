"""Linear MAX-VAR generalised CCA (Carroll 1968; Kettenring 1971): the closed-form "shared
centroid" reference.

MAX-VAR finds a shared representation ``G`` (``[N, k]``, orthonormal columns) maximising
``sum_m ||P_m G||_F^2`` with ``P_m`` the (ridge-regularised) projection onto view m's column space.
With ``X_m = U_m S_m V_m^T``, ``P_m = U_m diag(s^2 / (s^2 + r)) U_m^T``, so ``G`` is the top-k left
singular vectors of the concatenation ``[U_1 T_1^{1/2}, ..., U_M T_M^{1/2}]`` (``T_m`` the shrinkage
factors): never an N x N matrix. Each view then maps to the shared space with its ridge
regression onto ``G``: ``W_m = (X_m^T X_m + r I)^{-1} X_m^T G``.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["GCCA"]


class GCCA:
    """Fit on complete, centred (e.g. standardised) views; ``transform`` any rows.

    Args:
        k: dimension of the shared space.
        reg: ridge ``r`` relative to each view's largest squared singular value.

    Example:
        >>> x = {"a": torch.randn(50, 5), "b": torch.randn(50, 3)}
        >>> emb = GCCA(k=2).fit(x).transform(x)
        >>> tuple(emb["a"].shape)
        (50, 2)
    """

    def __init__(self, k: int = 64, reg: float = 1e-3) -> None:
        self.k, self.reg = k, reg
        self.weights: dict[str, Tensor] = {}
        self.means: dict[str, Tensor] = {}

    def fit(self, views: Mapping[str, Tensor]) -> GCCA:
        """``views``: modality -> ``[N, D_m]`` (same N, all rows present)."""
        blocks, svds = [], {}
        for m, x in views.items():
            x = x.double()
            self.means[m] = x.mean(0)
            xc = x - self.means[m]
            u, s, vh = torch.linalg.svd(xc, full_matrices=False)
            r = self.reg * float(s[0] ** 2)
            keep = s > s[0] * 1e-8
            u, s, vh = u[:, keep], s[keep], vh[keep]
            svds[m] = (u, s, vh, r)
            blocks.append(u * (s**2 / (s**2 + r)).sqrt())
        big = torch.cat(blocks, dim=1)
        k = min(self.k, big.shape[1], big.shape[0])
        g = torch.linalg.svd(big, full_matrices=False)[0][:, :k]
        for m, (u, s, vh, r) in svds.items():
            # W = V diag(s / (s^2 + r)) U^T G  ==  (X^T X + r I)^{-1} X^T G
            self.weights[m] = (vh.T * (s / (s**2 + r))) @ (u.T @ g)
        return self

    def transform(self, views: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """modality -> L2-normalised ``[N, k]`` float32 embeddings."""
        return {
            m: F.normalize(((x.double() - self.means[m]) @ self.weights[m]).float(), dim=-1)
            for m, x in views.items()
            if m in self.weights
        }
