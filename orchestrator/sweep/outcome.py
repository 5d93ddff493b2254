"""What the sweep drivers return: how each trial ended (`TrialOutcome`) and the sweep as a whole
(`SweepOutcome`: where its files and runs are, its best trial or Pareto front, its summary lines),
read from Ray's experiment state and judged against the space's objectives and constraints."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from model.data_dir import quora_runs_notes
from orchestrator.contract import (
    BEST_CHECKPOINT,
    BEST_PREFIX,
    EPOCH_KEY,
    EPOCHS_LEFT,
    FINAL_STATES,
    NONFINITE_LOSS,
    SweepLayout,
    best_key,
)
from orchestrator.objectives import best_index, judge_outcomes, judged_lines
from orchestrator.space.schema import SearchSpace, run_name
from orchestrator.sweep import ray_tune
from orchestrator.sweep.listeners import (
    TrialSnapshot,
    error_reason,
    trial_state,
)


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
    # The best epoch's value of every metric it logged, by metric (`dev/overall`, ...).
    best_metrics: dict[str, float] = field(default_factory=dict)


@dataclass
class SweepOutcome:
    """What `run_plain_sweep` returns: where things are and how every trial ended."""

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
        counts = {s: sum(t.state == s for t in self.trials) for s in FINAL_STATES}
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
        best_metrics={
            key.removeprefix(BEST_PREFIX): float(value)
            for key, value in result.items()
            if key.startswith(BEST_PREFIX) and isinstance(value, (int, float))
        },
    )
