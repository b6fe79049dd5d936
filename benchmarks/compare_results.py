"""Compare two benchmark ``results.json`` files row by row: the check that a run at the published
scales gives the same numbers as the full protocol's run on the same seeds.

Rows are matched by (suite, setting, method, seed); every metric both rows have is compared
exactly, except timings (``seconds``, ``step_ms``, ``step_cpu_ms``), which differ between runs.
A cell one file trained and the other only costed (the main job's M-suite) is counted, not
compared.

Usage::

    python benchmarks/compare_results.py OLD/results.json NEW/results.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

TIMINGS = {"seconds", "step_ms", "step_cpu_ms"}


def _rows(path: Path) -> dict[tuple, dict[str, Any]]:
    rows = json.loads(path.read_text())["rows"]
    return {(r["suite"], r["setting"], r["method"], r["seed"]): r for r in rows}


def compare(old: Path, new: Path) -> tuple[int, int, list[str], int]:
    """``(rows compared, values compared, differences, cost-only cells)`` between the two
    files."""
    a, b = _rows(old), _rows(new)
    values, diffs = 0, []
    common = sorted(set(a) & set(b), key=str)
    cost_only = [k for k in common if ("R@1" in a[k]) != ("R@1" in b[k])]
    common = [k for k in common if k not in cost_only]
    for key in common:
        for k in sorted(set(a[key]) & set(b[key]) - TIMINGS):
            values += 1
            if a[key][k] != b[key][k]:
                diffs.append(f"{'/'.join(map(str, key))} {k}: {a[key][k]!r} -> {b[key][k]!r}")
    return len(common), values, diffs, len(cost_only)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("old", type=Path)
    ap.add_argument("new", type=Path)
    a = ap.parse_args()
    n, values, diffs, cost_only = compare(a.old, a.new)
    print(
        f"{n} rows in both, {values} values compared, {len(diffs)} different "
        f"({cost_only} cells trained in one and only costed in the other: not compared)"
    )
    for d in diffs[:50]:
        print("  " + d)


if __name__ == "__main__":
    main()
