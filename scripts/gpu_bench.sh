#!/usr/bin/env bash
# The GPU benchmark, as one command for the device tool (nvidia-h200):
#
#   run(command="bash scripts/gpu_bench.sh", carry=[".whl"], timeout_s=560)
#
# The device image has torch but not Pyro: carry pure-Python wheels in .whl/ (prepared here,
# see docs/performance.md: pyro_ppl-1.9.2-py3-none-any.whl, pyro_api-0.1.2-py3-none-any.whl).
# Runs tests/test_gpu.py, then the benchmark. Writes $OUT/bench_64.json, $OUT/bench_256.json
# and $OUT/bench.log.
set -uo pipefail
OUT=${OUT:-bench_out}
mkdir -p "$OUT"
if compgen -G ".whl/*.whl" > /dev/null; then
  SITE=$(mktemp -d)
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target "$SITE" .whl/*.whl || exit 1
  export PYTHONPATH=$SITE
fi
export PYTHONPATH="${PYTHONPATH:+$PYTHONPATH:}$PWD"
{
  date -u; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
  python3 -c "import torch, pyro; print('torch', torch.__version__, 'pyro', pyro.__version__)"
  # the GPU tests first: the CUDA-graph inner loop must equal the eager one
  timeout 90 python3 -m pytest -q -p no:cacheprovider tests/test_gpu.py
  # batch 64: every variant, the batched ones included (4 tasks x ~7.6 GB of activations)
  timeout 240 python3 scripts/bench.py --config darts --batch 64 --device cuda --repeats 3 \
    --warmup 1 --json "$OUT/bench_64.json"
  # batch 256: the batched variants would hold 4 x ~30 GB beside the graphs' pools: skip them
  timeout 200 python3 scripts/bench.py --config darts --batch 256 --device cuda --repeats 2 \
    --warmup 1 --no-vmap --json "$OUT/bench_256.json"
} 2>&1 | tee "$OUT/bench.log"
