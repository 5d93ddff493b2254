#!/usr/bin/env bash
# Run on a lent GPU machine (its image has torch, transformers, tokenizers and pytest; not ray,
# optuna or mlflow), from the repository root, after `python bench/gpu_carry.py` here and with
# `.gpu/bench` carried. Writes every log under $OUT (default: ./gpu-out) and prints the tables.
#   run: bash bench/gpu_session.sh [quick]      (quick: tests + MiniLM only, ~3 min)
set -uo pipefail
OUT=${OUT:-gpu-out}
mkdir -p "$OUT"
export PYTHONPATH=$PWD/.gpu/bench/site:$PWD PYTHONUNBUFFERED=1
export ORCHESTRATOR_DATA_DIR=$PWD/.gpu/bench/data
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
python3 -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)" | tee -a "$OUT/gpu.txt"
# GPU tests: bf16 numerics, varlen / jagged unpadded attention, compile, no host sync, memory caps.
python3 -m pytest -m gpu tests/gpu -q -p no:cacheprovider 2>&1 | tee "$OUT/gpu-tests.txt" | tail -15
python3 bench/throughput.py --device cuda --model minilm --token-budget 65536 --compile \
  --json "$OUT/minilm-64k.json" 2>&1 | tee "$OUT/minilm-64k.txt" | grep -v "^#"
if [ "${1:-}" != quick ]; then
  python3 bench/throughput.py --device cuda --model minilm --compile \
    --json "$OUT/minilm-16k.json" 2>&1 | tee "$OUT/minilm-16k.txt" | grep -v "^#"
  python3 bench/throughput.py --device cuda --model bert-base --token-budget 32768 --compile \
    --cost-token-budget 8192 --json "$OUT/bert-base.json" 2>&1 | tee "$OUT/bert-base.txt" | grep -v "^#"
  python3 bench/packing.py --procs 1 2 4 --steps 300 2>&1 | tee "$OUT/packing.txt" | tail -8
fi
