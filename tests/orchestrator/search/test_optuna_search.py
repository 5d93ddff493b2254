"""YAML space -> Optuna: distributions, conditionals, samplers, PRUNED recording of ASHA stops."""

from __future__ import annotations

import importlib.util
import math
import pickle
from pathlib import Path
from typing import Any

import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState

from orchestrator.config import apply_params
from orchestrator.contract import EPOCHS_LEFT, NONFINITE_LOSS
from orchestrator.search.optuna_search import (
    FAIL_REASON_ATTR,
    ORPHAN_ATTR,
    DefineByRun,
    SweepStudy,
    grid,
    make_sampler,
    sample_configs,
)
from orchestrator.space.schema import SpaceError, parse_space

REPO = Path(__file__).resolve().parents[3]

SPACE = {
    "name": "unit",
    "base": str(REPO / "configs" / "tiny.yaml"),
    "seed": 3,
    "space": {
        "optim.lr": {"float": [1e-5, 1e-3], "log": True},
        "smart.weight": {"choice": [0.0, 2.0]},
        "smart.epsilon": {"float": [1e-6, 1e-4], "log": True, "when": {"smart.weight": {"gt": 0}}},
        "smart.steps": {"int": [1, 3], "when": {"smart.weight": {"gt": 0}}},
        "schedule.order": {"choice": [["sst", "para", "sts"], ["sts", "para", "sst"]]},
        "model.pooling": "mean",
    },
}


def make_space(**changes: Any):
    return parse_space({**SPACE, **changes})


@pytest.mark.parametrize("weight", [0.0, 2.0])
def test_define_by_run_builds_the_declared_distributions(weight: float) -> None:
    space = make_space()
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(0))
    study.enqueue_trial({"smart.weight": weight})  # each branch of the condition, every run
    trial = study.ask()
    DefineByRun(space)(trial)
    dists = trial.distributions
    assert trial.params["smart.weight"] == weight
    assert dists["optim.lr"] == FloatDistribution(1e-5, 1e-3, log=True)
    assert dists["smart.weight"] == CategoricalDistribution([0.0, 2.0])
    assert dists["schedule.order"] == CategoricalDistribution(
        ['["sst", "para", "sts"]', '["sts", "para", "sst"]']
    )
    conditional = {
        "smart.epsilon": FloatDistribution(1e-6, 1e-4, log=True),
        "smart.steps": IntDistribution(1, 3),
    }
    assert {k: dists[k] for k in conditional if k in dists} == (conditional if weight else {})
    assert "model.pooling" not in dists  # fixed values are not searched


@pytest.mark.parametrize("weight", [0.0, 2.0])
def test_conditional_parameters_follow_their_condition(weight: float) -> None:
    fixed = {
        "optim.lr": 1e-4,
        "smart.weight": weight,
        "smart.epsilon": 1e-5,
        "smart.steps": 2,
        "schedule.order": '["sts", "para", "sst"]',
    }
    values = DefineByRun(make_space())(optuna.trial.FixedTrial(fixed))
    expected = {
        "optim.lr": 1e-4,
        "smart.weight": weight,
        "schedule.order": ("sts", "para", "sst"),  # decoded back from Optuna's string
        "model.pooling": "mean",
    }
    if weight > 0:
        expected.update({"smart.epsilon": 1e-5, "smart.steps": 2})
    assert values == expected
    cfg = apply_params(make_space().base, values)
    assert cfg.schedule.order == ("sts", "para", "sst") and cfg.smart.weight == weight


def test_sampled_configs_cover_both_branches_and_stay_in_range() -> None:
    configs = sample_configs(make_space(sampler="random"), 30)
    with_smart = [c for c in configs if c["smart.weight"] > 0]
    without = [c for c in configs if c["smart.weight"] == 0]
    assert with_smart and without
    assert all("smart.epsilon" in c and 1e-6 <= c["smart.epsilon"] <= 1e-4 for c in with_smart)
    assert all("smart.epsilon" not in c for c in without)
    assert all(1e-5 <= c["optim.lr"] <= 1e-3 for c in configs)
    # Log-uniform: about half the draws fall below the geometric midpoint 1e-4.
    assert 6 <= sum(c["optim.lr"] < 1e-4 for c in configs) <= 24


def test_sampling_is_reproducible_from_the_seed() -> None:
    assert sample_configs(make_space(), 4) == sample_configs(make_space(), 4)
    assert sample_configs(make_space(), 4) != sample_configs(make_space(seed=4), 4)


def test_grid_enumerates_choices_ints_and_stepped_floats() -> None:
    space = make_space(
        sampler="grid",
        space={
            "optim.epochs": {"int": [1, 3]},
            "optim.warmup_ratio": {"float": [0.0, 0.2], "step": 0.1},
            "model.pooling": {"choice": ["cls", "mean"]},
        },
    )
    values = grid(space)
    assert values["optim.epochs"] == [1, 2, 3]
    assert values["optim.warmup_ratio"] == pytest.approx([0.0, 0.1, 0.2])
    assert values["model.pooling"] == ["cls", "mean"]
    drawn = sample_configs(space, 18)
    distinct = {
        (c["optim.epochs"], round(c["optim.warmup_ratio"], 6), c["model.pooling"]) for c in drawn
    }
    assert len(distinct) == 18  # the grid sampler visits every point once


@pytest.mark.parametrize("name", ["tpe", "random", "grid", "gp", "qmc", "cmaes"])
def test_every_sampler_name_builds(name: str) -> None:
    space = make_space(sampler=name, space={"model.pooling": {"choice": ["cls", "mean"]}})
    if name == "cmaes" and importlib.util.find_spec("cmaes") is None:
        with pytest.raises(SpaceError, match="sampler: cmaes needs the 'cmaes' package"):
            make_sampler(space)
        return
    assert isinstance(make_sampler(space), optuna.samplers.BaseSampler)


def study(tmp_path: Path, **changes: Any) -> SweepStudy:
    return SweepStudy(make_space(**changes), storage=f"sqlite:///{tmp_path}/o.db")


def epoch_result(value: float, epoch: int, left: int) -> dict[str, Any]:
    return {"dev/overall": value, "epoch": epoch, EPOCHS_LEFT: left}


def stored(tmp_path: Path) -> dict[str, optuna.trial.FrozenTrial]:
    """The persisted study's trials, by the driver's trial id (read back from the database)."""
    loaded = optuna.load_study(study_name="unit", storage=f"sqlite:///{tmp_path}/o.db")
    return {t.user_attrs["ray_trial_id"]: t for t in loaded.trials}


def test_a_trial_stopped_with_epochs_left_is_pruned_with_its_last_value(tmp_path: Path) -> None:
    sweep = study(tmp_path)
    for trial_id in ("stopped", "finished"):
        sweep.ask(trial_id)
    # Epoch 1 is reported while running; the scheduler's stopping result arrives only at the end.
    sweep.report("stopped", 0.30, 1)
    assert sweep.tell("stopped", epoch_result(0.35, 2, 1), step=2) == TrialState.PRUNED
    sweep.report("finished", 0.40, 1)
    sweep.report("finished", 0.50, 2)
    assert sweep.tell("finished", epoch_result(0.55, 3, 0), step=3) == TrialState.COMPLETE

    trials = stored(tmp_path)
    stopped, finished = trials["stopped"], trials["finished"]
    assert stopped.state == TrialState.PRUNED
    assert stopped.value == pytest.approx(0.35)
    assert stopped.intermediate_values == {1: 0.30, 2: 0.35}
    assert finished.state == TrialState.COMPLETE
    assert finished.value == pytest.approx(0.55)
    assert finished.intermediate_values == {1: 0.40, 2: 0.50, 3: 0.55}


def test_a_trial_is_told_once_and_results_after_its_end_are_ignored(tmp_path: Path) -> None:
    sweep = study(tmp_path)
    sweep.ask("t")
    sweep.report("t", 0.4, 1)
    assert sweep.tell("t", epoch_result(0.4, 1, 0), step=1) == TrialState.COMPLETE
    sweep.report("t", 0.9, 2)  # a late result: logged and dropped
    assert sweep.tell("t", epoch_result(0.9, 2, 0), step=2) is None
    assert sweep.tell("never-asked", epoch_result(0.9, 2, 0), step=2) is None
    trial = stored(tmp_path)["t"]
    assert trial.value == pytest.approx(0.4) and trial.intermediate_values == {1: 0.4}


def test_errors_and_non_finite_metrics_fail_the_trial(tmp_path: Path) -> None:
    sweep = study(tmp_path)
    for trial_id in ("crashed", "nan", "unstarted"):
        sweep.ask(trial_id)
    sweep.tell("crashed", None, step=0, error=True)
    diverged = {**epoch_result(math.nan, 1, 0), NONFINITE_LOSS: "loss is nan"}
    sweep.tell("nan", diverged, step=1)
    sweep.tell("unstarted", None, step=0)  # stopped before its first result
    trials = stored(tmp_path)
    assert {k: t.state for k, t in trials.items()} == {
        "crashed": TrialState.FAIL,
        "nan": TrialState.FAIL,
        "unstarted": TrialState.PRUNED,
    }
    assert trials["nan"].user_attrs[FAIL_REASON_ATTR] == "loss is nan"


def test_repeats_rerun_each_config_with_the_next_seed(tmp_path: Path) -> None:
    sweep = study(tmp_path, repeats=3)
    configs = [sweep.ask(f"t{i}") for i in range(6)]
    assert [c["seed"] for c in configs] == [0, 1, 2, 0, 1, 2]  # tiny.yaml has seed 0
    for group in (configs[:3], configs[3:]):
        without_seed = [{k: v for k, v in c.items() if k != "seed"} for c in group]
        assert without_seed[0] == without_seed[1] == without_seed[2]
    assert configs[0]["optim.lr"] != configs[3]["optim.lr"]
    assert [t.user_attrs["group"] for t in sweep.study.trials] == [0, 0, 0, 3, 3, 3]


def test_asking_again_for_a_trial_returns_its_params(tmp_path: Path) -> None:
    sweep = study(tmp_path)
    assert sweep.ask("t") == sweep.ask("t")
    assert len(sweep.study.trials) == 1


def test_restore_fails_trials_asked_after_the_saved_state(tmp_path: Path) -> None:
    sweep = study(tmp_path, repeats=2)
    kept = sweep.ask("kept")
    sweep.save(tmp_path / "searcher.pkl")
    sweep.ask("lost")  # the driver dies before saving again
    restored = study(tmp_path, repeats=2)
    restored.restore(tmp_path / "searcher.pkl")
    trials = stored(tmp_path)
    assert trials["lost"].state == TrialState.FAIL and trials["lost"].user_attrs[ORPHAN_ATTR]
    assert trials["kept"].state == TrialState.RUNNING
    restored.report("kept", 0.4, 1)
    restored.tell("kept", epoch_result(0.5, 2, 0), step=2)
    assert stored(tmp_path)["kept"].state == TrialState.COMPLETE
    # The repeat of "kept" that "lost" had taken is asked again, under its new trial id.
    again = restored.ask("again")
    assert again == {**kept, "seed": 1}


def test_a_study_pickles_without_its_connection_and_reopens_it(tmp_path: Path) -> None:
    sweep = study(tmp_path)
    sweep.ask("t")
    copy = pickle.loads(pickle.dumps(sweep))  # as Ray stores it in its experiment state
    copy.tell("t", epoch_result(0.5, 1, 0), step=1)
    assert stored(tmp_path)["t"].state == TrialState.COMPLETE
