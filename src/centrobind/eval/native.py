"""An objective's own retrieval score: leave-one-out over the rows with every modality, scored
the objective's joint way (:meth:`~centrobind.objectives.Objective.leave_one_out_query`).

Used for the validation score of Symile and GRAM while training
(:func:`centrobind.train.native_validator`) and for ``metrics["retrieval"]["native_leave_one_out"]``
of :func:`centrobind.runs.evaluate_run`. Unlike the rest of :mod:`centrobind.eval` it embeds: it
takes a model (anything with ``modalities`` and ``embed_all(ds)``, e.g. a
:class:`~centrobind.models.Binder`) and a dataset, not embeddings.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from torch import Tensor

from centrobind.data.dataset import MultimodalDataset, modality_mask

from .retrieval import joint_leave_one_out

if TYPE_CHECKING:
    from centrobind.objectives import Objective

__all__ = ["Embedder", "native_leave_one_out"]


class Embedder(Protocol):
    """What :func:`native_leave_one_out` needs of a model (a Binder has it)."""

    modalities: list[str]

    def embed_all(self, dataset: MultimodalDataset) -> Mapping[str, Tensor]: ...


def native_leave_one_out(
    model: Embedder,
    ds: MultimodalDataset,
    objective_cls: type[Objective],
    ks: Sequence[int] = (1, 5),
) -> dict[str, Any] | None:
    """Embed the rows of ``ds`` where every modality is present and score leave-one-out retrieval
    the objective's own joint way. None for objectives without ``requires_all_modalities`` (their
    native score is pairwise cosine retrieval) or when fewer than 2 rows are complete."""
    if not objective_cls.requires_all_modalities:
        return None
    full = modality_mask(ds, model.modalities).all(0)
    if int(full.sum()) < 2:
        return None
    emb = model.embed_all(ds.subset(full.nonzero().squeeze(1)))
    return joint_leave_one_out(emb, objective_cls.leave_one_out_query, ks=ks)
