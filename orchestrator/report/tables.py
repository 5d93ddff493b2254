"""The report's markdown tables of an HPO sweep: `ablation.md` (each swept value's, or value bin's,
mean ± 95% CI of every best dev metric, and its Δ vs the base value) and `importance.md`
(parameter importances, largest first; a study's per arm). Both name the split the sweep ranked
its trials on (`selection/...` or dev).

Pruned trials are never dropped silently: each row counts them, the header names them, and when
there are any, a column compares every trial of the row at the last epoch all of them reached.
Text from the `trials.parquet` frame of `report/sweep_report.py`; the statistics are `stats.py`'s.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd

from model.evaluate import DEV_METRICS, OVERALL, SELECTION_SPLIT
from orchestrator.contract import best_key
from orchestrator.stats import (
    AxisGroup,
    axis_groups,
    common_rung,
    delta_ci,
    mean_ci,
    value_label,
)

# ---------------------------------------------------------------------------------------------
# ablation.md


@dataclass(frozen=True)
class Comparison:
    """A sweep's ended trials split for its tables: completed ones (best-epoch scores compare),
    pruned ones (counted per row; compared with the rest at `rung` by `rung_column`)."""

    done: pd.DataFrame
    pruned: pd.DataFrame
    rung_column: str | None  # e.g. dev/overall@1; None without pruned trials or histories

    @property
    def compared(self) -> pd.DataFrame:
        return pd.concat([self.done, self.pruned])


def compare_trials(frame: pd.DataFrame, metric: str = OVERALL) -> Comparison:
    """Completed and pruned trials of `frame`, and the per-epoch column where they all compare."""
    states = frame["state"] if "state" in frame else pd.Series("completed", index=frame.index)
    done, pruned = frame[states == "completed"], frame[states == "pruned"]
    rung_column = None
    if len(pruned) and "epochs" in frame:
        rung = common_rung([int(e) for e in pd.concat([done, pruned])["epochs"].fillna(0)])
        column = f"{metric}@{rung}"
        rung_column = column if rung > 0 and column in frame else None
    return Comparison(done, pruned, rung_column)


def _cell(mean: float, half: float, digits: int = 4, signed: bool = False) -> str:
    if math.isnan(mean):
        return "n/a"
    text = f"{mean:+.{digits}f}" if signed else f"{mean:.{digits}f}"
    return text + ("" if math.isnan(half) else f" ± {half:.{digits}f}")


def _best_values(frame: pd.DataFrame, metric: str) -> list[float]:
    column = best_key(metric)
    return frame[column].dropna().tolist() if column in frame else []


def _group_row(
    trials: Comparison, group: AxisGroup, base: AxisGroup | None, metrics: Sequence[str]
) -> str:
    """One value's table row: n completed, n pruned, mean ± CI of each metric over the completed
    trials, the whole row at the common rung, then Δ vs the base group if any."""
    done = trials.done[trials.done.index.isin(group.rows)]
    base_done = trials.done[trials.done.index.isin(base.rows)] if base else None
    pruned = trials.pruned.index.isin(group.rows).sum()
    cells = [group.label + (" (base)" if group.is_base else ""), str(len(done)), str(pruned)]
    deltas = []
    for metric in metrics:
        values = _best_values(done, metric)
        cells.append(_cell(*mean_ci(values)[:2]))
        if base_done is not None and group.is_base:
            deltas.append("—")
        elif base_done is not None:
            delta, half = delta_ci(values, _best_values(base_done, metric))
            star = "*" if not math.isnan(half) and abs(delta) > half else ""
            deltas.append(_cell(delta, half, signed=True) + star)
    if trials.rung_column is not None:
        everyone = trials.compared.loc[group.rows, trials.rung_column].dropna().tolist()
        cells.append(_cell(*mean_ci(everyone)[:2]))
    return "| " + " | ".join(cells + deltas) + " |"


def _axis_table(trials: Comparison, axis: str, base: Any, metrics: Sequence[str]) -> list[str]:
    """The section of one swept axis: a row per value (or value bin)."""
    compared = trials.compared
    if axis not in compared.columns or compared[axis].isna().all():
        return [f"## `{axis}`", "", "no completed or pruned trial has this parameter.", ""]
    groups = axis_groups(compared, axis, base)
    base_group = next((g for g in groups if g.is_base), None)
    header = ["value", "n", "pruned", *metrics]
    if trials.rung_column is not None:
        header.append(f"{trials.rung_column} (all)")
    if base_group is not None:
        header += [f"Δ {m}" for m in metrics]
    lines = [f"## `{axis}` (base: {value_label(base)})", ""]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += [_group_row(trials, group, base_group, metrics) for group in groups]
    if base_group is None:
        lines += ["", "No trial ran the base value, so there is no Δ column."]
    return [*lines, ""]


def _trial_names(frame: pd.DataFrame, epochs: bool = False) -> str:
    names = frame["trial_id"] if "trial_id" in frame else frame.index.astype(str)
    if epochs and "epochs" in frame:
        pairs = zip(names, frame["epochs"], strict=True)
        return ", ".join(f"`{n}` (epoch {int(e)})" for n, e in pairs)
    return ", ".join(f"`{n}`" for n in names)


def ranking_split(metric: str) -> str:
    """Which split a ranking metric is on, in words: the selection split or dev."""
    if metric.startswith(f"{SELECTION_SPLIT}/"):
        return "the selection split (held out of train)"
    return metric.split("/", 1)[0] if "/" in metric else metric


def _summary(frame: pd.DataFrame, trials: Comparison, metric: str) -> list[str]:
    """What the tables are made of: completed trials, pruned ones (named, with their rung) and
    those left out (failed, killed: named); and the split the sweep ranked its trials on."""
    left_out = frame.drop(trials.compared.index)
    lines = [
        f"{len(trials.done)} completed and {len(trials.pruned)} pruned trials. The sweep "
        f"ranked them on `{metric}`, on {ranking_split(metric)}. Rows: a swept value, or a bin "
        "of a continuous axis's values. Cells: mean ± 95% CI (t) of each completed trial's "
        "best-epoch metric; Δ: difference to the base value's group ± 95% CI (Welch); * marks "
        "a Δ whose interval excludes 0.",
        "",
    ]
    if len(trials.pruned):
        lines += [f"Pruned (stopped early by the scheduler): {_trial_names(trials.pruned, True)}."]
        if trials.rung_column is not None:
            lines += [
                f"Each row counts its pruned trials, and `{trials.rung_column} (all)` compares "
                "every trial of the row, completed or pruned, at the last epoch all reached."
            ]
        lines.append("")
    if len(left_out):
        states = left_out["state"] if "state" in left_out else pd.Series("?", left_out.index)
        parts = [f"{state} {_trial_names(left_out[states == state])}" for state in
                 dict.fromkeys(states)]  # fmt: skip
        lines += [f"Left out (no comparable score): {'; '.join(parts)}.", ""]
    return lines


def axes_table_markdown(
    frame: pd.DataFrame,
    axes: Sequence[str],
    base: Mapping[str, Any],
    *,
    sweep: str,
    metrics: Sequence[str] = DEV_METRICS,
    metric: str = OVERALL,
    title: str | None = None,
) -> str:
    """The ablation tables: per swept axis, each value's (or bin's) mean ± 95% CI of every best
    dev metric (and of the ranking `metric`, if not among them) across completed trials (seeds
    included), the count of pruned trials, and Δ vs the base value's group (*: CI excludes 0);
    pruned trials compare at their common rung of `metric`."""
    if metric not in metrics and best_key(metric) in frame:
        metrics = (metric, *metrics)  # e.g. selection/overall: the column the sweep ranked on
    trials = compare_trials(frame, metric)
    lines = [title or f"# Ablation: sweep `{sweep}`", "", *_summary(frame, trials, metric)]
    for axis in axes:
        lines += _axis_table(trials, axis, base.get(axis), metrics)
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# importance.md


def importance_markdown(
    scores: Mapping[str, float] | None, *, sweep: str, note: str = "", metric: str = OVERALL
) -> str:
    """A table of parameter importances of the sweep's objective `metric`, largest first, or why
    there is none."""
    lines = [f"# Parameter importance: sweep `{sweep}`", ""]
    return "\n".join([*lines, *_importance_lines(scores, note, metric)])


def arm_importance_markdown(
    per_arm: Mapping[str, tuple[Mapping[str, float] | None, str]], *, study: str, metric: str
) -> str:
    """A study's importances: a section per arm (arm -> its scores, or None and why), as each
    arm's tuning phase is its own Optuna study."""
    lines = [
        f"# Parameter importance: study `{study}`, tuning phase per arm",
        "",
        "Each arm is tuned in its own Optuna study, so each has its own importances.",
        "",
    ]
    for arm, (scores, note) in per_arm.items():
        lines += [f"## Arm `{arm}`", "", *_importance_lines(scores, note, metric)]
    return "\n".join(lines)


def _importance_lines(scores: Mapping[str, float] | None, note: str, metric: str) -> list[str]:
    if not scores:
        return [note or "no importances could be computed.", ""]
    lines = [
        f"Optuna fANOVA importances of the sweep objective `{metric}` (on {ranking_split(metric)})"
        " over completed trials (they sum to 1).",
        "",
        "| parameter | importance |",
        "|---|---|",
    ]
    lines += [f"| `{k}` | {v:.3f} |" for k, v in sorted(scores.items(), key=lambda kv: -kv[1])]
    return [*lines, ""]
