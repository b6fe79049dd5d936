"""Load test of ``centrobind serve`` on localhost: N concurrent clients for a bounded time.

    python benchmarks/serve_load.py --run RUN --corpus DATA [--clients 8] [--seconds 20]
    python benchmarks/serve_load.py --url http://127.0.0.1:8000 ...   # a server already running

Without ``--url`` the server is started as a child process (``centrobind serve``, its own
process, so the clients here do not share its interpreter) and stopped at the end. Each client
is a thread with one keep-alive HTTP connection that sends ``POST /api/search`` back to back:

- ``text``: raw text queries (the server featurizes them with the run's text encoder, embeds
  and searches), cycling through a fixed list of phrases;
- ``vector``: seeded random unit vectors in the shared space (embed-free: the HTTP path, the
  JSON parsing and the search).

Reported per kind: requests, errors (any non-200), queries/s over the run, latency p50/p90/p99 in
ms (from sending the request to reading the whole reply) and, for a server this script started,
its CPU time (user + system, all its threads) per query: the cost that decides throughput on a
machine the server has to itself, whatever else shares the cores during the measurement.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path

import numpy as np

PHRASES = [
    "a bold handwritten seven",
    "the digit zero",
    "a thin one leaning right",
    "number four written in thin strokes",
    "a medium three, upright",
    "a scanned eight: bold ink",
    "two, leaning left",
    "a red square",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(run: str, corpus: str, port: int) -> subprocess.Popen:
    src = str(Path(__file__).resolve().parents[1] / "src")
    env = {**os.environ, "PYTHONPATH": src + os.pathsep + os.environ.get("PYTHONPATH", "")}
    cmd = [sys.executable, "-m", "centrobind.cli", "serve", "--run", run, "--corpus", corpus]
    cmd += ["--port", str(port), "--max-k", "1000"]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def wait_ready(url: str, proc: subprocess.Popen | None, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            out = proc.stdout.read().decode() if proc.stdout else ""
            sys.exit(f"error: the server exited: {out.strip()[-500:]}")
        try:
            with urllib.request.urlopen(url + "/api/health", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    sys.exit(f"error: {url} did not answer /api/health within {timeout:.0f} s")


def client(
    host: str, port: int, bodies: list[bytes], stop: float, out: list[float], errors: list[int]
) -> None:
    """Send the bodies in turn until ``stop`` (monotonic); append latencies (s) to ``out``."""
    conn = http.client.HTTPConnection(host, port, timeout=60)
    headers = {"Content-Type": "application/json"}
    i = 0
    while time.monotonic() < stop:
        t = time.perf_counter()
        try:
            conn.request("POST", "/api/search", body=bodies[i % len(bodies)], headers=headers)
            r = conn.getresponse()
            r.read()
            ok = r.status == 200
        except (OSError, http.client.HTTPException):
            conn.close()
            conn = http.client.HTTPConnection(host, port, timeout=60)
            ok = False
        dt = time.perf_counter() - t
        if ok:
            out.append(dt)
        else:
            errors.append(1)
        i += 1
    conn.close()


def cpu_seconds(pid: int | None) -> float | None:
    """User + system CPU time of process ``pid`` (Linux ``/proc``), None where unknown."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, TypeError):
        return None


def load(
    url: str, bodies: list[bytes], clients: int, seconds: float, pid: int | None = None
) -> dict[str, float]:
    """``clients`` threads for ``seconds``; returns the figures of one kind (with the server's
    CPU time per query when its process id is known)."""
    cpu0 = cpu_seconds(pid)
    u = urllib.parse.urlsplit(url)
    lat: list[list[float]] = [[] for _ in range(clients)]
    errs: list[list[int]] = [[] for _ in range(clients)]
    t0 = time.monotonic()
    stop = t0 + seconds
    threads = [
        threading.Thread(
            target=client,
            args=(u.hostname, u.port, bodies[c::clients] or bodies, stop, lat[c], errs[c]),
        )
        for c in range(clients)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.monotonic() - t0
    all_lat = np.array([x for xs in lat for x in xs]) * 1000
    n = int(all_lat.size)
    pct = np.percentile(all_lat, [50, 90, 99]) if n else [float("nan")] * 3
    cpu1 = cpu_seconds(pid)
    cpu_ms = 1000 * (cpu1 - cpu0) / n if cpu0 is not None and cpu1 is not None and n else None
    return {
        "server_cpu_ms_per_query": cpu_ms,
        "requests": n,
        "errors": sum(len(e) for e in errs),
        "qps": n / wall,
        "p50_ms": float(pct[0]),
        "p90_ms": float(pct[1]),
        "p99_ms": float(pct[2]),
        "seconds": wall,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--run")
    p.add_argument("--corpus")
    p.add_argument("--url", help="a running server (else one is started)")
    p.add_argument("--clients", type=int, default=8)
    p.add_argument("--seconds", type=float, default=20.0, help="per kind of query")
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--target", help="corpus modality (default: the first image one, else first)")
    p.add_argument("--kinds", default="text,vector")
    p.add_argument("--json", action="store_true", help="one JSON object instead of a table")
    args = p.parse_args()
    proc = None
    url = args.url
    if url is None:
        if not (args.run and args.corpus):
            p.error("give --run and --corpus (or --url of a running server)")
        url = f"http://127.0.0.1:{free_port()}"
        proc = start_server(args.run, args.corpus, int(url.rsplit(":", 1)[1]))
    try:
        wait_ready(url, proc)
        with urllib.request.urlopen(url + "/api/modalities") as r:
            info = json.loads(r.read())
        mods = [m for m in info["modalities"] if m["indexed"]]
        target = args.target or next((m for m in mods if m["kind"] == "image"), mods[0])["name"]
        rng = np.random.default_rng(0)
        results = {}
        for kind in args.kinds.split(","):
            if kind == "text":
                if not any(m["kind"] == "text" for m in info["modalities"]):
                    continue
                queries = [{"text": t} for t in PHRASES]
            elif kind == "vector":
                v = rng.standard_normal((256, info["embed_dim"]))
                v /= np.linalg.norm(v, axis=1, keepdims=True)
                queries = [{"vector": [round(float(x), 6) for x in row]} for row in v]
            else:
                p.error(f"unknown kind {kind!r} (text, vector)")
            bodies = [json.dumps({"target": target, "k": args.k, **q}).encode() for q in queries]
            load(url, bodies, args.clients, min(2.0, args.seconds))  # warm-up, not counted
            pid = proc.pid if proc is not None else None
            results[kind] = load(url, bodies, args.clients, args.seconds, pid)
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(30)
    meta = {
        "url": url,
        "target": target,
        "rows": info["rows"],
        "indexed": next(m["indexed"] for m in mods if m["name"] == target),
        "embed_dim": info["embed_dim"],
        "clients": args.clients,
        "k": args.k,
        "cpus": os.cpu_count(),
        "load_avg_1m": os.getloadavg()[0],
    }
    if args.json:
        print(json.dumps({**meta, "results": results}, indent=2))
        return
    print(
        f"{meta['clients']} clients, k = {args.k}, target {target} ({meta['indexed']} rows, "
        f"D = {meta['embed_dim']}), {os.cpu_count()} CPUs, load average {meta['load_avg_1m']:.1f}"
    )
    print("| query | requests | errors | queries/s | p50 ms | p90 ms | p99 ms | server CPU ms/q |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for kind, r in results.items():
        cpu = r["server_cpu_ms_per_query"]
        print(
            f"| {kind} | {r['requests']} | {r['errors']} | {r['qps']:.1f} | {r['p50_ms']:.1f} "
            f"| {r['p90_ms']:.1f} | {r['p99_ms']:.1f} | {'-' if cpu is None else f'{cpu:.1f}'} |"
        )


if __name__ == "__main__":
    main()
