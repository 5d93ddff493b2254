"""What running trials through the sweep costs: one fixed config trained N times directly with the
trainer vs as an N-trial sweep (Ray Tune + Optuna + MLflow), one trial at a time on `--threads`
torch threads each, so both sides do the same training work. Half the direct fits run before the
sweep and half after it.

Prints the wall-time ratio (sweep / direct), the per-trial overhead in seconds (sweep minus direct,
per trial: actor start, checkpoint copies, MLflow and Optuna bookkeeping) and, separately, Ray's
one-time start-up. Goal: per-trial overhead <= 5% of the trial time for quickstart-sized trials.

    python bench/sweep_overhead.py --trials 3
    python bench/sweep_overhead.py --config configs/tiny.yaml --trials 4 --set optim.epochs=3
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

# The quickstart sweep's trial size: its training subsets, dev subsets and two epochs.
QUICKSTART_TRIAL = (
    "optim.epochs=2",
    "data.max_examples.sst=600",
    "data.max_examples.para=500",
    "data.max_examples.sts=500",
    "data.dev_max_examples.sst=400",
    "data.dev_max_examples.para=500",
    "data.dev_max_examples.sts=400",
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--config", default=str(REPO / "configs" / "quickstart.yaml"))
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=None,
        metavar="KEY=VALUE",
        help="config overrides (default: the quickstart sweep's trial size)",
    )
    p.add_argument("--trials", type=int, default=3)
    p.add_argument("--threads", type=int, default=1, help="torch threads (= CPUs) per trial")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--results-dir", default=None, help="default: a temporary directory")
    return p.parse_args(argv)


def train_directly(cfg, data_dir: Path, out_root: Path, trials: int, threads: int) -> list[float]:
    """Wall time of each of `trials` plain `fit` calls in this process."""
    import torch

    from model.train import fit

    torch.set_num_threads(threads)
    times = []
    for i in range(trials):
        start = time.perf_counter()
        fit(cfg, data_dir=data_dir, out_dir=out_root / f"direct{i}", prediction_splits=())
        times.append(time.perf_counter() - start)
    return times


def trial_span(trial_dir: Path) -> tuple[float, float]:
    """(start, end) wall-clock seconds of a trial's function, from Ray's result.json."""
    rows = [json.loads(line) for line in (trial_dir / "result.json").read_text().splitlines()]
    end = rows[-1]["timestamp"]
    return end - rows[-1]["time_total_s"], end


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    warnings.filterwarnings("ignore")
    os.environ.pop("MLFLOW_TRACKING_URI", None)  # a private store in the results directory
    from model.config import config_to_dict, flatten_config
    from model.data_dir import default_data_dir
    from orchestrator.config import load_train_config
    from orchestrator.space.schema import parse_space
    from orchestrator.sweep.plain import run_plain_sweep
    from orchestrator.sweep.ray_tune import init_ray

    overrides = args.overrides if args.overrides is not None else list(QUICKSTART_TRIAL)
    cfg = load_train_config(Path(args.config), overrides)
    data_dir = Path(args.data_dir) if args.data_dir else default_data_dir()
    root = Path(args.results_dir or tempfile.mkdtemp(prefix="sweep-overhead-"))

    # Direct fits before and after the sweep (A-B-A), so a change in machine load during the run
    # biases neither side.
    before = (args.trials + 1) // 2
    direct = train_directly(cfg, data_dir, root / "before", before, args.threads)

    # Every trial gets the same config: a space of one fixed value, no early stopping.
    space = parse_space(
        {
            "name": f"overhead-{int(time.time())}",
            "base": config_to_dict(cfg),
            "num_samples": args.trials,
            "max_concurrent": 1,
            "resources": {"cpu": args.threads},
            "sampler": "random",
            "scheduler": "none",
            "space": {"seed": cfg.seed},
        }
    )
    start = time.perf_counter()
    init_ray(None, num_cpus=max(2, args.threads))
    ray_start = time.perf_counter() - start
    start = time.perf_counter()
    outcome = run_plain_sweep(
        space, data_dir=data_dir, results_dir=root / "results", live_table=False
    )
    swept = time.perf_counter() - start
    assert all(t.state == "completed" for t in outcome.trials), outcome.trials
    direct += train_directly(cfg, data_dir, root / "after", args.trials - before, args.threads)

    # Split the sweep's wall time with Ray's own records: time inside each trial function, gaps
    # between one trial's end and the next one's start, and the rest (one-time set-up/tear-down).
    spans = sorted(trial_span(outcome.experiment_dir / t.trial_id) for t in outcome.trials)
    inside = sum(end - start for start, end in spans)
    gaps = sum(b[0] - a[1] for a, b in itertools.pairwise(spans))
    direct_total = sum(direct)
    per_trial = (swept - direct_total) / args.trials
    mean_trial = direct_total / args.trials
    print(f"config: {args.config} {' '.join(overrides)}")
    print(f"trial size: {flatten_config(cfg)['optim.epochs']} epochs, {args.threads} thread(s)")
    print(f"direct: {args.trials} fits in {direct_total:.1f} s ({mean_trial:.1f} s per trial)")
    print(f"sweep:  {args.trials} trials in {swept:.1f} s (+ Ray start-up {ray_start:.1f} s)")
    print(f"ratio sweep/direct: {swept / direct_total:.3f}")
    print(
        f"overhead per trial: {per_trial:.2f} s = {100 * per_trial / mean_trial:.1f}% of a trial"
    )
    print(
        f"  inside trials {inside:.1f} s ({(inside - direct_total) / args.trials:+.2f} s per trial"
        f" vs direct), between trials {gaps / max(1, args.trials - 1):.2f} s each,"
        f" one-time set-up and tear-down {swept - inside - gaps:.1f} s"
    )
    print(f"results: {root}")


if __name__ == "__main__":
    main()
