"""The invariants `bench/chaos.py` checks after every history, each read from the stores
themselves (Ray's experiment state, the MLflow SQLite store, the Optuna database, the files on
disk), never from the project's own summaries.

- every planned trial exists exactly once in Ray, in MLflow (a child of its sweep's parent run)
  and in Optuna (for the phases Optuna proposes), and on disk;
- no trial that had finished before a fault was re-run or lost: same MLflow run, same metrics,
  each epoch logged once;
- each finished trial's MLflow `best/*` metrics equal its `train/metrics.json`;
- no MLflow run is left RUNNING once the command has ended.

Each breach is a line in `Findings`, counted as lost, duplicated or a violation.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

FINAL = ("completed", "pruned")


@dataclass
class Findings:
    lost: list[str] = field(default_factory=list)
    duplicated: list[str] = field(default_factory=list)
    half_written: list[str] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)

    def add(self, other: Findings) -> None:
        for name in ("lost", "duplicated", "half_written", "violations"):
            getattr(self, name).extend(getattr(other, name))

    @property
    def lines(self) -> list[str]:
        return [f"{kind}: {line}" for kind in ("lost", "duplicated", "half_written", "violations")
                for line in getattr(self, kind)]  # fmt: skip


@dataclass(frozen=True)
class FinishedTrial:
    """A trial's MLflow run as it stood once finished: compared with the end of the history."""

    run_id: str
    trial_id: str
    metrics: dict[str, float]


def ray_trials(root: Path) -> dict[str, dict[str, Any]]:
    """Every Ray trial of every experiment under a sweep's directory (its phases, extensions),
    from the newest `experiment_state-*.json` of each: trial id -> {status, dir}."""
    trials: dict[str, dict[str, Any]] = {}
    for state_file in sorted(root.rglob("experiment_state-*.json")):
        newest = max(state_file.parent.glob("experiment_state-*.json"), key=lambda p: p.name)
        if state_file != newest:
            continue
        state = json.loads(newest.read_text())
        for raw, _runtime in state.get("trial_data", []):
            trial = json.loads(raw) if isinstance(raw, str) else raw
            trial_id = trial.get("trial_id") or trial.get("_trial_id")
            status = trial.get("status", "")
            trials[str(trial_id)] = {"status": status, "dir": newest.parent}
    return trials


def mlflow_runs(uri: str, experiment: str) -> list[Any]:
    from mlflow import MlflowClient
    from mlflow.entities import ViewType

    client = MlflowClient(tracking_uri=uri)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        return []
    return client.search_runs([found.experiment_id], run_view_type=ViewType.ALL, max_results=5000)


def live_trial_runs(runs: list[Any]) -> list[Any]:
    """Trial runs the sweep counts: not the orphans of a driver that died before Ray saved them."""
    return [r for r in runs if r.data.tags.get("role") == "trial"
            and r.data.tags.get("trial_state") != "orphaned"]  # fmt: skip


def finished_trials(uri: str, experiment: str) -> dict[str, FinishedTrial]:
    """The trials MLflow holds as finished now (a snapshot taken before each fault)."""
    out = {}
    for run in live_trial_runs(mlflow_runs(uri, experiment)):
        if run.info.status == "FINISHED" and run.data.tags.get("trial_state") in FINAL:
            trial_id = run.data.tags["trial_id"]
            out[trial_id] = FinishedTrial(run.info.run_id, trial_id, dict(run.data.metrics))
    return out


def check_store(
    root: Path, uri: str, experiment: str, planned: int, before: dict[str, FinishedTrial]
) -> Findings:
    """The invariants of one sweep, study or extension after its command ended with exit 0."""
    found = Findings()
    ray = ray_trials(root)
    runs = mlflow_runs(uri, experiment)
    live = live_trial_runs(runs)
    by_trial: dict[str, list[Any]] = {}
    for run in live:
        by_trial.setdefault(run.data.tags.get("trial_id", ""), []).append(run)
    if len(ray) != planned:
        found.lost.append(f"Ray holds {len(ray)} trials, {planned} planned")
    for trial_id, trial in ray.items():
        if trial["status"] != "TERMINATED":
            found.violations.append(f"Ray trial {trial_id} ended {trial['status']}")
        if not any(trial["dir"].glob(f"*{trial_id}*")):
            found.lost.append(f"trial {trial_id}: no directory on disk")
    for trial_id in set(ray) - set(by_trial):
        found.lost.append(f"trial {trial_id}: no MLflow run")
    for trial_id, group in by_trial.items():
        if len(group) > 1:
            found.duplicated.append(f"trial {trial_id}: {len(group)} MLflow runs")
        if trial_id not in ray:
            found.duplicated.append(f"MLflow run of trial {trial_id}, which Ray does not hold")
    running = [r.info.run_id for r in runs if r.info.status == "RUNNING"]
    if running:
        found.violations.append(f"{len(running)} MLflow runs left RUNNING: {running[:3]}")
    parents = {r.info.run_id for r in runs if r.data.tags.get("role") == "sweep"}
    for run in live:
        if run.data.tags.get("mlflow.parentRunId") not in parents:
            found.violations.append(f"run {run.info.run_id}: not a child of a sweep's parent run")
    found.add(check_finished_kept(before, by_trial))
    found.add(check_metrics_files(uri, live, ray))
    return found


def check_finished_kept(
    before: dict[str, FinishedTrial], by_trial: dict[str, list[Any]]
) -> Findings:
    """A trial that had finished before a fault is the same run with the same metrics now."""
    found = Findings()
    for trial_id, was in before.items():
        now = by_trial.get(trial_id, [])
        if not now:
            found.lost.append(f"finished trial {trial_id} lost")
            continue
        if [r.info.run_id for r in now] != [was.run_id]:
            found.duplicated.append(f"finished trial {trial_id} re-run")
            continue
        changed = [k for k, v in was.metrics.items() if now[0].data.metrics.get(k) != v]
        if changed:
            found.duplicated.append(f"finished trial {trial_id}: {changed[:3]} changed later")
    return found


def check_metrics_files(uri: str, live: list[Any], ray: dict[str, dict[str, Any]]) -> Findings:
    """Each finished trial's `best/<m>` in MLflow equals `<m>` in its train/metrics.json, and
    each epoch of dev/overall is logged once."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    found = Findings()
    for run in live:
        trial_id = run.data.tags.get("trial_id", "")
        if run.data.tags.get("trial_state") != "completed" or trial_id not in ray:
            continue
        files = list(ray[trial_id]["dir"].glob(f"*{trial_id}*/train/metrics.json"))
        if len(files) != 1:
            found.lost.append(f"trial {trial_id}: {len(files)} train/metrics.json files")
            continue
        on_disk = json.loads(files[0].read_text())
        for key, value in on_disk.items():
            logged = run.data.metrics.get(f"best/{key}")
            if isinstance(value, (int, float)) and not _same(logged, float(value)):
                found.violations.append(f"trial {trial_id}: best/{key} {logged} != {value}")
        steps = [m.step for m in client.get_metric_history(run.info.run_id, "dev/overall")]
        if len(steps) != len(set(steps)):
            found.duplicated.append(f"trial {trial_id}: epochs logged twice {sorted(steps)}")
    return found


def _same(logged: float | None, value: float) -> bool:
    return logged is not None and math.isclose(logged, value, rel_tol=1e-6, abs_tol=1e-9)


def check_optuna(storage: str, ray: dict[str, dict[str, Any]]) -> Findings:
    """Every Optuna trial that is not an orphan names one Ray trial, no Ray trial twice, and
    every Ray trial Optuna proposed (all but a study's confirm runs, which are fixed configs)
    has its Optuna trial."""
    import optuna

    found = Findings()
    seen: dict[str, str] = {}
    for summary in optuna.get_all_study_summaries(storage):
        study = optuna.load_study(study_name=summary.study_name, storage=storage)
        for trial in study.get_trials(deepcopy=False):
            if trial.user_attrs.get("orphaned"):
                continue
            ray_id = trial.user_attrs.get("ray_trial_id")
            if ray_id is None:
                found.violations.append(f"{summary.study_name} #{trial.number}: no Ray trial")
            elif ray_id in seen:
                found.duplicated.append(f"Ray trial {ray_id}: two Optuna trials")
            elif ray_id not in ray:
                found.lost.append(f"Optuna trial of Ray trial {ray_id}, which Ray does not hold")
            else:
                seen[ray_id] = summary.study_name
            if trial.state.name not in ("COMPLETE", "PRUNED"):
                found.violations.append(f"{summary.study_name} #{trial.number} {trial.state.name}")
    for trial_id, trial in ray.items():
        if not trial["dir"].name.startswith("confirm") and trial_id not in seen:
            found.lost.append(f"Ray trial {trial_id}: no Optuna trial")
    return found
