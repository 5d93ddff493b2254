"""A sweep's MLflow parent run: opened with the sweep's params and provenance (a resumed sweep's
own run again), recorded in `sweep.json` with its Optuna storage, and ended with its status, its
best trial (or Pareto front) and wall time. `SweepRun` is what a running sweep carries."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from model.checkpoint import write_json_atomic
from model.config import flatten_config
from orchestrator.contract import (
    BASE_PARAM_PREFIX,
    BEST_CHECKPOINT,
    PARETO_TRIALS_TAG,
    RESULTS_DIR_TAG,
    STATE_TAG,
    STUDY_ARMS_PARAM,
    STUDY_BASELINE_PARAM,
    STUDY_CORRECTION_PARAM,
    STUDY_EQUIVALENCE_PARAM,
    STUDY_RACE_PARAM,
    STUDY_SEEDS_PARAM,
    SWEEP_GPU_PARAM,
    SWEEP_METRIC_PARAM,
    SWEEP_MODE_PARAM,
    SWEEP_REPEATS_PARAM,
    SWEEP_SEARCHED_PARAM,
    SweepLayout,
    best_key,
)
from orchestrator.objectives import objective_params
from orchestrator.space.retention import RetentionSpec
from orchestrator.space.schema import SearchSpace
from orchestrator.sweep.outcome import SweepOutcome
from orchestrator.tracking.provenance import data_sha256, git_sha
from orchestrator.tracking.writer import Status, SweepTracker, tracking_uri

RETENTION_KEY = "retention"  # in sweep.json: the retention a sweep started with


@dataclass(frozen=True)
class SweepRun:
    """A sweep being run: its space (fitted to the cluster), files, data and MLflow parent run."""

    space: SearchSpace
    layout: SweepLayout
    data_dir: Path
    tracker: SweepTracker
    parent_run_id: str
    git_sha: str
    optuna_storage: str


def outcome_of(run: SweepRun) -> SweepOutcome:
    """An empty outcome of `run`: where its files and runs are, no trial yet."""
    return SweepOutcome(
        name=run.space.name,
        experiment_dir=run.layout.root,
        tracking_uri=run.tracker.uri,
        parent_run_id=run.parent_run_id,
        optuna_storage=run.optuna_storage,
        metric=run.space.metric,
        mode=run.space.mode,
        multi_objective=run.space.multi_objective,
        quora_train=run.space.base.data.para_train,
    )


def study_record(space: SearchSpace) -> dict[str, Any]:
    """What a study's `sweep.json` keeps of it, so `--resume` can tell an edited study apart."""
    assert space.study is not None
    return {
        "arms": {arm.name: [[k, v] for k, v in arm.overrides] for arm in space.study.arms},
        "baseline": space.study.baseline,
        "seeds": list(space.study.seeds),
        "confirm_epochs": space.study.confirm_epochs,
        "searched": [p.key for p in space.searched],
    } | ({"race": space.study.race.record()} if space.study.race else {})


def start_tracking(
    space: SearchSpace,
    layout: SweepLayout,
    data_dir: Path,
    state: dict[str, Any],
    *,
    title: str | None = None,
    tags: dict[str, str] | None = None,
) -> SweepRun:
    """Open the sweep's MLflow parent run (the saved one when `state` is a resumed sweep's; a
    new one has `tags` from its start) and, for a new sweep, write `sweep.json` naming it and
    the Optuna study."""
    uri = state.get("tracking_uri") or tracking_uri(layout.root.parent)
    tracker = SweepTracker(uri, space.name)
    sha = git_sha()
    parent_run_id = tracker.start_sweep(
        run_name=title or f"{space.name} (sweep)",
        params=_sweep_params(space),
        tags={
            "git_sha": sha,
            "sampler": space.sampler,
            "space_file": space.source,
            "data_sha256": data_sha256(space.base, data_dir),
            RESULTS_DIR_TAG: str(layout.root),
            **(tags or {}),
        },
        artifacts=[Path(space.source)] if Path(space.source).is_file() else [],
        resume_run_id=state.get("parent_run_id"),
    )
    if not state:
        layout.root.mkdir(parents=True, exist_ok=True)
        state = {
            "name": space.name,
            "space_file": space.source,
            "tracking_uri": uri,
            "parent_run_id": parent_run_id,
            "optuna_storage": layout.optuna_url,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
        }
        if space.study is not None:
            state["study"] = study_record(space)
        state[RETENTION_KEY] = space.retention.describe()
        write_json_atomic(layout.state_file, state)
    space = recorded_retention(space, state)
    return SweepRun(space, layout, data_dir, tracker, parent_run_id, sha, state["optuna_storage"])


def recorded_retention(space: SearchSpace, state: Mapping[str, Any]) -> SearchSpace:
    """`space`, keeping every trial's weights if its sweep started before `retention:` existed
    (no record in `sweep.json`): an upgrade must not delete what an older sweep kept."""
    if RETENTION_KEY in state:
        return space
    return space.replace(retention=RetentionSpec(keep_best=None))


def _sweep_params(space: SearchSpace) -> dict[str, Any]:
    """The parent run's params: how the sweep searches, and the base config's dotted keys."""
    params: dict[str, Any] = {
        SWEEP_METRIC_PARAM: space.metric,
        SWEEP_MODE_PARAM: space.mode,
        "sweep.num_samples": space.num_samples,
        SWEEP_REPEATS_PARAM: space.repeats,
        "sweep.sampler": space.sampler,
        "sweep.seed": space.seed,
        "sweep.scheduler": space.scheduler.name,
        "sweep.grace_period": space.scheduler.grace_period,
        "sweep.reduction_factor": space.scheduler.reduction_factor,
        "sweep.max_epochs": space.scheduler.max_epochs,
        "sweep.resources.cpu": space.resources.cpu,
        SWEEP_GPU_PARAM: space.resources.gpu,
        SWEEP_SEARCHED_PARAM: " ".join(p.key for p in space.searched),
        **objective_params(space.objectives, space.constraints),
    }
    params.update({f"{BASE_PARAM_PREFIX}{k}": v for k, v in flatten_config(space.base).items()})
    if space.study is not None:
        params[STUDY_ARMS_PARAM] = json.dumps([arm.name for arm in space.study.arms])
        params[STUDY_BASELINE_PARAM] = space.study.baseline
        params[STUDY_SEEDS_PARAM] = json.dumps(list(space.study.seeds))
        params[STUDY_CORRECTION_PARAM] = space.study.correction
        if space.study.race is not None:
            params[STUDY_RACE_PARAM] = json.dumps(space.study.race.record())
        if space.study.equivalence is not None:
            params[STUDY_EQUIVALENCE_PARAM] = space.study.equivalence
    return params


def finish_tracking(run: SweepRun, outcome: SweepOutcome, status: Status) -> None:
    """End the parent run with the sweep's status, its best trial and wall time."""
    if status != "FINISHED":
        # Trials still RUNNING in MLflow would read as in progress forever (report, UI).
        run.tracker.end_running_trials("KILLED", {STATE_TAG: "killed"})
    tags = {"trials": str(len(outcome.trials)), "wall_s": f"{outcome.wall_s:.1f}"}
    metrics: dict[str, float] = {}
    best = outcome.best
    if best is not None and best.best_value is not None:
        tags.update(best_trial_id=best.trial_id, best_run_name=best.run_name)
        tags[BEST_CHECKPOINT] = best.best_checkpoint or ""
        metrics[best_key(run.space.metric)] = best.best_value
    if outcome.multi_objective:
        tags[PARETO_TRIALS_TAG] = ",".join(t.trial_id for t in outcome.trials if t.pareto)
    run.tracker.finish_run(run.parent_run_id, status, metrics=metrics, tags=tags)
