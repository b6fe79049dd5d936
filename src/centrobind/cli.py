"""Command line: a thin shell over the Python API (``centrobind.data``, ``runs``, ``bench``).

Every user-facing error (:class:`~centrobind.errors.CentrobindError`) is printed as ONE line on
stderr, ``error: <message>``, with exit code 2; no traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import typing
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from .errors import CentrobindError

EXIT_USAGE = 2


def _cmd_inspect(args: argparse.Namespace) -> int:
    from .data import describe, load

    ds = load(args.data)  # warnings (e.g. modalities/notes.csv ignored): main prints them
    print(describe(ds))
    return 0


def _given_config(args: argparse.Namespace) -> dict[str, Any]:
    """The TrainConfig fields this command line sets: ``--config`` file, then flags, then
    ``--option KEY=VALUE`` into ``objective_options``."""
    from .config import config_overrides, read_config_file

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
    for item in getattr(args, "tower", None) or []:
        mod, sep, spec = item.partition("=")
        if not sep or not mod or not spec:
            raise CentrobindError(f"--tower expects MODALITY=SPEC, got {item!r}")
        given["towers"] = {**dict(given.get("towers", {})), mod: spec}
    return given


@contextlib.contextmanager
def _warnings_as_lines() -> Iterator[None]:
    """Print each warning raised inside (ours and third-party ones, e.g. Pillow's) as one
    ``warning: ...`` line on stderr, when raised; a message already printed is not repeated."""
    seen: set[str] = set()

    def show(message: Warning | str, *_: Any, **__: Any) -> None:
        text = " ".join(str(message).split())
        if text not in seen:
            seen.add(text)
            print(f"warning: {text}", file=sys.stderr, flush=True)

    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.showwarning = show
        yield


def _cmd_train(args: argparse.Namespace) -> int:
    from .config import TrainConfig
    from .distributed import distributed_failure, init_distributed, is_main_process
    from .runs import resume_flags, train_run

    given = _given_config(args)
    extend_to = resume_flags(args.out, given) if args.resume else None
    cfg = TrainConfig.from_dict(given)
    init_distributed(cfg.device)
    try:
        run, result = train_run(
            args.data,
            cfg,
            args.out,
            resume=args.resume,
            extend_to=extend_to,
            init_from=args.init_from,
            labels=args.label or (),
        )
    except RuntimeError as e:  # under torchrun: another rank died before or after training
        failure = distributed_failure(e)
        if failure is None:
            raise
        raise failure from None
    if not is_main_process():
        return 0  # under torchrun rank 0 reports
    best = (
        f", best epoch {result.best_epoch} (val {result.val_metric} {result.best_metric:.1f}"
        f"{'%' if result.val_metric == 'R@1' else ' (x100)'} over a gallery of "
        f"{result.val_gallery} validation rows)"
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
    gallery = metrics["gallery"]
    val = gallery.get("validation")
    seen = f"; the training log's validation R@1 searched {val} rows" if val else ""
    sample = f" (a seeded sample of {gallery['test_split']})" if "test_split" in gallery else ""
    print(f"R@1 above: a gallery of {gallery['test']} test rows{sample}{seen}")
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

    run = args.run
    if args.index is not None:
        run = run or _index_run(args.index)
        if args.corpus is not None or args.target is not None:
            raise CentrobindError(
                "--index DIR searches the corpus and target it was built for; "
                "drop --corpus and --target"
            )
    elif run is None or args.corpus is None or args.target is None:
        raise CentrobindError("search needs --run, --corpus and --target (or --index DIR)")
    elif args.exact or args.faiss_params:
        raise CentrobindError("--exact and --faiss-params go with --index DIR")
    with _warnings_as_lines():
        results = search_corpus(
            load(run),
            args.corpus,
            args.target,
            k=args.k,
            queries=args.query,
            query_data=args.query_data,
            query_modality=args.query_modality,
            split=args.split,
            saved=args.index,
            saved_options={
                "backend": "exact" if args.exact else "auto",
                "faiss_params": args.faiss_params,
            },
        )
    if args.json:
        for res in results:
            print(json.dumps(res["hits"], ensure_ascii=False))
    else:
        print(format_hits(results))
    return 0


def _index_run(index: str) -> str:
    """The run an index folder was built with (``--index`` without ``--run``)."""
    from .saved_index import load_index

    path = load_index(index, check=False).run_path
    if not (path / "model.safetensors").is_file():
        raise CentrobindError(f"the run {path} that built index {index} is gone; pass --run RUN")
    return str(path)


def _cmd_index_build(args: argparse.Namespace) -> int:
    from .saved_index import build_index

    with _warnings_as_lines():
        index = build_index(
            args.run,
            args.corpus,
            args.target,
            args.out,
            faiss=args.faiss,
            faiss_params=args.faiss_params,
            dtype=args.dtype,
            device=args.device,
            progress=not args.quiet,
        )
    size = sum(p.stat().st_size for p in Path(args.out).iterdir())
    extra = f", faiss {index.faiss_spec}" if index.faiss_spec else ""
    print(
        f"wrote {args.out}: {len(index)} rows of {index.target} (of "
        f"{index.meta['corpus']['rows']} corpus rows), D = {index.dim}, {index.meta['dtype']}"
        f"{extra}, {size / 1e6:.1f} MB"
    )
    return 0


def _cmd_verify(args: argparse.Namespace) -> int:
    from pathlib import Path

    from tqdm.auto import tqdm

    from .digests import data_files, record_digests, verify

    root = Path(args.data)
    if not (root / "modalities").is_dir():
        raise CentrobindError(f"{root}: not a dataset folder (no modalities/)")
    total = sum(p.stat().st_size for p in data_files(root))
    with tqdm(total=total, unit="B", unit_scale=True, desc="verify", disable=args.quiet) as bar:
        if args.record:
            record_digests(root)
            print(f"recorded digests of {len(data_files(root))} files in {root}/digests.json")
            return 0
        problems = verify(root, progress=bar.update)
    if problems is None:
        raise CentrobindError(
            f"{root}: no digests.json (data not written by centrobind); record them with "
            f"`centrobind verify {root} --record`"
        )
    if problems:
        for p in problems:
            print(f"changed: {p}")
        print(f"error: {len(problems)} problem(s) in {root}", file=sys.stderr)
        return 1
    print(f"ok: {len(data_files(root))} files, {total / 1e9:.2f} GB match their digests")
    return 0


def _cmd_benchmark(args: argparse.Namespace) -> int:
    from .bench import run_benchmark
    from .errors import ConfigError

    if args.workers is not None and args.workers < 1:
        raise ConfigError(f"--workers must be >= 1, got {args.workers}")
    run_benchmark(
        suite=args.suite,
        seeds=args.seeds,
        quick=args.quick,
        out=args.out,
        quiet=args.quiet,
        workers=args.workers,
        fresh=args.fresh,
        extended=args.extended,
        full=args.full,
        choose_scales=args.choose_scales,
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
    with _warnings_as_lines():  # e.g. a column that looks like a label
        summary = featurize(
            args.manifest,
            args.out,
            encoders=encoders,
            labels=args.label,
            batch_size=args.batch_size,
            device=args.device,
            allow_random=args.allow_random,
            progress=not args.quiet,
            dtype=args.dtype,
            shard=args.shard,
        )
    print(summary.line())
    print(summary.lists())
    return 0


def _cmd_example(args: argparse.Namespace) -> int:
    from .examples.imu import run_imu_example

    kw = {"n": 120, "n_test": 30, "epochs": 2} if args.tiny else {}
    kw.update({k: v for k, v in (("n", args.n), ("epochs", args.epochs)) if v is not None})
    report = run_imu_example(args.out, seed=args.seed, **kw)
    print(f"wrote {report}")
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    report = run_demo(
        args.out, tiny=args.tiny, n=args.n, seed=args.seed, quiet=args.quiet, seeds=args.seeds
    )
    print(f"wrote {report}")
    return 0


def _cmd_serve(args: argparse.Namespace) -> int:
    from .serve.cli import serve_command

    return serve_command(args)


def _cmd_export(args: argparse.Namespace) -> int:
    from .export import export_onnx

    manifest = export_onnx(args.run, args.out, check=not args.no_check)
    check = manifest.get("check")
    checked = f"; onnxruntime max abs diff {check['max_abs_diff']:.2e}" if check else ""
    print(f"wrote {len(manifest['modalities'])} ONNX encoders to {args.out}{checked}")
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


def build_parser(train_flags: bool = True) -> argparse.ArgumentParser:
    """The ``centrobind`` parser. Longer than 80 lines on purpose: one flat list of every verb and
    its flags, read top to bottom like ``--help`` (``train``'s flags come from the config, whose
    objective registry imports torch: ``train_flags=False`` leaves them out, so a command other
    than ``train`` that fails on bad input says so before torch is imported)."""
    from . import __version__

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
    s.add_argument(
        "--data",
        required=True,
        help="dataset folder, builtin name, or a manifest of raw items (.csv/.tsv/.jsonl/.parquet)",
    )
    s.add_argument("--out", required=True, help="run folder, e.g. runs/mfeat-centrobind")
    s.add_argument("--config", help="TOML or JSON file with TrainConfig fields (flags override)")
    s.add_argument(
        "--option",
        action="append",
        metavar="KEY=VALUE",
        help="objective option, e.g. --option detach_anchor=false (repeatable)",
    )
    s.add_argument(
        "--label",
        action="append",
        metavar="COLUMN",
        help="a label column of a manifest given as --data (repeatable)",
    )
    s.add_argument(
        "--tower",
        action="append",
        metavar="MODALITY=SPEC",
        help="the modality's tower, e.g. --tower imu=conv1d, --tower text=identity, "
        "--tower image=backbone:timm:resnet18,train_last=2 (repeatable; default mlp)",
    )
    s.add_argument(
        "--resume",
        action="store_true",
        help="continue from OUT/checkpoints/latest (flags must equal the saved config; a "
        "larger --epochs extends the run)",
    )
    s.add_argument(
        "--init-from",
        metavar="RUN",
        help="start from the encoder weights of run folder RUN (modalities it lacks start fresh)",
    )
    s.add_argument("--offline", action="store_true", help=_OFFLINE_HELP)
    if train_flags:
        from .config import add_config_arguments

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
    s.add_argument(
        "--out",
        required=True,
        help="output .npz, or a folder (streamed: one memory-mapped <modality>.npy each, for "
        "data of any size); the fused embedding is 'fused.mean'",
    )
    s.add_argument("--device", help=_DEVICE_HELP)
    s.set_defaults(func=_cmd_embed)

    s = verb("search", "top-k search of queries against a corpus with a run")
    s.add_argument("--run", help="run folder (with --index: default the run that built it)")
    s.add_argument("--corpus", help="dataset folder or builtin to search in")
    s.add_argument("--target", metavar="MODALITY", help="corpus modality")
    s.add_argument(
        "--index",
        metavar="DIR",
        help="a saved index (`centrobind index build`) instead of --corpus/--target: the "
        "corpus is not embedded again",
    )
    s.add_argument(
        "--exact", action="store_true", help="with --index: exact search even if it has faiss"
    )
    s.add_argument(
        "--faiss-params", metavar="P", help="with --index: faiss parameters, e.g. nprobe=64"
    )
    q = s.add_mutually_exclusive_group(required=True)
    q.add_argument("--query", nargs="+", metavar="TEXT", help="raw text queries")
    q.add_argument("--query-data", metavar="DATASET", help="dataset whose rows are the queries")
    s.add_argument("--query-modality", metavar="MODALITY")
    s.add_argument("-k", type=int, default=10, help="hits per query")
    s.add_argument(
        "--split",
        choices=["train", "val", "test", "all"],
        help="search only this split of the run's rows (the corpus must be the run's own "
        "dataset; test = held-out rows; default: all rows, each hit showing its split)",
    )
    s.add_argument(
        "--json",
        action="store_true",
        help="JSON Lines: one line per query, each a JSON list of its hits {id, score[, item]"
        "[, split][, labels]}",
    )
    s.set_defaults(func=_cmd_search)

    s = verb("index", "build a saved search index (then `search --index DIR`)")
    isub = s.add_subparsers(dest="index_command", required=True, metavar="ACTION")
    s = isub.add_parser(
        "build",
        help="embed a corpus once into an index folder",
        description="embed the corpus rows that have MODALITY once into an index folder",
        formatter_class=_HelpFormatter,
    )
    s.add_argument("--run", required=True)
    s.add_argument("--corpus", required=True, help="dataset folder or builtin to index")
    s.add_argument("--target", required=True, metavar="MODALITY", help="corpus modality")
    s.add_argument("--out", required=True, metavar="DIR", help="index folder (new, or an index)")
    s.add_argument(
        "--faiss", metavar="SPEC", help="also a faiss index, e.g. IVF1024,Flat or HNSW32"
    )
    s.add_argument(
        "--faiss-params", metavar="P", help="default faiss search parameters, e.g. nprobe=16"
    )
    s.add_argument("--dtype", default="float32", choices=["float32", "float16"])
    s.add_argument("--device", help=_DEVICE_HELP)
    s.add_argument("--quiet", action="store_true", help="no progress bar")
    s.set_defaults(func=_cmd_index_build)

    s = verb("verify", "re-read a dataset folder and check every file against its digests")
    s.add_argument("data", metavar="DATA", help="dataset folder")
    s.add_argument(
        "--record",
        action="store_true",
        help="(re)compute and record the digests instead (data written by other tools)",
    )
    s.add_argument("--quiet", action="store_true", help="no progress bar")
    s.set_defaults(func=_cmd_verify)

    s = verb("benchmark", "compare objectives on the bundled data; writes a report")
    s.add_argument(
        "--suite",
        default="all",
        help="which suite to run: all (default), mfeat, synthetic, missing, modalities (the "
        "M-suite), any registered suite, or rawdata (generated raw images, captions and "
        "sounds end to end with the default settings; not part of all)",
    )
    s.add_argument("--seeds", type=int, default=None, help="number of seeds (default 3, quick 1)")
    s.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: 1 seed, 15 epochs (with --choose-scales: the logit-scale grid {3, 7} "
        "instead of {2, 3, 5, 7, 10, 14, 20})",
    )
    s.add_argument(
        "--choose-scales",
        action="store_true",
        help="choose every method's logit scale on the validation grid (seed 0 at 7 scales) "
        "instead of using the scales published with the package",
    )
    s.add_argument(
        "--full",
        action="store_true",
        help="the committed report's protocol (about 30 min on 2 cores): beyond the main job, "
        "CentroBind's paper and leave-one-out centroids, GRAM's official recipe, the clean "
        "synthetic setting, missing modalities, and the M-suite trained (the main job measures "
        "only its step cost)",
    )
    s.add_argument(
        "--extended",
        action="store_true",
        help="--full and the secondary studies: ablations, learnable-scale and intra-modal "
        "variants, the noise sweep, the M-suite's clean variant and 3 seeds per M",
    )
    s.add_argument(
        "--workers",
        type=int,
        default=None,
        help="parallel single-threaded worker processes (default: CPU cores, at most 4)",
    )
    s.add_argument("--out", default="bench_out", help="output folder")
    s.add_argument("--quiet", action="store_true", help="no progress bar or summary")
    s.add_argument(
        "--fresh",
        action="store_true",
        help="discard OUT/runs.jsonl (the record of finished runs an interrupted benchmark "
        "resumes from) and run everything",
    )
    s.set_defaults(func=_cmd_benchmark)

    s = verb("featurize", "raw texts/images/audio (a manifest) -> a dataset folder")
    s.add_argument("manifest", help="CSV, TSV, JSONL or Parquet; one column per modality")
    s.add_argument("--out", required=True, help="dataset folder to write (resumable)")
    s.add_argument(
        "--encoder",
        action="append",
        metavar="MODALITY=SPEC",
        help="e.g. caption=minilm, image=pixels:16:gray, speech=logmel, x=hf:PATH (repeatable)",
    )
    s.add_argument("--label", action="append", metavar="COLUMN", help="a label column (repeatable)")
    s.add_argument("--batch-size", type=int, default=32, help="items per encoder batch")
    s.add_argument("--device", default="auto", help="auto | cpu | cuda")
    s.add_argument("--allow-random", action="store_true", help="image backbones without weights")
    s.add_argument(
        "--dtype",
        default="float32",
        choices=["float32", "float16"],
        help="storage of the features (float16: half the disk and reads)",
    )
    s.add_argument(
        "--shard",
        metavar="I/N",
        help="featurize only the I-th (0-based) of N row ranges into the same --out; run N of "
        "them at once (processes or machines sharing the folder); the last to finish "
        "completes the dataset",
    )
    s.add_argument("--offline", action="store_true", help=_OFFLINE_HELP)
    s.add_argument("--quiet", action="store_true", help="no progress bar")
    s.set_defaults(func=_cmd_featurize)

    s = verb("demo", "build, featurize, train and report the tri-modal digits demo")
    s.add_argument("--out", required=True, help="folder for the raw data, runs and report")
    s.add_argument("--tiny", action="store_true", help="a few dozen items (a CI smoke test)")
    s.add_argument("--n", type=int, default=None, help="number of items (default 600, tiny 40)")
    s.add_argument("--seed", type=int, default=0, help="first seed (data and training)")
    s.add_argument("--seeds", type=int, default=None, help="training seeds (default 3, tiny 1)")
    s.add_argument("--quiet", action="store_true")
    s.set_defaults(func=_cmd_demo)

    s = verb(
        "example",
        "a worked example built offline: 'imu' binds an accelerometer sensor to pictures and "
        "captions (conv1d vs MLP tower; a kept pretrained space)",
    )
    s.add_argument("name", choices=["imu"])
    s.add_argument("--out", required=True, help="folder for the data, runs and report")
    s.add_argument("--n", type=int, default=None, help="training items (default 480)")
    s.add_argument("--epochs", type=int, default=None, help="epochs per run (default 20)")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--tiny", action="store_true", help="a few dozen items, 2 epochs (smoke test)")
    s.set_defaults(func=_cmd_example)

    from .serve.cli import add_serve_arguments

    s = verb("serve", "a local web page and JSON API to search a corpus with a run")
    add_serve_arguments(s)
    s.set_defaults(func=_cmd_serve)

    s = verb("export", "export a run's encoders (ONNX: one file per modality + export.json)")
    s.add_argument("--run", required=True)
    s.add_argument("--format", default="onnx", choices=["onnx"], help="file format")
    s.add_argument("--out", required=True, help="folder to write (absent or empty)")
    s.add_argument("--no-check", action="store_true", help="skip the onnxruntime parity check")
    s.set_defaults(func=_cmd_export)
    return p


_OFFLINE_HELP = (
    "never download a model: hub names (st:ORG/NAME, hf:ORG/NAME, timm:NAME, open_clip:NAME@TAG) "
    "must be in the local cache (same as HF_HUB_OFFLINE=1)"
)


def _os_error_line(e: OSError) -> str:
    """``<file>: <reason>`` of an ``OSError`` (file names given as bytes decoded, not
    ``b'...'``)."""
    name = e.filename
    if isinstance(name, bytes):
        name = os.fsdecode(name)
    why = " ".join(str(e.strerror or e).split())
    return f"{name}: {why}" if name else why


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    verb = next((str(a) for a in argv if not str(a).startswith("-")), None)
    args = build_parser(train_flags=verb in (None, "train")).parse_args(argv)
    if getattr(args, "offline", False):  # before any Hugging Face library is imported
        import os

        os.environ["HF_HUB_OFFLINE"] = "1"
    try:
        with _warnings_as_lines():
            return args.func(args)
    except CentrobindError as e:
        msg = " ".join(str(e).split())
        print(f"error: {msg}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as e:  # unwritable output, full disk, ...: the OS said it in one line
        print(f"error: {_os_error_line(e)}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
