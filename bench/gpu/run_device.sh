#!/usr/bin/env bash
# The one device check of the i2nq GPU code, for a CUDA machine (written for an H200, sm_90), < 8 minutes.
# From the repo root:   bash bench/gpu/run_device.sh        (results in $OUT, default ./bench-out)
# Carry the TensorRT headers (third_party/TensorRT, or set TensorRT_ROOT) to build the plugin library too.
#   env    GPU, driver, torch, nvcc, cmake versions
#   bench  bench/gpu/bench_gpu.py: kernel check, kernel bandwidth vs copy, EDSR x4 540p throughput
#   tests  the plugin tests: nvcc compile of every kernel for sm_90, kernel math on the host, CMake build of
#          libi2nq_trt.so and its trtexec-style load check, the torch extension against the torch reference
# Each step logs to $OUT/<step>.log; $OUT/steps.txt has the exit codes; the results table is printed last.
set -u
cd "$(dirname "$0")/../.."
OUT=${OUT:-$PWD/bench-out}
mkdir -p "$OUT"
PY=${PYTHON:-python3}
export PYTHONUNBUFFERED=1 I2NQ_CACHE_DIR=/tmp/i2nq-cache MAX_JOBS=16
export TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0}
[ -d third_party/TensorRT/include ] && export TensorRT_ROOT=${TensorRT_ROOT:-$PWD/third_party/TensorRT}

step() {  # step NAME SECONDS COMMAND...: run with a time limit, log, record the exit code
    local name=$1 limit=$2 t0=$SECONDS rc
    shift 2
    timeout "$limit" "$@" >"$OUT/$name.log" 2>&1
    rc=$?
    printf '%-6s rc=%-3s %4ss\n' "$name" "$rc" "$((SECONDS - t0))" | tee -a "$OUT/steps.txt"
}

step env 30 bash -c "nvidia-smi --query-gpu=name,driver_version,clocks.max.sm,memory.total --format=csv; \
  $PY -c 'import sys, torch; print(sys.version.split()[0], torch.__version__, torch.version.cuda, torch.cuda.get_device_name())'; \
  nvcc --version | tail -1; cmake --version | head -1"
# The bench first (the measurements the targets need; it also builds the torch extension the tests reuse),
# then the tests, spread over the cores when pytest-xdist is there. Limits sum to 510 s: run with timeout_s 540.
step bench 270 "$PY" bench/gpu/bench_gpu.py --out "$OUT"
XDIST=$("$PY" -c "import xdist" 2>/dev/null && echo "-n 4 --dist loadfile")
step tests 210 "$PY" -m pytest -q -p no:cacheprovider -rs $XDIST tests/test_plugins_kernels.py \
  tests/test_plugins_library.py tests/test_plugins_gpu.py tests/test_plugins_engine.py

echo; tail -n 8 "$OUT/tests.log"
echo; cat "$OUT/steps.txt"
echo; cat "$OUT/gpu_bench.md" 2>/dev/null || tail -n 30 "$OUT/bench.log"
