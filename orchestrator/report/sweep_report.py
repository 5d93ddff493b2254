"""A sweep's results as data a researcher reads, under `<results>/<sweep>/`: `trials.parquet` (one
row per trial) and plots, and

- for an HPO sweep: `ablation.md` (each swept value's, or value bin's, mean ± 95% CI across trials
  and seeds, and its delta vs the base config; pruned trials counted and compared at their common
  epoch) and `importance.md` (Optuna parameter importances);
- for an ablation study (`study.arms` on the parent run): `ablation.md`, `ablation.parquet` and
  `ablation.tex` from its confirm runs (`study_report.py`), and for its tuning phase, if any,
  `tuning.md` (the HPO tables per arm) and `importance.md` (each arm's Optuna importances);
- when `orchestrator ensemble` has written `ensemble/metrics.json`: `ensemble.md` and
  `plots/ensemble_k_curve.png`, the k-curve of the sweep's ensemble (`ensemble/k_curve.py`).

Reads the sweep's MLflow runs through the tracking store and logs the report back to the sweep's
parent run (a study's per-arm means as metrics too), so the UI shows it. Optuna is loaded only to
compute the importances, and Ray never.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pandas as pd

from model.config import ConfigError
from model.data_dir import quora_runs_notes
from model.evaluate import DEV_METRICS, OVERALL, metric_mode
from orchestrator.ablation.study_info import StudyInfo, study_info
from orchestrator.ablation.study_report import StudyReport, build_study_report, phase_runs
from orchestrator.contract import (
    ARM_PARAM,
    BASE_PARAM_PREFIX,
    CONFIRM_PHASE,
    ENDED_STATES,
    ENSEMBLE_METRICS_FILE,
    K_CURVE_PLOT,
    LABEL_KEYS,
    PARA_TRAIN_PARAM,
    PHASE_PARAM,
    RETENTION_TAG,
    ROLE_TAG,
    SEED_PARAM,
    STATE_TAG,
    SWEEP_GPU_PARAM,
    SWEEP_METRIC_PARAM,
    SWEEP_MODE_PARAM,
    SWEEP_REPEATS_PARAM,
    SWEEP_SEARCHED_PARAM,
    TRIAL_ROLE,
    TUNE_PHASE,
    SweepLayout,
    best_key,
    study_phase_dir,
)
from orchestrator.ensemble.k_curve import k_curve_markdown, read_k_curve
from orchestrator.ensemble.k_curve_plot import plot_k_curve
from orchestrator.objectives import SweepGoals, sweep_goals
from orchestrator.report import plots, tradeoffs
from orchestrator.report.tables import (
    arm_importance_markdown,
    axes_table_markdown,
    importance_markdown,
)
from orchestrator.report.trials_table import RUN_COLUMNS, parse_param, trials_frame
from orchestrator.tracking.store import (
    StoredRun,
    StoredSweep,
    find_sweep,
    log_run_artifacts,
    log_run_metrics,
    metric_histories_of,
)
from orchestrator.tracking.views import (
    group_by_param,
    runs_url,
    set_runs_view,
    ui_command,
    view_column,
)

# A trial the sweep has ended, whatever the outcome: the report needs at least one.
ENDED_STATUSES = ("FINISHED", "FAILED", "KILLED")  # for stores without a state tag
ABLATION_VIEW = "ablation"  # the runs-table view `ui` opens: trials, swept params, best metrics


class ReportError(ConfigError):
    """The report cannot be written as asked (no store, unknown sweep, no finished trial)."""


@dataclass
class ReportWritten:
    """What `write_report` wrote."""

    sweep: str
    trials: int
    files: list[Path] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # the Quora file; a study's missing runs, seeds


# ---------------------------------------------------------------------------------------------
# importance.md


def sweep_importances(state_file: Path, study: str) -> tuple[dict[str, float] | None, str]:
    """The importances of the Optuna study `study` in the storage the sweep's state file names
    (a sweep's: the sweep's name; a study's tuning phase: one per arm), or None and why."""
    storage = (
        json.loads(state_file.read_text()).get("optuna_storage") if state_file.is_file() else None
    )
    if storage is None:
        return None, f"{state_file} not found: no Optuna study to read."
    # Here, not at the top: a report without a study to read never loads Optuna.
    from orchestrator.search.importance import study_importances

    try:
        return study_importances(storage, study), ""
    except Exception as err:  # optuna: too few completed trials, no varying parameter, ...
        return None, f"Optuna could not compute importances: {str(err).splitlines()[0]}"


# ---------------------------------------------------------------------------------------------
# The report command


@dataclass(frozen=True)
class Report:
    """A sweep's report, computed and not yet written."""

    frame: pd.DataFrame  # trials.parquet
    axes: list[str]
    base: dict[str, Any]  # axis -> the base config's value
    tables: dict[str, str]  # file name -> markdown (or LaTeX)
    metric: str  # the sweep's objective, for the plots
    mode: str
    hpo_frame: pd.DataFrame | None  # the trials the HPO plots show; None: no HPO plots
    study: StudyReport | None = None
    baseline: str = ""
    k_curve: dict[str, Any] | None = None  # the sweep's ensemble's, when `ensemble` wrote one
    goals: SweepGoals | None = (
        None  # objectives and constraints (report/tradeoffs.py; HPO sweeps)
    )

    @property
    def files(self) -> list[str]:
        """The report's files and directories in `<results>/<sweep>/`, as written."""
        parquet = ["trials.parquet"] + (["ablation.parquet"] if self.study else [])
        return [*parquet, *self.tables, "plots"]


def swept_axes(parent_params: Mapping[str, str], frame: pd.DataFrame) -> list[str]:
    """The sweep's searched keys (the parent run's `sweep.searched`), else the varying params."""
    named = (parent_params.get(SWEEP_SEARCHED_PARAM) or "").split()
    if named:
        return named
    skip = set(RUN_COLUMNS) | {"epochs", "pruned_at_epoch", "wall_s", "device_used"}
    skip |= set(LABEL_KEYS)
    params = [c for c in frame.columns if "/" not in c and c not in skip]
    return [c for c in params if frame[c].astype(str).nunique() > 1]


def write_report(
    sweep: str | None, *, results_dir: Path, log_to_mlflow: bool = True
) -> ReportWritten:
    """Write the report of a sweep or study (default: the newest) and log it to its parent run:
    trials.parquet, the ablation table(s), importance.md and plots/."""
    uri, stored = find_sweep(Path(results_dir), sweep)
    if not any(_ended(run) for run in stored.trials):
        running = f" ({len(stored.trials)} running)" if stored.trials else ""
        raise ReportError(f"{stored.name}: no finished trials yet{running}; nothing to report")
    layout = SweepLayout(Path(results_dir) / stored.name)
    report = with_ensemble_curve(build_report(uri, stored, layout), layout)
    files = _write_in_place(report, layout.root)
    if log_to_mlflow:
        save_ablation_view(uri, stored)
        tables = [layout.root / name for name in report.files if name != "plots"]
        log_run_artifacts(uri, stored.parent.run_id, tables, "report")
        log_run_artifacts(uri, stored.parent.run_id, [layout.root / "plots"], "report")
        if report.study is not None and report.study.metrics:
            log_run_metrics(uri, stored.parent.run_id, report.study.metrics, report.study.tags)
    notes = list(report.study.notes) if report.study else []
    notes += quora_runs_notes(
        run.params.get(PARA_TRAIN_PARAM) for run in stored.trials if _ended(run)
    )
    retention = stored.parent.tags.get(RETENTION_TAG)  # "keep_best: 10; 990 of 1000 trials'..."
    if retention:
        notes.append(f"retention {retention} (their metrics and dev predictions are kept)")
    return ReportWritten(stored.name, len(report.frame), files, notes)


def build_report(uri: str, stored: StoredSweep, layout: SweepLayout) -> Report:
    """The trials frame, the swept axes and their base values, and the markdown tables (a
    study's through `study_report.py`)."""
    params = stored.parent.params
    metric = params.get(SWEEP_METRIC_PARAM, OVERALL)
    mode = params.get(SWEEP_MODE_PARAM) or metric_mode(metric)
    keys = list(dict.fromkeys((*DEV_METRICS, metric)))
    histories = metric_histories_of(uri, [run.run_id for run in stored.trials], keys)
    gpu = float(parse_param(params.get(SWEEP_GPU_PARAM)) or 0.0)
    frame = trials_frame(stored.trials, histories, gpu_per_trial=gpu)
    goals = sweep_goals(params)  # feasible and pareto columns, with constraints
    frame = tradeoffs.judged_frame(frame, stored.trials, goals)
    axes = swept_axes(params, frame)
    base = {axis: parse_param(params.get(f"{BASE_PARAM_PREFIX}{axis}")) for axis in axes}
    info = study_info(params)
    if info is not None:
        confirm = phase_runs(stored.trials, CONFIRM_PHASE)
        study = build_study_report(
            stored.name, info, confirm, histories, parent_tags=stored.parent.tags
        )
        tables, hpo_frame = _tuning_tables(frame, info, axes, base, layout, stored.name, metric)
        tables = {"ablation.md": study.markdown, "ablation.tex": study.latex, **tables}
        return Report(frame, axes, base, tables, metric, mode, hpo_frame, study, info.baseline)
    scores, note = sweep_importances(layout.state_file, stored.name)
    tables = {
        "ablation.md": axes_table_markdown(frame, axes, base, sweep=stored.name, metric=metric),
        "importance.md": importance_markdown(scores, sweep=stored.name, note=note, metric=metric),
        **tradeoffs.objectives_tables(stored.trials, goals, sweep=stored.name),
    }
    return Report(frame, axes, base, tables, metric, mode, frame, goals=goals)


def with_ensemble_curve(report: Report, layout: SweepLayout) -> Report:
    """The report with the k-curve of the sweep's ensemble (`ensemble.md` and a plot) when
    `orchestrator ensemble` has written one."""
    stored = read_k_curve(layout.ensemble_dir / ENSEMBLE_METRICS_FILE)
    if stored is None:
        return report
    curve, examples = stored
    table = k_curve_markdown(curve, sweep=layout.name, examples=examples)
    return replace(report, tables={**report.tables, "ensemble.md": table}, k_curve=curve)


def _tuning_tables(
    frame: pd.DataFrame,
    info: StudyInfo,
    axes: list[str],
    base: dict[str, Any],
    layout: SweepLayout,
    name: str,
    metric: str,
) -> tuple[dict[str, str], pd.DataFrame | None]:
    """A study's tuning phase as HPO tables, one section per arm (`tuning.md`), and its
    importances; nothing (and no HPO plots) when the study had no tuning phase."""
    tune = frame[frame[PHASE_PARAM] == TUNE_PHASE] if PHASE_PARAM in frame else frame.iloc[:0]
    if tune.empty:
        return {}, None
    sections = []
    for arm in info.arms:
        trials = tune[tune[ARM_PARAM].astype(str) == arm]
        if len(trials):
            arm_axes = axes or swept_axes({}, trials)
            title = f"# Tuning (phase 1) of arm `{arm}`"
            sections.append(axes_table_markdown(trials, arm_axes, base, sweep=name, metric=metric,
                                              title=title))  # fmt: skip
    importance = _tuning_importances(tune, info, layout, name, metric)
    return {"tuning.md": "\n".join(sections), "importance.md": importance}, tune


def _tuning_importances(
    tune: pd.DataFrame, info: StudyInfo, layout: SweepLayout, name: str, metric: str
) -> str:
    """`importance.md` of a study: each arm's tuning phase is its own Optuna study in the shared
    optuna.db, named `<study>.tune-<arm>` (see `phases.tune_phase`)."""
    per_arm: dict[str, tuple[dict[str, float] | None, str]] = {}
    for arm in info.arms:
        if (tune[ARM_PARAM].astype(str) == arm).any():
            per_arm[arm] = sweep_importances(
                layout.state_file, f"{name}.{study_phase_dir(TUNE_PHASE, arm)}"
            )
        else:
            per_arm[arm] = None, "no tuning trial of this arm in the store."
    return arm_importance_markdown(per_arm, study=name, metric=metric)


def _write_in_place(report: Report, out_dir: Path) -> list[Path]:
    """Write every file of the report in a temporary directory, then move them into `out_dir`
    together, so a failure leaves the previous report (or none) rather than half of a new one."""
    created = not out_dir.exists()
    out_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".report-", dir=out_dir))
    try:
        report.frame.to_parquet(staging / "trials.parquet", index=False)
        if report.study is not None:
            report.study.table.to_parquet(staging / "ablation.parquet", index=False)
        for name, text in report.tables.items():
            (staging / name).write_text(text)
        plot_files = _write_plots(report, staging / "plots")
        _move_into_place(staging, out_dir, report.files)
    except BaseException as err:
        if created:
            shutil.rmtree(out_dir, ignore_errors=True)
        if isinstance(err, OSError):
            raise ReportError(f"{out_dir}: cannot write the report: {err}") from err
        raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    tables = [out_dir / name for name in report.files if name != "plots"]
    return [*tables, *(out_dir / "plots" / p.name for p in plot_files)]


def _write_plots(report: Report, out_dir: Path) -> list[Path]:
    """The HPO plots (of a sweep, or a study's tuning phase) and a study's curves and confusion."""
    out_dir.mkdir(parents=True, exist_ok=True)
    files = []
    if report.hpo_frame is not None:
        files += plots.write_plots(
            report.hpo_frame, report.axes, report.base, out_dir,
            metric=report.metric, mode=report.mode,
        )  # fmt: skip
    study = report.study
    if study is not None:
        curves = out_dir / "learning_curves.png"
        files.append(plots.plot_learning_curves(study.curves, curves, baseline=report.baseline))
        title = f"SST on dev: {study.sst.arm}, summed over seeds" if study.sst else "SST"
        matrix = study.sst.confusion if study.sst else None
        files.append(plots.sst_confusion(matrix, out_dir / "sst_confusion.png", title=title))
    if report.k_curve is not None:
        files.append(plot_k_curve(report.k_curve, out_dir / f"ensemble_{K_CURVE_PLOT}"))
    if report.goals is not None and report.goals.multi_objective:
        pareto = out_dir / tradeoffs.PARETO_PLOT
        files.append(plots.plot_pareto_front(report.frame, report.goals.objectives, pareto))
    return files


def _ended(run: StoredRun) -> bool:
    """Whether the sweep has ended this trial run (stores without a state tag: its status)."""
    if run.state:
        return run.state in ENDED_STATES
    return run.status in ENDED_STATUSES


def _move_into_place(staging: Path, out_dir: Path, names: Sequence[str]) -> None:
    """Rename each staged file or directory over its namesake in `out_dir` (same filesystem)."""
    for name in names:
        target = out_dir / name
        if target.is_dir() and not target.is_symlink():
            # rename() cannot replace a non-empty directory: move the old one aside first.
            target.rename(staging / f"old-{name}")
        os.replace(staging / name, target)


# ---------------------------------------------------------------------------------------------
# The ui command


def save_ablation_view(uri: str, stored: StoredSweep) -> None:
    """Store the sweep's runs-table view: trial runs only, best metric first, the swept params,
    seed (for repeats), state and best dev metrics as columns. A study's view shows its confirm
    runs grouped by arm: one aggregated row (the mean over seeds) per arm."""
    params = stored.parent.params
    metric = params.get(SWEEP_METRIC_PARAM, OVERALL)
    axes = (params.get(SWEEP_SEARCHED_PARAM) or "").split()
    info = study_info(params)
    search_filter = f"tags.{ROLE_TAG} = '{TRIAL_ROLE}'"
    grouping = None
    if info is not None:
        # The rows average what the table does: each arm's completed confirm runs. An averaged
        # seed or state means nothing, so those columns go; tuned params are the arm's own.
        search_filter += f" and params.{PHASE_PARAM} = '{CONFIRM_PHASE}'"
        search_filter += f" and tags.{STATE_TAG} = 'completed'"
        grouping = group_by_param(ARM_PARAM, info.arms)
        metric = OVERALL  # the table's order, whatever phase 1 tuned on
    elif (parse_param(params.get(SWEEP_REPEATS_PARAM)) or 1) > 1:
        axes.append(SEED_PARAM)
    columns = [view_column("metrics", best_key(m)) for m in DEV_METRICS]
    columns = [view_column("params", axis) for axis in axes] + columns
    if info is None:
        columns.append(view_column("tags", STATE_TAG))
    set_runs_view(
        uri,
        stored.experiment_id,
        ABLATION_VIEW,
        search_filter=search_filter,
        order_by_metric=best_key(metric),
        columns=columns,
        grouping=grouping,
    )


def ui_target(results_dir: Path, sweep: str | None, port: int) -> tuple[list[str], str]:
    """The MLflow server command for the sweeps' store and the URL of the sweep's runs table."""
    uri, stored = find_sweep(Path(results_dir), sweep)
    save_ablation_view(uri, stored)
    url = runs_url(f"http://127.0.0.1:{port}", stored.experiment_id, view_key=ABLATION_VIEW)
    return ui_command(uri, host="127.0.0.1", port=port), url
