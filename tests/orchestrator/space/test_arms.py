"""The `arms` / `baseline` / `seeds` part of a search space: what it accepts, and every bad input
as an error naming the key."""

from __future__ import annotations

import pytest

from model.config import ConfigError, TrainConfig
from orchestrator.space.arms import parse_study


def fail(key: str, message: str) -> ConfigError:
    return ConfigError(f"space.yaml: {key}: {message}")


def study(raw, space_keys=()):
    return parse_study(raw, TrainConfig(), space_keys, fail)


def test_arms_seeds_and_default_baseline():
    spec = study({"arms": {"base": {}, "smart": {"smart.weight": 1.0}}, "seeds": 2})
    assert spec is not None
    assert [a.name for a in spec.arms] == ["base", "smart"]
    assert spec.baseline == "base"
    assert spec.seeds == (0, 1)
    assert spec.arm("smart").params == {"smart.weight": 1.0}
    assert spec.runs == 4
    assert spec.confirm_epochs == TrainConfig().optim.epochs


def test_named_baseline_seed_list_and_section_overrides():
    spec = study(
        {
            "arms": {"a": {"data.max_examples": {"sst": 10}}, "b": None},
            "baseline": "b",
            "seeds": [3, 7],
            "confirm_epochs": 2,
        }
    )
    assert spec.baseline == "b" and spec.seeds == (3, 7) and spec.confirm_epochs == 2
    assert spec.arm("a").params == {"data.max_examples.sst": 10}
    assert spec.arm("b").describe() == "base config"


def test_equivalence_and_correction_default_to_none_and_holm():
    spec = study({"arms": {"a": {}, "b": {"smart.weight": 1.0}}})
    assert spec is not None and spec.equivalence is None and spec.correction == "holm"
    spec = study(
        {"arms": {"a": {}, "b": {"smart.weight": 1.0}}, "equivalence": 0.005, "correction": "bh"}
    )
    assert spec is not None and spec.equivalence == 0.005 and spec.correction == "bh"
    assert study({"arms": {"a": {}}, "equivalence": 1}).equivalence == 1.0  # an int is a number


def test_no_arms_is_no_study():
    assert study({"num_samples": 3}) is None


@pytest.mark.parametrize(
    ("raw", "space_keys", "key"),
    [
        ({"arms": {"a": {"optim.lrr": 1e-4}}}, (), "arms.a.optim.lrr"),
        ({"arms": {"a": {"optim.lr": 1e-4}}}, ("optim.lr",), "arms.a.optim.lr"),
        ({"arms": {"a": {"optim.lr": -1.0}}}, (), "arms.a.optim.lr"),
        ({"arms": {"a": {"seed": 3}}}, (), "arms.a.seed"),
        ({"arms": {"a": {"optim.epochs": 3}}}, (), "arms.a.optim.epochs"),
        ({"arms": {"a": {"data.selection": 0.1}}}, (), "arms.a.data.selection"),
        ({"arms": {"a": {}}, "baseline": "b"}, (), "baseline"),
        ({"arms": {}}, (), "arms"),
        ({"arms": {"a": {}}, "seeds": [1, -2]}, (), "seeds"),
        ({"arms": {"a": {}}, "seeds": [1.5]}, (), "seeds"),
        ({"arms": {"a": {}}, "seeds": [1, 1]}, (), "seeds"),
        ({"arms": {"a": {}}, "seeds": 0}, (), "seeds"),
        ({"arms": {"a": {}}, "seeds": True}, (), "seeds"),
        ({"arms": {"a": {}}, "confirm_epochs": 0}, (), "confirm_epochs"),
        ({"arms": {"a b": {}}}, (), "arms.a b"),
        ({"seeds": 3}, (), "seeds"),
        ({"arms": {"a": {}}, "equivalence": 0}, (), "equivalence"),
        ({"arms": {"a": {}}, "equivalence": -0.005}, (), "equivalence"),
        ({"arms": {"a": {}}, "equivalence": "0.005"}, (), "equivalence"),
        ({"arms": {"a": {}}, "equivalence": True}, (), "equivalence"),
        ({"arms": {"a": {}}, "equivalence": float("inf")}, (), "equivalence"),
        ({"arms": {"a": {}}, "correction": "bonferroni"}, (), "correction"),
        ({"equivalence": 0.005}, (), "equivalence"),
        ({"correction": "bh"}, (), "correction"),
    ],
)
def test_bad_study_is_an_error_naming_the_key(raw, space_keys, key):
    with pytest.raises(ConfigError) as err:
        study(raw, space_keys)
    assert str(err.value).startswith(f"space.yaml: {key}: ")
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(
    ("arms", "message"),
    [
        (
            {"base": {}, "smart": {"smart.weight": 1.0}, "smart2": {"smart": {"weight": 1.0}}},
            "space.yaml: arms.smart2: the same settings as arm 'smart' (smart.weight=1.0; "
            "smart.weight=1.0): one variant under two names; drop one, or change what it "
            "overrides",
        ),
        (  # an override that sets the base config's own value changes nothing
            {"base": {}, "same": {"smart.weight": TrainConfig().smart.weight}},
            "space.yaml: arms.same: the same settings as arm 'base' (base config; "
            f"smart.weight={TrainConfig().smart.weight}): one variant under two names; ",
        ),
    ],
)
def test_two_arms_with_the_same_settings_are_an_error_naming_both(arms, message):
    with pytest.raises(ConfigError) as err:
        study({"arms": arms})
    assert str(err.value).startswith(message) and "\n" not in str(err.value)


def test_confirm_epochs_default_to_a_fixed_epochs_of_the_space():
    spec = study({"arms": {"a": {}}, "space": {"optim.epochs": 2}})
    assert spec is not None and spec.confirm_epochs == 2


def test_a_selection_split_makes_it_the_ranking_metric(tmp_path):
    from orchestrator.space.schema import SpaceError, parse_space

    base = {"data": {"selection": 0.1}}
    space = parse_space({"base": base, "arms": {"a": {}}}, source="s.yaml")
    assert space.metric == "selection/overall" and space.mode == "max"
    with pytest.raises(SpaceError, match=r"^s.yaml: metric: dev/overall would rank trials on dev"):
        parse_space({"base": base, "metric": "dev/overall", "arms": {"a": {}}}, source="s.yaml")


def test_seeds_as_a_race_run_seeds_0_to_max_in_rounds():
    arms = {"a": {}, "b": {"smart.weight": 1.0}}
    spec = study({"arms": arms, "seeds": {"min": 3, "max": 12, "step": 3}})
    assert spec is not None and spec.race is not None
    assert (spec.race.min, spec.race.max, spec.race.step, spec.race.futility) == (3, 12, 3, 0.1)
    assert spec.seeds == tuple(range(12)) and spec.runs == 24  # at most
    defaulted = study({"arms": arms, "seeds": {"min": 4, "max": 9}})
    assert defaulted is not None and defaulted.race is not None and defaulted.race.step == 4
    assert study({"arms": arms, "seeds": 3}).race is None  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("seeds", "key", "words"),
    [
        ({"min": 1, "max": 4}, "seeds", "2 <= min <= max"),
        ({"min": 5, "max": 4}, "seeds", "got min 5, max 4"),
        ({"min": 3}, "seeds", "a race needs max"),
        ({"min": 3, "max": 6, "step": 0}, "seeds.step", ">= 1 seed per round"),
        ({"min": 3, "max": 6, "rounds": 2}, "seeds.rounds", "unknown key"),
        ({"min": 3, "max": "6"}, "seeds.max", "expected an integer"),
        ({"min": True, "max": 6}, "seeds.min", "expected an integer"),
        ({"min": 3, "max": 6, "futility": 1}, "seeds.futility", "expected a power in [0, 1)"),
        ({"min": 3, "max": 6, "futility": "no"}, "seeds.futility", "expected a number"),
    ],
)
def test_a_bad_race_is_an_error_naming_its_key(seeds, key, words):
    with pytest.raises(ConfigError) as err:
        study({"arms": {"a": {}, "b": {"smart.weight": 1.0}}, "seeds": seeds})
    assert str(err.value).startswith(f"space.yaml: {key}: ")
    assert words in str(err.value)
