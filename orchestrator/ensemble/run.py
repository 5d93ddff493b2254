"""`orchestrator ensemble`: read a sweep's trials from MLflow, predict with each member, combine,
and write `<results>/<sweep>/ensemble/` (leaderboard prediction files and metrics.json).

In four steps: rank the sweep's finished trials (a study's completed confirm runs), load the
members (`ensemble_members.py`), select (top-K, or greedy forward selection on dev), and write the
files and the MLflow run.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from model.checkpoint import write_json_atomic
from model.config import TASKS
from model.data_dir import quora_runs_notes
from model.evaluate import OVERALL, metric_mode, prediction_filename, write_predictions
from orchestrator.report import plots
from orchestrator.contract import (
    ARM_PARAM,
    BEST_CHECKPOINT,
    CONFIRM_PHASE,
    EXTENSION_TAG,
    K_CURVE_KEY,
    K_CURVE_PLOT,
    PARA_TRAIN_PARAM,
    PHASE_PARAM,
    RESULTS_DIR_TAG,
    STUDY_ARMS_PARAM,
    SWEEP_RUN_TAG,
    SWEEP_TAG,
    SweepLayout,
    best_key,
    study_phase_dir,
)
from orchestrator.ensemble.combine import (
    FINISHED_STATES,
    SPLITS,
    Candidate,
    EnsembleRequest,
    best_member,
    check_top,
    combine_tasks,
    default_metric,
    ensemble_dev_metrics,
    gain,
    greedy_forward_selection,
    greedy_metric,
    rank_candidates,
)
from orchestrator.ensemble.k_curve import k_curve, k_curve_line
from orchestrator.ensemble.manifest import remove_manifest, write_ensemble_manifest
from orchestrator.ensemble.member_predictions import DataResolver, MemberLibrary, MemberRun, load_members
from orchestrator.tracking.store import StoredRun, StoredSweep, find_sweep, log_ensemble_run
from orchestrator.report.tradeoffs import ensemble_runs

GREEDY_NOTE = "greedy selection chose its members on dev: its dev scores are optimistic"


@dataclass(frozen=True)
class Ranking:
    """The candidates, best first by `metric`, and which of the sweep's runs they are (said in the
    output: a study's completed confirm runs, a sweep's finished trials)."""

    metric: str
    candidates: list[Candidate]
    considered: str


@dataclass(frozen=True)
class Selection:
    """The members chosen (indices into the library, repeated for greedy selection's weights)
    and their ensemble's dev metrics; greedy selection also reports plain top-K beside it."""

    members: list[int]
    dev: dict[str, float]
    top_k: tuple[list[int], dict[str, float]] | None = None
    notes: list[str] = field(default_factory=list)


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
    summary: dict[str, Any] = field(default_factory=dict)
    registered: str | None = None  # models:/NAME/VERSION with --register NAME


def run_ensemble(
    request: EnsembleRequest,
    *,
    resolve_data: DataResolver | None = None,
    log_to_mlflow: bool = True,
    register: str | None = None,
    echo: Callable[[str], None] = lambda line: None,
) -> EnsembleResult:
    """Build the ensemble of a sweep (the newest one if `request.sweep` is None), write its
    outputs and log it as a run of the sweep's experiment.

    `resolve_data(configured_dir)` picks the data directory when `request.data_dir` is None (the
    CLI passes its --data-dir / $ORCHESTRATOR_DATA_DIR logic); `echo` gets progress lines.
    `register` names the MLflow model the ensemble becomes a new version of, on its run.
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
    if log_to_mlflow:
        result.run_id = _log_run(uri, stored, request, result)
    if register and result.run_id:
        from orchestrator.registry.models import register_model  # mlflow.pyfunc: only if asked

        result.registered = register_model(uri, result.run_id, result.out_dir, register).uri
    return result


def ranked_candidates(stored: StoredSweep, request: EnsembleRequest) -> Ranking:
    """The sweep's finished trials (a study's completed confirm runs), best first by --metric or
    else the trials' `default_metric`; EnsembleError unless there are at least `top` of them."""
    study = STUDY_ARMS_PARAM in stored.parent.params
    # Only trials that met the sweep's constraints; with --select pareto, its Pareto front.
    eligible = ensemble_runs(
        stored, candidate_runs(stored.trials, study=study), pareto=request.pareto
    )
    runs = eligible.runs
    metric = request.metric or default_metric([run.metrics for run in runs])
    candidates = candidates_from_runs(runs, metric, sweep_roots(stored, request.results_dir))
    ranked = rank_candidates(candidates, metric_mode(metric))
    if study:
        confirm = [run for run in stored.trials if run.params.get(PHASE_PARAM) == CONFIRM_PHASE]
        check_top(request.top, len(ranked), len(confirm), stored.name,
                  runs="completed confirm run", kind="study")  # fmt: skip
        tuned = len(stored.trials) - len(confirm)
        considered = (
            f"{len(ranked)} completed confirm runs of study '{stored.name}' (of {len(confirm)}"
            + (f"; its {tuned} tune runs left out)" if tuned else ")")
        )
    else:
        check_top(request.top, len(ranked), len(stored.trials), stored.name, runs=eligible.noun)
        considered = (
            f"{len(ranked)} {eligible.noun}s of sweep '{stored.name}' (of {len(stored.trials)}"
            f"{eligible.note})"
        )
    return Ranking(metric, ranked, considered)


def candidate_runs(trials: Sequence[StoredRun], *, study: bool) -> list[StoredRun]:
    """The runs that may join: a sweep's completed or ASHA-stopped trials; a study's completed
    confirm runs only, each arm's chosen config at the full budget (a tune run may have trained
    the same config on the same seed, so with it one training run could join twice)."""
    if study:
        return [
            run for run in trials
            if run.status == "FINISHED" and run.state == "completed"
            and run.params.get(PHASE_PARAM) == CONFIRM_PHASE
        ]  # fmt: skip
    return [run for run in trials if run.status == "FINISHED" and run.state in FINISHED_STATES]


def sweep_roots(stored: StoredSweep, results_dir: Path) -> list[Path]:
    """Where the sweep's trial directories may be: where it ran, then under --results-dir (if
    it moved since)."""
    ran_in = stored.parent.tags.get(RESULTS_DIR_TAG)
    return [Path(ran_in or Path(results_dir) / stored.name), Path(results_dir) / stored.name]


def candidates_from_runs(
    runs: Sequence[StoredRun], metric: str, roots: Sequence[Path]
) -> list[Candidate]:
    """The runs that logged `metric` as candidates (unranked), each with its best checkpoint."""
    out = []
    for run in runs:
        value = run.metrics.get(best_key(metric), run.metrics.get(metric))
        if value is None:
            continue
        places = checkpoint_places(run, roots)
        checkpoint = next((p for p in places if p.is_dir()), places[0])
        out.append(Candidate(run.run_id, run.run_name, run.trial_id, run.state, value, checkpoint))
    return out


def checkpoint_places(run: StoredRun, roots: Sequence[Path]) -> list[Path]:
    """Where a trial's best checkpoint may be: the tagged path first, then its directory under
    each sweep root (a study's trial in its phase's, `tune-<arm>/` or `confirm/`; an extension's
    in `extend-<n>/`)."""
    places = [Path(p) for p in (run.tags.get(BEST_CHECKPOINT),) if p]
    phase = run.params.get(PHASE_PARAM)
    own = study_phase_dir(phase, run.params.get(ARM_PARAM, "")) if phase else None
    subdirs = [d for d in (own or run.tags.get(EXTENSION_TAG), "") if d is not None]
    for root in roots:
        places += [SweepLayout(root / d).trial(run.trial_id).best_checkpoint for d in subdirs]
    return places


def select_members(library: MemberLibrary, request: EnsembleRequest, metric: str) -> Selection:
    """The K best-ranked members, or Caruana et al.'s greedy forward selection of K steps on dev
    (scored by `metric` on dev: a selection metric by its dev namesake, with a note) with the
    plain top-K reported beside it."""
    dev_of = [member.predictions["dev"] for member in library.members]

    def ensemble_dev(indices: Sequence[int]) -> dict[str, float]:
        members = [dev_of[i] for i in indices]
        return ensemble_dev_metrics(members, library.inputs.labels, request.method)

    top_k = list(range(request.top))
    top_dev = ensemble_dev(top_k)
    if not request.greedy:
        return Selection(top_k, top_dev)
    scored_on = greedy_metric(metric)
    if scored_on is None:  # EnsembleRequest rejects these
        raise ValueError(f"greedy selection cannot score ensembles by {metric}")
    notes = [GREEDY_NOTE]
    if scored_on != metric:
        notes.append(
            f"greedy selection scored its steps by {scored_on}: the ensemble predicts dev, not "
            f"the selection split whose {metric} ranked the trials"
        )
    chosen, _ = greedy_forward_selection(
        len(dev_of), lambda indices: ensemble_dev(indices)[scored_on], steps=request.top
    )
    return Selection(chosen, ensemble_dev(chosen), top_k=(top_k, top_dev), notes=notes)


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
    plots.k_curve(summary[K_CURVE_KEY], out_dir / K_CURVE_PLOT)  # logged with the run's files
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
