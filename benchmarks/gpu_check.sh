#!/usr/bin/env bash
# One command for a machine with a CUDA GPU; its stages are capped at 490 s in all (under 9
# minutes with the start-up checks):
#
#   1. the CUDA tests: MixupE on the GPU against the CPU, bf16 and fp16 autocast steps under
#      CUDA's synchronisation check ("error" mode), channels_last against the contiguous
#      layout, the GPU generator's Beta draws (tests/test_cuda.py), and the training step's
#      no-sync test on CUDA (tests/test_no_sync.py);
#   2. training smoke runs through the engine on the GPU with --amp (bf16 where the GPU
#      supports it, else fp16 with a gradient scaler): MixupE v1 on an MLP, v3 with
#      clean_fraction 0.25 on the small CNN; a diverged run exits non-zero;
#   3. the step-time benchmark on the GPU, whose tables it prints (ratios to Mixup per model);
#   4. the mixed loss on class indices against dense soft targets (benchmarks/loss_path.py).
#
# Usage (from anywhere; the venv must hold a CUDA build of torch):
#   bash benchmarks/gpu_check.sh              # everything, writes to a temporary folder
#   OUT=gpu_check bash benchmarks/gpu_check.sh    # keep the runs and step_time.json there
#   bash benchmarks/gpu_check.sh --dry-run    # print the commands only (works without a GPU)
#
# Not part of the test suite (CPU CI never calls it; tests/test_gpu_check.py only checks it
# by parsing it). Exit status: 0 when every stage passed, 1 otherwise, 2 without a GPU.
set -uo pipefail

cd "$(dirname "$0")/.." || exit 2
PY=${PY:-.venv/bin/python}
DRY_RUN=0
if [[ "${1:-}" == "--dry-run" ]]; then
    DRY_RUN=1
elif [[ $# -gt 0 ]]; then
    echo "usage: bash benchmarks/gpu_check.sh [--dry-run]" >&2
    exit 2
fi
if [[ -z "${OUT:-}" ]]; then
    if [[ $DRY_RUN == 1 ]]; then
        OUT=/tmp/mixupe-gpu-check
    else
        OUT=$(mktemp -d -t mixupe-gpu-check.XXXXXX)
    fi
fi

FAILED=()
# run LABEL SECONDS CMD...: one stage with a time limit; a failure is recorded, not fatal.
run() {
    local label=$1 limit=$2
    shift 2
    echo
    echo "=== ${label} (limit ${limit} s)"
    echo "+ $*"
    if [[ $DRY_RUN == 1 ]]; then
        return 0
    fi
    local start=$SECONDS
    if timeout --signal=INT --kill-after=10 "$limit" "$@"; then
        echo "=== ${label}: passed in $((SECONDS - start)) s"
    else
        echo "=== ${label}: FAILED (exit $?) after $((SECONDS - start)) s"
        FAILED+=("$label")
    fi
}

if [[ $DRY_RUN == 0 ]]; then
    if ! "$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)'; then
        "$PY" -c 'import torch; print(f"torch {torch.__version__}, CUDA build {torch.version.cuda}")' || true
        echo "gpu_check: no CUDA device is visible to $PY's torch. Run it on a machine with" \
             "a GPU, with a CUDA build of torch in the venv (PY=/path/to/python to use another)." >&2
        exit 2
    fi
    command -v nvidia-smi > /dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total \
        --format=csv,noheader
    "$PY" -c 'import torch; d = torch.cuda.get_device_properties(0); print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, {d.name}, {d.total_memory / 2**30:.0f} GiB, bf16 {torch.cuda.is_bf16_supported()}")'
    mkdir -p "$OUT"
fi
echo "output folder: $OUT"

run "CUDA tests (incl. AMP bf16/fp16 no-sync, channels_last)" 170 \
    "$PY" -m pytest -q -rs -p no:cacheprovider tests/test_cuda.py tests/test_no_sync.py

run "AMP training smoke: MixupE v1, MLP" 60 \
    "$PY" -m mixupe train --dataset digits --model mlp --method mixupe --version 1 --eta 0.1 \
    --epochs 2 --batch-size 64 --device cuda --amp --runs-root "$OUT/runs" --no-progress

run "AMP training smoke: MixupE v3, clean_fraction 0.25, small CNN" 60 \
    "$PY" -m mixupe train --dataset digits --model small-cnn --method mixupe --version 3 \
    --eta 0.1 --clean-fraction 0.25 --epochs 2 --batch-size 64 --device cuda --amp \
    --runs-root "$OUT/runs" --no-progress

run "step-time benchmark on the GPU" 170 \
    "$PY" benchmarks/step_time.py --device cuda --models mlp small-cnn preact-resnet18 \
    --batch-sizes 256 1024 --cnn-batch-sizes 128 512 --resnet-batch-sizes 128 \
    --mlp-steps 60 --steps 40 --resnet-steps 20 --warmup 5 --mem-steps 2 \
    --out "$OUT/step_time.json"

run "loss path on the GPU: dense soft targets vs the index form" 30 \
    "$PY" benchmarks/loss_path.py --device cuda --steps 50

echo
if [[ $DRY_RUN == 1 ]]; then
    echo "gpu_check: dry run, nothing executed"
elif [[ ${#FAILED[@]} -eq 0 ]]; then
    echo "gpu_check: every stage passed (outputs in $OUT)"
else
    printf 'gpu_check: FAILED stages:\n'
    printf '  - %s\n' "${FAILED[@]}"
    exit 1
fi
