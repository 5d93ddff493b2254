"""A stored sweep's objectives and constraints, judged on its MLflow trial runs: which trials met
the constraints, which form the Pareto front of a multi-objective sweep, and what `report`
(`objectives.md`, the `feasible` and `pareto` columns of trials.parquet) and `ensemble` (only
feasible trials rank; `--select pareto` takes the front) make of it.

The rules are `objectives.py`'s, applied to the same numbers the sweep told Optuna: each trial's
best-epoch metrics (`best/...`). A trial is on the front when it completed, met every constraint
and no other such trial is at least as good on every objective and better on one.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import pandas as pd

from model.evaluate import OVERALL, metric_mode
from orchestrator.contract import (
    SWEEP_CONSTRAINTS_PARAM,
    SWEEP_METRIC_PARAM,
    SWEEP_MODE_PARAM,
    SWEEP_OBJECTIVES_PARAM,
    best_key,
)
from orchestrator.ensemble.combine import EnsembleError
from orchestrator.objectives import (
    Constraint,
    Objective,
    best_index,
    final_metrics,
    front_indices,
    is_feasible,
    read_constraints,
    read_objectives,
)
from orchestrator.tracking.store import StoredRun, StoredSweep

FEASIBLE_COLUMN = "feasible"  # trials.parquet: the trial met every constraint
PARETO_COLUMN = "pareto"  # trials.parquet: the trial is on the Pareto front
OBJECTIVES_TABLE = "objectives.md"
PARETO_PLOT = "pareto_front.png"


@dataclass(frozen=True)
class SweepGoals:
    """What a stored sweep optimised and had to satisfy, read back from its parent run."""

    objectives: tuple[Objective, ...]
    constraints: tuple[Constraint, ...] = ()

    @property
    def multi_objective(self) -> bool:
        return len(self.objectives) > 1

    @property
    def judged(self) -> bool:
        """Whether there is anything to judge: constraints, or a front to find."""
        return bool(self.constraints) or self.multi_objective


def sweep_goals(params: Mapping[str, str]) -> SweepGoals:
    """The goals a sweep parent run's params name (`sweep.objectives`, `sweep.constraints`); a
    sweep logged before them has one objective, `sweep.metric`, and no constraint."""
    metric = params.get(SWEEP_METRIC_PARAM, OVERALL)
    mode = params.get(SWEEP_MODE_PARAM) or metric_mode(metric)
    return SweepGoals(
        read_objectives(params.get(SWEEP_OBJECTIVES_PARAM), metric, mode),
        read_constraints(params.get(SWEEP_CONSTRAINTS_PARAM)),
    )


@dataclass(frozen=True)
class Judgement:
    """Per trial run, in the order given: whether it met the constraints (always, without any),
    and whether it is on the Pareto front (never with one objective)."""

    feasible: list[bool]
    pareto: list[bool]

    def infeasible(self, runs: Sequence[StoredRun], states: Sequence[str]) -> list[StoredRun]:
        """The runs in one of `states` that missed a constraint."""
        return [
            r for r, ok in zip(runs, self.feasible, strict=True) if r.state in states and not ok
        ]


def judge_runs(goals: SweepGoals, runs: Sequence[StoredRun]) -> Judgement:
    """Which runs met the constraints and which form the front of the completed feasible ones,
    from their best-epoch metrics."""
    metrics = [final_metrics(run.metrics) for run in runs]
    feasible = [is_feasible(goals.constraints, m) for m in metrics]
    eligible = [run.state == "completed" and ok for run, ok in zip(runs, feasible, strict=True)]
    front = set(front_indices(goals.objectives, metrics, eligible))
    return Judgement(feasible, [i in front for i in range(len(runs))])


# ---------------------------------------------------------------------------------------------
# The report


def judged_frame(
    frame: pd.DataFrame, runs: Sequence[StoredRun], goals: SweepGoals
) -> pd.DataFrame:
    """trials.parquet (one row per run, in order) with `feasible` (when the sweep had
    constraints) and `pareto` (when it had several objectives) columns, and a best-epoch column
    for every objective the frame lacks (e.g. `best/train/loss`)."""
    if not goals.judged:
        return frame
    judgement = judge_runs(goals, runs)
    frame = frame.copy()
    for objective in goals.objectives:
        column = best_key(objective.metric)
        if column not in frame:
            frame[column] = [run.metrics.get(column) for run in runs]
    if goals.constraints:
        frame[FEASIBLE_COLUMN] = judgement.feasible
    if goals.multi_objective:
        frame[PARETO_COLUMN] = judgement.pareto
    return frame


def objectives_tables(
    runs: Sequence[StoredRun], goals: SweepGoals, *, sweep: str
) -> dict[str, str]:
    """{"objectives.md": ...} for a sweep with constraints or several objectives, else {}."""
    return (
        {OBJECTIVES_TABLE: objectives_markdown(runs, goals, sweep=sweep)} if goals.judged else {}
    )


def objectives_markdown(runs: Sequence[StoredRun], goals: SweepGoals, *, sweep: str) -> str:
    """`objectives.md`: the constraints, how many finished trials missed them (named), the best
    feasible trial; for several objectives, the Pareto front's trials and their values."""
    judgement = judge_runs(goals, runs)
    lines = [f"# Objectives and constraints: sweep `{sweep}`", ""]
    names = ", ".join(f"`{o.metric}` ({o.mode})" for o in goals.objectives)
    lines += [f"Objectives: {names}. Values are each trial's best-epoch metrics.", ""]
    if goals.constraints:
        lines += _constraint_lines(runs, goals, judgement)
    if goals.multi_objective:
        lines += _front_lines(runs, goals, judgement)
    return "\n".join(lines)


def _constraint_lines(
    runs: Sequence[StoredRun], goals: SweepGoals, judgement: Judgement
) -> list[str]:
    finished = [run for run in runs if run.state in ("completed", "pruned")]
    missed = judgement.infeasible(runs, ("completed", "pruned"))
    lines = [
        "Constraints: " + "; ".join(f"`{c.describe()}`" for c in goals.constraints) + ".",
        "",
        f"{len(finished) - len(missed)} of {len(finished)} finished trials are feasible; "
        f"infeasible ones ({len(missed)}) are left out of the best trial, the Pareto front and "
        "the ensemble's ranking (the ablation tables keep them: a parameter's effect is not "
        "conditioned on the outcome).",
        "",
    ]
    if missed:
        lines += [f"Infeasible: {', '.join(_run_label(run) for run in missed)}.", ""]
    first = goals.objectives[0]
    if not goals.multi_objective:
        best = _best_run(runs, judgement.feasible, first)
        unconstrained = _best_run(runs, [True] * len(runs), first)
        if best is None:
            lines += ["No finished trial met every constraint: there is no best trial.", ""]
        else:
            lines += [f"Best feasible trial by `{first.metric}`: {_run_label(best)}."]
            if unconstrained is not None and unconstrained.run_id != best.run_id:
                lines += [f"(Ignoring the constraints it would be {_run_label(unconstrained)}.)"]
            lines.append("")
    return lines


def _front_lines(runs: Sequence[StoredRun], goals: SweepGoals, judgement: Judgement) -> list[str]:
    front = [run for run, on in zip(runs, judgement.pareto, strict=True) if on]
    first = goals.objectives[0]
    front.sort(key=lambda run: -first.sign() * run.metrics.get(best_key(first.metric), 0.0))
    lines = [
        f"## Pareto front ({len(front)} of {sum(r.state == 'completed' for r in runs)} completed"
        " trials)",
        "",
        "No other completed" + (" feasible" if goals.constraints else "") + " trial is at least "
        "as good on every objective and better on one. Plot: `plots/pareto_front.png`.",
        "",
        "| trial | run | " + " | ".join(f"`{o.metric}`" for o in goals.objectives) + " |",
        "|---|---|" + "---|" * len(goals.objectives),
    ]
    for run in front:
        values = [run.metrics.get(best_key(o.metric)) for o in goals.objectives]
        cells = " | ".join("n/a" if v is None else f"{v:.4f}" for v in values)
        lines.append(f"| `{run.trial_id}` | {run.run_name} | {cells} |")
    return [*lines, ""]


def _best_run(
    runs: Sequence[StoredRun], feasible: Sequence[bool], objective: Objective
) -> StoredRun | None:
    finished = [
        ok and run.state in ("completed", "pruned") for run, ok in zip(runs, feasible, strict=True)
    ]
    values = [run.metrics.get(best_key(objective.metric)) for run in runs]
    index = best_index(values, objective.mode, finished)
    return None if index is None else runs[index]


def _run_label(run: StoredRun) -> str:
    return f"`{run.trial_id}` ({run.run_name})"


# ---------------------------------------------------------------------------------------------
# The ensemble


@dataclass(frozen=True)
class Eligible:
    """The runs that may join an ensemble, what one is called in its messages, and what was
    left out ("; 2 infeasible left out", or "" when nothing was)."""

    runs: list[StoredRun]
    noun: str
    note: str


def ensemble_runs(
    stored: StoredSweep, candidates: Sequence[StoredRun], *, pareto: bool
) -> Eligible:
    """The `candidates` that may join the ensemble of sweep `stored`: the feasible ones, and with
    `pareto` (`--select pareto`) only those on its Pareto front. EnsembleError for `pareto` on a
    sweep of one objective."""
    goals = sweep_goals(stored.parent.params)
    if pareto and not goals.multi_objective:
        raise EnsembleError(
            f"--select pareto takes members from the Pareto front of a multi-objective sweep; "
            f"'{stored.name}' optimised {goals.objectives[0].metric} alone: use --select top"
        )
    judgement = judge_runs(goals, stored.trials)
    trials = stored.trials
    feasible = {r.run_id for r, ok in zip(trials, judgement.feasible, strict=True) if ok}
    front = {r.run_id for r, on in zip(trials, judgement.pareto, strict=True) if on}
    kept = [run for run in candidates if run.run_id in feasible]
    notes = [f"{len(candidates) - len(kept)} infeasible left out"] if goals.constraints else []
    if not pareto:
        return Eligible(kept, "finished trial", "".join(f"; {n}" for n in notes))
    on_front = [run for run in kept if run.run_id in front]
    notes.append(f"{len(kept) - len(on_front)} off the Pareto front left out")
    return Eligible(on_front, "Pareto-front trial", "".join(f"; {n}" for n in notes))
