"""The objective contract: input normalisation, output type and the shared ``forward``.

Every objective is an :class:`torch.nn.Module` called as ::

    out = objective(z, logit_scale, mask=None)

* ``z``: ``Tensor[M, N, D]``, L2-normalised embeddings of ``M >= 2`` modalities for ``N`` paired
  samples, or a ``dict[str, Tensor[N, D]]`` (stacked in insertion order; its keys then name the
  modalities in ``out.terms`` and may be used for an objective's ``anchor``).
* ``logit_scale``: ``s = 1 / temperature``, a float or a 0-dim tensor (it receives gradient when
  it requires grad).
* ``mask``: optional ``Tensor[M, N]`` bool (or a dict of ``Tensor[N]`` when ``z`` is a dict), True
  where modality ``m`` of sample ``n`` is present. Rows of absent modalities may hold anything
  (zeros, NaN): they are zeroed before use and never reach the loss.

It returns an :class:`ObjectiveOutput`: ``loss`` (0-dim) is the mean of the present terms,
``terms`` maps a term's name to its 0-dim loss (attached to the graph; ``.detach()`` for logging).
A term is present when at least two samples have every modality it involves; when no term is
present, ``loss`` is a zero still connected to the graph (``z.sum() * 0``) so ``backward()`` works.

Under ``torch.distributed`` (world size > 1, ``gather=True``) every objective scores its local rows
against the global batch; see :mod:`centrobind.objectives.distributed` for the conventions.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from .distributed import (
    DistInfo,
    all_gather_no_grad,
    all_gather_with_grad,
    check_equal_sizes,
    dist_info,
)

__all__ = [
    "Batch",
    "Objective",
    "ObjectiveOutput",
    "ScoreFn",
    "complete_samples",
    "gather_batch",
    "normalize_inputs",
    "resolve_modality",
]


#: A retrieval score: ``(queries [q, K], candidates [g, D]) -> scores [q, g]`` (higher = closer).
ScoreFn = Callable[[Tensor, Tensor], Tensor]


@dataclass
class ObjectiveOutput:
    """What an objective returns.

    Attributes:
        loss: 0-dim tensor, the mean of ``terms.values()`` (a graph-connected zero if empty).
        terms: term name -> 0-dim per-term loss, e.g. ``"c-0"`` (CentroBind, anchor vs modality 0),
            ``"0-2"`` (pair of modalities 0 and 2), ``"1->rest"`` (Symile/GRAM directional term).
            Modality names are indices (``"0"``, ``"1"``, ...) or the dict keys when ``z`` was a
            dict. Under ``torch.distributed`` these are this rank's shares (their mean over ranks
            is the global term).

    Example:
        >>> out = ObjectiveOutput(torch.tensor(0.5), {"0-1": torch.tensor(0.5)})
        >>> {k: float(v) for k, v in out.terms.items()}
        {'0-1': 0.5}
    """

    loss: Tensor
    terms: dict[str, Tensor] = field(default_factory=dict)


@dataclass
class Batch:
    """Normalised objective inputs (what :meth:`Objective._terms` receives).

    Attributes:
        z: ``[M, N, D]`` embeddings, rows of absent modalities zeroed.
        s: 0-dim logit scale tensor (keeps its graph when learnable).
        mask: ``[M, N]`` bool, or None when everything is present.
        names: the ``M`` modality names.
        dist: world size / rank when computing against a gathered global batch, else None.
    """

    z: Tensor
    s: Tensor
    mask: Tensor | None
    names: list[str]
    dist: DistInfo | None = None


def normalize_inputs(
    z: Tensor | Mapping[str, Tensor],
    logit_scale: float | Tensor,
    mask: Tensor | Mapping[str, Tensor] | None = None,
) -> tuple[Tensor, Tensor, Tensor | None, list[str]]:
    """Validate and normalise objective inputs.

    Args:
        z: ``[M, N, D]`` tensor or dict of ``[N, D]`` tensors (stacked in insertion order).
        logit_scale: float or tensor with one element.
        mask: None, ``[M, N]`` (any dtype; non-zero = present) or dict of ``[N]``.

    Returns:
        ``(z [M, N, D], s 0-dim, mask [M, N] bool or None, names)``. ``mask`` is None when all
        entries are present; otherwise absent rows of ``z`` are set to 0 (NaN-safe).

    Example:
        >>> z = {"a": torch.ones(3, 2), "b": torch.zeros(3, 2)}
        >>> zz, s, m, names = normalize_inputs(z, 10.0)
        >>> zz.shape, float(s), m, names
        (torch.Size([2, 3, 2]), 10.0, None, ['a', 'b'])
    """
    if isinstance(z, Mapping):
        names = [str(k) for k in z.keys()]
        if not names:
            raise ValueError("z is an empty dict; need at least 2 modalities")
        vals = list(z.values())
        if any(not isinstance(v, Tensor) or v.dim() != 2 for v in vals):
            raise ValueError("dict input: every value must be a [N, D] tensor")
        if len({tuple(v.shape) for v in vals}) != 1:
            raise ValueError(
                f"dict input: all modalities need the same [N, D]; got "
                f"{ {k: tuple(v.shape) for k, v in z.items()} }"
            )
        z = torch.stack(vals)
        if isinstance(mask, Mapping):
            missing = [k for k in names if k not in mask]
            if missing:
                raise ValueError(f"mask dict lacks modalities {missing}")
            mask = torch.stack([torch.as_tensor(mask[k]) for k in names])
    else:
        if not isinstance(z, Tensor) or z.dim() != 3:
            shape = tuple(z.shape) if isinstance(z, Tensor) else type(z).__name__
            raise ValueError(f"z must be a [M, N, D] tensor or a dict of [N, D]; got {shape}")
        names = [str(i) for i in range(z.shape[0])]
        if isinstance(mask, Mapping):
            raise ValueError("a dict mask needs a dict z (to match names)")
    if not z.is_floating_point():
        raise ValueError(f"z must be floating point, got {z.dtype}")
    M, N, _ = z.shape
    if M < 2:
        raise ValueError(f"need at least 2 modalities, got M={M}")

    if isinstance(logit_scale, Tensor):
        if logit_scale.numel() != 1:
            raise ValueError(
                f"logit_scale must have one element, got shape {tuple(logit_scale.shape)}"
            )
        s = logit_scale.reshape(())
        if s.device != z.device:
            s = s.to(z.device)
    else:
        s = torch.tensor(float(logit_scale), dtype=z.dtype, device=z.device)

    if mask is not None:
        mask = torch.as_tensor(mask, device=z.device)
        if tuple(mask.shape) != (M, N):
            raise ValueError(f"mask must be [M, N] = [{M}, {N}], got {tuple(mask.shape)}")
        mask = mask if mask.dtype == torch.bool else mask != 0
        if bool(mask.all()):
            mask = None
        else:
            z = z.masked_fill(~mask[..., None], 0.0)
    return z, s, mask, names


def resolve_modality(spec: int | str, names: Sequence[str]) -> int:
    """Index of modality ``spec`` (an int index, possibly negative, or a name) among ``names``.

    Example:
        >>> resolve_modality("b", ["a", "b"]), resolve_modality(-1, ["0", "1", "2"])
        (1, 2)
    """
    M = len(names)
    if isinstance(spec, str):
        if spec in names:
            return list(names).index(spec)
        if spec.lstrip("-").isdigit():
            spec = int(spec)
        else:
            raise ValueError(f"unknown modality {spec!r}; modalities are {list(names)}")
    if not -M <= int(spec) < M:
        raise ValueError(f"modality index {spec} out of range for M={M}")
    return int(spec) % M


def gather_batch(
    batch: Batch, extra: Tensor | None = None
) -> tuple[Tensor, Tensor, Tensor, int]:
    """Gather ``z`` (plus ``extra`` rows, e.g. an anchor) and the mask over ranks.

    Args:
        batch: a batch with ``batch.dist`` set; ``z`` is ``[M, n, D]``.
        extra: optional ``[E, n, D]`` stacked under ``z`` before the (single) differentiable gather.

    Returns:
        ``(xg [M + E, W n, D], mask_loc [M, n], mask_g [M, W n], offset = rank * n)``. Every rank
        gathers a full mask (all True where none was given) so all ranks run the same collectives.

    Example (inside an initialised process group)::

        zg, mask_loc, mask_g, offset = gather_batch(batch)
    """
    info = batch.dist
    assert info is not None
    z = batch.z
    M, n, _ = z.shape
    check_equal_sizes(n, z.device, info)
    mask_loc = batch.mask if batch.mask is not None else z.new_ones(M, n, dtype=torch.bool)
    x = z if extra is None else torch.cat([z, extra], 0)
    xg = all_gather_with_grad(x, 1, info)
    mask_g = all_gather_no_grad(mask_loc, 1, info)
    return xg, mask_loc, mask_g, info.rank * n


def complete_samples(batch: Batch) -> tuple[Tensor, Tensor, int, float]:
    """The samples with every modality present: this rank's rows and the (global) columns.

    Used by objectives whose terms involve all ``M`` modalities (Symile, GRAM). Half / bfloat16
    embeddings are returned as float32 (products of ``M`` factors and determinants need it).

    Returns:
        ``(z_rows [M, n_l, D], z_cols [M, n_g, D], offset, scale)``: ``z_cols`` are the complete
        samples of the global batch (``z_rows`` itself in a single process), ``offset`` is the
        column index of the first local row, and ``scale = W / n_g`` multiplies the summed per-row
        losses (``1 / n`` in a single process) so that rank shares average to the global mean.

    Example:
        >>> b = Batch(torch.ones(2, 3, 4), torch.tensor(1.0),
        ...           torch.tensor([[True, True, False], [True, True, True]]), ["0", "1"])
        >>> zr, zc, off, scale = complete_samples(b)
        >>> zr.shape, off, scale
        (torch.Size([2, 2, 4]), 0, 0.5)
    """
    z, mask = batch.z, batch.mask
    if z.dtype in (torch.float16, torch.bfloat16):
        z = z.float()
    if batch.dist is None:
        zr = z if mask is None else z[:, mask.all(0)]
        return zr, zr, 0, 1.0 / max(zr.shape[1], 1)
    zg, mask_loc, mask_g, offset = gather_batch(batch)
    valid_loc, valid_g = mask_loc.all(0), mask_g.all(0)
    zr = z[:, valid_loc]
    zc = zg[:, valid_g].to(z.dtype)
    off = int(valid_g[:offset].sum())
    return zr, zc, off, batch.dist.world_size / max(zc.shape[1], 1)


class Objective(nn.Module):
    """Base class of the binding objectives (see the module docstring for the contract).

    Subclasses implement :meth:`_terms`, returning the present terms; the base class normalises
    the inputs, sets up the distributed context and averages the terms.

    What an objective knows about itself lives on its class, so that the trainer, the run folders
    and the benchmark never ask "which objective is this?" (adding one = one file + one line in
    :data:`centrobind.objectives.OBJECTIVES`):

    Attributes:
        requires_all_modalities: True when a sample only counts if every modality is present
            (Symile, GRAM); pairwise/centroid objectives use partially observed samples. Its
            validation/evaluation retrieval then uses the complete rows only.
        takes_anchor: the constructor takes ``anchor=`` (a modality index); ``TrainConfig.anchor``
            (default: the first modality) selects it.
        supports_chunking: the constructor takes ``chunk_size=`` (``TrainConfig.chunk_size``).
        pretrains_frozen_anchor: the trainer pre-trains the anchor's encoder (unimodal,
            self-supervised) and freezes it, like ImageBind's pretrained image encoder; its
            evaluation reports the pairs that avoid the anchor.
        gather: compute against the batch gathered over ``torch.distributed`` ranks.

    Hooks (classmethods): :meth:`needs_num_modalities`, :meth:`default_logit_scale`,
    :meth:`pair_score_fn`, :meth:`leave_one_out_query`.

    Example (a new objective: mean squared distance of every modality to modality 0)::

        class ToFirst(Objective):
            def _terms(self, batch):
                z = batch.z
                return {f"0-{n}": (z[0] - z[m]).square().sum(-1).mean()
                        for m, n in enumerate(batch.names) if m > 0}

        out = ToFirst()(torch.randn(3, 8, 4), 1.0)   # out.loss, out.terms["0-1"], ...
    """

    requires_all_modalities: ClassVar[bool] = False
    takes_anchor: ClassVar[bool] = False
    supports_chunking: ClassVar[bool] = False
    pretrains_frozen_anchor: ClassVar[bool] = False

    @classmethod
    def needs_num_modalities(cls, options: Mapping[str, Any]) -> bool:
        """Whether constructing it with ``options`` needs ``num_modalities=M`` (passed by
        :func:`centrobind.runs.build_objective`)."""
        return False

    @classmethod
    def default_logit_scale(cls, num_modalities: int, embed_dim: int) -> float:
        """The initial logit scale ``s`` when the config leaves it automatic (``s = 10``,
        temperature 0.1, for cosine-score objectives)."""
        return 10.0

    @classmethod
    def pair_score_fn(cls) -> ScoreFn | None:
        """Its score of a (query, candidate) pair for cross-modal retrieval; None: cosine."""
        return None

    @classmethod
    def leave_one_out_query(cls, others: Tensor) -> tuple[Tensor, ScoreFn | None] | None:
        """Its own joint retrieval of one modality from all the others, or None (pairwise
        cosine retrieval is its native score).

        Args:
            others: ``[M-1, N, D]`` embeddings of the other modalities (complete rows, model order).

        Returns:
            ``(queries [N, K], score_fn or None for a dot product)`` to rank the left-out
            modality's ``[N, D]`` candidates with.
        """
        return None

    def __init__(self, gather: bool = True) -> None:
        super().__init__()
        self.gather = bool(gather)

    def forward(
        self,
        z: Tensor | Mapping[str, Tensor],
        logit_scale: float | Tensor,
        mask: Tensor | Mapping[str, Tensor] | None = None,
    ) -> ObjectiveOutput:
        """Loss of ``z`` (``[M, N, D]`` or dict) at logit scale ``s``; see the module docstring."""
        return self._run(z, logit_scale, mask)

    def _run(
        self,
        z: Tensor | Mapping[str, Tensor],
        logit_scale: float | Tensor,
        mask: Tensor | Mapping[str, Tensor] | None,
        **options: Any,
    ) -> ObjectiveOutput:
        zz, s, m, names = normalize_inputs(z, logit_scale, mask)
        batch = Batch(zz, s, m, names, dist_info(self.gather))
        terms = self._terms(batch, **options)
        if terms:
            loss = torch.stack(list(terms.values())).mean()
        else:
            loss = zz.sum() * 0.0
            if s.requires_grad:
                loss = loss + s * 0.0
        return ObjectiveOutput(loss, terms)

    def _terms(self, batch: Batch) -> dict[str, Tensor]:  # pragma: no cover - abstract
        raise NotImplementedError
