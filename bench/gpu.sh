#!/usr/bin/env bash
# Train-step benchmark on one GPU (H100/H200 class): the three architectures at paper
# size (256x256, batch 32), float32 and bfloat16 compute (parameters stay float32),
# echojax vs PyTorch eager vs torch.compile. Needs jax (with CUDA), flax, optax and torch
# (with CUDA) installed; no network. Prints one table; stops starting new cases once
# BUDGET seconds (default 570) have passed, so one invocation stays within 10 minutes.
#
#   bash bench/gpu.sh float32     # on the GPU machine, from anywhere (~7-9 min on a cold
#                                 # H100, estimated from the per-case times below)
#   bash bench/gpu.sh bfloat16    # the bf16-compute half, a second invocation
#   bash bench/gpu.sh             # both dtypes: ~13-16 min cold on an H100, so the
#                                 # budget cuts the bf16 half short (BUDGET=1000 for all)
#   bash bench/gpu.sh --smoke     # CPU, tiny models: checks the script's logic only
#
# On a cold H100 (2026-11-27) each U-Net case took about 2 minutes, nearly all of it
# compilation (XLA autotuning for echojax, inductor for torch.compile); timing itself is
# a few seconds.
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
# JAX and PyTorch share the GPU: allocate on demand instead of JAX taking 75% up front.
export XLA_PYTHON_CLIENT_PREALLOCATE=false
PY="${PYTHON:-python}"

DEVICE=cuda BATCH=32 BUDGET=${BUDGET:-570} ROUNDS=3 STEPS=10 WARMUP=3 COMPILE=--torch-compile
CASES="unet-paper-256 attention_unet-paper-256 swin_unet-paper-256"
DTYPES="float32 bfloat16"
case "${1:-}" in
  float32|bfloat16) DTYPES="$1" ;;
  ""|--smoke) ;;
  *) echo "usage: bash bench/gpu.sh [float32|bfloat16|--smoke], got '$1'" >&2; exit 2 ;;
esac
if [[ "${1:-}" == "--smoke" ]]; then
  # torch.compile on a loaded 2-core CPU takes minutes: the smoke run skips it.
  DEVICE=cpu BATCH=2 BUDGET=300 ROUNDS=1 STEPS=1 WARMUP=1 COMPILE=
  CASES="unet-tiny-32 attention_unet-tiny-32 swin_unet-tiny-32"
fi

log="$(mktemp)"
trap 'rm -f "$log"' EXIT
{
  date -u +"# %Y-%m-%d %H:%M UTC"
  if [[ "$DEVICE" == cuda ]]; then
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | sed 's/^/# GPU: /' || true
  fi
  "$PY" -c 'import jax, torch; print(f"# jax {jax.__version__} {jax.devices()}, torch {torch.__version__} cuda {torch.version.cuda}")'
} | tee "$log"

deadline=$((SECONDS + BUDGET))
for dtype in $DTYPES; do
  for case in $CASES; do
    left=$((deadline - SECONDS))
    if (( left < 20 )); then
      echo "| $case | | $dtype: not run (time budget spent) | | | |" | tee -a "$log"
      continue
    fi
    # channels_last is PyTorch's faster layout for convolutions on tensor cores; the
    # Swin-UNet works on tokens, where the layout flag only touches the patch embedding.
    fmt=channels_last
    [[ "$case" == swin* ]] && fmt=contiguous
    # The models' "gpu" implementation ("cpu" for the smoke run); in float32 the U-Nets
    # also time the plain Flax layers: on a GPU the only differences left are the
    # transposed and 1x1 convolutions as matmuls and the pooling.
    impls=gpu
    [[ "$DEVICE" == cpu ]] && impls=cpu
    [[ "$dtype" == float32 && "$case" != swin* ]] && impls=$impls,flax
    if ! timeout "$left" "$PY" bench/train_step.py --cases "$case" --batch "$BATCH" \
        --dtype "$dtype" --device "$DEVICE" --torch-formats "$fmt" --jax-impls "$impls" $COMPILE \
        --rounds "$ROUNDS" --steps "$STEPS" --warmup "$WARMUP" 2>&1 \
        | sed "s/^| $case |/| $case $dtype |/" | tee -a "$log"; then
      echo "| $case | | $dtype: failed or timed out | | | |" | tee -a "$log"
    fi
  done
done

echo
echo "## Summary (ratio = PyTorch's best / variant time; > 1 means faster than PyTorch)"
grep '^# ' "$log" | sort -u
echo "| case | model | variant | ms/step | images/s | vs torch best |"
echo "|---|---|---|---:|---:|---:|"
grep '^| ' "$log" | grep -v -e '^| case |' -e '^|---' || true
