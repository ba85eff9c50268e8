#!/usr/bin/env bash
# The one prepared GPU check: the gpu-marked tests, then the device benchmark, results in $OUT.
#
#   bash eagle/evaluation/gpu_check.sh            # from the repository root, on a CUDA machine
#   bash eagle/evaluation/gpu_check.sh --tiny     # dry run on a CPU (extra flags go to the bench)
#
# Sized for one 10-minute command: the tests are cut at 200 s and the benchmark at 330 s
# (both usually finish well inside). Writes to $OUT (default ./gpu-out):
#   environment.txt     GPU, driver, python, torch and transformers versions
#   pytest-gpu.txt      pytest -m gpu, with the bf16 agreement lines (-rP)
#   device_bench.txt    the benchmark's table
#   device_bench.json   every figure of the benchmark
# If .whl/ holds wheels (see README "GPU"), they are installed into /tmp/site first and used
# instead of the machine's own packages: the target adapter needs a transformers whose models
# take the `cache=` keyword (5.24, our pin), which 5.17 does not.
set -u
OUT=${OUT:-gpu-out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
if compgen -G ".whl/*.whl" >/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl || exit 1
    export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
{
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
    python3 -c 'import platform, torch, transformers; print("python", platform.python_version(),
        "torch", torch.__version__, "cuda", torch.version.cuda, "transformers",
        transformers.__version__)'
} 2>&1 | tee "$OUT/environment.txt"
timeout 200 python3 -m pytest -m gpu -p no:cacheprovider -q -rsP tests/test_gpu.py \
    2>&1 | tee "$OUT/pytest-gpu.txt"
echo "pytest exit status: ${PIPESTATUS[0]}" | tee -a "$OUT/pytest-gpu.txt"
timeout 330 python3 -m eagle.evaluation.device_bench --json "$OUT/device_bench.json" "$@" \
    2>&1 | tee "$OUT/device_bench.txt"
echo "device_bench exit status: ${PIPESTATUS[0]}" | tee -a "$OUT/device_bench.txt"
