#!/usr/bin/env bash
# One command for a machine with a CUDA GPU; its stages are capped at 540 s in all (under 10
# minutes with the start-up checks):
#
#   1. the CUDA tests: MixupE on the GPU against the CPU, bf16 and fp16 autocast steps under
#      CUDA's synchronisation check ("error" mode), channels_last against the contiguous
#      layout, the GPU generator's Beta draws (tests/test_cuda.py), and the training step's
#      no-sync test on CUDA (tests/test_no_sync.py);
#   2. training smoke runs through the engine on the GPU with --amp (bf16 where the GPU
#      supports it, else fp16 with a gradient scaler): MixupE v1 on an MLP, v3 with
#      clean_fraction 0.25 on the small CNN; a diverged run exits non-zero;
#   3. fp16 with the gradient scaler, forced (--amp-dtype fp16), on the small CNN: 2 epochs
#      straight and 1 epoch + resume + 1; the checkpoints must hold the scaler's state
#      (benchmarks/resume_check.py --expect-scaler);
#   4. deterministic=true on the MLP with dropout: the resumed run must equal the straight
#      one bit for bit (benchmarks/resume_check.py --expect-identical);
#   5. the step-time benchmark on the GPU, whose tables it prints (ratios to Mixup per model);
#   6. the mixed loss on class indices against dense soft targets (benchmarks/loss_path.py).
#
# It needs a Python whose torch is a CUDA build, with numpy, scipy and pytest; mixupe itself
# is imported from this checkout (PYTHONPATH=src). The first that has a CUDA build is used of:
# --python PATH, else $PY, else .venv-cuda/bin/python, .venv/bin/python, python3. With none,
# it stops (status 2) and prints the command that makes one: --install creates .venv-cuda
# (python3 -m venv, then pip install torch==$TORCH_VERSION from $TORCH_INDEX, default
# 2.13.0 from https://download.pytorch.org/whl/cu128; pick the index of the driver's CUDA).
#
# Usage (from anywhere):
#   bash benchmarks/gpu_check.sh                  # everything, writes to a temporary folder
#   OUT=gpu_check bash benchmarks/gpu_check.sh    # keep the runs and step_time.json there
#   bash benchmarks/gpu_check.sh --python /opt/conda/bin/python   # a CUDA Python of your own
#   bash benchmarks/gpu_check.sh --install        # first make .venv-cuda (needs a package index)
#   bash benchmarks/gpu_check.sh --dry-run        # list the stages and commands (no GPU needed)
#
# Not part of the test suite (CPU CI never calls it; tests/test_gpu_check.py checks it by
# parsing it and by its refusals without a GPU). Exit status: 0 when every stage passed, 1
# otherwise, 2 without a CUDA build of torch or without a GPU.
set -uo pipefail

cd "$(dirname "$0")/.." || exit 2
echo "gpu_check: needs a CUDA GPU and a Python with a CUDA build of torch, numpy, scipy and" \
     "pytest (--python PATH or PY=...; else .venv-cuda, .venv, python3; --install makes .venv-cuda)"
USAGE="usage: bash benchmarks/gpu_check.sh [--dry-run] [--install] [--python PATH]"
DRY_RUN=0
INSTALL=0
PY_ARG=""
while [[ $# -gt 0 ]]; do
    case "$1" in
        --dry-run) DRY_RUN=1 ;;
        --install) INSTALL=1 ;;
        --python)
            [[ $# -ge 2 ]] || { echo "$USAGE" >&2; exit 2; }
            PY_ARG=$2
            shift ;;
        *) echo "$USAGE" >&2; exit 2 ;;
    esac
    shift
done
TORCH_VERSION=${TORCH_VERSION:-2.13.0}
TORCH_INDEX=${TORCH_INDEX:-https://download.pytorch.org/whl/cu128}
CUDA_VENV=.venv-cuda
INSTALL_CMD="python3 -m venv $CUDA_VENV && $CUDA_VENV/bin/pip install \"torch==$TORCH_VERSION\" --index-url $TORCH_INDEX && $CUDA_VENV/bin/pip install -e \".[bench,dev]\" \"torch==$TORCH_VERSION\""
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"

# probe PY: sets DESC to what its torch is ("torch 2.13.0+cpu, a CPU build", or why there is
# none); succeeds when it is a CUDA build. One interpreter start per candidate.
probe() {
    DESC=$("$1" -c 'import torch; c = torch.version.cuda; print(f"torch {torch.__version__}, " + (f"CUDA build {c}" if c else "a CPU build"))' 2>/dev/null) \
        || DESC="no importable torch"
    [[ $DESC == *"CUDA build"* ]]
}

if [[ -n $PY_ARG ]]; then
    CANDIDATES=("$PY_ARG")
elif [[ -n ${PY:-} ]]; then
    CANDIDATES=("$PY")
else
    CANDIDATES=("$CUDA_VENV/bin/python" .venv/bin/python)
    command -v python3 > /dev/null && CANDIDATES+=("$(command -v python3)")
fi
PY=""
TRIED=()
for candidate in "${CANDIDATES[@]}"; do
    if [[ -x $candidate ]] || command -v "$candidate" > /dev/null; then
        if probe "$candidate"; then
            PY=$candidate
            break
        fi
        TRIED+=("$candidate: $DESC")
    else
        TRIED+=("$candidate: not found")
    fi
done
if [[ -z $PY && $INSTALL == 1 && $DRY_RUN == 0 ]]; then
    echo "+ $INSTALL_CMD"
    if bash -c "$INSTALL_CMD" && probe "$CUDA_VENV/bin/python"; then
        PY=$CUDA_VENV/bin/python
    else
        probe "$CUDA_VENV/bin/python"
        echo "gpu_check: --install did not give $CUDA_VENV a CUDA build of torch" \
             "($DESC); check TORCH_INDEX=$TORCH_INDEX" >&2
        exit 2
    fi
fi
if [[ -z $PY ]]; then
    if [[ $DRY_RUN == 1 ]]; then
        PY=$CUDA_VENV/bin/python
        echo "python: none with a CUDA build of torch; the stages name $PY, which --install" \
             "makes. Tried:"
        printf '  %s\n' "${TRIED[@]}"
    else
        echo "gpu_check: no Python with a CUDA build of torch was found:" >&2
        printf '  %s\n' "${TRIED[@]}" >&2
        echo "Make one with: bash benchmarks/gpu_check.sh --install   (that runs:" >&2
        echo "  $INSTALL_CMD)" >&2
        echo "or pass one: bash benchmarks/gpu_check.sh --python /path/to/cuda/python" >&2
        exit 2
    fi
else
    echo "python: $PY ($DESC)"
fi

if [[ -z ${OUT:-} ]]; then
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
    echo "+ $(printf '%q ' "$@")"  # quoted as the shell reads it back
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
    command -v nvidia-smi > /dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total \
        --format=csv,noheader
    "$PY" - <<'EOF'
import sys
import torch
if not torch.cuda.is_available():
    sys.exit(3)
try:
    import numpy, pytest, scipy, mixupe  # noqa: F401, E401
except ImportError as exc:
    print(f"({exc})", file=sys.stderr)
    sys.exit(4)
d = torch.cuda.get_device_properties(0)
print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, {d.name}, "
      f"{d.total_memory / 2**30:.0f} GiB, bf16 {torch.cuda.is_bf16_supported()}")
EOF
    case $? in
        0) ;;
        3) echo "gpu_check: no CUDA device is visible to $PY ($DESC). Run it on a machine" \
                "with a GPU and its driver (nvidia-smi must list the GPU)." >&2
           exit 2 ;;
        4) VERSION=${DESC#torch }
           echo "gpu_check: $PY lacks numpy, scipy, pytest or a dependency of mixupe; install" \
                "them with: $PY -m pip install -e \".[bench,dev]\" \"torch==${VERSION%%[+,]*}\"" >&2
           exit 2 ;;
        *) echo "gpu_check: $PY failed to start torch on the GPU (see above)" >&2
           exit 2 ;;
    esac
    mkdir -p "$OUT"
fi
echo "output folder: $OUT"

run "CUDA tests (incl. AMP bf16/fp16 no-sync, channels_last)" 150 \
    "$PY" -m pytest -q -rs -p no:cacheprovider tests/test_cuda.py tests/test_no_sync.py

run "AMP training smoke: MixupE v1, MLP" 45 \
    "$PY" -m mixupe train --dataset digits --model mlp --method mixupe --version 1 --eta 0.1 \
    --epochs 2 --batch-size 64 --device cuda --amp --runs-root "$OUT/runs" --no-progress

run "AMP training smoke: MixupE v3, clean_fraction 0.25, small CNN" 45 \
    "$PY" -m mixupe train --dataset digits --model small-cnn --method mixupe --version 3 \
    --eta 0.1 --clean-fraction 0.25 --epochs 2 --batch-size 64 --device cuda --amp \
    --runs-root "$OUT/runs" --no-progress

run "fp16 with the gradient scaler: 2 epochs, and 1 + resume + 1, small CNN" 60 \
    "$PY" benchmarks/resume_check.py --runs-root "$OUT/fp16" --expect-scaler dataset=digits \
    model=small-cnn method=mixupe version=3 eta=0.1 epochs=2 batch_size=64 device=cuda \
    amp=true amp_dtype=fp16

run "deterministic: 1 + resume + 1 equals 2 epochs bit for bit, MLP with dropout" 60 \
    "$PY" benchmarks/resume_check.py --runs-root "$OUT/deterministic" --expect-identical \
    dataset=digits model=mlp method=mixupe version=3 eta=0.1 epochs=2 batch_size=64 \
    device=cuda deterministic=true 'model_options={"dropout":0.1}'

run "step-time benchmark on the GPU" 150 \
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
