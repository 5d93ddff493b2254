"""`orchestrator ensemble`: read a sweep's trials from MLflow, predict with each member, combine,
and write `<results>/<sweep>/ensemble/` (leaderboard prediction files and metrics.json).

Each member loads from its own best checkpoint and predicts with its own tokenizer and
architecture, once per split, batched, on the GPU when there is one. Members are loaded one at a
time, so memory holds one model. Every member is scored on the same (full) dev files as the
ensemble, so the gain over the best member compares like with like. A test file that is missing
(here `quora-test-student.csv`, absent from the course data we have) gives no prediction file for
that task and split, and a note in metrics.json and on the console; the dev files are required.
"""

from __future__ import annotations

import hashlib
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from model.checkpoint import CheckpointError, load_checkpoint_model, write_json_atomic
from model.config import TASKS, TrainConfig
from model.data import DataError, EncodedTask, encode_task, read_task_file, subsample
from model.evaluate import (
    OVERALL,
    TaskPredictions,
    dev_metrics,
    predict_task,
    prediction_filename,
    write_predictions,
)
from model.task_data import DEV_SUBSET_SEED, resolve_data_path, task_file
from model.train import autocast_dtype
from model.weights import WeightsError
from orchestrator.contract import BEST_CHECKPOINT, BEST_PREFIX, METRICS
from orchestrator.ensemble import (
    FINISHED_STATES,
    METHODS,
    SELECTIONS,
    Candidate,
    EnsembleError,
    best_member,
    check_top,
    combine_tasks,
    ensemble_dev_metrics,
    gain,
    greedy_forward_selection,
    rank_candidates,
)

SPLITS: tuple[str, ...] = ("dev", "test")
Predictions = dict[str, dict[str, TaskPredictions]]  # split -> task -> predictions


@dataclass
class MemberRun:
    """A member that loaded and predicted: its candidate entry and its dev scores."""

    candidate: Candidate
    predictions: Predictions
    dev: dict[str, float]


@dataclass
class EnsembleResult:
    """What `run_ensemble` wrote and measured."""

    sweep: str
    out_dir: Path
    members: list[MemberRun]
    selected: list[int]  # indices into `members`, with repeats for greedy selection
    dev: dict[str, float]
    files: list[Path]
    notes: list[str] = field(default_factory=list)
    run_id: str | None = None
    summary: dict[str, Any] = field(default_factory=dict)


class SplitInputs:
    """Examples of every task and split read once, tokenized once per distinct tokenizer."""

    def __init__(
        self,
        cfg: TrainConfig,
        data_dir: Path,
        splits: Sequence[str],
        notes: list[str],
        dev_subset: bool = False,
    ):
        self.examples: dict[str, dict[str, list]] = {split: {} for split in splits}
        self.labels: dict[str, np.ndarray] = {}
        self._encoded: dict[tuple[str, str, str, str], EncodedTask] = {}
        for split in splits:
            for task in TASKS:
                path = resolve_data_path(data_dir, task_file(cfg, task, split))
                if not path.is_file():
                    if split == "dev":
                        raise DataError(
                            f"{path}: dev file not found (ensembles are scored on dev)"
                        )
                    notes.append(f"{path} not found: no {task} {split} predictions")
                    continue
                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always")
                    rows = read_task_file(task, path, labelled=split == "dev")
                notes += [str(w.message) for w in caught]
                if split == "dev" and dev_subset:
                    # The trials' own fixed dev subset: fast, and comparable with the sweep.
                    limit = getattr(cfg.data.dev_max_examples, task)
                    rows = subsample(rows, limit, seed=DEV_SUBSET_SEED)
                self.examples[split][task] = rows
                if split == "dev":
                    dtype = np.int64 if task == "sst" else np.float32
                    self.labels[task] = np.asarray([row.label for row in rows], dtype=dtype)

    def encoded(self, split: str, task: str, tokenizer: Any, pair_encoding: str) -> EncodedTask:
        """The examples tokenized by `tokenizer` (cached by the tokenizer's full definition)."""
        fingerprint = hashlib.sha256(tokenizer.tokenizer.to_str().encode()).hexdigest()
        key = (split, task, fingerprint, pair_encoding)
        if key not in self._encoded:
            rows = self.examples[split][task]
            self._encoded[key] = encode_task(task, rows, tokenizer, pair_encoding)
        return self._encoded[key]


def predict_member(
    checkpoint: Path, inputs: SplitInputs, splits: Sequence[str], device: torch.device
) -> Predictions:
    """Load one checkpoint and predict every task of `splits` with its own tokenizer."""
    model, tokenizer, cfg = load_checkpoint_model(checkpoint)
    model.to(device)
    amp = autocast_dtype(cfg, device)
    out: Predictions = {}
    try:
        for split in splits:
            out[split] = {
                task: predict_task(
                    model,
                    inputs.encoded(split, task, tokenizer, cfg.model.pair_encoding),
                    batch_size=cfg.data.eval_batch_size,
                    device=device,
                    pad_id=tokenizer.pad_id,
                    autocast_dtype=amp,
                )
                for task in inputs.examples[split]
            }
    finally:
        del model
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return out


def candidates_from_sweep(
    stored: Any, metric: str, results_dir: Path
) -> tuple[list[Candidate], int]:
    """The sweep's finished trials as candidates (unranked) and how many trials it has in all."""
    exp_dir = Path(stored.parent.tags.get("results_dir") or Path(results_dir) / stored.name)
    out = []
    for run in stored.trials:
        value = run.metrics.get(f"{BEST_PREFIX}{metric}", run.metrics.get(metric))
        if run.status != "FINISHED" or run.state not in FINISHED_STATES or value is None:
            continue
        # The tagged location first; the sweep's layout under --results-dir if it moved since.
        places = [Path(p) for p in (run.tags.get(BEST_CHECKPOINT),) if p]
        places += [
            exp_dir / run.trial_id / "train/checkpoints/best",
            Path(results_dir) / stored.name / run.trial_id / "train/checkpoints/best",
        ]
        checkpoint = next((p for p in places if p.is_dir()), places[0])
        out.append(Candidate(run.run_id, run.run_name, run.trial_id, run.state, value, checkpoint))
    return out, len(stored.trials)


def run_ensemble(
    *,
    sweep: str | None,
    top: int,
    results_dir: Path,
    data_dir: Path | None = None,
    resolve_data: Callable[[str | None], Path] | None = None,
    metric: str = OVERALL,
    method: str = "vote",
    select: str = "top",
    splits: Sequence[str] = SPLITS,
    dev_subset: bool = False,
    log_to_mlflow: bool = True,
    echo: Callable[[str], None] = lambda line: None,
) -> EnsembleResult:
    """Build the ensemble of a sweep (the newest one if `sweep` is None) and write its outputs.

    `resolve_data(configured_dir)` picks the data directory when `data_dir` is None (the CLI
    passes its --data-dir / $ORCHESTRATOR_DATA_DIR logic).
    """
    from orchestrator import tracking

    if method not in METHODS:
        raise EnsembleError(f"--method must be one of {', '.join(METHODS)}, got {method!r}")
    if select not in SELECTIONS:
        raise EnsembleError(f"--select must be one of {', '.join(SELECTIONS)}, got {select!r}")
    if metric not in METRICS:
        raise EnsembleError(f"--metric must be one of {', '.join(METRICS)}, got {metric!r}")
    bad = [s for s in splits if s not in SPLITS]
    if bad or "dev" not in splits:
        raise EnsembleError(f"--splits must include dev and name only dev, test; got {splits}")
    if top < 1:
        raise EnsembleError(f"--top must be at least 1, got {top}")

    uri, stored = tracking.find_sweep(results_dir, sweep)

    mode = "min" if metric == "train/loss" else "max"
    candidates, total = candidates_from_sweep(stored, metric, results_dir)
    ranked = rank_candidates(candidates, mode)
    check_top(top, len(ranked), total, stored.name)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    notes: list[str] = []

    # Greedy selection needs every loadable trial's dev predictions; top-K stops at K members.
    library_size = len(ranked) if select == "greedy" else top
    member_splits = ("dev",) if select == "greedy" else tuple(splits)
    members: list[MemberRun] = []
    inputs: SplitInputs | None = None
    skipped: list[str] = []
    for candidate in ranked:
        if len(members) == library_size:
            break
        try:
            if inputs is None:
                cfg = _checkpoint_config(candidate.checkpoint)
                chosen = data_dir or (resolve_data or _default_data_dir)(cfg.data.data_dir)
                inputs = SplitInputs(cfg, Path(chosen), splits, notes, dev_subset)
            predictions = predict_member(candidate.checkpoint, inputs, member_splits, device)
        except (CheckpointError, WeightsError, OSError) as err:
            reason = str(err).splitlines()[0]
            skipped.append(f"{candidate.run_name} ({candidate.run_id[:8]}): {reason}")
            notes.append(f"skipped trial {candidate.trial_id}: {reason}")
            continue
        dev = dev_metrics(predictions["dev"], inputs.labels)
        members.append(MemberRun(candidate, predictions, dev))
        echo(f"member {len(members)}: {candidate.run_name}  dev/overall {dev[OVERALL]:.4f}")
    if len(members) < top:
        raise EnsembleError(
            f"only {len(members)} of the {len(ranked)} finished trials of sweep '{stored.name}' "
            f"have a loadable checkpoint ({'; '.join(skipped)}); use --top {len(members)} or fewer"
            if members
            else f"no finished trial of sweep '{stored.name}' has a loadable checkpoint "
            f"({'; '.join(skipped)})"
        )
    assert inputs is not None

    dev_of = [m.predictions["dev"] for m in members]
    top_k = list(range(top))
    top_dev = ensemble_dev_metrics([dev_of[i] for i in top_k], inputs.labels, method)
    selected, greedy_dev = top_k, top_dev
    if select == "greedy":

        def score(indices: list[int]) -> float:
            return ensemble_dev_metrics([dev_of[i] for i in indices], inputs.labels, method)[
                metric
            ]

        selected, _ = greedy_forward_selection(len(members), score, steps=top)
        notes.append("greedy selection chose its members on dev: its dev scores are optimistic")
        greedy_dev = ensemble_dev_metrics([dev_of[i] for i in selected], inputs.labels, method)
        # Test predictions only for the members the selection kept, each loaded once more.
        for index in sorted(set(selected)):
            if "test" in splits:
                extra = predict_member(
                    members[index].candidate.checkpoint, inputs, ("test",), device
                )
                members[index].predictions.update(extra)

    out_dir = Path(results_dir) / stored.name / "ensemble"
    files = _write_outputs(out_dir, members, selected, method, splits)
    dev = greedy_dev
    best = best_member([members[i].dev for i in sorted(set(selected))])
    best_index = sorted(set(selected))[best]
    summary = _summary(
        stored.name,
        metric,
        method,
        select,
        members,
        selected,
        dev,
        best_index,
        notes,
        splits,
        dev_subset,
    )
    if select == "greedy":
        summary["top"] = {"members": top_k, "dev": top_dev}
    write_json_atomic(out_dir / "metrics.json", summary)
    result = EnsembleResult(stored.name, out_dir, members, selected, dev, files, notes)
    result.summary = summary
    if log_to_mlflow:
        result.run_id = tracking.log_ensemble_run(
            uri,
            stored.experiment_id,
            run_name=f"ensemble {select}-{top} {method}",
            member_run_ids=[members[i].candidate.run_id for i in selected],
            params={"top": top, "method": method, "select": select, "metric": metric},
            metrics={
                **dev,
                **{f"gain/{k}": v for k, v in summary["gain_over_best_member"].items()},
            },
            tags={tracking.SWEEP_TAG: stored.name, "sweep_run_id": stored.parent.run_id},
            artifact_dir=out_dir,
        )
    return result


def _default_data_dir(configured: str | None) -> Path:
    from model.data_dir import default_data_dir

    return Path(configured) if configured else default_data_dir()


def _checkpoint_config(checkpoint: Path | None) -> TrainConfig:
    from model.checkpoint import read_checkpoint_config

    if checkpoint is None:
        raise CheckpointError("trial has no best checkpoint recorded")
    return read_checkpoint_config(checkpoint)[1]


def _write_outputs(
    out_dir: Path,
    members: Sequence[MemberRun],
    selected: Sequence[int],
    method: str,
    splits: Sequence[str],
) -> list[Path]:
    """Combine the selected members per split and write the leaderboard files (stale ones go)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for task in TASKS:
        for split in SPLITS:
            (out_dir / prediction_filename(task, split)).unlink(missing_ok=True)
    files = []
    for split in splits:
        combined = combine_tasks([members[i].predictions[split] for i in selected], method)
        for task, predictions in combined.items():
            path = out_dir / prediction_filename(task, split)
            write_predictions(path, predictions)
            files.append(path)
    return files


def _summary(
    sweep: str,
    metric: str,
    method: str,
    select: str,
    members: Sequence[MemberRun],
    selected: Sequence[int],
    dev: Mapping[str, float],
    best_index: int,
    notes: Sequence[str],
    splits: Sequence[str],
    dev_subset: bool,
) -> dict[str, Any]:
    """metrics.json: members (with their sweep value and re-scored dev metrics), the ensemble's
    dev metrics and its gain over the best selected member."""
    return {
        "sweep": sweep,
        "metric": metric,
        "method": method,
        "select": select,
        "splits": list(splits),
        "members": [
            {
                "run_id": m.candidate.run_id,
                "run_name": m.candidate.run_name,
                "trial_id": m.candidate.trial_id,
                "checkpoint": str(m.candidate.checkpoint),
                "sweep_value": m.candidate.value,
                "weight": sum(1 for i in selected if i == index),
                "dev": m.dev,
            }
            for index, m in enumerate(members)
            if index in selected
        ],
        # Every trial that predicted on dev: the K of top-K, or greedy selection's whole library.
        "library": [
            {
                "run_id": m.candidate.run_id,
                "trial_id": m.candidate.trial_id,
                OVERALL: m.dev[OVERALL],
            }
            for m in members
        ],
        "ensemble": {"dev": dict(dev)},
        "best_member": {"run_id": members[best_index].candidate.run_id, **members[best_index].dev},
        "gain_over_best_member": gain(dev, members[best_index].dev),
        "dev_examples": (
            "the sweep's fixed dev subsets (data.dev_max_examples)"
            if dev_subset
            else "full dev files (members re-scored on them, not on the sweep's subset)"
        ),
        "notes": list(notes),
    }
