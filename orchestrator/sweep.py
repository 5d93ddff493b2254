"""Run a search space as a Ray Tune sweep: Optuna proposes, ASHA stops early, MLflow records.

The only module that builds a `ray.tune.Tuner`. Ray starts locally unless an `address` joins a
cluster. Everything lands under `<results>/<sweep>/`: Ray's experiment state, one `<trial_id>/`
directory per trial (Ray's result files and latest `checkpoint_*`; the trainer's output in
`train/`, with the best checkpoint in `train/checkpoints/best/`), `optuna.db` (the study) and
`sweep.json` (the MLflow parent run the sweep writes to: `resume` keeps writing to the same runs).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from model.config import ConfigError, flatten_config
from orchestrator.config import apply_params
from orchestrator.contract import BEST_CHECKPOINT, BEST_PREFIX, EPOCHS_LEFT, NONFINITE_LOSS
from orchestrator.space import SearchSpace, run_name

logger = logging.getLogger(__name__)

SWEEP_STATE_FILE = "sweep.json"
OPTUNA_DB = "optuna.db"
MAX_FAILURES = 2  # Ray retries a failed trial from its last checkpoint this many times


class SweepStateError(ConfigError):
    """The results directory does not match the request (exists without --resume, or missing)."""


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

    @property
    def best(self) -> TrialOutcome | None:
        scored = [t for t in self.trials if t.best_value is not None and t.state != "failed"]
        if not scored:
            return None
        sign = 1.0 if self.mode == "max" else -1.0
        return max(scored, key=lambda t: sign * t.best_value)  # type: ignore[operator]


def experiment_dir(results_dir: Path, name: str) -> Path:
    return (Path(results_dir) / name).resolve()


def optuna_storage_url(exp_dir: Path) -> str:
    return f"sqlite:///{exp_dir / OPTUNA_DB}"


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
    from ray import tune

    from orchestrator.cluster import check_cluster_paths
    from orchestrator.search import PruningAwareOptunaSearch, make_sampler
    from orchestrator.sweep_callbacks import DropResumeState, LiveTrialTable, MlflowRelay
    from orchestrator.tracking import SweepTracker, data_sha256, git_sha, tracking_uri
    from orchestrator.trainable import train_trial

    started = time.monotonic()
    make_sampler(space)  # a sampler that cannot be built (cmaes without its package) fails here
    exp_dir = experiment_dir(results_dir, space.name)
    state_file = exp_dir / SWEEP_STATE_FILE
    data_dir = Path(data_dir).resolve()
    if resume:
        if not state_file.is_file() or not tune.Tuner.can_restore(str(exp_dir)):
            raise SweepStateError(
                f"{exp_dir}: no sweep '{space.name}' to resume; run it without --resume first"
            )
        state = json.loads(state_file.read_text())
    elif state_file.exists() or (exp_dir / "tuner.pkl").exists():
        raise SweepStateError(
            f"{exp_dir}: sweep '{space.name}' already exists; pass --resume to continue it "
            "or --name NEW to start another"
        )
    else:
        state = {}

    # Join Ray before anything is written: trials Ray could never start (orchestrator/
    # placement.py) or, on a cluster, a results or data path some node cannot see
    # (orchestrator/cluster.py) stop the sweep here with a one-line error.
    init_ray(address, num_cpus)
    space = fit_trials_to_cluster(space, local=address is None, echo=echo or _stderr_line)
    check_cluster_paths(exp_dir.parent, data_dir=data_dir)
    uri = state.get("tracking_uri") or tracking_uri(Path(results_dir))
    tracker = SweepTracker(uri, space.name)
    sha = git_sha()
    parent_run_id = tracker.start_sweep(
        run_name=f"{space.name} (sweep)",
        params=_sweep_params(space),
        tags={
            "git_sha": sha,
            "sampler": space.sampler,
            "space_file": space.source,
            "data_sha256": data_sha256(space.base, data_dir),
            "results_dir": str(exp_dir),
        },
        artifacts=[Path(space.source)] if Path(space.source).is_file() else [],
        resume_run_id=state.get("parent_run_id"),
    )
    if not resume:
        exp_dir.mkdir(parents=True, exist_ok=True)
        state = {
            "name": space.name,
            "space_file": space.source,
            "tracking_uri": uri,
            "parent_run_id": parent_run_id,
            "optuna_storage": optuna_storage_url(exp_dir),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
        }
        state_file.write_text(json.dumps(state, indent=2) + "\n")

    trainable = tune.with_resources(
        tune.with_parameters(
            train_trial,
            base=space.base,
            data_dir=str(data_dir),
            experiment_dir=str(exp_dir),
            threads=max(1, math.floor(space.resources.cpu)),
            gpu_share=space.resources.gpu,
        ),
        {"cpu": space.resources.cpu, "gpu": space.resources.gpu},
    )
    outcome = SweepOutcome(
        name=space.name,
        experiment_dir=exp_dir,
        tracking_uri=uri,
        parent_run_id=parent_run_id,
        optuna_storage=state["optuna_storage"],
        metric=space.metric,
        mode=space.mode,
    )
    status = "FAILED"
    try:
        if resume:
            tuner = tune.Tuner.restore(
                str(exp_dir), trainable, resume_unfinished=True, resume_errored=False
            )
        else:
            callbacks: list[Any] = [
                MlflowRelay(
                    tracking_uri=uri,
                    parent_run_id=parent_run_id,
                    space=space,
                    data_dir=str(data_dir),
                    git_sha=sha,
                )
            ]
            callbacks.append(DropResumeState())
            if live_table:
                callbacks.append(LiveTrialTable(space))
            tuner = tune.Tuner(
                trainable,
                tune_config=tune.TuneConfig(
                    metric=space.metric,
                    mode=space.mode,
                    search_alg=PruningAwareOptunaSearch(space, storage=state["optuna_storage"]),
                    scheduler=_scheduler(space),
                    num_samples=space.total_trials,
                    max_concurrent_trials=space.max_concurrent or _concurrency(space),
                    trial_dirname_creator=trial_dirname,
                    # A finished trial's worker (torch and the trainer imported) runs the next one.
                    reuse_actors=True,
                ),
                run_config=tune.RunConfig(
                    name=space.name,
                    storage_path=str(exp_dir.parent),
                    failure_config=tune.FailureConfig(max_failures=MAX_FAILURES),
                    checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
                    callbacks=callbacks,
                    verbose=0,
                ),
            )
        tuner.fit()
        outcome.trials = trial_outcomes(space, exp_dir)
        # Ray returns normally after Ctrl-C too, with trials left unfinished.
        ended = {"completed", "pruned", "failed"}
        finished = len(outcome.trials) >= space.total_trials
        status = (
            "FINISHED" if finished and all(t.state in ended for t in outcome.trials) else "KILLED"
        )
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    finally:
        if status != "FINISHED":
            # Trials still RUNNING in MLflow would read as in progress forever (report, UI).
            tracker.end_running_trials("KILLED", {"trial_state": "killed"})
        outcome.wall_s = time.monotonic() - started
        best = outcome.best
        tags = {"trials": str(len(outcome.trials)), "wall_s": f"{outcome.wall_s:.1f}"}
        metrics: dict[str, float] = {}
        if best is not None:
            tags.update(best_trial_id=best.trial_id, best_run_name=best.run_name)
            tags[BEST_CHECKPOINT] = best.best_checkpoint or ""
            metrics[f"{BEST_PREFIX}{space.metric}"] = float(best.best_value)  # type: ignore[arg-type]
        tracker.finish_run(parent_run_id, status, metrics=metrics, tags=tags)  # type: ignore[arg-type]
    return outcome


def trial_dirname(trial: Any) -> str:
    """Ray's directory of a trial: `<results>/<sweep>/<trial_id>/` (the trainer's is `train/`)."""
    return str(trial.trial_id)


def _sweep_params(space: SearchSpace) -> dict[str, Any]:
    """The parent run's params: how the sweep searches, and the base config's dotted keys."""
    params: dict[str, Any] = {
        "sweep.metric": space.metric,
        "sweep.mode": space.mode,
        "sweep.num_samples": space.num_samples,
        "sweep.repeats": space.repeats,
        "sweep.sampler": space.sampler,
        "sweep.seed": space.seed,
        "sweep.scheduler": space.scheduler.name,
        "sweep.grace_period": space.scheduler.grace_period,
        "sweep.reduction_factor": space.scheduler.reduction_factor,
        "sweep.max_epochs": space.scheduler.max_epochs,
        "sweep.resources.cpu": space.resources.cpu,
        "sweep.resources.gpu": space.resources.gpu,
        "sweep.searched": " ".join(p.key for p in space.searched),
    }
    params.update({f"base.{k}": v for k, v in flatten_config(space.base).items()})
    return params


def init_ray(address: str | None, num_cpus: int | None) -> None:
    """Start a local Ray (or join `address`) once per process, quietly."""
    import ray

    # Save Tune's experiment state every few seconds (default: adaptive, >= 10 s), so a driver
    # killed with -9 loses little; the state is small.
    os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "2")
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    # Ray's newer console output prints a header even at verbose=0; the live table is ours.
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    if ray.is_initialized():
        return
    repo = str(Path(__file__).resolve().parents[1])
    pythonpath = os.pathsep.join(p for p in (repo, os.environ.get("PYTHONPATH")) if p)
    ray.init(
        address=address,
        num_cpus=None if address else num_cpus,
        include_dashboard=False,
        logging_level=logging.WARNING,
        # Trials' own output stays in Ray's session logs; failures reach the table and MLflow
        # through their error files.
        log_to_driver=False,
        # Workers import `model` and `orchestrator` from this checkout even when not installed.
        runtime_env={"env_vars": {"PYTHONPATH": pythonpath}},
    )


def fit_trials_to_cluster(
    space: SearchSpace, *, local: bool, echo: Callable[[str], None]
) -> SearchSpace:
    """`space` with per-trial resources the connected Ray can place (see placement.py): on a
    laptop without a GPU, a GPU space's trials move to the CPU. Echoes the plan's notice."""
    from orchestrator.cluster import alive_nodes
    from orchestrator.placement import plan_trial_resources

    nodes = [node.get("Resources", {}) for node in alive_nodes()]
    placement = plan_trial_resources(space.source, space.resources, nodes, local=local)
    if placement.notice:
        echo(placement.notice)
    if placement.on_cpu:
        # `device: auto` finds no GPU here anyway; a base config saying `cuda` would fail.
        space = space.replace(base=dataclasses.replace(space.base, device="cpu"))
    return space.replace(resources=placement.resources)


def _stderr_line(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _concurrency(space: SearchSpace) -> int:
    """Trials the cluster can run at once, so the searcher proposes only that many ahead."""
    import ray

    resources = ray.cluster_resources()
    slots = [resources.get("CPU", 1.0) / space.resources.cpu]
    if space.resources.gpu > 0:
        slots.append(resources.get("GPU", 0.0) / space.resources.gpu)
    return max(1, int(min(slots)))


def _scheduler(space: SearchSpace) -> Any:
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    if space.scheduler.name == "none":
        return FIFOScheduler()
    return ASHAScheduler(
        time_attr="epoch",
        max_t=space.scheduler.max_epochs,
        grace_period=space.scheduler.grace_period,
        reduction_factor=space.scheduler.reduction_factor,
    )


def trial_outcomes(space: SearchSpace, exp_dir: Path) -> list[TrialOutcome]:
    """How every trial of the sweep stored in `exp_dir` stands, from Ray's experiment state."""
    from ray.tune import ExperimentAnalysis

    from orchestrator.sweep_callbacks import error_reason, trial_state
    from orchestrator.trainable import trial_params

    outcomes = []
    for trial in ExperimentAnalysis(str(exp_dir)).trials:
        metrics = trial.last_result or {}
        params = trial_params(trial.config or {})
        state = trial_state(trial)
        error = None
        if NONFINITE_LOSS in metrics:
            error = str(metrics[NONFINITE_LOSS])
        elif state == "failed":
            error = error_reason(trial)
        best = metrics.get(f"{BEST_PREFIX}{space.metric}")
        outcomes.append(
            TrialOutcome(
                trial_id=trial.trial_id,
                state=state,
                params=params,
                run_name=run_name(space, params),
                epochs=int(metrics.get("epoch", 0)) if EPOCHS_LEFT in metrics else 0,
                best_value=float(best) if isinstance(best, (int, float)) else None,
                best_checkpoint=metrics.get(BEST_CHECKPOINT),
                error=error,
            )
        )
    return outcomes


def describe_dry_run(space: SearchSpace, count: int) -> list[tuple[str, dict[str, Any]]]:
    """`count` sampled parameter sets, each validated against TrainConfig, with their run names."""
    from orchestrator.search import sample_configs

    out = []
    for params in sample_configs(space, count):
        apply_params(space.base, params)  # raises ConfigError naming the key
        out.append((run_name(space, params), params))
    return out
