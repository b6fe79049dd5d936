"""What one benchmark run is: the shared budget (:class:`BenchSettings`), a job (:class:`Job`:
one method x one seed x one dataset) and the datasets jobs name by a key (:func:`dataset`).

This module and :mod:`centrobind.bench.methods` are the benchmark code that can change a number;
a suite only decides which jobs exist (a job's ``repr`` is its identity in ``runs.jsonl``), so
suites and the report can change without invalidating finished runs
(:mod:`centrobind.bench.cache`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from ..config import TrainConfig
from ..data import MultimodalDataset, load_builtin
from ..errors import ConfigError
from .methods import Method, run_method

__all__ = [
    "MFEAT",
    "SYNTH_CLEAN_NOISE",
    "SYNTH_WEAK_NOISE",
    "BenchSettings",
    "Job",
    "dataset",
    "n_modalities",
    "synthetic_key",
]

SYNTH_WEAK_NOISE = 2.0
SYNTH_CLEAN_NOISE = 0.1
MFEAT = ("mfeat",)


@dataclass(frozen=True)
class BenchSettings:
    """The budget every method shares, and how much of the benchmark runs.

    ``seeds``: seeds of the main comparisons (suites may run fewer for secondary studies).
    ``full``: the committed report's protocol, beyond the main job (the default): the variants
    of CentroBind and GRAM, the clean synthetic setting, missing modalities, and the M-suite's
    trainings (the main job measures only its step cost).
    ``extended``: also run the studies (ablations, sweeps, variants) beside the full protocol.
    ``choose_scales``: choose every logit scale on the validation grid instead of using the
    published scales (:mod:`centrobind.bench.protocol`).
    """

    seeds: int = 3
    epochs: int = 100
    patience: int = 20
    batch_size: int = 256
    embed_dim: int = 64
    lr: float = 1e-3
    synthetic_samples: int = 3000
    # Early stopping, not the cap, should end training: at 60 epochs every synthetic run hit the
    # cap (scores still rising ~10 R@1 points); with 200 they stop at ~100-180.
    synthetic_epochs: int = 200
    quick: bool = False
    full: bool = False
    extended: bool = False
    choose_scales: bool = False

    @classmethod
    def make(
        cls,
        seeds: int | None,
        quick: bool,
        extended: bool = False,
        choose_scales: bool = False,
        full: bool = False,
    ) -> BenchSettings:
        """The default budget (``quick``: the smoke run's), with ``seeds`` if given;
        ``extended`` implies ``full``."""
        if seeds is not None and seeds < 1:
            raise ConfigError(f"--seeds must be >= 1, got {seeds}")
        flags = {"full": full or extended, "extended": extended, "choose_scales": choose_scales}
        if quick:
            return cls(
                seeds=seeds or 1,
                epochs=15,
                patience=15,
                synthetic_samples=1500,
                synthetic_epochs=15,
                quick=True,
                **flags,
            )
        return cls(seeds=seeds or cls.seeds, **flags)

    @property
    def plan(self) -> str:
        """``main`` (the default), ``full`` or ``extended``."""
        return "extended" if self.extended else "full" if self.full else "main"

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


def synthetic_key(noise_m1: float, n: int, m: int = 4) -> tuple:
    """The data key of the synthetic data with ``m`` modalities, ``n`` samples and modality m1's
    noise ``noise_m1`` (the others 0.1). Four modalities keep the key ``("synthetic", noise, n)``
    of the first benchmarks, so their recorded runs and published scales stay valid."""
    return ("synthetic", noise_m1, n) if m == 4 else ("synthetic", noise_m1, n, m)


@dataclass(frozen=True)
class Job:
    """One (suite, setting, method, seed) cell: plain data, so jobs can be sent to worker
    processes and identical computations recognised (:meth:`compute_key`).

    ``tune_on``: the data whose validation grid chooses this job's logit scale (default: its own
    ``data``); ``memory``: also measure the peak memory of one training step; ``train=False``:
    only that cost (:func:`~centrobind.bench.methods.step_cost`), on the untrained model.
    """

    suite: str
    setting: str
    method: Method
    seed: int
    data: tuple  # ("mfeat",) or a synthetic_key(...)
    drop: float = 0.0  # training rows: drop each modality at this rate
    extra: tuple[tuple[str, float], ...] = ()
    probe_tasks: int = 99
    per_view_probes: bool = False
    loo: bool = True
    epochs: int | None = None
    tune_on: tuple | None = None
    memory: bool = False
    train: bool = True

    def compute_key(self) -> tuple:
        """Jobs with equal keys train the same model on the same rows (evaluation may differ)."""
        return (self.method, self.seed, self.data, self.drop, self.epochs, self.train)

    def tuning_key(self) -> tuple:
        """Jobs with equal keys share one logit-scale choice: the method (for a learnable-scale
        variant, the fixed-scale method it starts from) on the same data and budget (any drop
        rate: the choice is made on the complete data)."""
        return (self.method.tuning_method(), self.tune_on or self.data, self.epochs)

    def run(self, base: TrainConfig) -> dict[str, Any]:
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
            memory=self.memory,
            train=self.train,
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


def n_modalities(key: tuple) -> int:
    """The number of modalities of a job's data (without building a synthetic dataset)."""
    if key[0] == "synthetic":
        return int(key[3]) if len(key) > 3 else 4
    return len(dataset(key).modalities)


def dataset(key: tuple) -> MultimodalDataset:
    """The (cached) dataset of a job: ``("mfeat",)`` or a :func:`synthetic_key`."""
    if key not in _CACHE:
        if key[0] == "mfeat":
            _CACHE[key] = load_builtin("mfeat")
        elif key[0] == "synthetic":
            noise1, n = key[1], key[2]
            m = key[3] if len(key) > 3 else 4
            _CACHE[key] = load_builtin(
                "synthetic",
                n_samples=n,
                n_modalities=m,
                seed=0,
                noise=[noise1] + [SYNTH_CLEAN_NOISE] * (m - 1),
                pair=None if m == 2 else (2, 3),
            )
        else:
            raise ValueError(f"unknown benchmark data key {key!r}")
    return _CACHE[key]
