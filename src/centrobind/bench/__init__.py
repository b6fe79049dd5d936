"""``centrobind benchmark``: every objective on equal terms on the bundled data, with a report.

(The research benchmark. The repository's top-level ``benchmarks/`` scripts are something else:
speed measurements of the kernels and the trainer.)

Python API::

    from centrobind.bench import run_benchmark
    rows = run_benchmark(suite="mfeat", seeds=2, quick=True, out="bench_out")

Jobs (one method x one seed x one setting) are independent; they run in ``workers`` processes,
each single-threaded, so results do not depend on how jobs are spread over processes: a seed gives
the same numbers on the same machine.
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
from .progress import JobProgress, announced, init_worker
from .report import render_report, summary_table, write_results
from .suites import BenchSettings, Job, suite_jobs

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


def run_benchmark(
    suite: str = "all",
    seeds: int | None = None,
    quick: bool = False,
    out: str | Path = "bench_out",
    quiet: bool = False,
    workers: int | None = None,
) -> list[dict[str, Any]]:
    """Run the suite(s), write ``out/report.md``, ``results.json``, ``results.csv`` and figures.

    Returns the result rows (one per job). ``workers`` defaults to the number of CPU cores (at most
    4); 1 runs everything in this process.
    """
    settings = BenchSettings.make(seeds, quick)
    jobs = suite_jobs(suite, settings)
    runs, owner = _unique(jobs)
    base = settings.train_config()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    workers = workers or min(4, os.cpu_count() or 1)
    t0 = time.perf_counter()
    results: list[dict[str, Any]] = [{} for _ in runs]
    labels = [f"{j.setting}/{j.method.name} seed {j.seed}" for j in runs]
    bar = JobProgress(labels, f"benchmark {suite}", disable=quiet, workers=workers)
    if workers == 1:
        _init_worker()
        for i, job in enumerate(runs):
            bar.started(i)
            results[i] = _run_job(job, base)
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
                    results[futures[fut]] = fut.result()
                    bar.finished(futures[fut])
                bar.poll(events)  # after the finished ones: a worker's next job replaces them
                bar.tick()
        events.close()
    bar.close()
    rows = _rows(jobs, owner, results)
    wall = time.perf_counter() - t0
    cmd = "centrobind benchmark " + " ".join(
        shlex.quote(a) for a in (sys.argv[2:] if sys.argv[1:2] == ["benchmark"] else [])
    )
    meta = {
        "command": cmd.strip(),
        "suite": suite,
        "seeds": settings.seeds,
        "quick": quick,
        "epochs": settings.epochs,
        "synthetic_epochs": settings.synthetic_epochs,
        "patience": settings.patience,
        "batch_size": settings.batch_size,
        "embed_dim": settings.embed_dim,
        "lr": settings.lr,
        "workers": workers,
        "wall_seconds": wall,
        "jobs": len(jobs),
        "runs": len(runs),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python "
        f"{platform.python_version()}, torch {_torch_version()}",
    }
    write_results(rows, out, meta)
    atomic_write_text(out / "report.md", render_report(rows, meta, out))
    if not quiet:
        print(summary_table(rows))
        print(f"\nwrote {out}/report.md, results.json, results.csv ({wall:.0f} s)")
    return rows


def _rows(jobs: list[Job], owner: list[int], results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One result row per job (``owner[i]``: the run that computed job ``i``)."""
    ids = ("suite", "setting", "method", "seed")
    rows = []
    for job, k in zip(jobs, owner, strict=True):
        metrics = {key: v for key, v in results[k].items() if key not in ids}
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
