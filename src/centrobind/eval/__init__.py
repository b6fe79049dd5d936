"""Evaluation of multi-modal embeddings on plain tensors/dicts.

Inputs: ``emb = {modality: Tensor[N, D]}`` (L2-normalised; rows of missing modalities may hold
anything), a presence mask ``BoolTensor[M, N]`` in dict order (None = all present), labels
``{task: LongTensor[N]}`` and true factors ``{group: Tensor[N, k]}``.

This package depends only on torch / numpy / scikit-learn and the data layer, never on the model
or training code; :mod:`centrobind.eval.native` takes a model, but only through its
``embed_all``.
"""

from ._common import to_builtin
from .classification import (
    classification_metrics,
    fused_embedding,
    knn_accuracy,
    linear_probe,
    prototype_accuracy,
)
from .geometry import alignment, geometry_metrics, modality_gap, uniformity
from .latent import latent_recovery, ridge_r2
from .native import native_leave_one_out
from .report import evaluate, format_metrics
from .retrieval import (
    cross_modal_retrieval,
    joint_leave_one_out,
    label_precision,
    label_retrieval,
    leave_one_out_retrieval,
    mean_pairwise_mrr,
    mean_pairwise_r1,
    metrics_from_ranks,
    retrieval_metrics,
    retrieval_ranks,
)

__all__ = [
    "alignment",
    "classification_metrics",
    "cross_modal_retrieval",
    "evaluate",
    "format_metrics",
    "fused_embedding",
    "geometry_metrics",
    "joint_leave_one_out",
    "knn_accuracy",
    "label_precision",
    "label_retrieval",
    "latent_recovery",
    "leave_one_out_retrieval",
    "linear_probe",
    "mean_pairwise_mrr",
    "mean_pairwise_r1",
    "metrics_from_ranks",
    "modality_gap",
    "native_leave_one_out",
    "prototype_accuracy",
    "retrieval_metrics",
    "retrieval_ranks",
    "ridge_r2",
    "to_builtin",
    "uniformity",
]
