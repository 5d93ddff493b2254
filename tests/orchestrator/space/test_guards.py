"""Inert settings where they are set: `train` refuses them, a space warns about its base and
fixed values, fails an arm that sets one, and warns once per sampled trial."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from model.config_guards import InertSettingWarning, check_inert_settings
from orchestrator.cli import main
from orchestrator.config import load_train_config
from orchestrator.search.optuna_search import SweepStudy
from orchestrator.space.schema import SpaceError, load_space, parse_space

REPO = Path(__file__).resolve().parents[3]
CONFIGS = sorted((REPO / "configs").glob("*.yaml"))
SPACES = sorted((REPO / "search_spaces").glob("*.yaml"))
TINY = str(REPO / "configs" / "tiny.yaml")
# tiny.yaml under round robin with square-root task sampling, like configs/ablation_base.yaml.
ROUND_ROBIN = {"base": {"schedule": {"kind": "round_robin", "sampling": "sqrt"}}}


def inert_warnings(record: list[warnings.WarningMessage]) -> list[str]:
    return [str(w.message) for w in record if issubclass(w.category, InertSettingWarning)]


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_shipped_configs_train_without_an_inert_setting(path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error", InertSettingWarning)
        check_inert_settings(load_train_config(path))


@pytest.mark.parametrize("path", SPACES, ids=[p.stem for p in SPACES])
def test_shipped_spaces_load_without_an_inert_setting(path: Path) -> None:
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        load_space(path)  # a study arm that sets an inert key would raise here
    assert inert_warnings(record) == []


def test_train_refuses_pcgrad_under_round_robin_in_one_line(tmp_path: Path) -> None:
    out = tmp_path / "out"
    config = str(REPO / "configs" / "ablation_base.yaml")
    result = CliRunner().invoke(
        main, ["train", config, "--set", "pcgrad.enabled=true", "--out", str(out)]
    )
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [
        f"Error: {config} with --set: pcgrad.enabled: true has no effect with schedule.kind: "
        "round_robin (each step trains one task, so there is nothing to project; use simultaneous)"
    ]
    assert not out.exists()  # refused before anything is written


def space(**changes: Any) -> dict[str, Any]:
    raw: dict[str, Any] = {
        "name": "demo",
        "base": TINY,
        "space": {"optim.lr": {"float": [1e-5, 1e-3]}},
    }
    raw.update(changes)
    return raw


def test_an_arm_that_sets_an_inert_key_fails_naming_the_arm_and_both_keys() -> None:
    raw = space(**ROUND_ROBIN, arms={"baseline": {}, "pcgrad": {"pcgrad.enabled": True}})
    with pytest.raises(SpaceError) as err:
        parse_space(raw, source="s.yaml")
    assert str(err.value) == (
        "s.yaml: arms.pcgrad.pcgrad.enabled: pcgrad.enabled: true has no effect with "
        "schedule.kind: round_robin (each step trains one task, so there is nothing to project; "
        "use simultaneous); the arm tests nothing"
    )


def test_an_arm_is_checked_at_the_confirm_phase_budget() -> None:
    order = {"schedule.kind": "epoch_round_robin", "schedule.order": ["sst", "para", "sts"]}
    arms = {"baseline": {}, "order": order}
    parse_space(space(arms=arms, confirm_epochs=3), source="s.yaml")  # 3 epochs: every task
    with pytest.raises(SpaceError, match=r"arms\.order\.schedule\.order: .* optim\.epochs: 2 "):
        parse_space(space(arms=arms, confirm_epochs=2), source="s.yaml")


def test_an_arm_that_switches_off_a_base_knob_is_fine() -> None:
    raw = space(
        **ROUND_ROBIN, arms={"baseline": {}, "together": {"schedule.kind": "simultaneous"}}
    )
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        parse_space(raw, source="s.yaml")
    assert inert_warnings(record) == []  # the base's sqrt sampling serves its other arm


def test_base_and_fixed_values_warn_at_space_load() -> None:
    raw = space(base={"model": {"head_hidden": 64}}, space={
        "optim.lr": {"float": [1e-5, 1e-3]}, "schedule.draw": "random"})  # fmt: skip
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        parse_space(raw, source="s.yaml")
    assert inert_warnings(record) == [
        "s.yaml: space.schedule.draw: schedule.draw: random has no effect with schedule.kind: "
        "simultaneous (only round_robin draws tasks)",
        "s.yaml: base: model.head_hidden: 64 has no effect with model.head_layers: 1 (a one-layer "
        "head is a single linear layer)",
    ]


def test_a_sampled_inert_setting_warns_once_per_config_not_per_repeat(tmp_path: Path) -> None:
    raw = space(**ROUND_ROBIN, space={"pcgrad.enabled": {"choice": [False, True]}},
                sampler="grid", repeats=2, num_samples=2)  # fmt: skip
    sweep = SweepStudy(parse_space(raw, source="s.yaml"), storage=f"sqlite:///{tmp_path}/o.db")
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        asked = [sweep.ask(f"t{i}") for i in range(4)]
        sweep.ask("t0")  # asked again (a restored driver): no second warning
    assert sorted(p["pcgrad.enabled"] for p in asked) == [False, False, True, True]
    messages = inert_warnings(record)
    assert len(messages) == 1
    assert messages[0].startswith("demo trial ")
    assert messages[0].endswith(
        ": pcgrad.enabled: true has no effect with schedule.kind: round_robin (each step trains "
        "one task, so there is nothing to project; use simultaneous)"
    )


def test_dry_run_warns_about_sampled_inert_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(warnings, "showwarning", warnings.showwarning)  # the CLI replaces it
    path = tmp_path / "s.yaml"
    raw = space(space={"schedule.sampling": {"choice": ["sqrt"]}}, num_samples=1)
    path.write_text(yaml.safe_dump(raw))
    result = CliRunner().invoke(main, ["sweep", str(path), "--dry-run"])
    assert result.exit_code == 0, result.output
    assert (
        "warning: demo schedule.sampling=sqrt: schedule.sampling: sqrt has no effect with "
        "schedule.kind: simultaneous (only round_robin draws tasks)\n"
    ) in result.output


@pytest.mark.parametrize(
    ("searched", "fixed", "warned"),
    [
        # Live for some drawn value: no warning.
        ({"smart.weight": {"choice": [0.0, 1.0]}}, {"smart.epsilon": 1e-6}, []),
        ({"smart.weight": {"float": [0.0, 5.0]}}, {"smart.epsilon": 1e-6}, []),
        ({"schedule.kind": {"choice": ["round_robin", "simultaneous"]}},
         {"schedule.exhausted": "drop"}, []),
        # Inert whatever is drawn: warned.
        ({"optim.lr": {"float": [1e-5, 1e-3]}}, {"smart.epsilon": 1e-6}, ["smart.epsilon"]),
        ({"schedule.kind": {"choice": ["round_robin", "sequential"]}},
         {"schedule.exhausted": "drop"}, ["schedule.exhausted"]),
    ],
)  # fmt: skip
def test_a_fixed_value_is_warned_only_when_inert_whatever_the_sampler_draws(
    searched: dict, fixed: dict, warned: list[str]
) -> None:
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        parse_space(space(space={**searched, **fixed}), source="s.yaml")
    assert [m.split(":")[1].strip() for m in inert_warnings(record)] == [
        f"space.{key}" for key in warned
    ]
