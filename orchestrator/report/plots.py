"""PNG plots of a sweep's trials (matplotlib, Agg backend): optimization history, parallel
coordinates, and each swept axis's effect with 95% CI error bars; of a study: each arm's
learning curve and the best arm's SST confusion matrix; an ensemble's k-curve; and a
multi-objective sweep's Pareto front.

Input is the `trials.parquet` frame of `sweep_report.py`, the curves and counts
`ablation/study_report.py` computes; nothing here reads MLflow or Optuna. (The k-curve's plot is
`ensemble/k_curve_plot.py`'s: the ensemble draws it as it writes its files.)
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only; never a display
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.ticker import MaxNLocator

from model.evaluate import OVERALL
from orchestrator.contract import best_key
from orchestrator.objectives import Objective
from orchestrator.stats import axis_groups, mean_ci

STATE_MARKERS = {"completed": "o", "pruned": "x", "failed": "s", "killed": "v"}


def optimization_history(frame: pd.DataFrame, metric: str, path: Path, mode: str = "max") -> Path:
    """Each trial's best value in start order, marked by state, with the running best."""
    column = best_key(metric)
    values = frame[column].astype(float).to_numpy() if column in frame else np.array([])
    order = np.arange(1, len(values) + 1)
    fig, ax = plt.subplots(figsize=(7, 4))
    for state, marker in STATE_MARKERS.items():
        mask = (_states(frame) == state).to_numpy() & np.isfinite(values)
        if mask.any():
            ax.scatter(order[mask], values[mask], marker=marker, label=state, zorder=3)
    sign = 1.0 if mode == "max" else -1.0
    finite = np.where(np.isfinite(values), sign * values, -np.inf)
    if np.isfinite(finite).any():
        running = sign * np.maximum.accumulate(finite)
        ax.step(order, np.where(np.isfinite(running), running, np.nan), where="post",
                color="black", linewidth=1, label="best so far")  # fmt: skip
    ax.set(xlabel="trial (start order)", ylabel=metric, title="optimization history")
    ax.legend(loc="lower right", fontsize=8)
    return _save(fig, path)


def _states(frame: pd.DataFrame) -> pd.Series:
    """Each trial's state; a frame of no trials has no columns at all."""
    return frame["state"] if "state" in frame else pd.Series("", index=frame.index, dtype=object)


def _axis_positions(values: pd.Series) -> tuple[np.ndarray, list[tuple[float, str]]]:
    """Values mapped to [0, 1] and tick labels: numbers min-max (log10 when they span > 20x and
    are positive), anything else by category order."""
    numeric = pd.to_numeric(values, errors="coerce")
    if values.notna().any() and numeric[values.notna()].notna().all():
        x = numeric.astype(float).to_numpy()
        low, high = np.nanmin(x), np.nanmax(x)
        if low > 0 and high / low > 20:
            x, low, high = np.log10(x), math.log10(low), math.log10(high)
            ticks = [(0.0, f"{10**low:.3g}"), (1.0, f"{10**high:.3g}")]
        else:
            ticks = [(0.0, f"{low:.3g}"), (1.0, f"{high:.3g}")]
        span = high - low or 1.0
        return (x - low) / span, ticks
    categories = list(dict.fromkeys(values.astype(str)))
    step = 1.0 / max(len(categories) - 1, 1)
    ticks = [(i * step, c) for i, c in enumerate(categories)]
    return np.array([categories.index(v) * step for v in values.astype(str)]), ticks


def parallel_coordinates(
    frame: pd.DataFrame, axes: Sequence[str], metric: str, path: Path
) -> Path:
    """One line per trial across the swept parameters and the metric, coloured by the metric."""
    column = best_key(metric)
    names = [a for a in axes if a in frame] + ([column] if column in frame else [])
    fig, ax = plt.subplots(figsize=(max(6, 1.8 * len(names)), 4.5))
    if names and len(frame):
        positions = [_axis_positions(frame[name]) for name in names]
        ys = np.stack([p[0] for p in positions], axis=1)  # [trials, axes]
        score = frame[column].astype(float).to_numpy() if column in frame else np.zeros(len(frame))
        finite = np.isfinite(score)
        lo, hi = (score[finite].min(), score[finite].max()) if finite.any() else (0.0, 1.0)
        colours = plt.cm.viridis((score - lo) / ((hi - lo) or 1.0))
        for row, colour in zip(ys, colours, strict=True):
            ax.plot(range(len(names)), row, color=colour, alpha=0.8)
        for i, (_, ticks) in enumerate(positions):
            ax.axvline(i, color="grey", linewidth=0.8)
            for y, label in ticks:
                ax.annotate(label, (i, y), xytext=(3, 0), textcoords="offset points", fontsize=7)
        ax.set_xticks(range(len(names)), names, rotation=15, fontsize=8)
        mappable = plt.cm.ScalarMappable(cmap="viridis", norm=plt.Normalize(lo, hi))
        fig.colorbar(mappable, ax=ax, label=metric)
    ax.set_yticks([])
    ax.set_title("parallel coordinates")
    return _save(fig, path)


def axis_effects(
    frame: pd.DataFrame, axes: Sequence[str], base: Mapping[str, Any], metric: str, path: Path
) -> Path:
    """Per swept axis: each value's mean ± 95% CI of the metric over completed trials."""
    done = frame[_states(frame) == "completed"]
    column = best_key(metric)
    shown = [a for a in axes if a in done]
    fig, plots = plt.subplots(1, max(len(shown), 1), figsize=(4 * max(len(shown), 1), 3.8),
                              squeeze=False)  # fmt: skip
    for ax, axis in zip(plots[0], shown, strict=False):
        groups = axis_groups(done, axis, base.get(axis))
        intervals = [mean_ci(done.loc[g.rows, column].tolist()) for g in groups]
        means = [mean for mean, _, _ in intervals]
        errors = [0.0 if math.isnan(half) else half for _, half, _ in intervals]
        colours = ["tab:red" if g.is_base else "tab:blue" for g in groups]
        for x, (mean, err, colour) in enumerate(zip(means, errors, colours, strict=True)):
            ax.errorbar(x, mean, yerr=err, fmt="o", color=colour, capsize=4)
        ax.set_xticks(range(len(groups)), [g.label for g in groups], rotation=20, fontsize=8)
        ax.set(title=axis, ylabel=metric)
    if not shown:
        plots[0][0].set_title("no swept axis with completed trials")
    fig.suptitle("effect of each swept axis (red: base value; bars: 95% CI)", fontsize=9)
    return _save(fig, path)


def write_plots(
    frame: pd.DataFrame,
    axes: Sequence[str],
    base: Mapping[str, Any],
    out_dir: Path,
    *,
    metric: str = OVERALL,
    mode: str = "max",
) -> list[Path]:
    """All three plots as PNG files in `out_dir`."""
    out_dir.mkdir(parents=True, exist_ok=True)
    return [
        optimization_history(frame, metric, out_dir / "optimization_history.png", mode),
        parallel_coordinates(frame, axes, metric, out_dir / "parallel_coordinates.png"),
        axis_effects(frame, axes, base, metric, out_dir / "axis_effects.png"),
    ]


def plot_learning_curves(
    curves: Mapping[str, pd.DataFrame], path: Path, *, metric: str = OVERALL, baseline: str = ""
) -> Path:
    """One line per arm: `metric` per epoch, mean over seeds, with its 95% CI as a band."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for arm, curve in curves.items():
        epochs, mean = curve["epoch"].to_numpy(), curve["mean"].to_numpy(dtype=float)
        half = np.nan_to_num(curve["half"].to_numpy(dtype=float))
        style = {"linewidth": 2.5, "color": "black"} if arm == baseline else {"linewidth": 1.5}
        (line,) = ax.plot(epochs, mean, marker="o", label=arm, **style)
        ax.fill_between(epochs, mean - half, mean + half, color=line.get_color(), alpha=0.15)
    ax.set(xlabel="epoch", ylabel=f"{metric} (mean over seeds)")
    if curves:
        ax.legend(fontsize=8, loc="lower right")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole numbers
        ax.set_title(f"learning curves per arm (bands: 95% CI; bold: {baseline or 'baseline'})",
                     fontsize=9)  # fmt: skip
    else:
        ax.set_title("no completed confirm run")
    return _save(fig, path)


def sst_confusion(matrix: np.ndarray | None, path: Path, *, title: str) -> Path:
    """A confusion-matrix heat map (rows: true class, columns: predicted), counts in the cells."""
    fig, ax = plt.subplots(figsize=(5, 4.5))
    if matrix is None or not matrix.size:
        ax.set_title("no SST details logged")
        ax.axis("off")
        return _save(fig, path)
    image = ax.imshow(matrix, cmap="Blues")
    fig.colorbar(image, ax=ax, label="examples")
    threshold = matrix.max() / 2 if matrix.max() else 1
    for (true, pred), count in np.ndenumerate(matrix):
        colour = "white" if count > threshold else "black"
        ax.text(pred, true, str(int(count)), ha="center", va="center", color=colour, fontsize=8)
    ticks = range(matrix.shape[0])
    ax.set_xticks(ticks)
    ax.set_yticks(ticks)
    ax.set(xlabel="predicted class", ylabel="true class", title=title)
    return _save(fig, path)


def plot_pareto_front(frame: pd.DataFrame, objectives: Sequence[Objective], path: Path) -> Path:
    """Each pair of objectives as a scatter of the completed trials' best-epoch values: the
    Pareto front (column `pareto`, over every objective) in red, infeasible trials (column
    `feasible` false) as orange crosses, the rest grey."""
    pairs = list(itertools.combinations(range(len(objectives)), 2)) or [(0, 0)]
    fig, panels = plt.subplots(1, len(pairs), figsize=(4.2 * len(pairs), 4), squeeze=False)
    done = frame[_states(frame) == "completed"]
    on_front = _flags(done, "pareto", False)
    feasible = _flags(done, "feasible", True)
    for ax, (i, j) in zip(panels[0], pairs, strict=True):
        x, y = best_key(objectives[i].metric), best_key(objectives[j].metric)
        if x not in done or y not in done:
            continue
        groups = (
            (done[~on_front & feasible], {"color": "grey", "alpha": 0.6, "label": "completed"}),
            (done[~feasible], {"color": "tab:orange", "marker": "x", "label": "infeasible"}),
            (done[on_front], {"color": "tab:red", "zorder": 3, "label": "Pareto front"}),
        )
        for rows, style in groups:
            if len(rows):
                ax.scatter(rows[x].astype(float), rows[y].astype(float), **style)
        ax.set(xlabel=f"{x} ({objectives[i].mode})", ylabel=f"{y} ({objectives[j].mode})")
        ax.legend(fontsize=7, loc="best")
    fig.suptitle("Pareto front over all objectives, each pair of them (best-epoch values)",
                 fontsize=9)  # fmt: skip
    return _save(fig, path)


def _flags(frame: pd.DataFrame, column: str, default: bool) -> pd.Series:
    """A boolean column of the frame, or `default` for every row when it has none."""
    if column not in frame:
        return pd.Series(default, index=frame.index, dtype=bool)
    return frame[column].fillna(default).astype(bool)


def _save(fig: Any, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
