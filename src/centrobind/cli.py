"""Command line: a thin shell over the Python API (``centrobind.data``, ``runs``, ``bench``).

Every user-facing error (:class:`~centrobind.errors.CentrobindError`) is printed as ONE line on
stderr, ``error: <message>``, with exit code 2; no traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from .errors import CentrobindError

EXIT_USAGE = 2


def _cmd_inspect(args: argparse.Namespace) -> int:
    from .data import describe, load

    print(describe(load(args.data)))
    return 0


def _train_config(args: argparse.Namespace):
    from .runs import read_config_file
    from .train import TrainConfig

    base = read_config_file(args.config) if args.config else {}
    overrides = {
        "objective": args.objective,
        "anchor": args.anchor,
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "weight_decay": args.weight_decay,
        "warmup_steps": args.warmup_steps,
        "seed": args.seed,
        "device": args.device,
        "embed_dim": args.embed_dim,
        "early_stopping": args.early_stopping,
        "checkpoint_every": args.checkpoint_every,
        "intra_weight": args.intra_weight,
        "chunk_size": args.chunk_size,
    }
    base.update({k: v for k, v in overrides.items() if v is not None})
    if args.quiet:
        base["quiet"] = True
    if args.option:
        opts = dict(base.get("objective_options", {}))
        for item in args.option:
            key, sep, value = item.partition("=")
            if not sep:
                raise CentrobindError(f"--option expects KEY=VALUE, got {item!r}")
            try:
                opts[key] = json.loads(value)
            except json.JSONDecodeError:
                opts[key] = value
        base["objective_options"] = opts
    return TrainConfig.from_dict(base)


_OVERRIDES = (
    "objective",
    "anchor",
    "config",
    "epochs",
    "batch_size",
    "lr",
    "weight_decay",
    "warmup_steps",
    "embed_dim",
    "seed",
    "device",
    "early_stopping",
    "checkpoint_every",
    "intra_weight",
    "chunk_size",
    "option",
)


def _cmd_train(args: argparse.Namespace) -> int:
    from .runs import train_run

    if args.resume:
        given = [f"--{k.replace('_', '-')}" for k in _OVERRIDES if getattr(args, k) is not None]
        if given:
            raise CentrobindError(
                f"--resume continues the run exactly as configured in "
                f"{args.out}/config.json; drop {', '.join(given)}"
            )
    cfg = _train_config(args)
    run, result = train_run(args.data, cfg, args.out, resume=args.resume)
    best = (
        f", best epoch {result.best_epoch} (val R@1 {result.best_metric:.1f})"
        if result.best_epoch
        else ""
    )
    print(
        f"trained {cfg.objective} on {run.meta['dataset']}: {result.steps} steps in "
        f"{result.train_seconds:.1f}s{best}; run folder {args.out}"
    )
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from .eval import format_metrics
    from .runs import evaluate_run

    metrics = evaluate_run(args.run, args.data)
    print(format_metrics(metrics))
    print(f"wrote {args.run}/metrics.json")
    return 0


def _cmd_embed(args: argparse.Namespace) -> int:
    from .runs import embed_run

    arrays = embed_run(args.run, args.data, args.out)
    shapes = ", ".join(f"{k} {tuple(v.shape)}" for k, v in arrays.items())
    print(f"wrote {args.out}: {shapes}")
    return 0


def _cmd_benchmark(args: argparse.Namespace) -> int:
    from .bench import run_benchmark

    run_benchmark(
        suite=args.suite, seeds=args.seeds, quick=args.quick, out=args.out, quiet=args.quiet
    )
    return 0


def _cmd_featurize(args: argparse.Namespace) -> int:
    from .featurize import featurize

    encoders: dict[str, str] = {}
    for item in args.encoder or []:
        col, sep, spec = item.partition("=")
        if not sep or not col or not spec:
            raise CentrobindError(f"--encoder expects MODALITY=SPEC, got {item!r}")
        encoders[col] = spec
    summary = featurize(
        args.manifest,
        args.out,
        encoders=encoders,
        labels=args.label,
        batch_size=args.batch_size,
        device=args.device,
        allow_random=args.allow_random,
        progress=not args.quiet,
    )
    print(summary.line())
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from .featurize.demo import run_demo

    report = run_demo(
        args.out, tiny=args.tiny, n=args.n, seed=args.seed, quiet=args.quiet, seeds=args.seeds
    )
    print(f"wrote {report}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="centrobind",
        description="Learn one embedding space for many paired modalities (CentroBind and peers).",
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    s = sub.add_parser("inspect", help="describe a dataset folder or builtin (mfeat, synthetic)")
    s.add_argument("data", metavar="PATH_OR_BUILTIN")
    s.set_defaults(func=_cmd_inspect)

    s = sub.add_parser("train", help="train a Binder; writes a run folder")
    s.add_argument("--data", required=True, help="dataset folder or builtin name")
    s.add_argument("--objective", help="centrobind | fixed_anchor | all_pairs | symile | gram")
    s.add_argument("--anchor", help="anchor modality name (fixed_anchor, gram)")
    s.add_argument("--out", required=True, help="run folder, e.g. runs/mfeat-centrobind")
    s.add_argument("--config", help="TOML or JSON file with TrainConfig fields")
    s.add_argument("--epochs", type=int)
    s.add_argument("--batch-size", type=int)
    s.add_argument("--lr", type=float)
    s.add_argument("--weight-decay", type=float)
    s.add_argument("--warmup-steps", type=int)
    s.add_argument("--embed-dim", type=int)
    s.add_argument("--seed", type=int)
    s.add_argument("--device", help="cpu | cuda | mps")
    s.add_argument("--early-stopping", type=int, metavar="PATIENCE")
    s.add_argument("--checkpoint-every", type=int, metavar="STEPS")
    s.add_argument("--intra-weight", type=float, help="weight of the intra-modal term")
    s.add_argument("--chunk-size", type=int, help="row-block size for the logits (memory)")
    s.add_argument(
        "--option",
        action="append",
        metavar="KEY=VALUE",
        help="objective option, e.g. --option detach_anchor=false (repeatable)",
    )
    s.add_argument("--resume", action="store_true", help="continue from OUT/checkpoints/latest")
    s.add_argument("--quiet", action="store_true", help="no progress bar")
    s.set_defaults(func=_cmd_train)

    s = sub.add_parser("evaluate", help="score a run on its held-out split; writes metrics.json")
    s.add_argument("--run", required=True)
    s.add_argument("--data", help="dataset (default: the one the run was trained on)")
    s.set_defaults(func=_cmd_evaluate)

    s = sub.add_parser("embed", help="embed a dataset with a trained run into an .npz")
    s.add_argument("--run", required=True)
    s.add_argument("--data", required=True)
    s.add_argument("--out", required=True, help="output .npz")
    s.set_defaults(func=_cmd_embed)

    s = sub.add_parser("benchmark", help="compare objectives on the bundled data; writes a report")
    s.add_argument("--suite", default="all", choices=["all", "mfeat", "synthetic", "missing"])
    s.add_argument("--seeds", type=int, default=None, help="number of seeds (default 5, quick 1)")
    s.add_argument("--quick", action="store_true", help="fewer seeds and epochs (~1 minute)")
    s.add_argument("--out", default="bench_out", help="output folder")
    s.add_argument("--quiet", action="store_true")
    s.set_defaults(func=_cmd_benchmark)

    s = sub.add_parser("featurize", help="raw texts/images/audio (a manifest) -> a dataset folder")
    s.add_argument("manifest", help="CSV, TSV, JSONL or Parquet; one column per modality")
    s.add_argument("--out", required=True, help="dataset folder to write (resumable)")
    s.add_argument(
        "--encoder",
        action="append",
        metavar="MODALITY=SPEC",
        help="e.g. caption=minilm, image=pixels:16:gray, speech=logmel, x=hf:PATH (repeatable)",
    )
    s.add_argument("--label", action="append", metavar="COLUMN", help="a label column (repeatable)")
    s.add_argument("--batch-size", type=int, default=32)
    s.add_argument("--device", default="auto", help="auto | cpu | cuda")
    s.add_argument("--allow-random", action="store_true", help="image backbones without weights")
    s.add_argument("--quiet", action="store_true", help="no progress bar")
    s.set_defaults(func=_cmd_featurize)

    s = sub.add_parser("demo", help="build, featurize, train and report the tri-modal digits demo")
    s.add_argument("--out", required=True, help="folder for the raw data, runs and report")
    s.add_argument("--tiny", action="store_true", help="a few dozen items (a CI smoke test)")
    s.add_argument("--n", type=int, default=None, help="number of items (default 600, tiny 40)")
    s.add_argument("--seed", type=int, default=0, help="first seed (data and training)")
    s.add_argument("--seeds", type=int, default=None, help="training seeds (default 3, tiny 1)")
    s.add_argument("--quiet", action="store_true")
    s.set_defaults(func=_cmd_demo)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except CentrobindError as e:
        msg = " ".join(str(e).split())
        print(f"error: {msg}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as e:  # unwritable output, full disk, ...: the OS said it in one line
        print(f"error: {e.filename or ''}: {e.strerror or e}".replace(": :", ":"), file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
