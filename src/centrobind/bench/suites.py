"""The benchmark suites: which methods run on which data, with which settings.

- ``mfeat``: the six UCI Multiple Features views; every method, plus CentroBind ablations (anchor
  variants, learned weights, intra-modal term) and the fixed anchor without pre-training.
- ``synthetic``: a clean and a weak-anchor setting (modality m1 much noisier), and a sweep of m1's
  noise level.
- ``missing``: mfeat with each modality of each training sample dropped at rate p.

Each suite yields result rows ``{"suite", "setting", "method", "seed", **metrics}``.

Temperature protocol (every binding method on equal terms): per dataset/setting (the data a job
trains on; the missing suite uses the choice made on complete mfeat), every binding method is
first trained on seed 0 at each logit scale of :data:`SCALE_GRID` (Symile and GRAM: their own
default times the same factors relative to 7, ``s / 7``); the scale with the best validation
score (the trainer's early-stopping metric, ``FitResult.best_metric``) is chosen, ties going to
the scale nearer the objective's default (in log-scale); then every seed runs at that scale (the
seed-0 run at the chosen scale is reused). ``--quick`` uses :data:`QUICK_SCALE_GRID`.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass

from ..config import TrainConfig, objective_class
from ..data import MultimodalDataset, load_builtin
from ..errors import ConfigError
from .methods import Method, run_method

__all__ = [
    "QUICK_SCALE_GRID",
    "SCALE_GRID",
    "INTRA_WEIGHTS",
    "MISSING_RATES",
    "SUITES",
    "SWEEP_NOISE",
    "SYNTH_CLEAN_NOISE",
    "SYNTH_WEAK_NOISE",
    "BenchSettings",
    "Job",
    "choose_scale",
    "core_methods",
    "scale_grid",
    "dataset",
    "suite_jobs",
]

SYNTH_WEAK_NOISE = 2.0
SYNTH_CLEAN_NOISE = 0.1
SWEEP_NOISE = (0.1, 0.5, 1.0, 2.0, 4.0)
MISSING_RATES = (0.0, 0.3, 0.6)
INTRA_WEIGHTS = (0.3, 1.0)
#: The logit scales every cosine-score method is tried at (seed 0, validation split).
SCALE_GRID = (2.0, 3.0, 5.0, 7.0, 10.0, 14.0, 20.0)
#: ``--quick``: a reduced grid (the protocol end to end, at a third of the cost).
QUICK_SCALE_GRID = (3.0, 7.0)
#: Objectives whose scale lives on another range: their default times ``SCALE_GRID / 7``.
RELATIVE_SCALE_OBJECTIVES = ("symile", "gram")


@dataclass(frozen=True)
class BenchSettings:
    """Shared training budget: the same for every method."""

    seeds: int = 5
    epochs: int = 100
    patience: int = 20
    batch_size: int = 256
    embed_dim: int = 64
    lr: float = 1e-3
    synthetic_samples: int = 3000
    # Early stopping, not the cap, should end training: at 60 epochs every synthetic run hit the
    # cap (scores still rising ~10 R@1 points); with 200 they stop at ~100-180.
    synthetic_epochs: int = 200
    ablation_seeds: int = 3
    sweep_seeds: int = 2
    quick: bool = False

    @classmethod
    def make(cls, seeds: int | None, quick: bool) -> BenchSettings:
        if seeds is not None and seeds < 1:
            raise ConfigError(f"--seeds must be >= 1, got {seeds}")
        if quick:
            return cls(
                seeds=seeds or 1,
                epochs=15,
                patience=15,
                synthetic_samples=1500,
                synthetic_epochs=15,
                ablation_seeds=1,
                sweep_seeds=1,
                quick=True,
            )
        return cls(seeds=seeds or 5)

    def train_config(self) -> TrainConfig:
        return TrainConfig(
            epochs=self.epochs,
            batch_size=self.batch_size,
            lr=self.lr,
            embed_dim=self.embed_dim,
            early_stopping=self.patience,
            warmup_steps=20,
            device="cpu",  # reproducible figures; many small cells gain nothing from a GPU
            quiet=True,
        )


@dataclass(frozen=True)
class Job:
    """One (suite, setting, method, seed) cell: plain data, so jobs can be sent to worker
    processes and identical computations recognised (:meth:`compute_key`)."""

    suite: str
    setting: str
    method: Method
    seed: int
    data: tuple  # ("mfeat",) or ("synthetic", noise_m1, n_samples)
    drop: float = 0.0  # training rows: drop each modality at this rate
    extra: tuple[tuple[str, float], ...] = ()
    probe_tasks: int = 99
    per_view_probes: bool = False
    loo: bool = True
    epochs: int | None = None

    def compute_key(self) -> tuple:
        """Jobs with equal keys train the same model on the same rows (evaluation may differ)."""
        return (self.method, self.seed, self.data, self.drop, self.epochs)

    def tuning_key(self) -> tuple:
        """Jobs with equal keys share one logit-scale choice: the method (for a learnable-scale
        variant, the fixed-scale method it starts from) on the same data and budget (any drop
        rate: the choice is made on the complete data)."""
        return (self.method.tuning_method(), self.data, self.epochs)

    def run(self, base: TrainConfig) -> dict:
        ds = dataset(self.data)
        if self.epochs is not None:
            base = dataclasses.replace(base, epochs=self.epochs)
        drop, seed = self.drop, 1000 + self.seed

        def transform(train_ds: MultimodalDataset) -> MultimodalDataset:
            return train_ds.with_missing(drop, seed=seed)

        metrics = run_method(
            self.method,
            ds,
            base,
            self.seed,
            transform if drop > 0 else None,
            probe_tasks=self.probe_tasks,
            per_view_probes=self.per_view_probes,
            loo=self.loo,
        )
        return {
            "suite": self.suite,
            "setting": self.setting,
            "method": self.method.name,
            "seed": self.seed,
            **dict(self.extra),
            **metrics,
        }


def default_scale(method: Method, data: tuple, embed_dim: int) -> float:
    """The objective's own default logit scale on ``data`` (its ``default_logit_scale``)."""
    n_mod = len(dataset(data).modalities)
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


_CACHE: dict[tuple, MultimodalDataset] = {}


def dataset(key: tuple) -> MultimodalDataset:
    """The (cached) dataset of a job: ``("mfeat",)`` or ``("synthetic", noise_m1, n)``."""
    if key not in _CACHE:
        if key[0] == "mfeat":
            _CACHE[key] = load_builtin("mfeat")
        else:
            _, noise1, n = key
            _CACHE[key] = load_builtin(
                "synthetic", n_samples=n, seed=0, noise=[noise1] + [SYNTH_CLEAN_NOISE] * 3
            )
    return _CACHE[key]


MFEAT = ("mfeat",)


PAPER = Method("CentroBind[paper]", options=(("centroid", "full"),))
LOO = Method("CentroBind[loo]", options=(("centroid", "leave_one_out"),))


def core_methods(modalities: list[str], anchors: list[str]) -> list[Method]:
    """Fixed anchor on each of ``anchors``, CentroBind (the default, self_weight 0.25), the
    paper's full centroid, the leave-one-out centroid, AllPairs, Symile, Gram."""
    methods = [Method(f"FixedAnchor({a})", objective="fixed_anchor", anchor=a) for a in anchors]
    methods += [
        Method("CentroBind", objective="centrobind"),
        PAPER,
        LOO,
        Method("AllPairs", objective="all_pairs"),
        Method("Symile", objective="symile"),
        Method(f"Gram({modalities[0]})", objective="gram", anchor=modalities[0]),
    ]
    return methods


def learned_scale_methods() -> list[Method]:
    """CentroBind and AllPairs with a learnable scale from their chosen one (clamp at 2x)."""
    return [
        Method("CentroBind[learned-scale]", learn_scale=True, scale_from="CentroBind"),
        Method(
            "AllPairs[learned-scale]",
            objective="all_pairs",
            learn_scale=True,
            scale_from="AllPairs",
        ),
    ]


def mfeat_jobs(s: BenchSettings) -> Iterator[Job]:
    mods = ["fac", "fou", "kar", "mor", "pix", "zer"]
    methods = core_methods(mods, mods) + learned_scale_methods()
    methods += [Method("GCCA", kind="gcca"), Method("Raw", kind="raw")]
    ablations = [
        Method("CentroBind"),  # the reference, on the same seeds (a copy of the mfeat run)
        Method("CentroBind[grad,unnorm]", options=(("detach_anchor", False),)),
        Method("CentroBind[detach,norm]", options=(("normalize_anchor", True),)),
        Method(
            "CentroBind[grad,norm]", options=(("detach_anchor", False), ("normalize_anchor", True))
        ),
        Method("CentroBind[learned-w]", options=(("weights", "learned"),)),
        Method("CentroBind[lr3e-3]", overrides=(("lr", 3e-3),)),
        Method("AllPairs[lr3e-3]", objective="all_pairs", overrides=(("lr", 3e-3),)),
        Method(
            "FixedAnchor(pix)[no-pretrain]",
            objective="fixed_anchor",
            anchor="pix",
            overrides=(("anchor_init", "none"),),
        ),
    ]
    ablations += [Method(f"CentroBind+intra{w}", intra_weight=w) for w in INTRA_WEIGHTS]
    if s.quick:
        ablations = ablations[:2]
    for seed in range(s.seeds):
        for m in methods:
            yield Job("mfeat", "mfeat", m, seed, MFEAT, per_view_probes=True)
    for seed in range(min(s.seeds, s.ablation_seeds)):
        for m in ablations:
            yield Job("mfeat", "ablation", m, seed, MFEAT)


def synthetic_jobs(s: BenchSettings) -> Iterator[Job]:
    mods = ["m1", "m2", "m3", "m4"]
    methods = core_methods(mods, ["m1", "m2"]) + learned_scale_methods()
    methods += [
        Method("Untrained", kind="untrained"),
        Method("Raw", kind="raw"),
        Method("GCCA", kind="gcca"),
    ]
    methods += [Method(f"CentroBind+intra{w}", intra_weight=w) for w in INTRA_WEIGHTS]
    methods.append(Method("CentroBind[learned-w]", options=(("weights", "learned"),)))
    for seed in range(s.seeds):
        for setting, noise1 in (("clean", SYNTH_CLEAN_NOISE), ("weak-anchor", SYNTH_WEAK_NOISE)):
            for m in methods:
                yield Job(
                    "synthetic",
                    setting,
                    m,
                    seed,
                    ("synthetic", noise1, s.synthetic_samples),
                    extra=(("noise_m1", noise1),),
                    probe_tasks=2,
                    epochs=s.synthetic_epochs,
                )
    sweep = [
        Method("FixedAnchor(m1)", objective="fixed_anchor", anchor="m1"),
        Method("CentroBind"),
        PAPER,
        Method("AllPairs", objective="all_pairs"),
    ]
    levels = SWEEP_NOISE[::2] if s.quick else SWEEP_NOISE
    for seed in range(min(s.seeds, s.sweep_seeds)):
        for noise1 in levels:
            for m in sweep:
                yield Job(
                    "synthetic",
                    "sweep",
                    m,
                    seed,
                    ("synthetic", noise1, s.synthetic_samples),
                    extra=(("noise_m1", noise1),),
                    probe_tasks=0,
                    loo=False,
                    epochs=s.synthetic_epochs,
                )


def missing_jobs(s: BenchSettings) -> Iterator[Job]:
    methods = [
        Method("CentroBind"),
        PAPER,
        Method("AllPairs", objective="all_pairs"),
        Method("FixedAnchor(pix)", objective="fixed_anchor", anchor="pix"),
    ]
    rates = (0.0, 0.6) if s.quick else MISSING_RATES
    for seed in range(s.seeds):
        for p in rates:
            for m in methods:
                yield Job(
                    "missing",
                    f"p={p}",
                    m,
                    seed,
                    MFEAT,
                    drop=p,
                    extra=(("p", p),),
                    probe_tasks=1,
                    loo=False,
                )


SUITES: dict[str, Callable[[BenchSettings], Iterator[Job]]] = {
    "mfeat": mfeat_jobs,
    "synthetic": synthetic_jobs,
    "missing": missing_jobs,
}


def suite_jobs(suite: str, s: BenchSettings) -> list[Job]:
    """All jobs of ``suite`` ("all" = every suite)."""
    names = list(SUITES) if suite == "all" else [suite]
    unknown = [n for n in names if n not in SUITES]
    if unknown:
        raise ValueError(f"unknown suite {unknown[0]!r}; choose from all, {', '.join(SUITES)}")
    return [job for n in names for job in SUITES[n](s)]
