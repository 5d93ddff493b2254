"""A stored sweep's objectives and constraints, judged on its MLflow trial runs: which trials met
the constraints, which form the Pareto front of a multi-objective sweep, and what `report`
(`objectives.md`, the `feasible` and `pareto` columns of trials.parquet) and `ensemble` (only
feasible trials rank; `--select pareto` takes the front) make of it.

The rules are `objectives.py`'s, applied to the same numbers the sweep told Optuna: each trial's
best-epoch metrics (`best/...`). A trial is on the front when it completed, met every constraint
and no other such trial is at least as good on every objective and better on one.
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from orchestrator.contract import (
    FINISHED_STATES,
    best_key,
)
from orchestrator.objectives import (
    Judgement,
    Objective,
    SweepGoals,
    best_index,
    judge,
)
from orchestrator.tracking.store import StoredRun

FEASIBLE_COLUMN = "feasible"  # trials.parquet: the trial met every constraint
PARETO_COLUMN = "pareto"  # trials.parquet: the trial is on the Pareto front
OBJECTIVES_TABLE = "objectives.md"
PARETO_PLOT = "pareto_front.png"


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
    judgement = judge(goals, [(run.state, run.metrics) for run in runs])
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
    judgement = judge(goals, [(run.state, run.metrics) for run in runs])
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
    finished = [run for run in runs if run.state in FINISHED_STATES]
    missed = judgement.infeasible(runs, FINISHED_STATES)
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
        ok and run.state in FINISHED_STATES for run, ok in zip(runs, feasible, strict=True)
    ]
    values = [run.metrics.get(best_key(objective.metric)) for run in runs]
    index = best_index(values, objective.mode, finished)
    return None if index is None else runs[index]


def _run_label(run: StoredRun) -> str:
    return f"`{run.trial_id}` ({run.run_name})"


# ---------------------------------------------------------------------------------------------
# The ensemble


