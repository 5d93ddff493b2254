"""The one home of member choice: which of a sweep's runs may join (finished, feasible, on the
Pareto front for `--select pareto`; a study's completed confirm runs), their ranking by a metric,
the check that K of them exist, and the selection itself: the top K, or Caruana et al.'s greedy
forward selection with replacement on dev ("Ensemble selection from libraries of models",
2004)."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from model.checkpoint import weights_dropped
from model.evaluate import (
    OVERALL,
    metric_mode,
)
from orchestrator.contract import (
    ARM_PARAM,
    BEST_CHECKPOINT,
    CONFIRM_PHASE,
    EXTENSION_TAG,
    FINISHED_STATES,
    PHASE_PARAM,
    RESULTS_DIR_TAG,
    STUDY_ARMS_PARAM,
    SweepLayout,
    best_key,
    study_phase_dir,
)
from orchestrator.ensemble.combine import ensemble_dev_metrics
from orchestrator.ensemble.member_predictions import (
    MemberLibrary,
)
from orchestrator.ensemble.request import (
    Candidate,
    EnsembleError,
    EnsembleRequest,
    default_metric,
    greedy_metric,
)
from orchestrator.objectives import judge, sweep_goals
from orchestrator.tracking.store import StoredRun, StoredSweep


def greedy_forward_selection(
    num_models: int, score: Callable[[list[int]], float], steps: int
) -> tuple[list[int], float]:
    """Caruana et al.'s ensemble selection: start empty, `steps` times add (with replacement)
    the model whose addition scores best, and return the best-scoring prefix and its score.

    Ties go to the lower model index (the library is ordered best-first), then the shorter prefix.
    """
    if num_models < 1 or steps < 1:
        raise ValueError(f"greedy selection needs models and steps, got {num_models}, {steps}")
    chosen: list[int] = []
    best: tuple[list[int], float] = ([], -math.inf)
    for _ in range(steps):
        scores = [score([*chosen, i]) for i in range(num_models)]
        pick = int(np.argmax(scores))  # first maximum: the better-ranked model
        chosen.append(pick)
        if scores[pick] > best[1]:
            best = (list(chosen), scores[pick])
    return best


def rank_candidates(candidates: Sequence[Candidate], mode: str = "max") -> list[Candidate]:
    """Best first by `value` (`mode` max or min); ties keep the given (start-time) order."""
    sign = -1.0 if mode == "max" else 1.0
    indexed = sorted(enumerate(candidates), key=lambda pair: (sign * pair[1].value, pair[0]))
    return [candidate for _, candidate in indexed]


def check_top(
    top: int,
    finished: int,
    total: int,
    sweep: str,
    *,
    runs: str = "finished trial",
    kind: str = "sweep",
    left_out: str = "",
) -> None:
    """Raise EnsembleError unless 1 <= top <= the number of candidate `runs` (which it names,
    and what was `left_out`: "; 3 infeasible left out"); a study's candidates are its completed
    confirm runs."""
    if top < 1:
        raise EnsembleError(f"--top must be at least 1, got {top}")
    if finished == 0:
        raise EnsembleError(
            f"{kind} '{sweep}' has no {runs} yet (of {total}); nothing to ensemble"
        )
    if top > finished:
        raise EnsembleError(
            f"{kind} '{sweep}' has {finished} {runs}{'s' if finished != 1 else ''} "
            f"(of {total}{left_out}); --top {top} asks for more: use --top {finished} or fewer"
        )


def best_member(member_scores: Sequence[Mapping[str, float]], metric: str = OVERALL) -> int:
    """Index of the member with the best dev `metric` (first one on ties)."""
    return int(np.argmax([scores[metric] for scores in member_scores]))


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
    # A sweep's retention setting deleted these trials' weights (sweep/retention.py): read from
    # the checkpoint, which says so as soon as it happens, not from the MLflow tag set later.
    dropped = {c.run_id for c in candidates if c.checkpoint and weights_dropped(c.checkpoint)}
    if dropped:
        candidates = [c for c in candidates if c.run_id not in dropped]
        left_out = f"; {len(dropped)} whose weights retention dropped left out"
        eligible = replace(eligible, note=eligible.note + left_out)
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
        check_top(request.top, len(ranked), len(stored.trials), stored.name,
                  runs=eligible.noun, left_out=eligible.note)  # fmt: skip
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
    judgement = judge(goals, [(run.state, run.metrics) for run in stored.trials])
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
