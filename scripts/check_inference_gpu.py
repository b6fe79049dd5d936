"""GPU check (needs CUDA): a run trained on cuda loads with device cpu / cuda / auto and matches
``centrobind embed`` (cosine >= 0.9999), loads in a process that sees no GPU, and encode timing.

    PYTHONPATH=src python3 scripts/check_inference_gpu.py
"""

import os
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch

import centrobind
from centrobind.data import load
from centrobind.runs import embed_run, train_run
from centrobind.train import TrainConfig

print("torch", torch.__version__, "cuda", torch.cuda.is_available(), torch.cuda.get_device_name(0))
d = tempfile.mkdtemp()
train_run("mfeat", TrainConfig(epochs=3, device="cuda", quiet=True), d + "/r")
arr = embed_run(d + "/r", "mfeat", d + "/e.npz")
ds = load("mfeat")
for dev in ("cpu", "cuda", "auto"):
    m = centrobind.load(d + "/r", device=dev)
    worst = 1.0
    for mod in m.modalities:
        z = m.encode(mod, ds.features[mod].numpy().astype(np.float64))
        worst = min(worst, float((z * arr[mod]).sum(1).min()))
    print(f"device={dev} -> {m.device}: min cosine vs embed over all modalities {worst:.6f}")
    assert worst >= 0.9999
code = (
    "import centrobind, numpy as np, torch; m = centrobind.load(%r); "
    "print('no-GPU process:', torch.cuda.is_available(), m.device, "
    "m.encode('pix', np.zeros((2, 240))).shape)" % (d + "/r")
)
env = dict(os.environ, CUDA_VISIBLE_DEVICES="")
print(subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True).stdout)
m = centrobind.load(d + "/r", device="cuda")
x = np.random.default_rng(0).standard_normal((1_000_000, 240)).astype(np.float32)
m.encode("pix", x[:10000])
torch.cuda.synchronize()
t = time.perf_counter()
z = m.encode("pix", x, batch_size=65536)
print(f"encode 1e6 rows of pix on cuda: {time.perf_counter() - t:.2f} s (host->device included)")
