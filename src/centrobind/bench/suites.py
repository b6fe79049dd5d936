"""The registry of benchmark suites: which suites ``centrobind benchmark`` runs, in report order.

- ``mfeat`` (:mod:`.suite_mfeat`): the six UCI Multiple Features views; every method (plus, with
  ``--extended``, ablations and learnable-scale variants).
- ``synthetic`` (:mod:`.suite_synthetic`): a clean and a weak-anchor setting (modality m1 much
  noisier); ``--extended`` adds variants and a sweep of m1's noise level.
- ``missing`` (:mod:`.suite_missing`): mfeat with each modality of each training row dropped at
  rate p.
- ``modalities`` (:mod:`.suite_modalities`): quality, step time and memory against the number of
  modalities M = 2..16.

Each suite is a :class:`~centrobind.bench.base.Suite`: it owns its jobs, its settings and its
section of the report. Add one with :func:`register_suite`. Each yields result rows
``{"suite", "setting", "method", "seed", **metrics}``. The logit-scale protocol is in
:mod:`centrobind.bench.protocol`.
"""

from __future__ import annotations

from typing import Any

from ..errors import ConfigError
from .base import Suite
from .jobs import (
    MFEAT,
    SYNTH_CLEAN_NOISE,
    SYNTH_WEAK_NOISE,
    BenchSettings,
    Job,
    dataset,
)
from .protocol import QUICK_SCALE_GRID, SCALE_GRID, choose_scale, default_scale, scale_grid
from .suite_mfeat import INTRA_WEIGHTS, MfeatSuite, core_methods
from .suite_missing import MISSING_RATES, MissingSuite
from .suite_modalities import M_VALUES, ModalitiesSuite
from .suite_synthetic import SWEEP_NOISE, SyntheticSuite

__all__ = [
    "INTRA_WEIGHTS",
    "MFEAT",
    "MISSING_RATES",
    "M_VALUES",
    "QUICK_SCALE_GRID",
    "SCALE_GRID",
    "SUITES",
    "SWEEP_NOISE",
    "SYNTH_CLEAN_NOISE",
    "SYNTH_WEAK_NOISE",
    "BenchSettings",
    "Job",
    "Suite",
    "choose_scale",
    "core_methods",
    "dataset",
    "default_scale",
    "derive_all",
    "register_suite",
    "scale_grid",
    "suite_jobs",
]

#: name -> suite, in the order the report shows them.
SUITES: dict[str, Suite] = {
    s.name: s for s in (MfeatSuite(), SyntheticSuite(), MissingSuite(), ModalitiesSuite())
}


def register_suite(suite: Suite) -> Suite:
    """Add ``suite`` to the benchmark (``--suite NAME`` and ``all``); returns it.

    Example:
        >>> class Tiny(Suite):
        ...     name = "tiny"
        >>> register_suite(Tiny()).name in SUITES
        True
        >>> del SUITES["tiny"]
    """
    if not isinstance(suite, Suite) or not suite.name:
        raise TypeError(f"{suite!r} is not a named Suite")
    if suite.name == "all" or (suite.name in SUITES and SUITES[suite.name] is not suite):
        raise ValueError(f"suite name {suite.name!r} is taken")
    SUITES[suite.name] = suite
    return suite


def selected(suite: str) -> list[Suite]:
    """The suites ``--suite suite`` runs ("all" = every registered suite)."""
    names = list(SUITES) if suite == "all" else [suite]
    unknown = [n for n in names if n not in SUITES]
    if unknown:
        raise ConfigError(f"unknown suite {unknown[0]!r}; choose from all, {', '.join(SUITES)}")
    return [SUITES[n] for n in names]


def suite_jobs(suite: str, s: BenchSettings) -> list[Job]:
    """All jobs of ``suite`` ("all" = every suite)."""
    return [job for su in selected(suite) for job in su.jobs(s)]


def derive_all(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every registered suite's derived keys (:meth:`Suite.derive`) added to ``rows``."""
    for su in SUITES.values():
        rows = su.derive(rows)
    return rows
