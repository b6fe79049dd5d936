"""Publish the logit scales a full benchmark run chose, for ``centrobind benchmark`` to use.

Reads the scale grid that a run with the grid recorded in its ``results.json``
(``centrobind benchmark --choose-scales``, or the committed full run of 2026-11-28) and writes
``src/centrobind/bench/published_scales.json``: every grid row (method definition, data,
validation score per scale, the chosen scale) and where it came from.

Usage::

    python benchmarks/publish_scales.py OUT/results.json --source "centrobind benchmark \\
        --choose-scales --seeds 5 --extended, 2026-12-06"

Rows of an older ``results.json`` that name a method without its definition get it from the
benchmark's current suites (``--extended`` jobs), matched by name.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

TARGET = Path(__file__).resolve().parent.parent / "src" / "centrobind" / "bench"


def _definitions() -> dict[str, dict[str, Any]]:
    from centrobind.bench.jobs import BenchSettings
    from centrobind.bench.protocol import method_definition
    from centrobind.bench.suites import suite_jobs

    s = BenchSettings.make(5, quick=False, extended=True)
    out: dict[str, dict[str, Any]] = {}
    for job in suite_jobs("all", s):
        if job.method.tuned:
            tm = job.method.tuning_method()
            out.setdefault(tm.name, method_definition(tm))
    return out


def publish(results: Path, source: str) -> dict[str, Any]:
    """The published-scales document for the grid recorded in ``results``."""
    meta = json.loads(results.read_text())["meta"]
    grid = meta.get("logit_scale_grid") or []
    if not grid:
        raise SystemExit(f"{results}: no logit_scale_grid (run with --choose-scales)")
    defs = _definitions()
    scales = []
    for row in grid:
        entry = dict(row)
        if "objective" not in entry:  # an older results.json: the definition by name
            if row["method"] not in defs:
                raise SystemExit(f"{results}: no current method named {row['method']!r}")
            entry = {**defs[row["method"]], **row}
        scales.append(entry)
    return {"source": source, "scales": scales}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("results", type=Path, help="results.json of a run with the scale grid")
    ap.add_argument("--source", required=True, help="what the report should name as the origin")
    ap.add_argument("--out", type=Path, default=TARGET / "published_scales.json")
    a = ap.parse_args()
    doc = publish(a.results, a.source)
    a.out.write_text(json.dumps(doc, indent=1) + "\n")
    print(f"wrote {a.out}: {len(doc['scales'])} scales")


if __name__ == "__main__":
    main()
