"""YAML space -> Optuna: distributions, conditionals, samplers, PRUNED recording of ASHA stops."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path
from typing import Any

import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState

from orchestrator.config import apply_params
from orchestrator.contract import EPOCHS_LEFT
from orchestrator.search import (
    ORPHAN_ATTR,
    DefineByRun,
    PruningAwareOptunaSearch,
    grid,
    make_sampler,
    sample_configs,
)
from orchestrator.space import SpaceError, parse_space

REPO = Path(__file__).resolve().parents[2]

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


def test_define_by_run_builds_the_declared_distributions() -> None:
    space = make_space()
    study = optuna.create_study(direction="maximize")
    trial = study.ask({})
    DefineByRun(space)(trial)
    dists = trial.distributions
    assert dists["optim.lr"] == FloatDistribution(1e-5, 1e-3, log=True)
    assert dists["smart.weight"] == CategoricalDistribution([0.0, 2.0])
    assert dists["schedule.order"] == CategoricalDistribution(
        ['["sst", "para", "sts"]', '["sts", "para", "sst"]']
    )
    if trial.params["smart.weight"] > 0:
        assert dists["smart.epsilon"] == FloatDistribution(1e-6, 1e-4, log=True)
        assert dists["smart.steps"] == IntDistribution(1, 3)
    else:
        assert "smart.epsilon" not in dists and "smart.steps" not in dists
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


def searcher(tmp_path: Path, **changes: Any) -> PruningAwareOptunaSearch:
    return PruningAwareOptunaSearch(make_space(**changes), storage=f"sqlite:///{tmp_path}/o.db")


def epoch_result(value: float, epoch: int, left: int) -> dict[str, Any]:
    return {"dev/overall": value, "training_iteration": epoch, "epoch": epoch, EPOCHS_LEFT: left}


def test_asha_stopped_trial_is_recorded_pruned_with_its_last_value(tmp_path: Path) -> None:
    search = searcher(tmp_path)
    for trial_id in ("stopped", "finished"):
        search.suggest(trial_id)
    # Epoch 1 goes through on_trial_result; ASHA's STOP result reaches only on_trial_complete.
    search.on_trial_result("stopped", epoch_result(0.30, 1, 2))
    search.on_trial_complete("stopped", epoch_result(0.35, 2, 1))
    search.on_trial_result("finished", epoch_result(0.40, 1, 2))
    search.on_trial_result("finished", epoch_result(0.50, 2, 1))
    search.on_trial_complete("finished", epoch_result(0.55, 3, 0))

    study = optuna.load_study(study_name="unit", storage=f"sqlite:///{tmp_path}/o.db")
    by_id = {t.user_attrs["ray_trial_id"]: t for t in study.trials}
    stopped, finished = by_id["stopped"], by_id["finished"]
    assert stopped.state == TrialState.PRUNED
    assert stopped.value == pytest.approx(0.35)
    assert stopped.intermediate_values == {1: 0.30, 2: 0.35}
    assert finished.state == TrialState.COMPLETE
    assert finished.value == pytest.approx(0.55)
    assert finished.intermediate_values == {1: 0.40, 2: 0.50, 3: 0.55}


def test_plain_ray_optuna_search_would_mark_it_complete(tmp_path: Path) -> None:
    """The bug being fixed: Ray's own OptunaSearch records the ASHA-stopped trial as COMPLETE."""
    from ray.tune.search.optuna import OptunaSearch

    space = make_space()
    plain = OptunaSearch(space=DefineByRun(space), metric="dev/overall", mode="max")
    plain.suggest("stopped")
    plain.on_trial_result("stopped", epoch_result(0.30, 1, 2))
    plain.on_trial_complete("stopped", epoch_result(0.35, 2, 1))
    assert plain._ot_study.trials[0].state == TrialState.COMPLETE


def test_errors_and_non_finite_metrics_fail_the_trial(tmp_path: Path) -> None:
    search = searcher(tmp_path)
    for trial_id in ("crashed", "nan"):
        search.suggest(trial_id)
    search.on_trial_complete("crashed", None, error=True)
    search.on_trial_complete("nan", epoch_result(math.nan, 1, 0))
    states = {t.user_attrs["ray_trial_id"]: t.state for t in search.study.trials}
    assert states == {"crashed": TrialState.FAIL, "nan": TrialState.FAIL}


def test_repeats_rerun_each_config_with_the_next_seed(tmp_path: Path) -> None:
    search = searcher(tmp_path, repeats=3)
    configs = [search.suggest(f"t{i}") for i in range(6)]
    assert [c["seed"] for c in configs] == [0, 1, 2, 0, 1, 2]  # tiny.yaml has seed 0
    for group in (configs[:3], configs[3:]):
        without_seed = [{k: v for k, v in c.items() if k != "seed"} for c in group]
        assert without_seed[0] == without_seed[1] == without_seed[2]
    assert configs[0]["optim.lr"] != configs[3]["optim.lr"]
    assert [t.user_attrs["group"] for t in search.study.trials] == [0, 0, 0, 3, 3, 3]


def test_restore_fails_trials_asked_after_the_saved_state(tmp_path: Path) -> None:
    search = searcher(tmp_path)
    search.suggest("kept")
    search.save(str(tmp_path / "searcher.pkl"))
    search.suggest("lost")  # the driver dies before saving again
    restored = searcher(tmp_path)
    restored.restore(str(tmp_path / "searcher.pkl"))
    trials = {t.user_attrs["ray_trial_id"]: t for t in restored.study.trials}
    assert trials["lost"].state == TrialState.FAIL and trials["lost"].user_attrs[ORPHAN_ATTR]
    assert trials["kept"].state == TrialState.RUNNING
    restored.on_trial_complete("kept", epoch_result(0.5, 1, 0))
    assert restored.study.trials[0].state == TrialState.COMPLETE
