#!/usr/bin/env bash
# One device-machine session (16 CPU cores + one GPU): the full benchmark on the CPUs (14 workers),
# then the GPU checks. Writes everything under $OUT. Used for the committed docs/benchmark/.
set -uo pipefail
export PYTHONPATH=$PWD/src PYTHONUNBUFFERED=1 OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available()); import os; print('cores', os.cpu_count())"
start=$(date +%s)
timeout "${BENCH_TIMEOUT:-440}" python3 -m centrobind.cli benchmark --out /tmp/bench --workers 14 --quiet 2>&1 | tail -40
echo "benchmark rc=$? in $(( $(date +%s) - start )) s"
tar czf "$OUT/bench.tgz" -C /tmp bench 2>/dev/null
# GPU: --device auto picks CUDA; the run folder comes back to be evaluated on a CPU-only machine
timeout 60 python3 -m centrobind.cli train --data mfeat --out /tmp/gpurun --epochs 5 --quiet 2>&1 | tail -3
timeout 30 python3 -m centrobind.cli evaluate --run /tmp/gpurun 2>&1 | tail -4
tar czf "$OUT/gpurun.tgz" -C /tmp gpurun 2>/dev/null
timeout 45 python3 scripts/check_inference_gpu.py 2>&1 | tail -12
timeout 60 python3 benchmarks/featurize_device_check.py 256 > "$OUT/featurize_check.json" 2> "$OUT/featurize_check.err"; echo "featurize check rc=$?"
tail -c 1500 "$OUT/featurize_check.json"
