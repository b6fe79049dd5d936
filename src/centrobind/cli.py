"""Command line: a thin shell over the Python API (``centrobind.data``, ``runs``, ``bench``).

Every user-facing error (:class:`~centrobind.errors.CentrobindError`) is printed as ONE line on
stderr, ``error: <message>``, with exit code 2; no traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
import typing
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .errors import CentrobindError, CentrobindWarning

EXIT_USAGE = 2


def _cmd_inspect(args: argparse.Namespace) -> int:
    import warnings

    from .data import describe, load

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds = load(args.data)
    for w in caught:  # e.g. DatasetWarning: modalities/notes.csv ignored
        print(f"warning: {w.message}", file=sys.stderr)
    print(describe(ds))
    return 0


def _given_config(args: argparse.Namespace) -> dict[str, Any]:
    """The TrainConfig fields this command line sets: ``--config`` file, then flags, then
    ``--option KEY=VALUE`` into ``objective_options``."""
    from .config import config_overrides
    from .runs import read_config_file

    given = read_config_file(args.config) if args.config else {}
    if not isinstance(given, dict):
        raise CentrobindError(f"{args.config}: a config file must be a table of settings")
    given.update(config_overrides(args))
    if args.option:
        opts = dict(given.get("objective_options", {}))
        for item in args.option:
            key, sep, value = item.partition("=")
            if not sep:
                raise CentrobindError(f"--option expects KEY=VALUE, got {item!r}")
            try:
                opts[key] = json.loads(value)
            except json.JSONDecodeError:
                opts[key] = value
        given["objective_options"] = opts
    return given


def _check_resume(out: str, given: dict[str, Any]) -> None:
    """``--resume`` continues the run as saved: flags equal to the saved config are fine (the
    original command line plus ``--resume`` works); a conflicting one is refused, named."""
    from .config import TrainConfig
    from .runs import read_run_config

    path = Path(out) / "config.json"
    if not path.is_file():
        return  # train_run says that there is nothing to resume
    saved = read_run_config(out)  # any defect of config.json as one line
    asked = TrainConfig.from_dict({**saved.to_dict(), **given})
    conflicts = [
        f"--{k.replace('_', '-')} ({getattr(asked, k)!r}, saved {getattr(saved, k)!r})"
        for k in given
        if k != "quiet" and getattr(asked, k) != getattr(saved, k)
    ]
    if conflicts:
        raise CentrobindError(
            f"--resume continues the run exactly as configured in {path}; "
            f"drop {', '.join(conflicts)}"
        )


def _cmd_train(args: argparse.Namespace) -> int:
    from .config import TrainConfig
    from .runs import train_run

    given = _given_config(args)
    if args.resume:
        _check_resume(args.out, given)
    cfg = TrainConfig.from_dict(given)
    run, result = train_run(args.data, cfg, args.out, resume=args.resume)
    best = (
        f", best epoch {result.best_epoch} (val R@1 {result.best_metric:.1f}%)"
        if result.best_epoch
        else ""
    )
    print(
        f"trained {run.config.objective} on {run.meta['dataset']}: {result.steps} steps in "
        f"{result.train_seconds:.1f}s{best}; run folder {args.out}"
    )
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from .eval import format_metrics
    from .runs import evaluate_run

    metrics = evaluate_run(args.run, args.data, device=args.device)
    print(format_metrics(metrics))
    print(f"wrote {args.run}/metrics.json")
    return 0


def _cmd_embed(args: argparse.Namespace) -> int:
    from .runs import embed_run

    arrays = embed_run(args.run, args.data, args.out, device=args.device)
    shapes = ", ".join(f"{k} {tuple(v.shape)}" for k, v in arrays.items())
    print(f"wrote {args.out}: {shapes}")
    return 0


def _cmd_search(args: argparse.Namespace) -> int:
    from .inference import format_hits, load, search_corpus

    results = search_corpus(
        load(args.run),
        args.corpus,
        args.target,
        k=args.k,
        queries=args.query,
        query_data=args.query_data,
        query_modality=args.query_modality,
    )
    if args.json:
        for res in results:
            print(json.dumps(res["hits"], ensure_ascii=False))
    else:
        print(format_hits(results))
    return 0


def _cmd_benchmark(args: argparse.Namespace) -> int:
    from .bench import run_benchmark

    run_benchmark(
        suite=args.suite, seeds=args.seeds, quick=args.quick, out=args.out, quiet=args.quiet
    )
    return 0


class _Parser(argparse.ArgumentParser):
    """An argument parser whose usage errors are one ``error: ...`` line (exit 2), like every
    other user error of the CLI."""

    def error(self, message: str) -> typing.NoReturn:
        print(f"error: {self.prog}: {' '.join(message.split())}", file=sys.stderr)
        sys.exit(EXIT_USAGE)


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows ``(default: X)`` where there is a meaningful default (not None / a bare switch)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        if action.default in (None, False, argparse.SUPPRESS) or action.required:
            return action.help or ""
        return super()._get_help_string(action) or ""


_DEVICE_HELP = "cpu | cuda | mps | auto (default: the run's device when present, else cpu)"


def _show_warning(
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: typing.TextIO | None = None,
    line: str | None = None,
) -> None:
    """Our warnings (:class:`CentrobindWarning`) as one ``warning: ...`` line on stderr; any
    other warning as Python shows it."""
    if issubclass(category, CentrobindWarning):
        print(f"warning: {' '.join(str(message).split())}", file=sys.stderr)
    else:
        _python_showwarning(message, category, filename, lineno, file, line)


_python_showwarning = warnings.showwarning


def build_parser() -> argparse.ArgumentParser:
    from . import __version__
    from .config import add_config_arguments

    p = _Parser(
        prog="centrobind",
        description="Learn one embedding space for many paired modalities (CentroBind and peers).",
        formatter_class=_HelpFormatter,
    )
    p.add_argument("--version", action="version", version=f"centrobind {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def verb(name: str, help: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=help, description=help, formatter_class=_HelpFormatter)

    s = verb("inspect", "describe a dataset folder or builtin (mfeat, synthetic)")
    s.add_argument("data", metavar="PATH_OR_BUILTIN")
    s.set_defaults(func=_cmd_inspect)

    s = verb("train", "train a Binder; writes a run folder")
    s.add_argument("--data", required=True, help="dataset folder or builtin name")
    s.add_argument("--out", required=True, help="run folder, e.g. runs/mfeat-centrobind")
    s.add_argument("--config", help="TOML or JSON file with TrainConfig fields (flags override)")
    s.add_argument(
        "--option",
        action="append",
        metavar="KEY=VALUE",
        help="objective option, e.g. --option detach_anchor=false (repeatable)",
    )
    s.add_argument(
        "--resume",
        action="store_true",
        help="continue from OUT/checkpoints/latest (flags must equal the saved config)",
    )
    add_config_arguments(s)
    s.set_defaults(func=_cmd_train)

    s = verb("evaluate", "score a run on its held-out split; writes metrics.json")
    s.add_argument("--run", required=True)
    s.add_argument("--data", help="dataset (default: the one the run was trained on)")
    s.add_argument("--device", help=_DEVICE_HELP)
    s.set_defaults(func=_cmd_evaluate)

    s = verb("embed", "embed a dataset with a trained run into an .npz")
    s.add_argument("--run", required=True)
    s.add_argument("--data", required=True, help="dataset with any of the run's modalities")
    s.add_argument("--out", required=True, help="output .npz (fused embedding: 'fused.mean')")
    s.add_argument("--device", help=_DEVICE_HELP)
    s.set_defaults(func=_cmd_embed)

    s = verb("search", "top-k search of queries against a corpus with a run")
    s.add_argument("--run", required=True)
    s.add_argument("--corpus", required=True, help="dataset folder or builtin to search in")
    s.add_argument("--target", required=True, metavar="MODALITY", help="corpus modality")
    q = s.add_mutually_exclusive_group(required=True)
    q.add_argument("--query", nargs="+", metavar="TEXT", help="raw text queries")
    q.add_argument("--query-data", metavar="DATASET", help="dataset whose rows are the queries")
    s.add_argument("--query-modality", metavar="MODALITY")
    s.add_argument("-k", type=int, default=10, help="hits per query")
    s.add_argument("--json", action="store_true", help="one JSON list of hits per query")
    s.set_defaults(func=_cmd_search)


    s = verb("benchmark", "compare objectives on the bundled data; writes a report")
    s.add_argument(
        "--suite",
        default="all",
        choices=["all", "mfeat", "synthetic", "missing"],
        help="which suite(s) to run",
    )
    s.add_argument("--seeds", type=int, default=None, help="number of seeds (default 5, quick 1)")
    s.add_argument(
        "--quick", action="store_true", help="smoke run: 1 seed, 15 epochs (~1 min on 2 idle cores)"
    )
    s.add_argument("--out", default="bench_out", help="output folder")
    s.add_argument("--quiet", action="store_true", help="no progress bar or summary")
    s.set_defaults(func=_cmd_benchmark)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        with warnings.catch_warnings():
            warnings.showwarning = _show_warning
            warnings.simplefilter("always", CentrobindWarning)
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
