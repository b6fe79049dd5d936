"""Suite-wide setup: under pytest-xdist (``-n``), one torch thread per worker process.

Several workers on a few cores would otherwise each start as many intra-op threads as there are
cores, and torch's threads slow down several-fold when the cores are oversubscribed. Child
processes (the CLI tests) inherit ``OMP_NUM_THREADS``.
"""

from __future__ import annotations

import os

if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ["OMP_NUM_THREADS"] = "1"
    os.environ["MKL_NUM_THREADS"] = "1"
    import torch

    torch.set_num_threads(1)
