"""Raw-item training throughput on CPU, and the data-loading overhead against precomputed features.

The IMU example data (``.npy`` traces ``[3, 128]``, 32x32 PNG pictures; captions left out:
their frozen MiniLM features are precomputed in either case) is trained with the same tiny
towers (``conv1d`` on the traces, ``cnn`` on the pictures, CentroBind) for a fixed number of
optimiser steps from three sources:

- ``memory``: the items decoded once, held as flat features in memory
  (:class:`~centrobind.data.source.InMemorySource`): training alone;
- ``raw, N workers``: :class:`~centrobind.data.raw.RawSource`, decoding (with augmentation) in
  ``N`` DataLoader worker processes while the model trains (0: in the training process).

It prints one JSON line per source: items/s (rows of the global batch per second of training),
and the decoding-only rate (items/s, no model). Overhead = 1 - raw rate / memory rate.

Usage::

    python benchmarks/raw_throughput.py --n 1024 --steps 30 --batch-size 64 --workers 0 2

``--text``: instead, the captions through MiniLM as a tower trained on raw items (texts
tokenised to ``--text-length`` ids + mask in the loader, the network run every step; 0 workers),
``train_last=0`` and ``train_last=1``, beside the IMU ``conv1d`` tower, and the frozen default
(MiniLM features computed once, an MLP head trained) for scale::

    python benchmarks/raw_throughput.py --text --n 256 --steps 10 --batch-size 32

Not part of the test suite.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import tempfile
import time
from typing import Any

import torch

from centrobind.data.raw import ColumnPlan, RawSource, load_raw, open_raw
from centrobind.data.source import InMemorySource
from centrobind.examples.imu_data import make_imu_data
from centrobind.models import Binder
from centrobind.objectives import make_objective

PLANS = {"imu": ColumnPlan("array"), "image": ColumnPlan("image", {"size": 32})}
TOWERS = {"imu": "conv1d,width=16,layers=3", "image": "cnn,width=8,layers=3"}


def _train(
    source: Any,
    steps: int,
    batch_size: int,
    seed: int = 0,
    towers: dict[str, str] | None = None,
    shapes: dict[str, list[int]] | None = None,
) -> float:
    """Seconds for ``steps`` optimiser steps (after 2 warm-up steps) over ``source``."""
    torch.manual_seed(seed)
    shapes = shapes or {"imu": [3, 128], "image": [3, 32, 32]}
    dims = {m: math.prod(s) for m, s in shapes.items()}
    binder = Binder(dims, embed_dim=32, encoders=dict(towers or TOWERS), shapes=shapes)
    obj = make_objective("centrobind")
    opt = torch.optim.AdamW([p for p in binder.parameters() if p.requires_grad], lr=1e-3)
    done, t0, epoch = -2, 0.0, 0
    while done < steps:
        for feats, mask in source.batches(epoch, seed, batch_size, drop_last=True):
            if done == 0:
                t0 = time.perf_counter()
            z = {m: binder.encode(m, feats[m]) for m in binder.modalities}
            loss = obj(z, 5.0, mask=mask).loss
            opt.zero_grad()
            loss.backward()
            opt.step()
            done += 1
            if done >= steps:
                break
        epoch += 1
    return time.perf_counter() - t0


def _decode_rate(data: Any, workers: int, batch_size: int) -> float:
    src = RawSource(data, workers=workers)
    t0, n = time.perf_counter(), 0
    for feats, _ in src.batches(0, 0, batch_size, drop_last=True):
        n += feats["imu"].shape[0]
    return n / (time.perf_counter() - t0)


def _text(man: Any, args: argparse.Namespace, info: dict[str, Any]) -> None:
    """MiniLM on the captions as a tower trained on raw items (tokenised in the loader, the
    network run every step), beside the IMU traces (``conv1d``): ``train_last=0`` (the network
    runs, nothing of it trains), ``train_last=1``, and, for scale, the frozen default (features
    computed once, only an MLP head trains)."""
    length = args.text_length
    spec = f"backbone:minilm,length={length}"
    raw = {"imu": ColumnPlan("array"), "caption": ColumnPlan("backbone", {"length": length},
                                                             spec="minilm")}  # fmt: skip
    data = open_raw(man, raw)
    for train_last in (0, 1):
        towers = {"imu": TOWERS["imu"], "caption": f"{spec},train_last={train_last}"}
        src = RawSource(data, workers=0)
        secs = _train(src, args.steps, args.batch_size, towers=towers, shapes=data.shapes)
        row = {"source": f"raw texts, minilm train_last={train_last}", "tokens": length}
        print(json.dumps({**row, "items_per_s": round(args.steps * args.batch_size / secs, 1),
                          **info}))  # fmt: skip
    t0 = time.perf_counter()
    feats = open_raw(man, {"imu": ColumnPlan("array"),
                           "caption": ColumnPlan("features", spec="minilm")})  # fmt: skip
    once = time.perf_counter() - t0
    shapes = {"imu": [3, 128], "caption": [int(feats.dims["caption"])]}
    towers = {"imu": TOWERS["imu"], "caption": "mlp"}
    secs = _train(RawSource(feats, workers=0), args.steps, args.batch_size, towers=towers,
                  shapes=shapes)  # fmt: skip
    print(
        json.dumps(
            {
                "source": "minilm frozen: features once + mlp head",
                "featurize_seconds": round(once, 1),
                "items_per_s": round(args.steps * args.batch_size / secs, 1),
                **info,
            }
        )
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=1024)
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    p.add_argument("--threads", type=int, default=1, help="torch threads of the training process")
    p.add_argument(
        "--text",
        action="store_true",
        help="measure MiniLM as a trainable caption tower on raw texts instead",
    )
    p.add_argument("--text-length", type=int, default=32, help="tokens per text (--text)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    info = {"cpus": os.cpu_count(), "load": os.getloadavg()[0], "threads": args.threads}
    with tempfile.TemporaryDirectory() as tmp:
        man = make_imu_data(tmp, args.n, seed=0)
        if args.text:
            _text(man, args, info)
            return
        ds = load_raw(man, PLANS)
        mem = InMemorySource(ds.features, ds.mask, ds.modalities)
        secs = _train(mem, args.steps, args.batch_size)
        rate_mem = args.steps * args.batch_size / secs
        print(json.dumps({"source": "memory", "items_per_s": round(rate_mem, 1), **info}))
        data = open_raw(man, PLANS)
        for w in args.workers:
            secs = _train(RawSource(data, workers=w), args.steps, args.batch_size)
            rate = args.steps * args.batch_size / secs
            row = {
                "source": f"raw, {w} workers",
                "items_per_s": round(rate, 1),
                "decode_only_items_per_s": round(_decode_rate(data, w, args.batch_size), 1),
                "overhead_vs_memory": round(1 - rate / rate_mem, 3),
                **info,
            }
            print(json.dumps(row))


if __name__ == "__main__":
    main()
