"""`orchestrator ensemble`: read a sweep's trials from MLflow, predict with each member, combine,
and write `<results>/<sweep>/ensemble/` (leaderboard prediction files and metrics.json).

In four steps: rank the sweep's finished trials (a study's completed confirm runs), load the
members (`member_predictions.py`), select (`select.py`: top-K, or greedy forward selection on
dev), and write the files and the MLflow run.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from model.checkpoint import write_json_atomic
from model.config import TASKS
from model.data_dir import quora_runs_notes
from model.evaluate import OVERALL, prediction_filename, write_predictions
from orchestrator.contract import (
    K_CURVE_KEY,
    K_CURVE_PLOT,
    PARA_TRAIN_PARAM,
    SWEEP_RUN_TAG,
    SWEEP_TAG,
    SweepLayout,
)
from orchestrator.ensemble.combine import combine_tasks, gain
from orchestrator.ensemble.k_curve import k_curve, k_curve_line
from orchestrator.ensemble.k_curve_plot import plot_k_curve
from orchestrator.ensemble.manifest import remove_manifest, write_ensemble_manifest
from orchestrator.ensemble.member_predictions import (
    DataResolver,
    MemberLibrary,
    MemberRun,
    load_members,
)
from orchestrator.ensemble.request import (
    SPLITS,
    EnsembleRequest,
)
from orchestrator.ensemble.select import (
    Ranking,
    Selection,
    best_member,
    ranked_candidates,
    select_members,
)
from orchestrator.tracking.store import StoredSweep, find_sweep, log_ensemble_run


@dataclass
class EnsembleResult:
    """What `run_ensemble` wrote and measured."""

    sweep: str
    out_dir: Path
    members: list[MemberRun]
    selected: list[int]  # indices into `members`, with repeats for greedy selection
    dev: dict[str, float]
    files: list[Path]
    notes: list[str] = field(default_factory=list)
    run_id: str | None = None
    tracking_uri: str = ""  # the store of the sweep and of the ensemble's run
    summary: dict[str, Any] = field(default_factory=dict)
    registered: str | None = None  # models:/NAME/VERSION with --register NAME


def run_ensemble(
    request: EnsembleRequest,
    *,
    resolve_data: DataResolver | None = None,
    log_to_mlflow: bool = True,
    echo: Callable[[str], None] = lambda line: None,
) -> EnsembleResult:
    """Build the ensemble of a sweep (the newest one if `request.sweep` is None), write its
    outputs and log it as a run of the sweep's experiment.

    `resolve_data(configured_dir)` picks the data directory when `request.data_dir` is None (the
    CLI passes its --data-dir / $ORCHESTRATOR_DATA_DIR logic); `echo` gets progress lines.
    """
    uri, stored = find_sweep(request.results_dir, request.sweep)
    ranking = ranked_candidates(stored, request)
    request = replace(request, metric=ranking.metric)  # --metric, or the trials' default
    library = load_members(
        ranking.candidates, request, sweep=stored.name, resolve_data=resolve_data, echo=echo
    )
    selection = select_members(library, request, ranking.metric)
    if request.greedy and "test" in request.splits:
        # Test predictions only for the members the selection kept.
        library.predict_split(sorted(set(selection.members)), "test")
    result = write_ensemble(stored, request, library, selection, ranking)
    result.tracking_uri = uri
    if log_to_mlflow:
        result.run_id = _log_run(uri, stored, request, result)
    return result


def write_ensemble(
    stored: StoredSweep,
    request: EnsembleRequest,
    library: MemberLibrary,
    selection: Selection,
    ranking: Ranking,
) -> EnsembleResult:
    """Write the combined prediction files, metrics.json (with the k-curve), manifest.json
    (what `predict --ensemble` loads) and k_curve.png under the sweep's `ensemble/`."""
    out_dir = SweepLayout(Path(request.results_dir) / stored.name).ensemble_dir
    # The manifest vouches for the files beside it: the old one goes first, the new one comes
    # last, so a failure in between leaves none for `predict --ensemble` to trust.
    remove_manifest(out_dir)
    members = library.members
    files = _write_predictions(out_dir, members, selection.members, request)
    trained_on = {run.run_id: run.params.get(PARA_TRAIN_PARAM) for run in stored.trials}
    kept = [members[i].candidate.run_id for i in sorted(set(selection.members))]
    notes = [*library.notes, *selection.notes, *quora_runs_notes(trained_on.get(r) for r in kept)]
    summary = _summary(stored.name, request, members, selection, notes, ranking)
    summary[K_CURVE_KEY] = k_curve([m.predictions["dev"] for m in members], library.inputs.labels,
                                   trial_ids=[m.candidate.trial_id for m in members],
                                   ranked_by=ranking.metric)  # fmt: skip
    write_json_atomic(out_dir / "metrics.json", summary)
    plot_k_curve(summary[K_CURVE_KEY], out_dir / K_CURVE_PLOT)  # logged with the run's files
    chosen = [members[i].candidate for i in selection.members]
    write_ensemble_manifest(out_dir, stored.name, request, ranking.metric, chosen, selection.dev)
    return EnsembleResult(
        stored.name, out_dir, members, selection.members, selection.dev, files, notes,
        summary=summary,
    )  # fmt: skip


def _write_predictions(
    out_dir: Path, members: Sequence[MemberRun], selected: Sequence[int], request: EnsembleRequest
) -> list[Path]:
    """Combine the selected members per split and write the leaderboard files (stale ones go)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for task in TASKS:
        for split in SPLITS:
            (out_dir / prediction_filename(task, split)).unlink(missing_ok=True)
    files = []
    for split in request.splits:
        chosen = [members[i].predictions[split] for i in selected]
        for task, predictions in combine_tasks(chosen, request.method).items():
            path = out_dir / prediction_filename(task, split)
            write_predictions(path, predictions)
            files.append(path)
    return files


def _summary(
    sweep: str,
    request: EnsembleRequest,
    members: Sequence[MemberRun],
    selection: Selection,
    notes: Sequence[str],
    ranking: Ranking,
) -> dict[str, Any]:
    """metrics.json: the runs considered and the metric ranking them, members (with their sweep
    value and re-scored dev metrics), the ensemble's dev metrics and its gain over the best
    selected member."""
    kept = sorted(set(selection.members))
    best = members[kept[best_member([members[i].dev for i in kept])]]
    summary = {
        "sweep": sweep,
        "metric": ranking.metric,
        "candidates": ranking.considered,
        "method": request.method,
        "select": request.select,
        "splits": list(request.splits),
        "members": [_member_entry(members[i], selection.members.count(i)) for i in kept],
        # Every trial that predicted on dev: the K of top-K, or greedy selection's whole library.
        "library": [_library_entry(member) for member in members],
        "ensemble": {"dev": dict(selection.dev)},
        "best_member": {"run_id": best.candidate.run_id, **best.dev},
        "gain_over_best_member": gain(selection.dev, best.dev),
        "dev_examples": (
            "the sweep's fixed dev subsets (data.dev_max_examples)"
            if request.dev_subset
            else "full dev files (members re-scored on them, not on the sweep's subset)"
        ),
        "notes": list(notes),
    }
    if selection.top_k is not None:
        summary["top"] = {"members": selection.top_k[0], "dev": selection.top_k[1]}
    return summary


def _member_entry(member: MemberRun, weight: int) -> dict[str, Any]:
    candidate = member.candidate
    return {
        "run_id": candidate.run_id,
        "run_name": candidate.run_name,
        "trial_id": candidate.trial_id,
        "checkpoint": str(candidate.checkpoint),
        "sweep_value": candidate.value,
        "weight": weight,
        "dev": member.dev,
    }


def _library_entry(member: MemberRun) -> dict[str, Any]:
    run_id, trial_id = member.candidate.run_id, member.candidate.trial_id
    return {"run_id": run_id, "trial_id": trial_id, OVERALL: member.dev[OVERALL]}


def _log_run(
    uri: str, stored: StoredSweep, request: EnsembleRequest, result: EnsembleResult
) -> str:
    """Log the ensemble as a run of the sweep's experiment (params, dev metrics, gains, files)."""
    gains = result.summary["gain_over_best_member"]
    return log_ensemble_run(
        uri,
        stored.experiment_id,
        run_name=f"ensemble {request.select}-{request.top} {request.method}",
        member_run_ids=[result.members[i].candidate.run_id for i in result.selected],
        params={
            "top": request.top,
            "method": request.method,
            "select": request.select,
            "metric": result.summary["metric"],
        },
        metrics={**result.dev, **{f"gain/{k}": v for k, v in gains.items()}},
        tags={SWEEP_TAG: stored.name, SWEEP_RUN_TAG: stored.parent.run_id},
        artifact_dir=result.out_dir,
    )


def summary_lines(request: EnsembleRequest, result: EnsembleResult) -> list[str]:
    """What `orchestrator ensemble` prints: notes, the ensemble's dev scores and their gain over
    the best member, where the files went and the MLflow run."""
    name = f"{request.select}-{request.top} {request.method}"
    lines = [f"ranked on {result.summary['metric']}: {result.summary['candidates']}"]
    lines += [f"note: {note}" for note in result.notes]
    if "top" in result.summary:
        top_overall = result.summary["top"]["dev"][OVERALL]
        lines.append(f"top-{request.top} {request.method}   {OVERALL} {top_overall:.4f}")
    lines.append(f"ensemble ({name}, {len(result.selected)} members)")
    for key, value in result.dev.items():
        gained = result.summary["gain_over_best_member"][key]
        lines.append(f"{key:14s} {value:.4f}  ({gained:+.4f} vs best member)")
    lines.append(k_curve_line(result.summary[K_CURVE_KEY]))
    lines.append(f"predictions: {result.out_dir} ({len(result.files)} files)")
    if result.run_id:
        lines.append(f"mlflow run:  {result.run_id}")
    if result.registered:
        lines.append(f"registered:  {result.registered}")
    return lines
