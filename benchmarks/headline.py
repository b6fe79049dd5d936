"""Print the README's headline table from a benchmark ``results.json`` (markdown).

Usage::

    python benchmarks/headline.py docs/benchmark/results.json

Rows: the default CentroBind, its variants, AllPairs, the best fixed anchor of each setting and
GCCA; columns: mean test R@1 on mfeat, on the synthetic clean
and weak-anchor settings, on the weak setting's pairs without m1, with 60% of the training
modalities missing, and the mfeat fused linear probe (mean ± std over seeds). The best fixed
anchor is chosen per column, on that column's mean. Then one line: GRAM with its authors'
recipe against GRAM at the benchmark's scale, on leave-one-out R@1.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from centrobind.bench.stats import aggregate, fixed_anchors, fmt, markdown_table

COLUMNS = [
    ("mfeat", ("mfeat", "mfeat"), "R@1"),
    ("synthetic clean", ("synthetic", "clean"), "R@1"),
    ("synthetic weak m1", ("synthetic", "weak-anchor"), "R@1"),
    ("weak, w/o m1", ("synthetic", "weak-anchor"), "R@1_excl/m1"),
    ("missing p=0.6", ("missing", "p=0.6"), "R@1"),
    ("mfeat fused probe", ("mfeat", "mfeat"), "probe/digit/fused"),
]
ROWS = ["CentroBind", "CentroBind[loo]", "CentroBind[paper]", "AllPairs"]


def headline(path: Path) -> str:
    agg = aggregate(json.loads(path.read_text())["rows"])
    table = []
    for name in [*ROWS, "best FixedAnchor", "GCCA"]:
        cells, scales = [], []
        for _, (suite, setting), metric in COLUMNS:
            stats = {m: st for (s, st_, m), st in agg.items() if (s, st_) == (suite, setting)}
            method = name
            if name == "best FixedAnchor":
                have = [m for m in fixed_anchors(stats) if metric in stats[m]]
                method = max(have, key=lambda m: stats[m][metric][0]) if have else ""
            st = stats.get(method, {})
            cell = fmt(st.get(metric))
            if name == "best FixedAnchor" and method:
                cell += f" ({method[len('FixedAnchor(') : -1]})"
            cells.append(cell)
            if metric == "R@1" and "logit_scale" in st and suite != "missing":
                scales.append(f"{st['logit_scale'][0]:g}")
        label = name
        if scales:
            label += f" ({' / '.join(scales)})"
        table.append([label, *cells])
    header = ["method (s: mfeat / clean / weak)", *[c for c, _, _ in COLUMNS]]
    return markdown_table(header, table) + "\n\n" + _gram_line(agg)


def _gram_line(agg: dict) -> str:
    """GRAM at the benchmark's scale against its authors' recipe, on its own leave-one-out R@1
    (its pairwise R@1 ranks by cos² and is not comparable)."""
    parts = []
    for (suite, setting, method), st in agg.items():
        if method.startswith("Gram(") and method.endswith("[official]") and "loo_R@1" in st:
            plain = agg.get((suite, setting, method[: -len("[official]")]), {})
            parts.append(f"{suite}/{setting} {fmt(st['loo_R@1'])} vs {fmt(plain.get('loo_R@1'))}")
    if not parts:
        return ""
    return "GRAM leave-one-out R@1, authors' recipe vs the benchmark's: " + "; ".join(parts) + "."


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("results", type=Path)
    print(headline(ap.parse_args().results))


if __name__ == "__main__":
    main()
