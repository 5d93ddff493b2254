#!/usr/bin/env bash
# Regenerate requirements.lock (`make lock`): every package that the project and its `dev` extra
# resolve to, pinned, for this machine's Linux/CPython. pip-compile runs pip's own resolver, the one
# scripts/install.sh installs with, so both pick the same versions; existing pins are kept unless
# they no longer fit pyproject.toml (`bash scripts/lock.sh --upgrade` moves every pin to the newest
# allowed). Extra arguments go to pip-compile.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
# pip-tools lives in a throwaway venv: it is no dependency of the project and must not land in .venv.
tools=$(mktemp -d)
trap 'rm -rf "$tools"' EXIT
"$PYTHON" -m venv "$tools"
"$tools/bin/python" -m pip install -qq --disable-pip-version-check pip==26.3 pip-tools==7.7.0
# The torch that scripts/install.sh installs first (it reads this pin back from the lock). Resolved
# from the CPU build (pip's find-links here, or TORCH_INDEX_URL) so that the lock holds none of the
# CUDA build's nvidia-* packages; on a GPU machine torch pins those exactly itself.
echo "torch==2.13.0" >"$tools/torch.txt"
torch_index=()
[ -z "${TORCH_INDEX_URL:-}" ] || torch_index=(--extra-index-url "$TORCH_INDEX_URL")
# Resolve into a copy, so that a failed run leaves requirements.lock as it was; the copy's pins are
# the preferences that keep unchanged packages where they are.
[ ! -f requirements.lock ] || cp requirements.lock "$tools/lock"
# --strip-extras: pip refuses extras (ray[tune]) in a constraints file; --allow-unsafe: pin
# setuptools too (torch requires it), else each machine keeps whichever its venv came with.
CUSTOM_COMPILE_COMMAND="make lock" "$tools/bin/pip-compile" --quiet --extra dev --strip-extras \
  --allow-unsafe --no-emit-index-url --no-emit-find-links \
  --constraint "$tools/torch.txt" ${torch_index[@]+"${torch_index[@]}"} \
  --output-file "$tools/lock" "$@" pyproject.toml
if ! grep -q '^torch==[^ ]*+cpu' "$tools/lock"; then
  echo "torch resolved to PyPI's CUDA build: set TORCH_INDEX_URL to a CPU wheel index" >&2
  exit 1
fi
# A local build label (torch 2.13.0+cpu) exists on no public index; `==2.13.0` matches the CPU build
# and PyPI's CUDA build alike. The torch pin's annotation names the throwaway file: name its source.
sed -i -E -e 's/^([A-Za-z0-9._-]+==[^+ ;]+)\+[^ ;]+/\1/' \
  -e "s|-c $tools/torch.txt|-c torch pin in scripts/lock.sh|" "$tools/lock"
python_version=$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
{
  echo "# Exact versions of minbert-sweep's dependencies and its dev extra (pyproject.toml), for"
  echo "# Linux, CPython $python_version. scripts/install.sh installs with \`pip install -c requirements.lock\`."
  echo "# Do not edit by hand; regenerate with: make lock"
  grep -v '^# \(Exact versions\|Linux, CPython\|Do not edit\)' "$tools/lock"
} >requirements.lock
