"""What a finished trial keeps on disk under the default retention: a 2-trial sweep of the
quickstart's MiniLM (pretrained all-MiniLM-L6-v2, 2 epochs on small training subsets), then,
per trial, every file under its directory against its weights file (`model.safetensors`).
Goal: <= 1.05x the weights (it kept 348 MB, ~4x, when Ray's checkpoint with the optimizer
state stayed after the trial ended).

    python bench/trial_disk.py
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

SPACE = {
    "name": "disk",
    "base": str(REPO / "configs" / "quickstart.yaml"),
    "num_samples": 2,
    "max_concurrent": 2,
    "sampler": "random",
    "scheduler": "none",
    "space": {
        "optim.lr": {"float": [3.0e-5, 2.0e-4], "log": True},
        "optim.epochs": 2,
        "data.max_examples": {"sst": 64, "para": 64, "sts": 64},
        "data.dev_max_examples": {"sst": 64, "para": 64, "sts": 64},
    },
}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--data-dir", default=os.environ.get("ORCHESTRATOR_DATA_DIR", "data"))
    args = p.parse_args(argv)
    import orchestrator

    with tempfile.TemporaryDirectory(prefix="trial-disk-") as tmp:
        outcome = orchestrator.run_sweep(SPACE, data_dir=args.data_dir, results_dir=tmp,
                                         num_cpus=2)  # fmt: skip
        for trial in outcome.trials:
            root = Path(tmp) / "disk" / trial.trial_id
            files = [f for f in root.rglob("*") if f.is_file()]
            weights = Path(str(trial.best_checkpoint)) / "model.safetensors"
            total = sum(f.stat().st_size for f in files)
            by_kind: Counter[str] = Counter()
            for f in files:
                size = f.stat().st_size
                by_kind[f.name if size > 100_000 else "small files"] += size
            print(f"trial {trial.trial_id} ({trial.state}): {total / 1e6:.1f} MB on disk, "
                  f"weights {weights.stat().st_size / 1e6:.1f} MB: "
                  f"{total / weights.stat().st_size:.3f}x the weights file")  # fmt: skip
            for name, size in by_kind.most_common():
                print(f"    {name:<24} {size / 1e6:8.2f} MB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
