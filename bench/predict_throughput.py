"""Prediction throughput: `orchestrator predict`'s path against the evaluation path, same rows.

One run, the same dev rows of each task for every variant, timed in interleaved rounds (a noisy
machine slows every variant alike), best round reported:
  * eval path: `model.evaluate.predict_task` of one checkpoint on rows tokenized beforehand, as
    `train` and `ensemble` evaluate (their token cache pays for tokenizing);
  * predict, 1 checkpoint: `Predictor.predict_examples`, tokenizing included (what `predict
    --checkpoint` does after reading its input);
  * predict, K-member ensemble: the same through a manifest (each member tokenizes and runs; a
    shared tokenizer is tokenized once), combined by `ensemble`'s default method;
in sentences/s for SST and pairs/s for Quora and STS; plus each predictor's load time (weights,
tokenizer and, for the ensemble, every member file's sha256). Before timing, the single
checkpoint's predict path must predict exactly what its eval path does on every row.

    python bench/predict_throughput.py --checkpoints A/best B/best C/best --rows 400
    python bench/predict_throughput.py --checkpoints ... --device cuda --rows 4000
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from model.checkpoint import load_checkpoint_model  # noqa: E402
from model.config import TASKS  # noqa: E402
from model.data import Examples, encode_task, read_task_file  # noqa: E402
from model.data_dir import default_data_dir  # noqa: E402
from model.device import autocast_dtype  # noqa: E402
from model.evaluate import TaskPredictions, predict_task  # noqa: E402
from orchestrator.ensemble.manifest import write_ensemble_manifest  # noqa: E402
from orchestrator.ensemble.request import Candidate, EnsembleRequest  # noqa: E402
from orchestrator.predict.predictor import Predictor, load_predictor  # noqa: E402

DEV_FILES = {"sst": "ids-sst-dev.csv", "para": "quora-dev.csv", "sts": "sts-dev.csv"}
UNITS = {"sst": "sentences/s", "para": "pairs/s", "sts": "pairs/s"}
EVAL_PATH = "eval path (predict_task, pre-tokenized)"
SINGLE = "predict, 1 checkpoint"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument(
        "--checkpoints",
        type=Path,
        nargs="+",
        required=True,
        help="the first is the single model; all are the ensemble",
    )
    p.add_argument("--data-dir", type=Path, default=None)
    p.add_argument("--rows", type=int, default=400, help="first N dev rows of each task")
    p.add_argument("--rounds", type=int, default=3, help="interleaved timed rounds")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    return p.parse_args(argv)


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - start


def ensemble_dir(checkpoints: list[Path], directory: Path) -> Path:
    """An ensemble directory whose manifest names `checkpoints` (top-K, one vote each)."""
    members = [Candidate(f"bench{i}", f"m{i}", f"m{i}", "completed", 0.0, c)
               for i, c in enumerate(checkpoints)]  # fmt: skip
    request = EnsembleRequest(top=len(checkpoints))
    write_ensemble_manifest(directory, "bench", request, "dev/overall", members, {})
    return directory


def eval_path(
    checkpoint: Path, device: torch.device, rows: Mapping[str, Examples]
) -> dict[str, Callable[[], TaskPredictions]]:
    """Per task, a closure running predict_task on the pre-tokenized rows."""
    model, tokenizer, cfg = load_checkpoint_model(checkpoint)
    model.to(device).eval()
    amp = autocast_dtype(cfg, device)
    encoded = {t: encode_task(t, rows[t], tokenizer, cfg.model.pair_encoding) for t in TASKS}

    def run(task: str) -> Callable[[], TaskPredictions]:
        return lambda: predict_task(
            model, encoded[task], batch_size=cfg.data.eval_batch_size, device=device,
            pad_id=tokenizer.pad_id, autocast_dtype=amp,
        )  # fmt: skip

    return {task: run(task) for task in TASKS}


def main(argv: list[str] | None = None) -> dict[str, dict[str, float]]:
    """Run the bench, print its table; returns rows/s by variant and task, and load seconds."""
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    data_dir = args.data_dir or default_data_dir()
    rows: dict[str, Examples] = {
        t: read_task_file(t, data_dir / DEV_FILES[t])[: args.rows] for t in TASKS
    }
    with tempfile.TemporaryDirectory(prefix="predict-bench-") as tmp:
        load_s = {}
        start = time.perf_counter()
        single = load_predictor(args.checkpoints[0], device=args.device)
        load_s["single"] = time.perf_counter() - start
        start = time.perf_counter()
        ensemble = load_predictor(ensemble_dir(args.checkpoints, Path(tmp)), device=args.device)
        load_s["ensemble"] = time.perf_counter() - start
        evaluate = eval_path(args.checkpoints[0], device, rows)

        def run(predictor: Predictor, task: str) -> Callable[[], TaskPredictions]:
            return lambda: predictor.predict_examples(task, rows[task])

        variants = {
            EVAL_PATH: evaluate,
            SINGLE: {t: run(single, t) for t in TASKS},
            f"predict, {len(ensemble.members)}-member ensemble": {
                t: run(ensemble, t) for t in TASKS
            },
        }
        # Warm-up (first-call allocations, lazy imports) that also checks the two paths of one
        # checkpoint agree: the bench times the same work, not a faster wrong answer.
        outputs = {name: {task: fns[task]() for task in TASKS} for name, fns in variants.items()}
        check_same_predictions(outputs[EVAL_PATH], outputs[SINGLE])
        best: dict[str, dict[str, float]] = {name: {} for name in variants}
        for _ in range(args.rounds):
            for name, fns in variants.items():
                for task in TASKS:
                    seconds = timed(fns[task])
                    best[name][task] = min(best[name].get(task, float("inf")), seconds)
    print_table(args, rows, best, load_s)
    rates = {name: {t: len(rows[t]) / s[t] for t in TASKS} for name, s in best.items()}
    return {**rates, "load_s": load_s}


def check_same_predictions(
    reference: Mapping[str, TaskPredictions], predicted: Mapping[str, TaskPredictions]
) -> None:
    """SystemExit naming the first task whose predictions differ between the two paths."""
    for task in TASKS:
        want, got = reference[task], predicted[task]
        same = want.ids == got.ids and np.array_equal(want.values, got.values)
        if want.probabilities is not None:
            same = same and np.array_equal(want.probabilities, np.asarray(got.probabilities))
        if not same:
            raise SystemExit(f"{task}: `{SINGLE}` predicts otherwise than the `{EVAL_PATH}`")
    print(f"predictions: `{SINGLE}` equals the eval path on every row of every task")


def print_table(
    args: argparse.Namespace,
    rows: Mapping[str, Examples],
    best: dict[str, dict[str, float]],
    load_s: dict[str, float],
) -> None:
    threads = torch.get_num_threads()
    print(f"device {args.device} ({threads} threads), {args.rounds} rounds, best round; "
          f"checkpoint {args.checkpoints[0]}")  # fmt: skip
    print("rows: " + ", ".join(f"{t} {len(rows[t])}" for t in TASKS))
    header = ["variant", *(f"{t} {UNITS[t]}" for t in TASKS)]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    base = next(iter(best.values()))
    for name, seconds in best.items():
        cells = [f"{len(rows[t]) / seconds[t]:.0f} ({base[t] / seconds[t]:.2f}x)" for t in TASKS]
        print(f"| {name} | " + " | ".join(cells) + " |")
    print(f"load: 1 checkpoint {load_s['single']:.2f} s; ensemble of {len(args.checkpoints)} "
          f"{load_s['ensemble']:.2f} s (sha256 of every member file included)")  # fmt: skip


if __name__ == "__main__":
    main()
