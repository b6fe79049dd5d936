"""The temperature protocol, in one place: which logit scale every binding method trains at.

Every binding method gets its own scale, chosen per dataset/setting on the validation split: seed
0 is trained at each scale of :data:`SCALE_GRID` (Symile and GRAM: their own default times the
same factors relative to 7, ``s / 7``), the scale with the best validation score (the trainer's
early-stopping metric, ``FitResult.best_metric``) is chosen, ties going to the scale nearer the
objective's default (in log-scale); then every seed runs at that scale.

Published scales: the choices of the committed full run ship with the package
(``published_scales.json``), so the default benchmark runs every seed at them without the grid
(seed 0 at seven scales is most of the full protocol's cost). A job at a published scale gives
the same numbers as the full protocol's job at that scale. ``--choose-scales`` runs the grid
instead; a method without a published scale (a new method or suite) has its grid run either way,
and the report says which scales came from where. ``--quick`` uses :data:`QUICK_SCALE_GRID` when
it chooses.

A job can choose its scale on other data than it trains on (``Job.tune_on``; the M-suite uses the
choice made on the 4-modality synthetic setting): cosine-score objectives keep the chosen scale,
objectives on their own scale range (:data:`RELATIVE_SCALE_OBJECTIVES`) keep the chosen factor
relative to their default (:func:`transfer_scale`).
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Iterable, Mapping
from functools import cache
from importlib import resources
from typing import Any

from ..config import objective_class
from .jobs import BenchSettings, Job, n_modalities
from .methods import Method

__all__ = [
    "QUICK_SCALE_GRID",
    "RELATIVE_SCALE_OBJECTIVES",
    "SCALE_GRID",
    "ScalePlan",
    "choose_scale",
    "choose_scales",
    "default_scale",
    "method_definition",
    "plan_scales",
    "published_scales",
    "scale_grid",
    "scale_protocol_text",
    "transfer_scale",
]

#: The logit scales every cosine-score method is tried at (seed 0, validation split).
SCALE_GRID = (2.0, 3.0, 5.0, 7.0, 10.0, 14.0, 20.0)
#: ``--quick``: a reduced grid (the protocol end to end, at a third of the cost).
QUICK_SCALE_GRID = (3.0, 7.0)
#: Objectives whose scale lives on another range: their default times ``SCALE_GRID / 7``.
RELATIVE_SCALE_OBJECTIVES = ("symile", "gram")
#: What identifies a method's definition in the published file (its name alone could be reused).
_DEFINITION = ("kind", "objective", "options", "anchor", "intra_weight", "overrides")


def default_scale(method: Method, data: tuple, embed_dim: int) -> float:
    """The objective's own default logit scale on ``data`` (its ``default_logit_scale``)."""
    n_mod = n_modalities(data)
    return objective_class(method.objective).default_logit_scale(n_mod, embed_dim)


def scale_grid(method: Method, data: tuple, embed_dim: int, quick: bool = False) -> list[float]:
    """The scales ``method`` is tried at on ``data``: :data:`SCALE_GRID` (quick:
    :data:`QUICK_SCALE_GRID`); Symile and GRAM: their default times ``grid / 7``."""
    grid = QUICK_SCALE_GRID if quick else SCALE_GRID
    if method.objective in RELATIVE_SCALE_OBJECTIVES:
        d = default_scale(method, data, embed_dim)
        return [d * g / 7.0 for g in grid]
    return list(grid)


def choose_scale(scores: Mapping[float, float | None], default: float) -> float:
    """The scale with the best validation score; ties (equal to 6 decimals) go to the scale
    nearer ``default`` (by ``|log(s / default)|``, then the smaller). Scales without a score
    (None, NaN) never win unless none has one (then: nearest the default).

    Example:
        >>> choose_scale({3.0: 50.0, 7.0: 51.0, 10.0: 51.0}, default=7.0)
        7.0
        >>> choose_scale({2.0: 40.0, 10.0: 40.0}, default=5.0)   # |log 0.4| > |log 2|
        10.0
    """
    if not scores:
        raise ValueError("choose_scale needs at least one scale")

    def key(s: float) -> tuple[float, float, float]:
        v = scores[s]
        # float noise in a mean is not a win: compare at 6 decimals
        best = round(v, 6) if v is not None and math.isfinite(v) else -math.inf
        return (best, -abs(math.log(s / default)), -s)

    return max(scores, key=key)


def transfer_scale(method: Method, chosen: float, tuned_on: tuple, data: tuple, dim: int) -> float:
    """The scale for ``method`` on ``data`` when ``chosen`` was chosen on ``tuned_on``: the same
    for a cosine-score objective; for Symile and GRAM the same factor of their default."""
    if tuned_on == data or method.objective not in RELATIVE_SCALE_OBJECTIVES:
        return chosen
    return chosen * default_scale(method, data, dim) / default_scale(method, tuned_on, dim)


def method_definition(method: Method) -> dict[str, Any]:
    """The fields that define ``method``'s training (JSON-ready), name included."""
    d = dataclasses.asdict(method)
    out: dict[str, Any] = {"method": method.name}
    for k in _DEFINITION:
        v = d[k]
        out[k] = [list(p) for p in v] if isinstance(v, tuple) else v
    return out


def _data_id(data: Iterable[Any]) -> tuple:
    """The published-scale identity of a data key: synthetic data by its noise level (a quick
    run's smaller sample shares the full run's choice)."""
    data = tuple(data)
    return data[:2] if data and data[0] == "synthetic" else data


@cache
def published_scales() -> dict[str, Any]:
    """The shipped ``published_scales.json``: ``{"source": ..., "scales": [entry, ...]}``, each
    entry a grid-table row of the full run plus its method's definition."""
    text = resources.files("centrobind.bench").joinpath("published_scales.json").read_text()
    return json.loads(text)


def _published_entry(method: Method, data: tuple) -> dict[str, Any] | None:
    want = method_definition(method)
    for e in published_scales()["scales"]:
        if _data_id(e["data"]) == _data_id(data) and all(e.get(k) == v for k, v in want.items()):
            return e
    return None


@dataclasses.dataclass
class ScalePlan:
    """Where every tuning key's scale comes from: ``published`` (key -> scale) and the grid jobs
    to run for the rest (``grid``: key -> ``[(scale, compute key of the grid run)]``)."""

    published: dict[tuple, float]
    grid_jobs: list[Job]
    grid: dict[tuple, list[tuple[float, tuple]]]


def plan_scales(jobs: list[Job], settings: BenchSettings) -> ScalePlan:
    """Published scales for the tuned jobs that have one (unless ``settings.choose_scales``),
    and the seed-0 grid jobs for the others (one per job and scale: duplicates are merged before
    running, with the union of what they evaluate). A grid job evaluates what the method's job
    asks for, so the seed-0 run at the chosen scale is reused as that job."""
    published: dict[tuple, float] = {}
    grid_jobs: list[Job] = []
    plan: dict[tuple, list[tuple[float, tuple]]] = {}
    for job in jobs:
        if not job.method.tuned:
            continue
        tkey = job.tuning_key()
        if tkey in published:
            continue
        tm, data, _ = tkey
        entry = None
        if tkey not in plan and not settings.choose_scales:
            entry = _published_entry(tm, data)
        if entry is not None:
            published[tkey] = float(entry["chosen"])
            continue
        evaluate = (
            job
            if not job.method.learn_scale and job.tune_on is None
            else dataclasses.replace(
                job, probe_tasks=0, per_view_probes=False, loo=False, memory=False
            )
        )
        entries = []
        for s in scale_grid(tm, data, settings.embed_dim, settings.quick):
            g = dataclasses.replace(evaluate, method=tm.with_scale(s), seed=0, drop=0.0, data=data)
            grid_jobs.append(g)
            entries.append((s, g.compute_key()))
        plan[tkey] = entries
    return ScalePlan(published, grid_jobs, plan)


def choose_scales(
    plan: dict[tuple, list[tuple[float, tuple]]],
    by_key: Mapping[tuple, Mapping[str, Any]],
    embed_dim: int,
) -> tuple[dict[tuple, float], list[dict[str, Any]]]:
    """The scale chosen for every tuning key of ``plan`` (:attr:`ScalePlan.grid`) from the grid
    runs' validation scores ``by_key``, and the grid table the report prints (and
    ``benchmarks/publish_scales.py`` publishes)."""
    chosen: dict[tuple, float] = {}
    grid_table: list[dict[str, Any]] = []
    for tkey, entries in plan.items():
        tm, data, _ = tkey
        scores = {s: by_key[k].get("val_metric") for s, k in entries}
        default = default_scale(tm, data, embed_dim)
        chosen[tkey] = choose_scale(scores, default)
        grid_table.append(
            {
                **method_definition(tm),
                "data": list(data),
                "default": default,
                "val_metric": {f"{s:g}": v for s, v in scores.items()},
                "chosen": chosen[tkey],
            }
        )
    return chosen, grid_table


def scale_protocol_text(settings: BenchSettings, n_published: int, n_chosen: int) -> str:
    """The report's sentence on how every method's logit scale was chosen in this run."""
    grid = QUICK_SCALE_GRID if settings.quick else SCALE_GRID
    g = ", ".join(f"{x:g}" for x in grid)
    rule = (
        f"seed 0 trained at every s in {{{g}}} (Symile and GRAM: their default times s/7), the "
        "scale with the best validation score (the trainer's early-stopping metric) kept (ties: "
        "nearer the objective's default)"
    )
    if n_chosen == 0:
        where = (
            f"each binding method at its published logit scale ({n_published} choices shipped "
            f"with the package: {published_scales()['source']}; there, per dataset/setting on "
            f"the validation split, {rule}); `--choose-scales` re-runs that selection"
        )
    elif n_published == 0:
        where = (
            f"each binding method's logit scale chosen in this run per dataset/setting on the "
            f"validation split (`--choose-scales`): {rule}"
        )
    else:
        where = (
            f"{n_published} method/setting scales published with the package "
            f"({published_scales()['source']}), {n_chosen} without one chosen in this run on "
            f"the validation split: {rule}"
        )
    return (
        where + "; then every seed at that scale (the missing-modality suite uses the choice "
        "made on complete mfeat, the M-suite the choice made on the 4-modality synthetic "
        "setting, Symile and GRAM as the same factor of their default); the tables' 'logit "
        "scale' column gives it; [learned-scale] rows start a learnable scale at the chosen "
        "value of the method they name, clamped to at most twice it"
        + (" (`--quick`: the reduced grid)" if settings.quick and n_chosen else "")
    )
