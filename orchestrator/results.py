"""A sweep's results as data a researcher reads, under `<results>/<sweep>/`: `trials.parquet` (one
row per trial), `ablation.md` (each swept value's mean ± 95% CI across trials and seeds, and its
delta vs the base config), `importance.md` (Optuna parameter importances) and plots.

Reads the sweep's MLflow runs through `tracking.py` and logs the report back to the sweep's parent
run, so the UI shows it. Ablation rows use completed trials only: an ASHA-stopped trial's best
score covers fewer epochs and is not comparable.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from model.config import ConfigError
from orchestrator.contract import BEST_PREFIX
from orchestrator.search import study_importances

DEV_METRICS: tuple[str, ...] = ("dev/overall", "dev/sst_acc", "dev/para_acc", "dev/sts_corr")
MAX_LEVELS = 6  # an axis with more distinct values than this is binned into quartiles
RUN_COLUMNS = ("run_id", "run_name", "trial_id", "state", "status")


class ReportError(ConfigError):
    """The report cannot be written as asked (no store, unknown sweep, no finished trial)."""


@dataclass
class ReportWritten:
    """What `write_report` wrote."""

    sweep: str
    trials: int
    files: list[Path] = field(default_factory=list)


# ---------------------------------------------------------------------------------------------
# trials.parquet


def parse_param(text: str | None) -> Any:
    """An MLflow param string back to a value: null -> None, true/false, int, float, else text."""
    if text is None or text in ("null", "None"):
        return None
    if text in ("True", "False", "true", "false"):
        return text.lower() == "true"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def _uniform(values: list[Any]) -> list[Any]:
    """One parquet type per column: numbers stay numbers (with None); any text makes all text."""
    present = [v for v in values if v is not None]
    if all(isinstance(v, bool) for v in present):
        return values
    if all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        return values
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in present):
        return [None if v is None else float(v) for v in values]
    return [None if v is None else str(v) for v in values]


def _wall_s(start_ms: int | None, end_ms: int | None) -> float | None:
    return None if start_ms is None or end_ms is None else (end_ms - start_ms) / 1000


def trials_frame(
    trials: Sequence[Any],
    histories: Mapping[str, Mapping[str, Sequence[tuple[int, float]]]],
    *,
    gpu_per_trial: float = 0.0,
) -> pd.DataFrame:
    """One row per trial run: identity, state, every param (dotted keys), best metrics
    (`best/dev/overall`, ...), per-epoch dev metrics (`dev/overall@1`, ...), pruned-at epoch,
    wall time and device."""
    rows: list[dict[str, Any]] = []
    for run in trials:
        history = histories.get(run.run_id, {})
        epochs = max((step for h in history.values() for step, _ in h), default=0)
        row: dict[str, Any] = {
            "run_id": run.run_id,
            "run_name": run.run_name,
            "trial_id": run.trial_id,
            "state": run.state or run.status.lower(),
            "status": run.status,
            "epochs": epochs,
            "pruned_at_epoch": epochs if run.state == "pruned" else None,
            "wall_s": _wall_s(run.start_ms, run.end_ms),
            # The param `device` says what was asked (auto); this says where the trial ran.
            "device_used": run.tags.get("device") or ("cuda" if gpu_per_trial > 0 else "cpu"),
        }
        row.update({key: parse_param(value) for key, value in sorted(run.params.items())})
        for metric in DEV_METRICS:
            value = run.metrics.get(f"{BEST_PREFIX}{metric}")
            if value is None and history.get(metric):
                value = max(v for _, v in history[metric])
            row[f"{BEST_PREFIX}{metric}"] = value
        for metric, points in history.items():
            row.update({f"{metric}@{step}": value for step, value in points})
        rows.append(row)
    columns: dict[str, None] = {}
    for row in rows:
        columns.update(dict.fromkeys(row))
    data = {c: _uniform([row.get(c) for row in rows]) for c in columns}
    return pd.DataFrame(data, columns=list(columns))


# ---------------------------------------------------------------------------------------------
# ablation.md


def mean_ci(values: Sequence[float], confidence: float = 0.95) -> tuple[float, float, int]:
    """Mean, half-width of its t-interval, and n (half-width NaN for fewer than two values)."""
    array = np.asarray([v for v in values if v is not None and np.isfinite(v)], dtype=np.float64)
    n = len(array)
    if n == 0:
        return math.nan, math.nan, 0
    if n == 1:
        return float(array[0]), math.nan, 1
    sem = float(array.std(ddof=1)) / math.sqrt(n)
    return float(array.mean()), float(stats.t.ppf((1 + confidence) / 2, n - 1)) * sem, n


def delta_ci(
    values: Sequence[float], base: Sequence[float], confidence: float = 0.95
) -> tuple[float, float]:
    """Difference of means (values - base) and the half-width of its Welch t-interval."""
    a = np.asarray(values, dtype=np.float64)
    b = np.asarray(base, dtype=np.float64)
    if len(a) == 0 or len(b) == 0:
        return math.nan, math.nan
    delta = float(a.mean() - b.mean())
    if len(a) < 2 or len(b) < 2:
        return delta, math.nan
    va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    if va + vb == 0:
        return delta, 0.0
    dof = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
    return delta, float(stats.t.ppf((1 + confidence) / 2, dof)) * math.sqrt(va + vb)


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=1e-12)
    return str(a) == str(b)


def axis_groups(frame: pd.DataFrame, axis: str, base: Any = None) -> list[dict[str, Any]]:
    """Trials grouped by their value of `axis`: [{label, rows (index), is_base}], in value order.

    More than MAX_LEVELS distinct numeric values are binned into quartiles; the bin holding the
    base value is the base group.
    """
    values = frame[axis]
    present = values.dropna()
    levels = list(dict.fromkeys(present.tolist()))
    numeric = bool(len(present)) and pd.api.types.is_numeric_dtype(present)
    if numeric and len(levels) > MAX_LEVELS:
        bins = pd.qcut(present.astype(float), q=4, duplicates="drop")
        groups = []
        for interval in sorted(bins.cat.categories, key=lambda i: i.left):
            index = bins.index[bins == interval]
            label = f"{interval.left:.3g} – {interval.right:.3g}"
            holds = base is not None and isinstance(base, (int, float))
            is_base = bool(holds and interval.left < float(base) <= interval.right)
            groups.append({"label": label, "rows": list(index), "is_base": is_base})
        return groups
    if numeric:
        levels.sort()
    return [
        {
            "label": _label(level),
            "rows": list(values.index[values.map(lambda v, lv=level: _same(v, lv))]),
            "is_base": base is not None and _same(level, base),
        }
        for level in levels
    ]


def _label(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _cell(mean: float, half: float, digits: int = 4, signed: bool = False) -> str:
    if math.isnan(mean):
        return "n/a"
    text = f"{mean:+.{digits}f}" if signed else f"{mean:.{digits}f}"
    return text + ("" if math.isnan(half) else f" ± {half:.{digits}f}")


def ablation_markdown(
    frame: pd.DataFrame,
    axes: Sequence[str],
    base: Mapping[str, Any],
    *,
    sweep: str,
    metrics: Sequence[str] = DEV_METRICS,
) -> str:
    """The ablation tables: per swept axis, each value's mean ± 95% CI of every best dev metric
    across completed trials (seeds included), and Δ vs the base value's group (*: CI excludes 0).
    """
    done = frame[frame["state"] == "completed"] if "state" in frame else frame
    left_out = len(frame) - len(done)
    lines = [
        f"# Ablation: sweep `{sweep}`",
        "",
        f"{len(done)} completed trials"
        + (f" ({left_out} pruned, failed or killed trials left out)" if left_out else "")
        + ". Cells: mean ± 95% CI (t) of each trial's best-epoch dev metric; Δ: difference to the "
        "base value's group ± 95% CI (Welch); * marks a Δ whose interval excludes 0.",
        "",
    ]
    for axis in axes:
        if axis not in done.columns:
            lines += [f"## `{axis}`", "", "no completed trial has this parameter.", ""]
            continue
        groups = axis_groups(done, axis, base.get(axis))
        base_rows = next((g["rows"] for g in groups if g["is_base"]), None)
        lines += [f"## `{axis}` (base: {_label(base.get(axis))})", ""]
        header = ["value", "n", *metrics]
        if base_rows is not None:
            header += [f"Δ {m}" for m in metrics]
        lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for group in groups:
            subset = done.loc[group["rows"]]
            cells = [group["label"] + (" (base)" if group["is_base"] else ""), str(len(subset))]
            deltas = []
            for metric in metrics:
                column = f"{BEST_PREFIX}{metric}"
                values = subset[column].dropna().tolist() if column in subset else []
                cells.append(_cell(*mean_ci(values)[:2]))
                if base_rows is not None and group["is_base"]:
                    deltas.append("—")
                elif base_rows is not None:
                    base_values = done.loc[base_rows, column].dropna().tolist()
                    delta, half = delta_ci(values, base_values)
                    star = "*" if not math.isnan(half) and abs(delta) > half else ""
                    deltas.append(_cell(delta, half, signed=True) + star)
            lines.append("| " + " | ".join(cells + deltas) + " |")
        if base_rows is None:
            lines += ["", "No completed trial ran the base value, so there is no Δ column."]
        lines.append("")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# importance.md


def importance_markdown(scores: Mapping[str, float] | None, *, sweep: str, note: str = "") -> str:
    """A table of parameter importances, largest first, or why there is none."""
    lines = [f"# Parameter importance: sweep `{sweep}`", ""]
    if not scores:
        return "\n".join([*lines, note or "no importances could be computed.", ""])
    lines += [
        "Optuna fANOVA importances of the sweep objective over completed trials (they sum to 1).",
        "",
        "| parameter | importance |",
        "|---|---|",
    ]
    lines += [f"| `{k}` | {v:.3f} |" for k, v in sorted(scores.items(), key=lambda kv: -kv[1])]
    return "\n".join([*lines, ""])


# ---------------------------------------------------------------------------------------------
# The report command


def swept_axes(parent_params: Mapping[str, str], frame: pd.DataFrame) -> list[str]:
    """The sweep's searched keys (the parent run's `sweep.searched`), else the varying params."""
    named = (parent_params.get("sweep.searched") or "").split()
    if named:
        return named
    skip = set(RUN_COLUMNS) | {"epochs", "pruned_at_epoch", "wall_s", "device_used"}
    params = [c for c in frame.columns if "/" not in c and c not in skip]
    return [c for c in params if frame[c].astype(str).nunique() > 1]


def _resolve_sweep(results_dir: Path, sweep: str | None) -> tuple[str, Any]:
    from orchestrator import tracking

    return tracking.find_sweep(results_dir, sweep)


FINISHED_STATES = ("completed", "pruned", "failed", "killed")


def write_report(
    sweep: str | None, *, results_dir: Path, log_to_mlflow: bool = True
) -> ReportWritten:
    """Write trials.parquet, ablation.md, importance.md and plots/ of a sweep (default: newest).

    All of them are made in a temporary directory and moved into place once every one exists, so
    a failure leaves the previous report (or none) rather than half of a new one.
    """
    from orchestrator import plots, tracking

    uri, stored = _resolve_sweep(Path(results_dir), sweep)
    if not any(_finished(run) for run in stored.trials):
        running = f" ({len(stored.trials)} running)" if stored.trials else ""
        raise ReportError(f"{stored.name}: no finished trials yet{running}; nothing to report")
    out_dir = Path(results_dir) / stored.name
    histories = {
        run.run_id: tracking.metric_histories(uri, run.run_id, DEV_METRICS)
        for run in stored.trials
    }
    gpu = float(parse_param(stored.parent.params.get("sweep.resources.gpu")) or 0.0)
    frame = trials_frame(stored.trials, histories, gpu_per_trial=gpu)
    axes = swept_axes(stored.parent.params, frame)
    base = {axis: parse_param(stored.parent.params.get(f"base.{axis}")) for axis in axes}
    scores, note = _importances(out_dir / "sweep.json", stored.name)
    texts = {
        "ablation.md": ablation_markdown(frame, axes, base, sweep=stored.name),
        "importance.md": importance_markdown(scores, sweep=stored.name, note=note),
    }
    metric = stored.parent.params.get("sweep.metric", "dev/overall")
    mode = stored.parent.params.get("sweep.mode", "max")

    created = not out_dir.exists()
    out_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".report-", dir=out_dir))
    try:
        frame.to_parquet(staging / "trials.parquet", index=False)
        for name, text in texts.items():
            (staging / name).write_text(text)
        plot_files = plots.write_plots(
            frame, axes, base, staging / "plots", metric=metric, mode=mode
        )
        _move_into_place(staging, out_dir, ["trials.parquet", *texts, "plots"])
    except BaseException as err:
        if created:
            shutil.rmtree(out_dir, ignore_errors=True)
        if isinstance(err, OSError):
            raise ReportError(f"{out_dir}: cannot write the report: {err}") from err
        raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)

    files = [out_dir / "trials.parquet", *(out_dir / name for name in texts)]
    written = ReportWritten(stored.name, len(frame))
    written.files = [*files, *(out_dir / "plots" / p.name for p in plot_files)]
    if log_to_mlflow:
        save_ablation_view(uri, stored)
        tracking.log_run_artifacts(uri, stored.parent.run_id, files, "report")
        tracking.log_run_artifacts(uri, stored.parent.run_id, [out_dir / "plots"], "report")
    return written


def _finished(run: Any) -> bool:
    """Whether the sweep has ended this trial run (stores without a state tag: its status)."""
    if run.state:
        return run.state in FINISHED_STATES
    return run.status in ("FINISHED", "FAILED", "KILLED")


def _importances(state_file: Path, sweep: str) -> tuple[dict[str, float] | None, str]:
    """The Optuna importances of the sweep's study, or None and why not."""
    storage = (
        json.loads(state_file.read_text()).get("optuna_storage") if state_file.is_file() else None
    )
    if storage is None:
        return None, f"{state_file} not found: no Optuna study to read."
    try:
        return study_importances(storage, sweep), ""
    except Exception as err:  # optuna: too few completed trials, no varying parameter, ...
        return None, f"Optuna could not compute importances: {str(err).splitlines()[0]}"


def _move_into_place(staging: Path, out_dir: Path, names: Sequence[str]) -> None:
    """Rename each staged file or directory over its namesake in `out_dir` (same filesystem)."""
    for name in names:
        target = out_dir / name
        if target.is_dir() and not target.is_symlink():
            # rename() cannot replace a non-empty directory: move the old one aside first.
            target.rename(staging / f"old-{name}")
        os.replace(staging / name, target)


ABLATION_VIEW = "ablation"  # the runs-table view `ui` opens: trials, swept params, best metrics


def save_ablation_view(uri: str, stored: Any) -> None:
    """Store the sweep's runs-table view: trial runs only, best metric first, the swept params,
    seed (for repeats), state and best dev metrics as columns."""
    from orchestrator import tracking

    metric = stored.parent.params.get("sweep.metric", "dev/overall")
    axes = (stored.parent.params.get("sweep.searched") or "").split()
    if (parse_param(stored.parent.params.get("sweep.repeats")) or 1) > 1:
        axes.append("seed")
    columns = [tracking.view_column("params", axis) for axis in axes]
    columns += [tracking.view_column("metrics", f"{BEST_PREFIX}{m}") for m in DEV_METRICS]
    columns.append(tracking.view_column("tags", tracking.STATE_TAG))
    tracking.set_runs_view(
        uri,
        stored.experiment_id,
        ABLATION_VIEW,
        search_filter=f"tags.{tracking.ROLE_TAG} = 'trial'",
        order_by_metric=f"{BEST_PREFIX}{metric}",
        columns=columns,
    )


def ui_target(results_dir: Path, sweep: str | None, port: int) -> tuple[list[str], str]:
    """The MLflow server command for the sweeps' store and the URL of the sweep's runs table."""
    from orchestrator import tracking

    uri, stored = _resolve_sweep(Path(results_dir), sweep)
    save_ablation_view(uri, stored)
    url = tracking.runs_url(
        f"http://127.0.0.1:{port}", stored.experiment_id, view_key=ABLATION_VIEW
    )
    return tracking.ui_command(uri, host="127.0.0.1", port=port), url
