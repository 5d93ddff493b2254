"""The report of an ablation study: its confirm (phase 2) runs as `ablation.md`, `.parquet` and
`.tex` (via `arm_table.py`), which confirm runs are missing or failed, whether every arm ran the
same seeds, the best arm's SST details, each arm's learning curve and its means as metrics.

Input is the study's trial runs as the tracking store reads them, and their metric histories;
nothing here reads MLflow itself, and `report/sweep_report.py` writes and logs what this computes.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import pandas as pd

from model.evaluate import OVERALL, SELECTION_OVERALL
from orchestrator.ablation.arm_table import (
    TABLE_METRICS,
    ablation_table,
    arm_table_latex,
    arm_table_markdown,
    t_interval,
)
from orchestrator.ablation.race_report import (
    race_bounds,
    race_markdown,
    tagged_race_stops,
    with_race_columns,
)
from orchestrator.ablation.sst_details import DETAIL_KEYS, SstDetails, sst_details, sst_markdown
from orchestrator.ablation.study_info import StudyInfo
from orchestrator.ablation.verdicts import (
    verdict_metrics,
    verdict_tags,
    verdicts_markdown,
    with_verdicts,
)
from orchestrator.contract import (
    ARM_PARAM,
    PHASE_PARAM,
    SEED_PARAM,
    arm_metric,
    best_key,
)
from orchestrator.tracking.store import StoredRun

History = Mapping[str, Sequence[tuple[int, float]]]  # metric -> (epoch, value) pairs
SELECTION_PARAM = "data.selection"  # > 0: the trainer picked each run's best epoch on it


def phase_runs(trials: Sequence[StoredRun], phase: str) -> list[StoredRun]:
    """The study's trial runs of one phase (`tune` or `confirm`)."""
    return [run for run in trials if run.params.get(PHASE_PARAM) == phase]


def _seed(run: StoredRun) -> int | None:
    try:
        return int(float(run.params[SEED_PARAM]))
    except (KeyError, ValueError):
        return None


def _selection(run: StoredRun) -> float:
    try:
        return float(run.params.get(SELECTION_PARAM) or 0.0)
    except ValueError:
        return 0.0


def _best(run: StoredRun, metric: str) -> float:
    """A run's best-epoch value of a metric (`best/<m>`, else its last logged `<m>`)."""
    return run.metrics.get(best_key(metric), run.metrics.get(metric, math.nan))


def runs_frame(runs: Sequence[StoredRun]) -> pd.DataFrame:
    """One row per confirm run: identity, arm, seed, state, wall_s, the table's dev metrics and the
    SST details at the run's best epoch (NaN where a run logged none)."""
    rows = []
    for run in runs:
        row: dict[str, object] = {
            "run_id": run.run_id,
            "trial_id": run.trial_id,
            "arm": run.params.get(ARM_PARAM, ""),
            "seed": _seed(run),
            "state": run.state or run.status.lower(),
            "wall_s": (run.end_ms - run.start_ms) / 1000 if run.start_ms and run.end_ms else None,
            "selection": _selection(run),
        }
        row.update({m: _best(run, m) for m in (*TABLE_METRICS, *DETAIL_KEYS)})
        rows.append(row)
    columns = ["run_id", "trial_id", "arm", "seed", "state", "wall_s", "selection"]
    columns += [*TABLE_METRICS, *DETAIL_KEYS]
    return pd.DataFrame(rows, columns=columns)


# ---------------------------------------------------------------------------------------------
# Coverage and paired seeds


def seed_sets(runs: pd.DataFrame, completed_only: bool = False) -> dict[str, frozenset[int]]:
    """The seeds each arm's confirm runs carry (all of them, or the completed ones)."""
    if completed_only:
        runs = runs[runs["state"] == "completed"]
    return {
        str(arm): frozenset(int(s) for s in group["seed"].dropna())
        for arm, group in runs.groupby("arm")
    }


def _seed_list(seeds: frozenset[int] | set[int]) -> str:
    return "[" + ", ".join(str(s) for s in sorted(seeds)) + "]"


def coverage_notes(runs: pd.DataFrame, info: StudyInfo) -> list[str]:
    """One line per arm whose confirm runs are not all completed: how many failed (or were
    killed, or are still running) and which seeds have no confirm run at all."""
    notes = []
    for arm in info.arms:
        group = runs[runs["arm"] == arm]
        parts = []
        for state in dict.fromkeys(group["state"]):
            if state != "completed":
                seeds = {int(s) for s in group[group["state"] == state]["seed"].dropna()}
                parts.append(
                    f"{(group['state'] == state).sum()} {state} (seeds {_seed_list(seeds)})"
                )
        missing = set(info.seeds) - {int(s) for s in group["seed"].dropna()}
        if missing and info.race is None:  # a race runs the seeds each arm needs
            parts.append(f"{len(missing)} missing (seeds {_seed_list(missing)})")
        if parts:
            done = int((group["state"] == "completed").sum())
            planned = len(info.seeds) if info.race is None else len(group)
            notes.append(f"`{arm}`: {done} of {planned} completed; " + ", ".join(parts))
    return notes


def seed_notes(runs: pd.DataFrame, info: StudyInfo) -> list[str]:
    """What breaks the pairing by seed: arms whose confirm runs (whatever their state) carry
    different seed sets, a seed outside the study's, or a seed run twice in one arm. Failed runs
    are `coverage_notes`' business: each Δ pairs the seeds both arms completed anyway. In a race
    arms stop at different seeds: only a seed the baseline did not run breaks a pair."""
    notes = []
    study_seeds = frozenset(info.seeds)
    ran = {arm: frozenset[int]() for arm in info.arms} | seed_sets(runs)
    strays = [arm for arm in ran if arm not in info.arms]
    if strays:
        listed = ", ".join(f"`{arm}`" for arm in strays)
        notes.append(f"Confirm runs of arms the study does not declare: {listed}.")
    if info.race is not None:
        base = ran.get(info.baseline, frozenset())
        for arm, seeds in ran.items():
            if seeds - base:
                notes.append(f"`{arm}` ran seeds {_seed_list(seeds - base)} the baseline did not.")
    elif len(set(ran.values())) > 1:
        listed = ", ".join(f"`{arm}` {_seed_list(seeds)}" for arm, seeds in ran.items())
        notes.append(f"The arms ran different seed sets: {listed}.")
    for arm, seeds in ran.items():
        if seeds - study_seeds and info.race is None:  # `--extend` races past max
            notes.append(
                f"`{arm}` ran seeds {_seed_list(seeds - study_seeds)} that are not the study's "
                f"seeds {_seed_list(study_seeds)}."
            )
    done = runs[runs["state"] == "completed"]
    repeated = done[done.duplicated(["arm", "seed"], keep=False)]
    for (arm, seed), group in repeated.groupby(["arm", "seed"]):
        notes.append(
            f"`{arm}` completed seed {int(seed)} {len(group)} times; the table averages them "
            "into one score for that seed before pairing."
        )
    return notes


# ---------------------------------------------------------------------------------------------
# The learning curves


def learning_curves(
    done: pd.DataFrame,
    histories: Mapping[str, History],
    arms: Sequence[str],
    metric: str = OVERALL,
) -> dict[str, pd.DataFrame]:
    """Per arm: `metric` per epoch as mean ± 95% CI over its completed confirm runs."""
    curves = {}
    for arm in arms:
        by_epoch: dict[int, list[float]] = {}
        for run_id in done.loc[done["arm"] == arm, "run_id"]:
            for epoch, value in histories.get(run_id, {}).get(metric, ()):
                by_epoch.setdefault(int(epoch), []).append(float(value))
        rows = []
        for epoch in sorted(by_epoch):
            interval = t_interval(by_epoch[epoch])
            rows.append({"epoch": epoch, "mean": interval.mean, "half": interval.half_width,
                         "n": interval.n})  # fmt: skip
        if rows:
            curves[arm] = pd.DataFrame(rows)
    return curves


# ---------------------------------------------------------------------------------------------
# The study's report


@dataclass(frozen=True)
class StudyReport:
    """The study's tables and what `report/sweep_report.py` plots and logs from them."""

    table: pd.DataFrame  # ablation.parquet: one row per arm (`ablation.ablation_table`)
    markdown: str  # ablation.md
    latex: str  # ablation.tex
    metrics: dict[str, float]  # the parent run's per-arm means: arm/<arm>/<metric>
    curves: dict[str, pd.DataFrame]
    sst: SstDetails | None
    notes: list[str] = field(default_factory=list)  # coverage and seed problems, for the CLI
    tags: dict[str, str] = field(default_factory=dict)  # the parent run's: each arm's verdict


def arm_metrics(table: pd.DataFrame) -> dict[str, float]:
    """Each arm's mean of every table metric, named `arm/<arm>/<metric>`."""
    return {
        arm_metric(str(row["arm"]), m): float(row[m])
        for _, row in table.iterrows()
        for m in TABLE_METRICS
        if math.isfinite(row[m])
    }


def build_study_report(
    name: str,
    info: StudyInfo,
    confirm: Sequence[StoredRun],
    histories: Mapping[str, History],
    *,
    split: str = "dev",
    parent_tags: Mapping[str, str] | None = None,
) -> StudyReport:
    """The ablation table of the study's completed confirm runs and everything around it;
    a racing study's also says how each arm's race ended (`parent_tags`: `arm/<arm>/race`)."""
    runs = runs_frame(confirm)
    done = runs[(runs["state"] == "completed") & runs["seed"].notna()]
    stops = tagged_race_stops(info, parent_tags or {}) if info.race is not None else None
    if done.empty:
        table, latex, metrics = pd.DataFrame(), "", {}
        body = ["No confirm run has completed yet: no table.", ""]
    else:
        rule = info.rule
        table = with_verdicts(ablation_table(done, info.baseline, info.arms), done, info.baseline,
                              rule)  # fmt: skip
        if stops is not None:  # a race's verdict is its stop, the one with an error bound
            table = with_race_columns(table, stops, runs)
        latex = arm_table_latex(
            table, info.baseline, split=split, metric=rule.metric, correction=rule.correction
        )
        metrics = arm_metrics(table) | verdict_metrics(table, info.baseline)
        body = [arm_table_markdown(table, info.baseline, split=split)]
        body += verdicts_markdown(table, info.baseline, rule)
    if stops is not None:
        body += race_markdown(info, stops, runs, parent_tags or {})
    best = str(table.loc[table[OVERALL].idxmax(), "arm"]) if len(table) else None
    sst = sst_details(done, best) if best else None
    coverage, seeds = coverage_notes(runs, info), seed_notes(runs, info)
    lines = _header(name, info, done, split, shared=not seeds)
    if coverage:
        lines += ["Confirm runs not completed:", "", *(f"- {n}" for n in coverage), ""]
    if seeds:
        lines += ["**Seeds not shared:**", "", *(f"- {n}" for n in seeds), ""]
    lines += [*body, *sst_markdown(sst), *curves_markdown(info.arms)]
    curves = learning_curves(done, histories, info.arms)
    notes = [f"not completed: {n}" for n in coverage] + [f"seeds not shared: {n}" for n in seeds]
    tags = verdict_tags(table, info.baseline)
    return StudyReport(table, "\n".join(lines), latex, metrics, curves, sst, notes, tags)


def _header(
    name: str, info: StudyInfo, done: pd.DataFrame, split: str, *, shared: bool
) -> list[str]:
    arms = ", ".join(f"`{a}`" for a in info.arms)
    runs = len(info.arms) * len(info.seeds)
    if info.race is not None:
        seeds = f"a race, seeds 0-{info.race['max'] - 1} in rounds ({race_bounds(info)})"
        ran = f"{len(done)} confirm runs completed"
    else:
        seeds = f"seeds {_seed_list(set(info.seeds))}"
        seeds += ", shared by every arm" if shared else ""
        ran = f"{len(done)} of {runs} confirm runs completed"
    return [
        f"# Ablation study `{name}`",
        "",
        f"Arms: {arms} (baseline `{info.baseline}`); {seeds}. {ran}; only they enter the table.",
        "",
        _selection_note(done, split),
        "",
    ]


def _selection_note(done: pd.DataFrame, split: str) -> str:
    """Which split picked each run's best epoch (the table reports that epoch on `split`)."""
    fractions = sorted(set(done["selection"])) if len(done) else []
    if any(f > 0 for f in fractions):
        shown = ", ".join(f"{f:g}" for f in fractions)
        return (
            f"Each run's best epoch was picked on the selection split (`{SELECTION_OVERALL}`, "
            f"{SELECTION_PARAM} = {shown}), held out of train; scores are that epoch's on {split}."
        )
    return f"Each run's best epoch was picked on {split} ({OVERALL}), the split it reports."


def curves_markdown(arms: Sequence[str]) -> list[str]:
    return [
        "## Learning curves",
        "",
        f"`plots/learning_curves.png`: {OVERALL} per epoch for each arm ({len(arms)}), mean over "
        "its completed confirm runs.",
        "",
    ]
