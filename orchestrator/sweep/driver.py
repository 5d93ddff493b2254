"""Run a search space as a sweep: Optuna proposes, Ray Tune runs the trials (ASHA stops the poor
ones early), MLflow records; `run_sweep` is a few named steps.

Everything lands under `<results>/<sweep>/` (`contract.SweepLayout`): Ray's experiment state, one
`<trial_id>/` directory per trial (Ray's result files and latest `checkpoint_*`; the trainer's
output in `train/`, see `contract.TrialLayout`), `optuna.db` (the study) and `sweep.json` (the
MLflow parent run and Optuna study the sweep writes to: `resume` keeps writing to the same ones).
Ray itself is behind `ray_tune.py`.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from model.checkpoint import write_json_atomic
from model.config import flatten_config
from model.data_dir import quora_runs_notes
from orchestrator.sweep import ray_tune
from orchestrator.cluster import check_cluster_paths
from orchestrator.contract import (
    BASE_PARAM_PREFIX,
    BEST_CHECKPOINT,
    EPOCH_KEY,
    EPOCHS_LEFT,
    NONFINITE_LOSS,
    PARETO_TRIALS_TAG,
    RESULTS_DIR_TAG,
    STATE_TAG,
    STUDY_ARMS_PARAM,
    STUDY_BASELINE_PARAM,
    STUDY_SEEDS_PARAM,
    SWEEP_GPU_PARAM,
    SWEEP_METRIC_PARAM,
    SWEEP_MODE_PARAM,
    SWEEP_REPEATS_PARAM,
    SWEEP_SEARCHED_PARAM,
    SweepLayout,
    best_key,
)
from orchestrator.objectives import best_index, judge_outcomes, judged_lines, objective_params
from orchestrator.sweep.placement import fit_trials_to_cluster
from orchestrator.search.optuna_search import SweepStudy, make_sampler
from orchestrator.space.schema import SearchSpace, run_name
from orchestrator.sweep.listeners import (
    DropResumeState,
    LiveTrialTable,
    MlflowRelay,
    TrialListener,
    TrialSnapshot,
    error_reason,
    trial_state,
)
from orchestrator.sweep.state import SweepStateError, read_state
from orchestrator.tracking.provenance import data_sha256, git_sha
from orchestrator.tracking.writer import Status, SweepTracker, tracking_uri
from orchestrator.sweep.warm_start import NewSweep

ENDED_STATES = ("completed", "pruned", "failed")


@dataclass(frozen=True)
class TrialOutcome:
    """One trial as the sweep ended it."""

    trial_id: str
    state: str  # completed / pruned / failed / killed
    params: dict[str, Any]
    run_name: str
    epochs: int
    best_value: float | None  # best epoch's value of the sweep metric
    best_checkpoint: str | None
    error: str | None = None
    labels: dict[str, str] = field(default_factory=dict)  # a study's arm and phase
    feasible: bool = True  # its best epoch met the space's constraints (objectives.py)
    pareto: bool = False  # on the Pareto front of a multi-objective sweep's feasible trials


@dataclass
class SweepOutcome:
    """What `run_sweep` returns: where things are and how every trial ended."""

    name: str
    experiment_dir: Path
    tracking_uri: str
    parent_run_id: str
    optuna_storage: str
    metric: str
    mode: str
    trials: list[TrialOutcome] = field(default_factory=list)
    wall_s: float = 0.0
    multi_objective: bool = False  # then no trial is best: the summary names the Pareto front
    quora_train: str = ""  # the base config's data.para_train (resolved: the file read)

    @property
    def best(self) -> TrialOutcome | None:
        """The feasible trial best on the metric; None for several objectives."""
        eligible = [t.feasible and t.state != "failed" for t in self.trials]
        values = [t.best_value for t in self.trials]
        index = None if self.multi_objective else best_index(values, self.mode, eligible)
        return None if index is None else self.trials[index]

    def summary(self) -> list[str]:
        """What `orchestrator sweep` prints when the sweep ends."""
        counts = {s: sum(t.state == s for t in self.trials) for s in ENDED_STATES}
        lines = [
            f"sweep {self.name}: {len(self.trials)} trials ("
            + ", ".join(f"{n} {s}" for s, n in counts.items())
            + f") in {self.wall_s:.0f} s"
        ]
        if self.best is not None:
            lines.append(f"best {self.metric} {self.best.best_value:.4f}: {self.best.run_name}")
            lines.append(f"checkpoint: {self.best.best_checkpoint}")
        lines += judged_lines(self.trials, multi_objective=self.multi_objective)
        lines += [f"note: {note}" for note in quora_runs_notes([self.quora_train])]
        lines.append(f"results:    {self.experiment_dir}")
        lines.append(f"mlflow:     {self.tracking_uri} (experiment {self.name})")
        return lines


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


def run_sweep(
    space: SearchSpace,
    *,
    data_dir: Path,
    results_dir: Path = Path("results"),
    address: str | None = None,
    resume: bool = False,
    live_table: bool = True,
    num_cpus: int | None = None,
    echo: Callable[[str], None] | None = None,
) -> SweepOutcome:
    """Run (or with `resume`, continue) the sweep `space` and return how every trial ended.

    Raises SweepStateError before anything starts when `<results>/<name>/` already holds a sweep
    and `resume` is false, or holds none and `resume` is true; ResourcesError when local Ray can
    never start a trial. `echo` shows notices (default: stderr).
    """
    started = time.monotonic()
    space = space.with_data_files(data_dir)  # data.para_train: auto -> the file trials read
    make_sampler(space)  # a sampler that cannot be built (cmaes without its package) fails here
    layout = SweepLayout.of(results_dir, space.name)
    state = open_state(layout, resume=resume)
    new = NewSweep.check(space, results_dir, resume=resume)  # its warm start, before any write
    data_dir = Path(data_dir).resolve()
    space = join_ray(space, layout, data_dir, address, num_cpus, echo=echo or stderr_line)
    run = start_tracking(space, layout, data_dir, state)
    new.begin(run)
    return fit_and_finish(run, resume=resume, live_table=live_table, started=started)


def open_state(layout: SweepLayout, *, resume: bool) -> dict[str, Any]:
    """The saved `sweep.json` of the sweep to resume, or {} for a new sweep. Raises
    SweepStateError when there is nothing to resume, or a new sweep's directory holds one."""
    if resume:
        if not layout.state_file.is_file() or not ray_tune.can_restore(layout):
            raise SweepStateError(
                f"{layout.root}: no sweep '{layout.name}' to resume; run it without --resume first"
            )
        return read_state(layout)
    if layout.state_file.exists() or ray_tune.experiment_exists(layout):
        raise SweepStateError(
            f"{layout.root}: sweep '{layout.name}' already exists; pass --resume to continue it "
            "or --name NEW to start another"
        )
    return {}


def study_record(space: SearchSpace) -> dict[str, Any]:
    """What a study's `sweep.json` keeps of it, so `--resume` can tell an edited study apart."""
    assert space.study is not None
    return {
        "arms": {arm.name: [[k, v] for k, v in arm.overrides] for arm in space.study.arms},
        "baseline": space.study.baseline,
        "seeds": list(space.study.seeds),
        "confirm_epochs": space.study.confirm_epochs,
        "searched": [p.key for p in space.searched],
    }


def join_ray(
    space: SearchSpace,
    layout: SweepLayout,
    data_dir: Path,
    address: str | None,
    num_cpus: int | None,
    *,
    echo: Callable[[str], None],
) -> SearchSpace:
    """Start Ray (or join `address`) and return `space` with trial resources its nodes can place.

    Before anything is written: trials Ray could never start (placement.py) or, on a cluster, a
    results or data path some node cannot see (cluster.py) stop the sweep with a one-line error.
    """
    ray_tune.init_ray(address, num_cpus)
    nodes = ray_tune.alive_nodes()
    space = fit_trials_to_cluster(space, nodes, local=address is None, echo=echo)
    check_cluster_paths(layout.root.parent, nodes, ray_tune.run_on_nodes, data_dir=data_dir)
    return space


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
        write_json_atomic(layout.state_file, state)
    return SweepRun(space, layout, data_dir, tracker, parent_run_id, sha, state["optuna_storage"])


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
    return params


def fit_and_finish(
    run: SweepRun, *, resume: bool, live_table: bool, started: float
) -> SweepOutcome:
    """Build (or restore) the Tuner and run it, then end the parent run FINISHED when every trial
    ended, KILLED when the sweep stopped early (Ctrl-C), FAILED when it raised."""
    outcome = outcome_of(run)
    status: Status = "FAILED"
    try:
        if resume:
            tuner = ray_tune.restore_tuner(run.space, run.layout, data_dir=run.data_dir)
        else:
            tuner = build_tuner(run, live_table=live_table)
        stopped = ray_tune.fit_tuner(tuner)  # by Ctrl-C: trials stopped, Ray's state saved
        outcome.trials = trial_outcomes(run.space, run.layout)
        ended = all(t.state in ENDED_STATES for t in outcome.trials)
        finished = ended and len(outcome.trials) >= run.space.total_trials
        status = "FINISHED" if finished else "KILLED"
        if stopped:
            raise KeyboardInterrupt(f"sweep '{run.space.name}' stopped; continue it with --resume")
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    finally:
        outcome.wall_s = time.monotonic() - started
        finish_tracking(run, outcome, status)
    return outcome


def build_tuner(run: SweepRun, *, live_table: bool) -> Any:
    """A new Tuner whose trials the sweep's Optuna study proposes and its listeners record."""
    relay = MlflowRelay(
        tracking_uri=run.tracker.uri,
        parent_run_id=run.parent_run_id,
        space=run.space,
        data_dir=str(run.data_dir),
        git_sha=run.git_sha,
    )
    listeners: list[TrialListener] = [relay, DropResumeState(run.layout)]
    if live_table:
        listeners.append(LiveTrialTable(run.space))
    return ray_tune.build_tuner(
        run.space,
        run.layout,
        data_dir=run.data_dir,
        study=SweepStudy(run.space, run.optuna_storage),
        listeners=listeners,
    )


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


def trial_outcomes(space: SearchSpace, *layouts: SweepLayout) -> list[TrialOutcome]:
    """How every trial of the Ray experiments in `layouts` stands (judged together: one Pareto
    front of them all), from Ray's experiment state."""
    trials = [trial for layout in layouts for trial in ray_tune.trial_snapshots(layout)]
    return judge_outcomes(space, [(trial_outcome(space, t), t.last_result) for t in trials])


def trial_outcome(space: SearchSpace, trial: TrialSnapshot) -> TrialOutcome:
    """One trial's outcome from its last result (the best epoch's value and checkpoint)."""
    result = trial.last_result
    state = trial_state(trial)
    error = str(result[NONFINITE_LOSS]) if NONFINITE_LOSS in result else None
    if error is None and state == "failed":
        error = error_reason(trial)
    best = result.get(best_key(space.metric))
    return TrialOutcome(
        trial_id=trial.trial_id,
        state=state,
        params=dict(trial.params),
        run_name=run_name(space, trial.params, trial.labels),
        epochs=int(result.get(EPOCH_KEY, 0)) if EPOCHS_LEFT in result else 0,
        best_value=float(best) if isinstance(best, (int, float)) else None,
        best_checkpoint=result.get(BEST_CHECKPOINT),
        error=error,
        labels=dict(trial.labels),
    )


def stderr_line(line: str) -> None:
    print(line, file=sys.stderr, flush=True)
