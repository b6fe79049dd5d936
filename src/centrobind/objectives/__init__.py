"""Binding objectives: losses that learn one embedding space for ``M >= 2`` paired modalities.

Every objective is an ``nn.Module`` called as ``out = objective(z, logit_scale, mask=None)`` with
``z [M, N, D]`` (or a dict of ``[N, D]``), returning :class:`ObjectiveOutput` (``loss``, ``terms``);
see :mod:`centrobind.objectives.base`. Available (``make_objective`` names):

* ``centrobind``: :class:`CentroBind`, every modality vs the per-sample centroid (``M`` terms);
* ``fixed_anchor``: :class:`FixedAnchor`, every modality vs one anchor modality (ImageBind);
* ``all_pairs``: :class:`AllPairs`, every pair of modalities (CMC full graph);
* ``symile``: :class:`Symile`, each modality vs the elementwise product of the others;
* ``gram``: :class:`Gram`, volume of the parallelotope spanned by all modalities.

Example:
    >>> import torch, torch.nn.functional as F
    >>> z = F.normalize(torch.randn(3, 32, 16), dim=-1).requires_grad_()
    >>> out = make_objective("centrobind")(z, 1 / 0.07)
    >>> out.loss.backward()
"""

from __future__ import annotations

from typing import Any

from ..errors import ConfigError
from .all_pairs import AllPairs
from .base import Objective, ObjectiveOutput, ScoreFn, resolve_modality
from .centrobind import CentroBind
from .fixed_anchor import FixedAnchor
from .gram import Gram
from .infonce import nce_sym_reference, symmetric_infonce
from .symile import Symile

__all__ = [
    "OBJECTIVES",
    "AllPairs",
    "CentroBind",
    "FixedAnchor",
    "Gram",
    "Objective",
    "ObjectiveOutput",
    "ScoreFn",
    "Symile",
    "make_objective",
    "objective_class",
    "nce_sym_reference",
    "register_objective",
    "resolve_modality",
    "symmetric_infonce",
]

#: Registry: name -> objective class. Add one with :func:`register_objective` (or a line here).
OBJECTIVES: dict[str, type[Objective]] = {
    "centrobind": CentroBind,
    "fixed_anchor": FixedAnchor,
    "all_pairs": AllPairs,
    "symile": Symile,
    "gram": Gram,
}


def make_objective(name: str, **options: Any) -> Objective:
    """Build the objective registered as ``name`` with constructor ``options``.

    Raises:
        ValueError: unknown ``name`` (:func:`objective_class`).
        TypeError: an option the objective does not take.

    Example:
        >>> make_objective("fixed_anchor", anchor=1)
        FixedAnchor(anchor=1, chunk_size=None)
    """
    return objective_class(name)(**options)


def objective_class(name: str) -> type[Objective]:
    """The objective class registered as ``name``: the one lookup by name of the package.

    Raises:
        ConfigError: (a ``ValueError``) unknown ``name``; the message lists the known names.
    """
    try:
        return OBJECTIVES[name]
    except KeyError:
        raise ConfigError(
            f"unknown objective {name!r}; expected one of: {', '.join(OBJECTIVES)}"
        ) from None


def register_objective(name: str, cls: type[Objective]) -> type[Objective]:
    """Register ``cls`` as ``name`` (for ``TrainConfig.objective`` / ``--objective``); what the
    trainer, run folders and benchmark need to know about it are its class attributes and hooks
    (:class:`Objective`). Returns ``cls``.

    Example:
        >>> class Mine(CentroBind):
        ...     pass
        >>> register_objective("mine", Mine) is Mine and "mine" in OBJECTIVES
        True
        >>> del OBJECTIVES["mine"]
    """
    if not (isinstance(cls, type) and issubclass(cls, Objective)):
        raise TypeError(f"{cls!r} is not an Objective subclass")
    if name in OBJECTIVES and OBJECTIVES[name] is not cls:
        raise ValueError(f"objective {name!r} is already registered ({OBJECTIVES[name].__name__})")
    OBJECTIVES[name] = cls
    return cls
