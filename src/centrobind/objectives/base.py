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
* Errors: ``ValueError`` for malformed inputs (shapes, dtypes, ``M < 2``), and its subclass
  :class:`NonFiniteInputError` for NaN or inf in a *present* embedding or a ``logit_scale`` that
  is not finite or not ``> 0`` (a negative scale would silently reverse the objective). Checked
  once per call: one reduction over ``z`` and one host read of it together with ``s``.

It returns an :class:`ObjectiveOutput`: ``loss`` (0-dim) is the mean of the present terms,
``terms`` maps a term's name to its 0-dim loss (attached to the graph; ``.detach()`` for logging).
A term is present when at least two samples have every modality it involves; when no term is
present, ``loss`` is a zero still connected to the graph (``z.sum() * 0``) so ``backward()`` works.

Under ``torch.distributed`` (world size > 1, ``gather=True``) every objective scores its local rows
against the global batch; see :mod:`centrobind.objectives.distributed` for the conventions.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
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
from .infonce import Columns

__all__ = [
    "Batch",
    "Gathered",
    "NonFiniteInputError",
    "Objective",
    "ObjectiveOutput",
    "ScoreFn",
    "complete_samples",
    "gather_batch",
    "normalize_inputs",
    "resolve_modality",
    "select_terms",
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
    check_finite: bool = True,
) -> tuple[Tensor, Tensor, Tensor | None, list[str]]:
    """Validate and normalise objective inputs.

    Args:
        z: ``[M, N, D]`` tensor or dict of ``[N, D]`` tensors (stacked in insertion order).
        logit_scale: float or tensor with one element.
        mask: None, ``[M, N]`` (any dtype; non-zero = present) or dict of ``[N]``.
        check_finite: raise :class:`NonFiniteInputError` for NaN/inf (one host read); off
            while training, where a non-finite input shows as a non-finite loss instead.

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
    if check_finite:
        _check_finite(z, s)
    return z, s, mask, names


class NonFiniteInputError(ValueError):
    """NaN or inf in a present embedding, or a logit scale that is not finite and ``> 0``."""


def _check_finite(z: Tensor, s: Tensor) -> None:
    """Raise ``ValueError`` for NaN/inf in ``z`` (absent rows already zeroed) or ``s <= 0``.

    One reduction (``z.sum()``, float32 or wider) and one host read of ``[sum, s]``; the exact
    elementwise check runs only when the sum is not finite (a huge but finite ``z`` can overflow
    the sum without containing inf).
    """
    acc = torch.float64 if z.dtype == torch.float64 else torch.float32
    total, scale = torch.stack([z.detach().sum(dtype=acc), s.detach().to(acc)]).tolist()
    if not math.isfinite(total) and not bool(torch.isfinite(z).all()):
        raise NonFiniteInputError(
            "z has NaN or inf in present embeddings (absent rows may hold anything when the "
            "mask marks them absent)"
        )
    if not (math.isfinite(scale) and scale > 0):
        raise NonFiniteInputError(f"logit_scale must be finite and > 0, got {scale}")


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


def select_terms(x: Tensor, idx: Sequence[int]) -> Tensor:
    """``x[idx]`` as a ``[T, N, D]`` term stack, without copying when it can be avoided.

    ``x`` itself when ``idx`` is ``0 .. len(x) - 1``; the broadcast ``x[i][None]`` (``[1, N, D]``)
    when every index is the same ``i`` (a shared anchor); else the copy ``x[idx]``.

    Example:
        >>> x = torch.zeros(3, 4, 2)
        >>> select_terms(x, [0, 1, 2]) is x, select_terms(x, [1, 1]).shape
        (True, torch.Size([1, 4, 2]))
    """
    idx = list(idx)
    if idx == list(range(x.shape[0])):
        return x
    if len(set(idx)) == 1:
        return x[idx[0]][None]
    return x[idx]


@dataclass
class Gathered:
    """The global batch as this rank sees it; on one rank, the local batch itself (no copy).

    Attributes:
        x: ``[M + E, W n, D]`` gathered ``z`` (and ``extra`` rows), or None on one rank (the
            columns are the local rows).
        mask: ``[M, W n]`` bool global mask, or None when everything is present.
        offset: global index of this rank's first sample (0 on one rank).
        world: the number of ranks ``W`` (1 on one rank).
    """

    x: Tensor | None
    mask: Tensor | None
    offset: int
    world: int

    def columns(self, ia: Sequence[int], ib: Sequence[int], valid: Tensor | None) -> Columns | None:
        """Kernel columns for terms ``(x[ia[t]], x[ib[t]])`` (None on one rank).

        Args:
            ia, ib: row indices into ``x`` (``z`` rows first, then the ``extra`` rows).
            valid: ``[T, W n]`` bool global validity of the terms, or None.
        """
        if self.x is None:
            return None
        return Columns(
            select_terms(self.x, ia), select_terms(self.x, ib), valid, self.offset, self.world
        )


def gather_batch(batch: Batch, extra: Tensor | None = None) -> Gathered:
    """Gather ``z`` (plus ``extra`` rows, e.g. anchors) and the mask over ranks.

    On one rank (``batch.dist`` None) this is the identity: nothing is copied and the columns are
    the local rows (``x=None``, ``mask=batch.mask``, offset 0, ``W = 1``). Under
    ``torch.distributed`` it runs one differentiable gather of ``cat([z, extra])`` and one of the
    mask (a full mask where none was given, so every rank runs the same collectives).

    Args:
        batch: normalised inputs, ``z [M, n, D]``.
        extra: optional ``[E, n, D]`` rows gathered with ``z``.

    Returns:
        :class:`Gathered`.

    Example:
        >>> b = Batch(torch.ones(2, 3, 4), torch.tensor(1.0), None, ["0", "1"])
        >>> g = gather_batch(b); (g.x, g.mask, g.offset, g.world)
        (None, None, 0, 1)
    """
    info = batch.dist
    if info is None:
        return Gathered(None, batch.mask, 0, 1)
    z = batch.z
    M, n, _ = z.shape
    check_equal_sizes(n, z.device, info)
    mask_loc = batch.mask if batch.mask is not None else z.new_ones(M, n, dtype=torch.bool)
    x = z if extra is None else torch.cat([z, extra.to(z.dtype)], 0)
    xg = all_gather_with_grad(x, 1, info)
    mask_g = all_gather_no_grad(mask_loc, 1, info)
    return Gathered(xg, mask_g, info.rank * n, info.world_size)


def complete_samples(batch: Batch) -> tuple[Tensor, Tensor, int, float]:
    """The samples with every modality present: this rank's rows and the (global) columns.

    Used by objectives whose terms involve all ``M`` modalities (Symile, GRAM). Half / bfloat16
    embeddings are returned as float32 (products of ``M`` factors and determinants need it).

    Returns:
        ``(z_rows [M, n_l, D], z_cols [M, n_g, D], offset, scale)``: ``z_cols`` are the complete
        samples of the global batch (``z_rows`` itself, the same object, on one rank), ``offset``
        is the column index of the first local row, and ``scale = W / n_g`` multiplies the summed
        per-row losses (``1 / n`` on one rank) so that rank shares average to the global mean.

    Example:
        >>> b = Batch(torch.ones(2, 3, 4), torch.tensor(1.0),
        ...           torch.tensor([[True, True, False], [True, True, True]]), ["0", "1"])
        >>> zr, zc, off, scale = complete_samples(b)
        >>> zr.shape, zc is zr, off, scale
        (torch.Size([2, 2, 4]), True, 0, 0.5)
    """
    z = batch.z
    if z.dtype in (torch.float16, torch.bfloat16):
        z = z.float()
    g = gather_batch(batch)
    zr = z if batch.mask is None else z[:, batch.mask.all(0)]
    if g.x is None:
        zc = zr
    else:
        zc = (g.x if g.mask is None else g.x[:, g.mask.all(0)]).to(z.dtype)
    off = 0 if g.mask is None else int(g.mask.all(0)[: g.offset].sum())
    return zr, zc, off, g.world / max(zc.shape[1], 1)


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

    Hooks (classmethods): :meth:`needs_num_modalities`, :meth:`default_logit_scale` (and
    :meth:`default_logit_scale_text`), :meth:`pair_score_fn`, :meth:`leave_one_out_query`.

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
    #: Check the inputs for NaN/inf on every call (see :meth:`unchecked_inputs`).
    check_finite: bool = True

    @classmethod
    def needs_num_modalities(cls, options: Mapping[str, Any]) -> bool:
        """Whether constructing it with ``options`` needs ``num_modalities=M`` (passed by
        :func:`centrobind.pipeline.build_objective`)."""
        return False

    @classmethod
    def default_logit_scale(cls, num_modalities: int, embed_dim: int) -> float:
        """The initial logit scale ``s`` when the config leaves it automatic (``s = 10``,
        temperature 0.1, for cosine-score objectives)."""
        return 10.0

    @classmethod
    def default_logit_scale_text(cls) -> str:
        """:meth:`default_logit_scale` as ``--help`` shows it: its value when it depends on
        neither ``M`` nor ``D``; an objective whose default does overrides this with its
        formula."""
        value = cls.default_logit_scale(2, 64)
        if value != cls.default_logit_scale(6, 128):
            return "depends on M and D"
        return f"{value:g}"

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

    @contextmanager
    def unchecked_inputs(self) -> Iterator[Objective]:
        """Inside, calls skip the NaN/inf check of ``z`` and ``s`` (and its host read): the
        trainer checks the loss instead, one host sync per step for both (a non-finite present
        embedding or scale makes the loss non-finite)."""
        before = self.check_finite
        self.check_finite = False
        try:
            yield self
        finally:
            self.check_finite = before

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
        zz, s, m, names = normalize_inputs(z, logit_scale, mask, self.check_finite)
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
