"""Print the tables of docs/benchmark/experiments.md from the recorded cells and the committed
benchmark results: each variant's test R@1 per seed, mean ± std, and its paired difference (same
seed: same split, initialisation and dropped rows) from the committed methods.

Usage::

    python benchmarks/experiments_table.py docs/benchmark/experiments/cells-2026-12-06.jsonl \\
        docs/benchmark/results.json
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any

#: cells.py's setting (and --drop) -> the committed suite and setting
COMMITTED = {
    ("mfeat", 0.0): ("mfeat", "mfeat"),
    ("clean", 0.0): ("synthetic", "clean"),
    ("weak", 0.0): ("synthetic", "weak-anchor"),
    ("mfeat", 0.6): ("missing", "p=0.6"),
}


def _variant(command: str) -> str:
    """A short name of the cell's method from its command line."""
    parts = command.split()
    opts = [parts[i + 1] for i, p in enumerate(parts) if p in ("--option", "--override")]
    obj = parts[parts.index("--objective") + 1] if "--objective" in parts else "centrobind"
    return obj + ("[" + ",".join(opts) + "]" if opts else "")


def _ms(v: list[float]) -> str:
    sd = statistics.stdev(v) if len(v) > 1 else 0.0
    return f"{statistics.mean(v):.1f} ± {sd:.1f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("cells", type=Path)
    ap.add_argument("results", type=Path)
    a = ap.parse_args()
    cells = [json.loads(x) for x in a.cells.read_text().splitlines() if x.strip()]
    committed = json.loads(a.results.read_text())["rows"]
    groups: dict[tuple[str, str], dict[int, dict[str, Any]]] = defaultdict(dict)
    for c in cells:
        cmd = c["command"]
        drop = float(cmd.split("--drop ")[1].split()[0]) if "--drop" in cmd else 0.0
        setting = c["setting"] + (f" p={drop}" if drop else "")
        groups[(setting, _variant(c["command"]))][c["seed"]] = {**c, "drop": drop}
    print("| setting | cells | R@1 per seed | R@1 | w/o m1 | epochs |")
    print("|---|---|---|---|---|---|")
    for (setting, variant), by_seed in groups.items():
        rows = [by_seed[s] for s in sorted(by_seed)]
        r1 = [r["R@1"] for r in rows]
        wo = [r["R@1_without_m1"] for r in rows if r["R@1_without_m1"] is not None]
        epochs = ", ".join(f"{r['epochs']:.0f}" for r in rows)
        print(
            f"| {setting} | {variant} | {', '.join(f'{x:.2f}' for x in r1)} | {_ms(r1)} | "
            f"{_ms(wo) if wo else '–'} | {epochs} |"
        )
    print()
    print("Paired differences (variant minus committed method, same seed), R@1 and w/o m1:")
    print()
    print("| setting | variant | minus | per seed | mean | w/o m1 per seed |")
    print("|---|---|---|---|---|---|")
    for (setting, variant), by_seed in groups.items():
        if variant == "centrobind":
            continue
        any_row = next(iter(by_seed.values()))
        key = COMMITTED.get((any_row["setting"], any_row["drop"]))
        if key is None:
            continue
        for method in ("CentroBind", "AllPairs", "CentroBind[loo]"):
            base = {
                r["seed"]: r
                for r in committed
                if (r["suite"], r["setting"], r["method"]) == (*key, method)
            }
            seeds = sorted(set(base) & set(by_seed))
            if not seeds:
                continue
            d = [by_seed[s]["R@1"] - base[s]["R@1"] for s in seeds]
            d1 = [
                by_seed[s]["R@1_without_m1"] - base[s]["R@1_excl/m1"]
                for s in seeds
                if by_seed[s]["R@1_without_m1"] is not None and "R@1_excl/m1" in base[s]
            ]
            print(
                f"| {setting} | {variant} | {method} | {', '.join(f'{x:+.2f}' for x in d)} | "
                f"{statistics.mean(d):+.2f} | {', '.join(f'{x:+.2f}' for x in d1) or '–'} |"
            )


if __name__ == "__main__":
    main()
