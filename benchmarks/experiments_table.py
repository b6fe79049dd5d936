"""Print the tables of docs/benchmark/experiments.md from the recorded cells and the committed
benchmark results: each variant's test R@1 per seed, mean ± std, and its paired difference (same
seed: same split, initialisation and dropped rows) from the plain methods. A plain method's
seed comes from the committed results when they have it, else from a cell run with
``benchmarks/cells.py`` (identical where both exist: the doc lists the checks).

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

#: the committed (suite, setting) -> the cells' setting name
COMMITTED = {
    ("mfeat", "mfeat"): "mfeat",
    ("synthetic", "clean"): "clean",
    ("synthetic", "weak-anchor"): "weak",
    ("missing", "p=0.6"): "mfeat p=0.6",
}
#: a cell's plain objective -> the benchmark's method name
PLAIN = {"centrobind": "CentroBind", "all_pairs": "AllPairs"}

Cell = dict[str, Any]


def _variant(command: str) -> str:
    """A short name of the cell's method from its command line."""
    parts = command.split()
    opts = [parts[i + 1] for i, p in enumerate(parts) if p in ("--option", "--override")]
    obj = parts[parts.index("--objective") + 1] if "--objective" in parts else "centrobind"
    return obj + ("[" + ",".join(opts) + "]" if opts else "")


def _setting(cell: Cell) -> str:
    cmd = cell["command"]
    drop = float(cmd.split("--drop ")[1].split()[0]) if "--drop" in cmd else 0.0
    return str(cell["setting"]) + (f" p={drop}" if drop else "")


def _key(cell: Cell) -> tuple[str, str]:
    """(setting, the benchmark's method name for a plain cell, else the variant)."""
    v = _variant(cell["command"])
    return _setting(cell), PLAIN.get(v, v)


def _ms(v: list[float]) -> str:
    sd = statistics.stdev(v) if len(v) > 1 else 0.0
    return f"{statistics.mean(v):.1f} ± {sd:.1f}"


def collect(cells: list[Cell], committed: list[Cell]) -> dict[tuple[str, str], dict[int, Cell]]:
    """(setting, method or variant) -> seed -> {"R@1", "wo", "epochs"}: the committed rows of
    the plain methods, then every cell (a cell of a plain method fills the seeds the committed
    run lacks)."""
    out: dict[tuple[str, str], dict[int, Cell]] = defaultdict(dict)
    for r in committed:
        setting = COMMITTED.get((r["suite"], r["setting"]))
        if setting is not None and "R@1" in r:
            row = {"R@1": r["R@1"], "wo": r.get("R@1_excl/m1"), "epochs": r.get("epochs")}
            out[(setting, r["method"])][r["seed"]] = row
    for c in cells:
        key = _key(c)
        row = {"R@1": c["R@1"], "wo": c["R@1_without_m1"], "epochs": c["epochs"]}
        out[key].setdefault(c["seed"], row)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("cells", type=Path)
    ap.add_argument("results", type=Path)
    a = ap.parse_args()
    try:
        cells = [json.loads(x) for x in a.cells.read_text().splitlines() if x.strip()]
        rows = collect(cells, json.loads(a.results.read_text())["rows"])
    except (OSError, ValueError, KeyError) as e:
        ap.error(f"cannot read {a.cells} and {a.results}: {e}")
    shown = {
        (_setting(c), PLAIN.get(_variant(c["command"]), _variant(c["command"]))) for c in cells
    }
    print("| setting | method | seeds | R@1 per seed | R@1 | w/o m1 | epochs |")
    print("|---|---|---|---|---|---|---|")
    for setting, method in sorted(rows, key=lambda k: (k[0], k[1])):
        if (setting, method) not in shown and method not in PLAIN.values():
            continue
        by_seed = rows[(setting, method)]
        rs = [by_seed[s] for s in sorted(by_seed)]
        r1 = [r["R@1"] for r in rs]
        wo = [r["wo"] for r in rs if r["wo"] is not None]
        print(
            f"| {setting} | {method} | {len(rs)} | {', '.join(f'{x:.2f}' for x in r1)} | "
            f"{_ms(r1)} | {_ms(wo) if wo else '–'} | "
            + ", ".join(f"{r['epochs']:.0f}" for r in rs)
            + " |"
        )
    print()
    print("| setting | variant | minus | seeds | per seed | mean | ahead | w/o m1 per seed |")
    print("|---|---|---|---|---|---|---|---|")
    for (setting, variant), by_seed in sorted(rows.items()):
        if "[" not in variant or (setting, variant) not in shown:
            continue
        for method in PLAIN.values():
            base = rows.get((setting, method), {})
            seeds = sorted(set(base) & set(by_seed))
            if not seeds:
                continue
            d = [by_seed[s]["R@1"] - base[s]["R@1"] for s in seeds]
            d1 = [
                by_seed[s]["wo"] - base[s]["wo"]
                for s in seeds
                if by_seed[s]["wo"] is not None and base[s]["wo"] is not None
            ]
            print(
                f"| {setting} | {variant} | {method} | {len(seeds)} | "
                f"{', '.join(f'{x:+.2f}' for x in d)} | {statistics.mean(d):+.2f} | "
                f"{sum(x > 0 for x in d)}/{len(d)} | {', '.join(f'{x:+.2f}' for x in d1) or '–'} |"
            )


if __name__ == "__main__":
    main()
