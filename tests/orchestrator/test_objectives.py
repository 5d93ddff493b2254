"""Constraints and several objectives: the space schema, the Optuna study (directions, Optuna 5's
constraint values), the sweep's feasible best, the report's and the ensemble's Pareto front.

Trials are fake last results told to a real (SQLite) Optuna study and stored as MLflow-like runs;
every Pareto front is checked against one computed here by brute force from the same metrics.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from optuna.trial import TrialState

from model.evaluate import overall_score
from orchestrator.contract import (
    EPOCHS_LEFT,
    STATE_TAG,
    SWEEP_METRIC_PARAM,
    SWEEP_MODE_PARAM,
    TRIAL_ID_TAG,
    best_key,
)
from orchestrator.ensemble.request import EnsembleError, EnsembleRequest
from orchestrator.ensemble.select import ranked_candidates
from orchestrator.objectives import (
    Constraint,
    Objective,
    constraint_values,
    is_feasible,
    judge,
    judge_outcomes,
    objective_params,
    pareto_front,
    sweep_goals,
)
from orchestrator.report.tradeoffs import judged_frame, objectives_markdown
from orchestrator.report.trials_table import trials_frame
from orchestrator.search.optuna_search import SweepStudy
from orchestrator.space.schema import SearchSpace, SpaceError, parse_space
from orchestrator.sweep.listeners import TrialSnapshot
from orchestrator.sweep.outcome import SweepOutcome, TrialOutcome, trial_outcome
from orchestrator.tracking.store import StoredRun, StoredSweep

REPO = Path(__file__).resolve().parents[2]
TINY = str(REPO / "configs" / "tiny.yaml")
TASKS3 = ["dev/sst_acc", "dev/para_acc", "dev/sts_corr"]
SPACE: dict[str, Any] = {
    "name": "goals",
    "base": TINY,
    "sampler": "random",
    "num_samples": 12,
    "space": {"optim.lr": {"float": [1e-5, 1e-3], "log": True}},
}


def space(**changes: Any) -> SearchSpace:
    return parse_space({**SPACE, **changes}, source="goals.yaml")


# ------------------------------------------------------------------------------------ the schema


def test_a_metric_list_with_one_mode_or_one_mode_each() -> None:
    one = space(metric=TASKS3, mode="max")
    assert one.objectives == tuple(Objective(m, "max") for m in TASKS3)
    assert (one.metric, one.mode, one.multi_objective) == ("dev/sst_acc", "max", True)
    each = space(metric=["dev/overall", "train/loss"], mode=["max", "min"])
    assert [o.mode for o in each.objectives] == ["max", "min"]
    # No mode: each metric's own direction; no scheduler: FIFO, never ASHA.
    default = space(metric=["dev/overall", "train/loss"])
    assert [o.mode for o in default.objectives] == ["max", "min"]
    assert default.scheduler.name == "none"
    single = space()
    assert single.objectives == (Objective("dev/overall", "max"),) and not single.multi_objective
    assert single.scheduler.name == "asha"


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"metric": TASKS3, "mode": ["max", "max"]}, "goals.yaml: mode: 2 modes for 3 metrics"),
        ({"metric": "dev/overall", "mode": ["max"]}, "goals.yaml: mode: a list of modes needs"),
        ({"metric": ["dev/sst_acc", "dev/sst_acc"]}, "goals.yaml: metric: dev/sst_acc listed"),
        ({"metric": ["dev/sst_acc", "dev/nope"]}, "goals.yaml: metric: 'dev/nope' is not one"),
        ({"metric": []}, "goals.yaml: metric: expected a metric name or a non-empty list"),
        ({"metric": TASKS3, "mode": ["max", "up", "max"]}, "goals.yaml: mode: expected max or"),
        ({"constraints": {"dev/nope": {"ge": 0.4}}}, "goals.yaml: constraints.dev/nope: 'dev/"),
        ({"constraints": {"dev/sst_acc": {"gt": 0.4}}}, "constraints.dev/sst_acc.gt: unknown"),
        ({"constraints": {"dev/sst_acc": {"ge": "x"}}}, "constraints.dev/sst_acc.ge: expected a"),
        ({"constraints": {"dev/sst_acc": {}}}, "goals.yaml: constraints.dev/sst_acc: expected"),
        ({"constraints": {"dev/sst_acc": {"ge": 0.6, "le": 0.5}}}, "ge 0.6 exceeds le 0.5"),
        ({"constraints": [0.4]}, "goals.yaml: constraints: expected a mapping"),
        ({"constraints": {"selection/sst_acc": {"ge": 0.4}}}, "needs a selection split"),
        ({"metric": TASKS3, "scheduler": "asha"}, "goals.yaml: scheduler: ASHA stops trials"),
        ({"metric": TASKS3, "scheduler": {"name": "asha"}}, "goals.yaml: scheduler: ASHA"),
        ({"metric": TASKS3, "sampler": "cmaes"}, "goals.yaml: sampler: cmaes optimises one"),
        ({"constraints": {"dev/sst_acc": {"ge": 0.4}}, "sampler": "cmaes"}, "cmaes ignores"),
    ],
)
def test_bad_objectives_and_constraints_are_one_line_errors(
    changes: dict[str, Any], message: str
) -> None:
    with pytest.raises(SpaceError, match=message.replace("(", r"\(")) as err:
        space(**changes)
    assert "\n" not in str(err.value)


def test_a_constraint_on_dev_with_a_selection_split_is_refused() -> None:
    tiny = yaml.safe_load(Path(TINY).read_text())
    base = {**tiny, "data": {**tiny["data"], "selection": 0.1}}
    with pytest.raises(SpaceError, match=r"constraints\.dev/sst_acc: .* use selection/sst_acc"):
        space(base=base, constraints={"dev/sst_acc": {"ge": 0.4}})


def test_constraints_parse_to_bounds_and_violations() -> None:
    parsed = space(constraints={"dev/sst_acc": {"ge": 0.45}, "dev/sts_corr": {"le": 0.9}})
    sst, sts = parsed.constraints
    assert (sst, sts) == (Constraint("dev/sst_acc", ge=0.45), Constraint("dev/sts_corr", le=0.9))
    # Optuna's convention: <= 0 is met; the distance to the bound otherwise; inf when missing.
    assert constraint_values(parsed.constraints, {"dev/sst_acc": 0.5, "dev/sts_corr": 0.95}) == (
        pytest.approx({"dev/sst_acc": -0.05, "dev/sts_corr": 0.05})
    )
    assert constraint_values(parsed.constraints, {})["dev/sst_acc"] == math.inf
    assert is_feasible(parsed.constraints, {"dev/sst_acc": 0.45, "dev/sts_corr": 0.9})
    assert not is_feasible(parsed.constraints, {"dev/sst_acc": 0.449, "dev/sts_corr": 0.0})
    both = Constraint("dev/sts_corr", ge=0.2, le=0.4)
    assert [both.violation(v) for v in (0.1, 0.3, 0.5)] == pytest.approx([0.1, -0.1, 0.1])


# ------------------------------------------------------------------------- fake trials, told


def last_result(metrics: dict[str, float], *, drift: float = 0.0) -> dict[str, float]:
    """A trial's last result: its best epoch's metrics (`best/...`) and a last epoch `drift`
    below them, as the trainable reports."""
    result = {best_key(k): v for k, v in metrics.items()}
    result.update({k: v - drift for k, v in metrics.items()})
    result.update({"epoch": 3.0, EPOCHS_LEFT: 0.0})
    return result


def tell_all(study: SweepStudy, results: list[dict[str, float]]) -> list[int]:
    """Ask one trial per result and tell it; returns the Optuna trial numbers."""
    for i, result in enumerate(results):
        study.ask(f"t{i}")
        assert study.tell(f"t{i}", result, step=3) == TrialState.COMPLETE
    return [study.asked[f"t{i}"] for i in range(len(results))]


def stored_runs(results: list[dict[str, float]]) -> list[StoredRun]:
    """The trials as MLflow runs, as MlflowRelay logs them (best-epoch metrics, state tag)."""
    return [
        StoredRun(
            run_id=f"run{i}",
            run_name=f"trial {i}",
            status="FINISHED",
            params={},
            metrics={k: v for k, v in r.items() if k.startswith("best/")},
            tags={STATE_TAG: "completed", TRIAL_ID_TAG: f"t{i}"},
            start_ms=i,
            end_ms=i + 1,
        )
        for i, r in enumerate(results)
    ]


def stored_sweep(parsed: SearchSpace, runs: list[StoredRun]) -> StoredSweep:
    params = {
        SWEEP_METRIC_PARAM: parsed.metric,
        SWEEP_MODE_PARAM: parsed.mode,
        **objective_params(parsed.objectives, parsed.constraints),
    }
    parent = StoredRun("parent", "goals (sweep)", "FINISHED", params, {}, {}, 0, 1)
    return StoredSweep(name="goals", experiment_id="1", parent=parent, trials=runs)


def brute_force_front(points: list[tuple[float, ...]], signs: list[float]) -> set[int]:
    """Indices no other point beats: at least as good everywhere and better somewhere."""
    front = set()
    for i, p in enumerate(points):
        beaten = False
        for j, q in enumerate(points):
            better_or_equal = all(s * (b - a) >= 0 for a, b, s in zip(p, q, signs, strict=True))
            strictly = any(s * (b - a) > 0 for a, b, s in zip(p, q, signs, strict=True))
            beaten |= j != i and better_or_equal and strictly
        if not beaten:
            front.add(i)
    return front


def three_objective_trials(count: int = 24) -> list[dict[str, float]]:
    rng = np.random.default_rng(7)
    trials = []
    for _ in range(count):
        # Coarse values (dev accuracies on a small dev set): ties on single metrics happen.
        sst, para, sts = (float(v) for v in np.round(rng.uniform(0.2, 0.6, size=3), 2))
        overall = overall_score(sst, para, sts)  # what the ensemble ranks on by default
        trials.append(
            {"dev/sst_acc": sst, "dev/para_acc": para, "dev/sts_corr": sts, "dev/overall": overall}
        )
    trials.append(dict(trials[0]))  # an exact duplicate: on the front together or not at all
    return trials


def test_three_objective_front_matches_brute_force_optuna_report_and_ensemble(
    tmp_path: Path,
) -> None:
    parsed = space(metric=TASKS3, mode=["max", "max", "min"])
    signs = [1.0, 1.0, -1.0]
    metrics = three_objective_trials()
    results = [last_result(m, drift=0.05 * (i % 3)) for i, m in enumerate(metrics)]
    study = SweepStudy(parsed, storage=f"sqlite:///{tmp_path}/o.db")
    numbers = tell_all(study, results)
    points = [tuple(m[k] for k in TASKS3) for m in metrics]
    expected = brute_force_front(points, signs)
    assert 1 < len(expected) < len(points)

    # Optuna was told each trial's best-epoch point (not the last epoch's), in three directions.
    optuna_front = {numbers.index(t.number) for t in study.study.best_trials}
    assert [d.name for d in study.study.directions] == ["MAXIMIZE", "MAXIMIZE", "MINIMIZE"]
    assert study.study.trials[numbers[1]].values == list(points[1])
    assert optuna_front == expected
    # The pure function, the report's judgement and its trials.parquet column agree.
    assert set(pareto_front(points, parsed.objectives)) == expected
    runs = stored_runs(results)
    goals = sweep_goals(stored_sweep(parsed, runs).parent.params)
    assert goals.objectives == parsed.objectives
    judgement = judge(goals, [(run.state, run.metrics) for run in runs])
    assert {i for i, on in enumerate(judgement.pareto) if on} == expected
    frame = judged_frame(trials_frame(runs, {}), runs, goals)
    assert set(frame.index[frame["pareto"]]) == expected
    table = objectives_markdown(runs, goals, sweep="goals")
    listed = {i for i in range(len(runs)) if f"| `t{i}` |" in table}
    assert listed == expected and f"Pareto front ({len(expected)} of {len(runs)}" in table
    # The sweep's own summary marks the same trials.
    outcomes = [outcome_of(parsed, f"t{i}", r) for i, r in enumerate(results)]
    judged = judge_outcomes(parsed, list(zip(outcomes, results, strict=True)))
    assert {i for i, t in enumerate(judged) if t.pareto} == expected
    # The ensemble's --select pareto ranks exactly the front.
    sweep = stored_sweep(parsed, runs)
    ranking = ranked_candidates(sweep, EnsembleRequest(top=2, select="pareto"))
    assert {int(c.trial_id[1:]) for c in ranking.candidates} == expected
    assert "Pareto-front trials" in ranking.considered


def outcome_of(parsed: SearchSpace, trial_id: str, result: dict[str, float]) -> TrialOutcome:
    snapshot = TrialSnapshot(trial_id, "TERMINATED", {"optim.lr": 1e-4}, result)
    return trial_outcome(parsed, snapshot)


def test_a_constrained_sweep_whose_unconstrained_best_is_infeasible_picks_the_feasible_best(
    tmp_path: Path,
) -> None:
    parsed = space(constraints={"dev/sst_acc": {"ge": 0.45}}, sampler="tpe")
    metrics = [
        {"dev/overall": 0.52, "dev/sst_acc": 0.30},  # best overall, but misses SST's floor
        {"dev/overall": 0.47, "dev/sst_acc": 0.46},  # the feasible best
        {"dev/overall": 0.44, "dev/sst_acc": 0.50},
        {"dev/overall": 0.49, "dev/sst_acc": 0.449},  # just below the floor
    ]
    results = [last_result(m) for m in metrics]
    study = SweepStudy(parsed, storage=f"sqlite:///{tmp_path}/o.db")
    numbers = tell_all(study, results)
    # Optuna holds the violations (set_constraint) and its best trial is the feasible best.
    told = study.study.trials[numbers[0]].constraints
    assert told == {"dev/sst_acc": pytest.approx(0.15)}
    assert numbers.index(study.study.best_trial.number) == 1

    # The sweep's outcome: the best trial is the feasible one, and it says how many missed.
    outcomes = [outcome_of(parsed, f"t{i}", r) for i, r in enumerate(results)]
    sweep_outcome = SweepOutcome("goals", tmp_path, "uri", "p", "s", parsed.metric, parsed.mode)
    sweep_outcome.trials = judge_outcomes(parsed, list(zip(outcomes, results, strict=True)))
    assert [t.feasible for t in sweep_outcome.trials] == [False, True, True, False]
    assert sweep_outcome.best is not None and sweep_outcome.best.trial_id == "t1"
    summary = "\n".join(sweep_outcome.summary())
    assert "best dev/overall 0.4700" in summary
    assert "infeasible: 2 of 4 finished trials" in summary

    # The report: feasible column, the best feasible trial named, the unconstrained one too.
    runs = stored_runs(results)
    sweep = stored_sweep(parsed, runs)
    goals = sweep_goals(sweep.parent.params)
    assert goals.constraints == parsed.constraints
    frame = judged_frame(trials_frame(runs, {}), runs, goals)
    assert frame["feasible"].tolist() == [False, True, True, False]
    table = objectives_markdown(runs, goals, sweep="goals")
    assert "2 of 4 finished trials are feasible; infeasible ones (2) are left out" in table
    assert "Best feasible trial by `dev/overall`: `t1`" in table
    assert "Ignoring the constraints it would be `t0`" in table

    # The ensemble ranks feasible trials only, and says how many were left out.
    ranking = ranked_candidates(sweep, EnsembleRequest(top=2, metric="dev/overall"))
    assert [c.trial_id for c in ranking.candidates] == ["t1", "t2"]
    assert "2 infeasible left out" in ranking.considered
    with pytest.raises(EnsembleError, match="has 2 finished trials"):
        ranked_candidates(sweep, EnsembleRequest(top=3, metric="dev/overall"))


def test_a_multi_objective_study_ignores_intermediate_values_and_fails_nan(
    tmp_path: Path,
) -> None:
    study = SweepStudy(space(metric=TASKS3), storage=f"sqlite:///{tmp_path}/o.db")
    study.ask("a")
    study.report("a", 0.4, 1)  # Optuna keeps no intermediate values of several objectives
    nan = last_result({"dev/sst_acc": 0.4, "dev/para_acc": math.nan, "dev/sts_corr": 0.1})
    del nan[best_key("dev/para_acc")]
    assert study.tell("a", nan, step=1) == TrialState.FAIL
    study.ask("b")
    assert study.tell("b", None, step=0) == TrialState.PRUNED  # stopped before its first result


def test_pareto_selection_on_a_single_objective_sweep_is_a_one_line_error() -> None:
    parsed = space()
    runs = stored_runs([last_result({"dev/overall": 0.4})])
    with pytest.raises(EnsembleError, match=r"--select pareto .* use --select top"):
        ranked_candidates(stored_sweep(parsed, runs), EnsembleRequest(top=1, select="pareto"))


@pytest.mark.parametrize("sampler", ["tpe", "nsga2", "gp"])
def test_samplers_propose_from_a_constrained_multi_objective_history(
    tmp_path: Path, sampler: str
) -> None:
    """TPE, NSGA-II and GP read the stored constraint values without complaint."""
    parsed = space(metric=TASKS3[:2], constraints={"dev/sts_corr": {"ge": 0.3}}, sampler=sampler)
    study = SweepStudy(parsed, storage=f"sqlite:///{tmp_path}/o.db")
    trials = three_objective_trials(12)
    tell_all(study, [last_result(m) for m in trials])
    assert "optim.lr" in study.ask("next")
    kept = [i for i, m in enumerate(trials) if m["dev/sts_corr"] >= 0.3]
    front = brute_force_front([tuple(trials[i][k] for k in TASKS3[:2]) for i in kept], [1.0, 1.0])
    assert {t.number for t in study.study.best_trials} == {kept[j] for j in front}
