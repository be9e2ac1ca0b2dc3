#!/usr/bin/env bash
# The one device check of the i2nq GPU code, for a CUDA machine (written for an H200, sm_90), < 9 minutes.
# From the repo root:   bash bench/gpu/run_device.sh        (results in $OUT, default ./bench-out)
# Carry the TensorRT headers (third_party/TensorRT, or set TensorRT_ROOT) to build the plugin library too.
#   env    GPU, driver, torch, nvcc, cmake versions
#   bench  bench/gpu/bench_gpu.py: builds first, in parallel (the torch extension for sm_90; its copy without
#          streaming cache hints; the extension with torch's default architectures; the plugin library with
#          CMake's default architectures, or only its CMake configure without TensorRT headers), then the kernel
#          check, kernel bandwidth vs copy, EDSR x4 540p throughput, hints on vs off (ratios from one run) and
#          what the default-architecture builds were built for and whether their kernels run here
#   tests  the plugin tests: nvcc compile of every kernel for sm_90, kernel math on the host, the default CUDA
#          architecture of the CMake build on this GPU, CMake build of libi2nq_trt.so and its trtexec-style
#          load check, the torch extension against the torch reference, the engine logic on stand-ins
# Each step logs to $OUT/<step>.log; $OUT/steps.txt has the exit codes; the results table is printed last
# ($OUT/gpu_bench.md is rewritten after every bench section, so a step that times out keeps what it measured).
set -u
cd "$(dirname "$0")/../.."
OUT=${OUT:-$PWD/bench-out}
mkdir -p "$OUT"
PY=${PYTHON:-python3}
export PYTHONUNBUFFERED=1 I2NQ_CACHE_DIR=/tmp/i2nq-cache MAX_JOBS=16
export TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0}  # the bench's default-arch build unsets it for itself
[ -d third_party/TensorRT/include ] && export TensorRT_ROOT=${TensorRT_ROOT:-$PWD/third_party/TensorRT}

step() {  # step NAME SECONDS COMMAND...: run with a time limit, log, record the exit code
    local name=$1 limit=$2 t0=$SECONDS rc
    shift 2
    timeout "$limit" "$@" >"$OUT/$name.log" 2>&1
    rc=$?
    printf '%-6s rc=%-3s %4ss\n' "$name" "$rc" "$((SECONDS - t0))" | tee -a "$OUT/steps.txt"
}

step env 20 bash -c "nvidia-smi --query-gpu=name,driver_version,compute_cap,clocks.max.sm,memory.total --format=csv; \
  $PY -c 'import sys, torch; print(sys.version.split()[0], torch.__version__, torch.version.cuda, torch.cuda.get_device_name())'; \
  nvcc --version | tail -1; cmake --version | head -1; command -v cuobjdump || echo 'no cuobjdump'"
# The bench first (the measurements; it also builds the torch extension the tests reuse), then the tests,
# spread over the cores when pytest-xdist is there. Limits sum to 520 s: run with timeout_s 540.
step bench 290 "$PY" bench/gpu/bench_gpu.py --out "$OUT" --build-timeout 180
XDIST=$("$PY" -c "import xdist" 2>/dev/null && echo "-n 4 --dist loadfile")
step tests 210 "$PY" -m pytest -q -p no:cacheprovider -rs $XDIST tests/test_plugins_kernels.py \
  tests/test_plugins_cmake_arch.py tests/test_plugins_library.py tests/test_plugins_gpu.py tests/test_plugins_engine.py

echo; tail -n 8 "$OUT/tests.log"
echo; cat "$OUT/steps.txt"
echo; cat "$OUT/gpu_bench.md" 2>/dev/null || tail -n 30 "$OUT/bench.log"
