"""CentroBind: bind every modality to a per-sample centroid of the present modalities.

``centroid="full"`` (the paper's form): ``c_n = sum_m w_m z_mn / sum_m w_m`` over the modalities
present for sample ``n``, ``loss = mean_m nce_sym(c, z_m)``.
``centroid="leave_one_out"``: term ``m`` uses the centroid of the *other* present modalities,
``c_{-m} = (sum_k w_k z_k - w_m z_m) / (sum_k w_k - w_m)``, so no positive logit contains the
modality's similarity with itself.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .base import Batch, Objective, gather_batch, select_terms
from .infonce import symmetric_infonce

__all__ = ["CentroBind", "anchor_valid", "centroid_anchor"]


def centroid_anchor(z: Tensor, mask: Tensor | None, weights: Tensor | None = None,
                    normalize: bool = False, leave_one_out: bool = False) -> Tensor:
    """Weighted per-sample centroid of the present modalities (or of the others, per modality).

    ``c_n = sum_m w_m mask_mn z_mn / sum_m w_m mask_mn``; with ``leave_one_out`` one anchor per
    modality, ``c_mn = (sum_k w_k mask_kn z_kn - w_m mask_mn z_mn) / (sum_k w_k mask_kn -
    w_m mask_mn)``. 0 where the denominator is 0 (no present modality, or none but ``m``); then
    ``c / ||c||`` when ``normalize``.

    Args:
        z: ``[M, N, D]`` embeddings (absent rows must be finite, e.g. zeroed).
        mask: ``[M, N]`` bool or None (all present).
        weights: ``[M]`` non-negative weights, None for uniform.
        normalize: L2-normalise the centroid.
        leave_one_out: the anchor of modality ``m`` leaves ``m`` out.

    Returns:
        ``[N, D]``, or ``[M, N, D]`` with ``leave_one_out``.

    Example:
        >>> z = torch.tensor([[[1., 0.]], [[0., 1.]], [[5., 5.]]])   # M=3, N=1, D=2
        >>> centroid_anchor(z, torch.tensor([[True], [True], [False]]))
        tensor([[0.5000, 0.5000]])
        >>> centroid_anchor(z, None, leave_one_out=True)[:, 0]
        tensor([[2.5000, 3.0000],
                [3.0000, 2.5000],
                [0.5000, 0.5000]])
    """
    M, N, _ = z.shape
    w = z.new_ones(M) if weights is None else weights.to(z.dtype)
    mw = w[:, None].expand(M, N) if mask is None else w[:, None] * mask.to(z.dtype)  # [M, N]
    num = torch.einsum("mn,mnd->nd", mw, z)  # [N, D]
    den = mw.sum(0)  # [N]
    if leave_one_out:
        num = num[None] - mw[..., None] * z  # [M, N, D]
        den = den[None] - mw  # [M, N]
    c = num / torch.where(den > 0, den, torch.ones_like(den))[..., None]
    return F.normalize(c, dim=-1) if normalize else c


def anchor_valid(mask: Tensor | None, weights: Tensor | None, leave_one_out: bool,
                 num_samples: int) -> Tensor | None:
    """``[M, N]`` bool: sample ``n`` has an anchor for modality ``m`` (None: every one has).

    Full centroid: ``m`` present. Leave-one-out: ``m`` present and at least one other present
    modality with a positive weight.

    Example:
        >>> anchor_valid(torch.tensor([[True, True], [True, False]]), None, True, 2)
        tensor([[ True, False],
                [ True, False]])
    """
    positive = None if weights is None or bool((weights > 0).all()) else weights > 0
    if not leave_one_out or (mask is None and positive is None):
        return mask
    if mask is None:
        assert weights is not None
        mask = torch.ones(weights.shape[0], num_samples, dtype=torch.bool,
                          device=weights.device)
    counted = mask if positive is None else mask & positive.to(mask.device)[:, None]
    others = counted.sum(0, keepdim=True) - counted.long()  # [M, N]
    return mask & (others > 0)


class CentroBind(Objective):
    """CentroBind: ``loss = mean_m nce_sym(c_m, z_m)`` with ``c_m`` a per-sample centroid.

    ``centroid="full"`` (the paper's form, the default): one anchor for every term,
    ``c_n = sum_{m present} w_m z_mn / sum_{m present} w_m``. ``centroid="leave_one_out"``: term
    ``m`` uses the centroid of the other present modalities, ``c_{-m} = (sum_k w_k z_k - w_m z_m)
    / (sum_k w_k - w_m)``; a sample whose only present modality is ``m`` has no anchor for ``m``
    and is left out of term ``m``. Anchors are L2-normalised when ``normalize_anchor``;
    ``nce_sym(c, z_m) = (nce(c, z_m) + nce(z_m, c)) / 2`` with
    ``nce(a, b) = mean_i CE(s a_i . b_j over j, target i)``; term ``"c-m"`` uses the samples where
    modality ``m`` (and its anchor) is present (rows and columns). ``M`` terms of one ``N x N``
    product each, either way, so the cost grows linearly with ``M`` (all-pairs quadratically).

    Defaults (``detach_anchor=True``, ``normalize_anchor=False``): a prototype measured the
    detached, unnormalised anchor best on retrieval and back-propagating through a normalised
    anchor worst; ``benchmarks/objectives.py`` and the project benchmark re-measure this. The
    detached anchor is also the cheapest (no gradient matmul for ``c``).

    Weights: ``None`` (uniform), ``M`` fixed non-negative floats, or ``"learned"``: ``M`` logits
    (an ``nn.Parameter`` initialised to 0, ``w = softmax(logits)``; needs ``num_modalities``).
    Learned weights act only through the anchor. With ``detach_anchor=True`` the *embeddings* are
    detached inside the anchor but the weights are not, so the logits still receive gradient (the
    anchor becomes the weighted mix that best matches every modality, while the encoders see a
    constant anchor); with ``detach_anchor=False`` both receive gradient.

    Args:
        detach_anchor: stop the gradient through the embeddings that form the anchor.
        normalize_anchor: L2-normalise the anchor.
        weights: None, a sequence of ``M`` floats, or ``"learned"``.
        chunk_size: row-block size of the InfoNCE kernel (peak extra memory ``~2 chunk_size N``
            floats; e.g. ``M=4, N=32768, D=512, chunk_size=4096`` stays well under 4 GB).
        gather: compute against the batch gathered over ``torch.distributed`` ranks (the anchor
            is computed per sample on its own rank, then gathered).
        num_modalities: ``M``; required with ``weights="learned"``, checked against ``z`` otherwise.
        centroid: ``"full"`` (the paper's centroid of all present modalities) or
            ``"leave_one_out"`` (per term, the centroid of the other present modalities).

    Shapes: ``z [M, N, D]`` (or dict), ``mask [M, N]`` -> ``loss []``; anchors ``[1, N, D]``
    (full) or ``[M, N, D]`` (leave-one-out).

    Example:
        >>> import torch.nn.functional as F
        >>> z = F.normalize(torch.randn(3, 16, 8), dim=-1)
        >>> out = CentroBind()(z, 10.0)
        >>> sorted(out.terms)
        ['c-0', 'c-1', 'c-2']
        >>> obj = CentroBind(weights="learned", num_modalities=3)
        >>> obj(z, 10.0).loss.backward(); obj.weight_logits.grad.shape
        torch.Size([3])
        >>> sorted(CentroBind(centroid="leave_one_out")(z, 10.0).terms)
        ['c-0', 'c-1', 'c-2']
    """

    supports_chunking = True

    @classmethod
    def needs_num_modalities(cls, options: Mapping[str, Any]) -> bool:
        return options.get("weights") == "learned"

    def __init__(
        self,
        detach_anchor: bool = True,
        normalize_anchor: bool = False,
        weights: Sequence[float] | str | None = None,
        chunk_size: int | None = None,
        gather: bool = True,
        num_modalities: int | None = None,
        centroid: str = "full",
    ) -> None:
        super().__init__(gather)
        if centroid not in ("full", "leave_one_out"):
            raise ValueError(f"centroid must be 'full' or 'leave_one_out', got {centroid!r}")
        self.centroid = centroid
        self.detach_anchor = bool(detach_anchor)
        self.normalize_anchor = bool(normalize_anchor)
        self.chunk_size = chunk_size
        self.num_modalities = num_modalities
        self.learned_weights = False
        self.weight_logits: nn.Parameter | None = None
        self.fixed_weights: Tensor | None
        if chunk_size is not None and int(chunk_size) < 1:
            raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
        if isinstance(weights, str):
            if weights != "learned":
                raise ValueError(f"weights must be None, a sequence of floats or 'learned', "
                                 f"got {weights!r}")
            if num_modalities is None or num_modalities < 2:
                raise ValueError("weights='learned' needs num_modalities=M (>= 2)")
            self.learned_weights = True
            self.weight_logits = nn.Parameter(torch.zeros(num_modalities))
            self.register_buffer("fixed_weights", None)
        elif weights is None:
            self.register_buffer("fixed_weights", None)
        else:
            w = torch.as_tensor([float(x) for x in weights], dtype=torch.float64)
            if w.dim() != 1 or len(w) < 2:
                raise ValueError(f"weights must be M >= 2 floats, got {list(weights)}")
            if bool((w < 0).any()) or not bool(torch.isfinite(w).all()) or float(w.sum()) <= 0:
                raise ValueError(f"weights must be finite, non-negative, not all 0: {w.tolist()}")
            if num_modalities is not None and num_modalities != len(w):
                raise ValueError(f"{len(w)} weights for num_modalities={num_modalities}")
            self.register_buffer("fixed_weights", w, persistent=False)

    def modality_weights(self, M: int) -> Tensor | None:
        """The normalised weights ``w [M]`` (sum 1), or None for uniform.

        Example:
            >>> CentroBind(weights=[1, 3]).modality_weights(2)
            tensor([0.2500, 0.7500], dtype=torch.float64)
        """
        expected = self.num_modalities
        if self.learned_weights:
            assert self.weight_logits is not None
            w = torch.softmax(self.weight_logits, 0)
        elif self.fixed_weights is not None:
            w = self.fixed_weights / self.fixed_weights.sum()
            expected = len(w)
        else:
            w = None
        if expected is not None and expected != M:
            raise ValueError(f"CentroBind was configured for {expected} modalities, got M={M}")
        return w

    def _terms(self, batch: Batch) -> dict[str, Tensor]:
        z, s, mask, names = batch.z, batch.s, batch.mask, batch.names
        M, N, _ = z.shape
        w = self.modality_weights(M)
        w = None if w is None else w.to(z.device)
        loo = self.centroid == "leave_one_out"
        zc = z.detach() if self.detach_anchor else z
        c = centroid_anchor(zc, mask, w, self.normalize_anchor, loo)  # [N, D] or [M, N, D]
        c = c if loo else c[None]
        g = gather_batch(batch, extra=c)  # the identity on one rank
        valid = anchor_valid(g.mask, w, loo, N * g.world)  # [M, W n]: global
        counts = [N * g.world] * M if valid is None else valid.sum(1).tolist()
        keep = [m for m in range(M) if counts[m] >= 2]
        if not keep:
            return {}
        row_valid = anchor_valid(mask, w, loo, N)
        row_valid = None if row_valid is None else row_valid[keep]
        ia = [M + m for m in keep] if loo else [M] * len(keep)
        cols = g.columns(ia, keep, None if valid is None else valid[keep])
        losses = symmetric_infonce(select_terms(c, keep) if loo else c, select_terms(z, keep), s,
                                   row_valid, self.chunk_size, cols)
        return {f"c-{names[m]}": losses[k] for k, m in enumerate(keep)}

    def extra_repr(self) -> str:
        w = "learned" if self.learned_weights else (
            None if self.fixed_weights is None else self.fixed_weights.tolist())
        return (f"centroid={self.centroid!r}, detach_anchor={self.detach_anchor}, "
                f"normalize_anchor={self.normalize_anchor}, weights={w}, "
                f"chunk_size={self.chunk_size}")
