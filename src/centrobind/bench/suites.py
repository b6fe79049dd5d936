"""The benchmark suites: which methods run on which data, with which settings.

- ``mfeat``: the six UCI Multiple Features views; every method, plus CentroBind ablations (anchor
  variants, learned weights, intra-modal term) and the fixed anchor without pre-training.
- ``synthetic``: a clean and a weak-anchor setting (modality m1 much noisier), and a sweep of m1's
  noise level.
- ``missing``: mfeat with each modality of each training sample dropped at rate p.

Each suite yields result rows ``{"suite", "setting", "method", "seed", **metrics}``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from ..config import TrainConfig
from ..data import MultimodalDataset, load_builtin
from ..errors import ConfigError
from .methods import Method, run_method

__all__ = [
    "INTRA_WEIGHTS",
    "MISSING_RATES",
    "SUITES",
    "SWEEP_NOISE",
    "SYNTH_CLEAN_NOISE",
    "SYNTH_WEAK_NOISE",
    "BenchSettings",
    "Job",
    "core_methods",
    "dataset",
    "suite_jobs",
]

SYNTH_WEAK_NOISE = 2.0
SYNTH_CLEAN_NOISE = 0.1
SWEEP_NOISE = (0.1, 0.5, 1.0, 2.0, 4.0)
MISSING_RATES = (0.0, 0.3, 0.6)
INTRA_WEIGHTS = (0.3, 1.0)


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
    synthetic_epochs: int = 60
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


def core_methods(modalities: list[str], anchors: list[str]) -> list[Method]:
    """Fixed anchor on each of ``anchors``, CentroBind (defaults), AllPairs, Symile, Gram."""
    methods = [Method(f"FixedAnchor({a})", objective="fixed_anchor", anchor=a) for a in anchors]
    methods += [
        Method("CentroBind", objective="centrobind"),
        Method("AllPairs", objective="all_pairs"),
        Method("Symile", objective="symile"),
        Method(f"Gram({modalities[0]})", objective="gram", anchor=modalities[0]),
    ]
    return methods


def mfeat_jobs(s: BenchSettings) -> Iterator[Job]:
    mods = ["fac", "fou", "kar", "mor", "pix", "zer"]
    methods = core_methods(mods, mods) + [Method("GCCA", kind="gcca"), Method("Raw", kind="raw")]
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
    methods = core_methods(mods, ["m1", "m2"]) + [
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
