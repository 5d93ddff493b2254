"""Test helpers for the ensemble and report: a tiny CS224N data directory, untrained tiny
checkpoints, and an MLflow store laid out as `orchestrator sweep` writes it (through its
`SweepTracker`): an HPO sweep (`fake_sweep`) or an ablation study (`fake_study`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from model.checkpoint import save_checkpoint
from model.config import TrainConfig, build_config, config_to_dict, flatten, merge, unflatten
from model.evaluate import METRIC_NAMES, OVERALL, overall_score, sst_detail_metrics
from model.train import build_model, seed_everything
from orchestrator.contract import (
    ARM_PARAM,
    BASE_PARAM_PREFIX,
    BEST_CHECKPOINT,
    CONFIRM_PHASE,
    EPOCH_KEY,
    PHASE_PARAM,
    STATE_TAG,
    STUDY_ARMS_PARAM,
    STUDY_BASELINE_PARAM,
    STUDY_SEEDS_PARAM,
    SWEEP_METRIC_PARAM,
    SWEEP_SEARCHED_PARAM,
    TRIAL_STATES,
    best_key,
)
from tests.tiny_model import tiny_config

DATA_FILES = (
    "ids-sst-train.csv",
    "ids-sst-dev.csv",
    "ids-sst-test-student.csv",
    "partial/quora-train-head5000.csv",
    "quora-dev.csv",
    "sts-train.csv",
    "sts-dev.csv",
    "sts-test-student.csv",
)


def make_tiny_data_dir(
    source: Path, target: Path, rows: int = 40, quora_test: bool = True
) -> Path:
    """The first `rows` rows of every CS224N file (one record per line in these files), plus
    a stand-in `quora-test-student.csv` (later quora-dev pairs without labels) if asked."""
    for name in DATA_FILES:
        lines = (source / name).read_text(encoding="utf-8").splitlines(keepends=True)
        (target / name).parent.mkdir(parents=True, exist_ok=True)
        (target / name).write_text("".join(lines[: rows + 1]), encoding="utf-8")
    if quora_test:
        lines = (source / "quora-dev.csv").read_text(encoding="utf-8").splitlines()
        rows_out = [lines[0], *lines[1000 : 1000 + rows]]
        dropped = ["\t".join(line.split("\t")[:-1]) + "\n" for line in rows_out]
        (target / "quora-test-student.csv").write_text("".join(dropped), encoding="utf-8")
    return target


def save_untrained_checkpoint(target: Path, cfg: TrainConfig) -> Path:
    """A random tiny model saved as a best checkpoint (no training: milliseconds)."""
    seed_everything(cfg.seed)
    model, model_dir = build_model(cfg)
    return save_checkpoint(target, model, cfg, model_dir, {OVERALL: 0.0})


@dataclass(frozen=True)
class FakeTrial:
    trial_id: str
    value: float  # best/dev/overall
    state: str = "completed"
    checkpoint: Path | None = None
    params: dict[str, Any] | None = None
    history: Sequence[float] = ()  # dev/overall per epoch


def fake_sweep(
    uri: str,
    name: str,
    trials: Sequence[FakeTrial],
    *,
    searched: Sequence[str] = (),
    base: TrainConfig | None = None,
) -> dict[str, str]:
    """Log a sweep the way the sweep driver does; returns trial_id -> run id.

    Through the driver's own `SweepTracker`, with the contract's tag, param and metric names, so
    a change there reaches `ensemble` and `report` in these tests as it would in a real sweep.
    """
    from orchestrator.tracking.writer import SweepTracker

    base = base or tiny_config()
    tracker = SweepTracker(uri, name)
    base_params = {
        f"{BASE_PARAM_PREFIX}{k}": v
        for k, v in flatten(config_to_dict(base)).items()
        if k in searched
    }
    tracker.start_sweep(
        run_name=f"{name} (sweep)",
        params={
            SWEEP_METRIC_PARAM: OVERALL,
            SWEEP_SEARCHED_PARAM: " ".join(searched),
            **base_params,
        },
        tags={},
    )
    runs = {}
    for trial in trials:
        cfg = build_config(TrainConfig, merge(config_to_dict(base), unflatten(trial.params or {})))
        run_id = tracker.start_trial(trial.trial_id, run_name=trial.trial_id, config=cfg, tags={})
        for epoch, value in enumerate(trial.history, start=1):
            tracker.log_epoch(run_id, {OVERALL: value, EPOCH_KEY: float(epoch)}, step=epoch)
        assert trial.state in TRIAL_STATES, trial.state
        status = "FAILED" if trial.state == "failed" else "FINISHED"
        tags = {STATE_TAG: trial.state}
        if trial.checkpoint is not None:
            tags[BEST_CHECKPOINT] = str(trial.checkpoint)
        metrics = {best_key(OVERALL): trial.value}
        tracker.finish_run(run_id, status, metrics=metrics, tags=tags)
        runs[trial.trial_id] = run_id
    assert tracker.parent_run_id is not None
    tracker.finish_run(tracker.parent_run_id, "FINISHED")
    return runs


@dataclass(frozen=True)
class FakeStudyRun:
    """One trial run of a study: its arm, seed and phase, its best-epoch dev scores (overall
    computed from the three tasks), dev/overall per epoch, SST dev labels and predictions for the
    detail metrics, and its wall time."""

    arm: str
    seed: int
    scores: tuple[float, float, float]  # sst acc, para acc, sts r at the best epoch
    phase: str = CONFIRM_PHASE
    state: str = "completed"
    history: Sequence[float] = ()
    sst: tuple[Sequence[int], Sequence[int]] | None = None  # (labels, predictions)
    wall_s: float = 10.0
    params: Mapping[str, Any] = field(default_factory=dict)  # arm overrides, tuned values

    @property
    def best(self) -> dict[str, float]:
        """The best-epoch dev metrics (and SST details) as the run reports them."""
        out = dict(zip(METRIC_NAMES.values(), self.scores, strict=True))
        out[OVERALL] = overall_score(*self.scores)
        if self.sst is not None:
            labels, predictions = (np.asarray(a) for a in self.sst)
            out.update(sst_detail_metrics(labels, predictions))
        return out


def fake_study(
    uri: str,
    name: str,
    runs: Sequence[FakeStudyRun],
    *,
    arms: Sequence[str],
    seeds: Sequence[int],
    searched: Sequence[str] = (),
    base: TrainConfig | None = None,
    study_params: Mapping[str, str] | None = None,
) -> dict[tuple[str, str, int], str]:
    """Log an ablation study as the contract says the study driver does (a parent run with the
    `study.*` params, a trial run per arm × seed with params arm / phase / seed, per-epoch and
    best/* metrics, start and end times); returns (phase, arm, seed) -> run id."""
    from mlflow import MlflowClient

    from orchestrator.tracking.writer import SweepTracker

    base = base or tiny_config()
    tracker = SweepTracker(uri, name)
    tracker.start_sweep(
        run_name=f"{name} (study)",
        params={
            SWEEP_METRIC_PARAM: OVERALL,
            SWEEP_SEARCHED_PARAM: " ".join(searched),
            STUDY_ARMS_PARAM: json.dumps(list(arms)),
            STUDY_BASELINE_PARAM: arms[0],
            STUDY_SEEDS_PARAM: json.dumps(list(seeds)),
            **(study_params or {}),
        },
        tags={},
    )
    client = MlflowClient(tracking_uri=uri)
    ids = {}
    for i, run in enumerate(runs):
        overrides = {**run.params, "seed": run.seed}
        cfg = build_config(TrainConfig, merge(config_to_dict(base), unflatten(overrides)))
        labels = {ARM_PARAM: run.arm, PHASE_PARAM: run.phase}
        trial_id = f"{run.phase}-{run.arm}-{run.seed}-{i}"
        run_id = tracker.start_trial(
            trial_id, run_name=f"{run.arm} seed={run.seed}", config=cfg, tags={}, labels=labels
        )
        for epoch, value in enumerate(run.history, start=1):
            tracker.log_epoch(run_id, {OVERALL: value, EPOCH_KEY: float(epoch)}, step=epoch)
        assert run.state in TRIAL_STATES, run.state
        status = "FAILED" if run.state == "failed" else "FINISHED"
        best = {best_key(k): v for k, v in run.best.items()} if run.state != "failed" else {}
        tracker.finish_run(run_id, status, metrics=best, tags={STATE_TAG: run.state})
        start = client.get_run(run_id).info.start_time
        client.set_terminated(run_id, status, end_time=start + int(run.wall_s * 1000))
        ids[(run.phase, run.arm, run.seed)] = run_id
    assert tracker.parent_run_id is not None
    tracker.finish_run(tracker.parent_run_id, "FINISHED")
    return ids
