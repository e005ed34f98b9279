#!/usr/bin/env bash
# Train-step benchmark on one GPU (H100/H200 class), one command: the three architectures
# at paper size (256x256, batch 32) and at the quick preset's size (its "cpu" models at
# 64x64, batch 8), float32 and bfloat16 compute (parameters stay float32): images/s of
# echojax's default (impl="auto", i.e. "gpu" there) vs PyTorch eager vs torch.compile,
# peak device memory of each, model FLOPs per step (XLA's cost analysis of the compiled
# step) and MFU against the chip's datasheet peak for the dtype, and the input pipeline's
# rate at 256x256 on the machine's CPU cores beside each step's consumption.
# Needs jax (with CUDA), flax, optax, torch (with CUDA) and echojax's dependencies
# (tensorflow_datasets, grain for the input pipeline); no network. Details: bench/gpu_bench.py.
#
#   bash bench/gpu.sh                 # on the GPU machine; stops starting cases after
#                                     # BUDGET seconds (default 450), so it ends within 8
#                                     # minutes; the most important cases run first
#   bash bench/gpu.sh --cases unet-quick-64-float32,swin_unet-quick-64-bfloat16
#                                     # a subset (e.g. the ones a previous run cut off)
#   bash bench/gpu.sh float32         # one dtype only (likewise bfloat16)
#   bash bench/gpu.sh --smoke         # CPU, tiny models: checks the logic (~3 minutes)
#
# OUT_JSON=path (or $OUT set: $OUT/gpu_bench.json) also writes the results as JSON, with
# rows in the schema of bench/measured_throughput.json. PYTHON picks the interpreter.
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
# JAX and PyTorch share the GPU: allocate on demand instead of JAX taking 75% up front.
export XLA_PYTHON_CLIENT_PREALLOCATE=false
PY="${PYTHON:-python}"

args=()
if [[ -n "${BUDGET:-}" ]]; then args+=(--budget "$BUDGET"); fi
case "${1:-}" in
  float32|bfloat16)
    args+=(--cases "$("$PY" -c "import sys; sys.path.insert(0, 'bench'); import gpu_bench as g; \
print(','.join(n for n in g.CASE_NAMES if n.endswith('-$1')))")")
    shift ;;
esac
exec "$PY" bench/gpu_bench.py "${args[@]}" "$@"
