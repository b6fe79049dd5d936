"""The ``centrobind serve`` verb: its flags and the command (kept here so ``cli.py`` stays a
thin list of verbs). Imports nothing heavy until the command runs."""

from __future__ import annotations

import argparse
import importlib.util
import ipaddress
import sys

from ..errors import CentrobindError

__all__ = ["add_serve_arguments", "serve_command"]


def add_serve_arguments(s: argparse.ArgumentParser) -> None:
    """The flags of ``centrobind serve``."""
    s.add_argument("--run", required=True, help="run folder")
    s.add_argument("--corpus", required=True, help="dataset folder (or builtin) to search in")
    s.add_argument(
        "--index",
        action="append",
        metavar="DIR",
        help="a saved index of one target modality (repeatable); default: embed the corpus",
    )
    s.add_argument("--host", default="127.0.0.1", help="address to bind (localhost only)")
    s.add_argument("--port", type=int, default=8000)
    s.add_argument(
        "--media-root",
        metavar="DIR",
        help="raw image/audio files are served only from inside DIR (default: the corpus "
        "folder's parent)",
    )
    s.add_argument("--max-upload-mb", type=float, default=10.0, help="largest request body")
    s.add_argument("--timeout", type=float, default=30.0, help="seconds per request")
    s.add_argument("--max-k", type=int, default=100, help="most hits one query may ask for")
    s.add_argument("--device", default="auto", help="auto | cpu | cuda")
    s.add_argument(
        "--threads", type=int, help="torch threads per operation (default: torch's choice)"
    )


def serve_command(args: argparse.Namespace) -> int:
    """Load, print where to look, serve until Ctrl-C."""
    for flag, value in (("--max-upload-mb", args.max_upload_mb), ("--timeout", args.timeout)):
        if not value > 0:
            raise CentrobindError(f"{flag} must be > 0, got {value}")
    if args.max_k < 1:
        raise CentrobindError(f"--max-k must be >= 1, got {args.max_k}")
    if args.threads is not None and args.threads < 1:
        raise CentrobindError(f"--threads must be >= 1, got {args.threads}")
    if not 1 <= args.port <= 65535:
        raise CentrobindError(f"--port must be in 1..65535, got {args.port}")
    found = {m: importlib.util.find_spec(m) for m in ("fastapi", "uvicorn", "python_multipart")}
    found["python_multipart"] = found["python_multipart"] or importlib.util.find_spec("multipart")
    missing = [m.replace("_", "-") for m, spec in found.items() if spec is None]
    if missing:
        raise CentrobindError(
            f"serve needs the serve extra ({', '.join(missing)} missing): "
            'pip install "centrobind[serve]"'
        )
    import torch

    from .app import run_server
    from .explorer import Explorer

    if args.threads is not None:
        torch.set_num_threads(args.threads)

    if not _is_loopback(args.host):
        print(
            f"warning: binding {args.host}: anyone who can reach this machine can query the "
            "run and read the corpus's items",
            file=sys.stderr,
        )
    ex = Explorer(
        args.run, args.corpus, media_root=args.media_root, device=args.device, index_dirs=args.index
    )
    if ex.ignored:
        print(
            f"warning: the corpus's {', '.join(ex.ignored)} not in the run: not searchable",
            file=sys.stderr,
        )
    sizes = ", ".join(f"{m} {len(t.rows)}" for m, t in ex.targets.items())
    host = f"[{args.host}]" if ":" in args.host else args.host
    print(
        f"serving http://{host}:{args.port}/ (run {args.run}; corpus {args.corpus}: {sizes}; "
        f"loaded in {ex.load_seconds:.1f}s; Ctrl-C stops)",
        flush=True,
    )
    run_server(
        ex,
        host=args.host,
        port=args.port,
        max_upload=int(args.max_upload_mb * 2**20),
        timeout=args.timeout,
        max_k=args.max_k,
    )
    return 0


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
