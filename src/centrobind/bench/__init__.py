"""``centrobind benchmark``: every objective on equal terms on the bundled data, with a report.

(The research benchmark. The repository's top-level ``benchmarks/`` scripts are something else:
speed measurements of the kernels and the trainer.)

Python API::

    from centrobind.bench import run_benchmark
    rows = run_benchmark(suite="mfeat", seeds=2, quick=True, out="bench_out")

Every binding method runs at its own logit scale: the one published with the package (chosen on
the validation split by the committed full run), or with ``choose_scales`` chosen again from one
grid (seed 0), then fixed for all seeds (:mod:`centrobind.bench.protocol`). The suites and what
each runs are in :mod:`centrobind.bench.suites`. Jobs (one method x one seed x one setting) are
independent; they run in ``workers`` processes, each single-threaded, so results do not depend on
how jobs are spread over processes: a seed gives the same numbers on the same machine.
"""

from __future__ import annotations

import dataclasses
import multiprocessing as mp
import os
import platform
import shlex
import sys
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from pathlib import Path
from typing import Any

from ..checkpoint import atomic_write_text
from ..config import TrainConfig
from ..errors import ConfigError
from . import protocol
from .cache import RunCache, check_output_folder
from .jobs import BenchSettings, Job
from .progress import JobProgress, announced, init_worker
from .protocol import plan_scales, scale_protocol_text, transfer_scale
from .rawdata import SUITE as RAWDATA_SUITE  # issue 20: registration of the raw-data suite
from .rawdata import run_rawdata_suite
from .report import render_report, summary_table, write_results
from .suites import selected, suite_jobs

#: The default CentroBind's row name: every finding of the report is stated against it.
REFERENCE_METHOD = "CentroBind"

__all__ = ["run_benchmark", "summary_table"]


def _init_worker() -> None:
    import torch
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(1)
    threadpool_limits(1)  # numpy/scipy BLAS too: workers must not oversubscribe the cores


def _run_job(job: Job, base: TrainConfig) -> dict[str, Any]:
    return job.run(base)


def _unique(jobs: list[Job]) -> tuple[list[Job], list[int]]:
    """Merge jobs that train the same model on the same rows (e.g. the missing suite's p=0 and
    the mfeat suite): one run per compute key, evaluated with the union of what they ask for.
    Returns the jobs to run and, for every input job, the index of its run."""
    runs: list[Job] = []
    where: dict[tuple, int] = {}
    owner: list[int] = []
    for job in jobs:
        key = job.compute_key()
        if key not in where:
            where[key] = len(runs)
            runs.append(job)
        else:
            k = where[key]
            r = runs[k]
            runs[k] = dataclasses.replace(
                r,
                probe_tasks=max(r.probe_tasks, job.probe_tasks),
                per_view_probes=r.per_view_probes or job.per_view_probes,
                loo=r.loo or job.loo,
            )
        owner.append(where[key])
    return runs, owner


def _execute(
    all_runs: list[Job],
    base: TrainConfig,
    workers: int,
    title: str,
    quiet: bool,
    cache: RunCache | None = None,
) -> list[dict[str, Any]]:
    """Run ``all_runs`` (in ``workers`` single-threaded processes), results in their order; runs
    found in ``cache`` are reused, new ones are recorded there as they finish."""
    results: list[dict[str, Any]] = [{} for _ in all_runs]
    idx = list(range(len(all_runs)))
    if cache is not None:
        for i, job in enumerate(all_runs):
            hit = cache.get((job, base))
            if hit is not None:
                results[i] = hit
        idx = [i for i in idx if not results[i]]
        if len(idx) < len(all_runs) and not quiet:
            reused = len(all_runs) - len(idx)
            print(f"{title}: {reused} of {len(all_runs)} runs reused from {cache.path}")
    runs = [all_runs[i] for i in idx]
    if not runs:
        return results

    def record(k: int, result: dict[str, Any]) -> None:
        results[idx[k]] = result
        if cache is not None:
            cache.put((runs[k], base), result)

    labels = [f"{j.setting}/{j.method.name} seed {j.seed}" for j in runs]
    bar = JobProgress(labels, title, disable=quiet, workers=workers)
    if workers == 1:
        _init_worker()
        for i, job in enumerate(runs):
            bar.started(i)
            record(i, _run_job(job, base))
            bar.finished(i)
    else:
        ctx = mp.get_context("spawn")
        events = ctx.Queue()  # workers announce the job they start (the bar shows it)
        with ProcessPoolExecutor(
            workers, mp_context=ctx, initializer=init_worker, initargs=(events, _init_worker)
        ) as pool:
            futures = {
                pool.submit(announced, _run_job, i, job, base): i for i, job in enumerate(runs)
            }
            pending = set(futures)
            while pending:
                done, pending = wait(pending, timeout=1.0, return_when=FIRST_COMPLETED)
                for fut in done:
                    record(futures[fut], fut.result())
                    bar.finished(futures[fut])
                bar.poll(events)  # after the finished ones: a worker's next job replaces them
                bar.tick()
        events.close()
    bar.close()
    return results


def run_benchmark(
    suite: str = "all",
    seeds: int | None = None,
    quick: bool = False,
    out: str | Path = "bench_out",
    quiet: bool = False,
    workers: int | None = None,
    fresh: bool = False,
    extended: bool = False,
    choose_scales: bool = False,
    full: bool = False,
) -> list[dict[str, Any]]:
    """Run the suite(s), write ``out/report.md``, ``results.json``, ``results.csv`` and figures.

    Every binding method trains at its published logit scale (:mod:`.protocol`); with
    ``choose_scales`` (and for a method without a published scale) the seed-0 scale grid runs
    first and chooses it. The default is the main job (the core methods on mfeat and the
    weak-anchor synthetic setting, and the M-suite's step cost); ``full`` runs the committed
    report's protocol (:class:`~centrobind.bench.jobs.BenchSettings`), ``extended`` adds each
    suite's secondary studies to it. A single ``suite`` runs its full protocol. Returns the result
    rows (one per job). ``workers`` defaults to the number of CPU cores (at most 4); 1 runs
    everything in this process. Finished runs are recorded in ``out/runs.jsonl``
    (:mod:`centrobind.bench.cache`), so running the same command again after an interruption
    redoes only the missing runs; ``fresh`` discards that record first.
    """
    # --- issue 20: the raw-data suite has its own pipeline and page (bench/rawdata.py) ---
    if suite == RAWDATA_SUITE:
        return run_rawdata_suite(out, seeds, quick, quiet)
    # ---
    # one suite asked for by name runs its whole protocol; the main job trims "all"
    settings = BenchSettings.make(seeds, quick, extended, choose_scales, full or suite != "all")
    jobs = suite_jobs(suite, settings)
    base = settings.train_config()
    out = Path(out)
    workers = workers or min(4, os.cpu_count() or 1)
    if workers < 1:
        raise ConfigError(f"--workers must be >= 1, got {workers}")
    check_output_folder(out)  # never overwrite someone else's report.md / results.csv
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    if fresh:
        (out / "runs.jsonl").unlink(missing_ok=True)
    cache = RunCache(out / "runs.jsonl")
    cached_before = len(cache)
    # phase 1: published scales, and the validation grid (seed 0) for the rest
    plan = plan_scales(jobs, settings)
    grid_runs, _ = _unique(plan.grid_jobs)
    grid_res = _execute(grid_runs, base, workers, f"benchmark {suite}: scale grid", quiet, cache)
    by_key = {j.compute_key(): r for j, r in zip(grid_runs, grid_res, strict=True)}
    chosen, grid_table = protocol.choose_scales(plan.grid, by_key, settings.embed_dim)
    # phase 2: every job at its scale
    final = [_at_scale(j, {**plan.published, **chosen}, settings.embed_dim) for j in jobs]
    runs, owner = _unique(final)
    todo = [i for i, r in enumerate(runs) if r.compute_key() not in by_key]
    done = _execute([runs[i] for i in todo], base, workers, f"benchmark {suite}", quiet, cache)
    results = [by_key.get(r.compute_key(), {}) for r in runs]
    for i, r in zip(todo, done, strict=True):
        results[i] = r
    rows = _rows(final, owner, results)
    wall = time.perf_counter() - t0
    meta = {
        **_settings_meta(settings, suite, workers),
        "logit_scale_protocol": scale_protocol_text(settings, len(plan.published), len(chosen)),
        "logit_scales": "chosen" if choose_scales else "published",
        "published_scales_used": len(plan.published),
        "wall_seconds": wall,
        "jobs": len(jobs),
        "runs": len(grid_runs) + len(todo),
        "grid_runs": len(grid_runs),
        "runs_in_record_at_start": cached_before,
        "logit_scale_grid": grid_table,
    }
    write_results(rows, out, meta)
    atomic_write_text(out / "report.md", render_report(rows, meta, out))
    if not quiet:
        print(summary_table(rows))
        print(f"\nwrote {out}/report.md, results.json, results.csv ({wall:.0f} s)")
    return rows


def _at_scale(job: Job, scales: dict[tuple, float], dim: int) -> Job:
    """``job`` with its method at the scale of its tuning key (moved to its own data for a job
    that chose on other data); untuned methods as they are."""
    if not job.method.tuned:
        return job
    tm, tuned_on, _ = job.tuning_key()
    s = transfer_scale(tm, scales[job.tuning_key()], tuned_on, job.data, dim)
    return dataclasses.replace(job, method=job.method.with_scale(s))


def _settings_meta(settings: BenchSettings, suite: str, workers: int) -> dict[str, Any]:
    """What ``results.json`` records of the command, the budget and the machine."""
    cmd = "centrobind benchmark " + " ".join(
        shlex.quote(a) for a in (sys.argv[2:] if sys.argv[1:2] == ["benchmark"] else [])
    )
    return {
        "command": cmd.strip(),
        "suite": suite,
        "seeds": settings.seeds,
        "quick": settings.quick,
        "epochs": settings.epochs,
        "synthetic_epochs": settings.synthetic_epochs,
        "patience": settings.patience,
        "batch_size": settings.batch_size,
        "embed_dim": settings.embed_dim,
        "lr": settings.lr,
        "extended": settings.extended,
        "plan": settings.plan,
        "workers": workers,
        "reference_method": REFERENCE_METHOD,
        "suite_settings": {su.name: su.meta(settings) for su in selected(suite)},
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python "
        f"{platform.python_version()}, torch {_torch_version()}",
    }


def _rows(jobs: list[Job], owner: list[int], results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One result row per job (``owner[i]``: the run that computed job ``i``)."""
    ids = ("suite", "setting", "method", "seed")
    rows = []
    for job, k in zip(jobs, owner, strict=True):
        metrics = {key: v for key, v in results[k].items() if key not in ids}
        if job.method.logit_scale is not None:
            metrics["logit_scale"] = job.method.logit_scale
        rows.append(
            {
                "suite": job.suite,
                "setting": job.setting,
                "method": job.method.name,
                "seed": job.seed,
                **metrics,
                **dict(job.extra),
            }
        )
    return rows


def _torch_version() -> str:
    import torch

    return torch.__version__
