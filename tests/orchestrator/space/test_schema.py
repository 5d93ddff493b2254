"""Search-space YAML: what a valid file becomes, and the one-line error of every bad space."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from orchestrator.config import apply_params
from orchestrator.space.schema import Condition, SpaceError, load_space, parse_space, run_name

REPO = Path(__file__).resolve().parents[3]
TINY = str(REPO / "configs" / "tiny.yaml")


def space_dict(**changes: Any) -> dict[str, Any]:
    raw: dict[str, Any] = {
        "name": "demo",
        "base": TINY,
        "space": {
            "optim.lr": {"float": [1e-5, 1e-3], "log": True},
            "smart.weight": {"choice": [0.0, 1.0, 5.0]},
            "smart.epsilon": {
                "float": [1e-6, 1e-4],
                "log": True,
                "when": {"smart.weight": {"gt": 0}},
            },
            "schedule.sampling": {"choice": ["proportional", "temperature"]},
            "schedule.temperature": {
                "float": [1.0, 5.0],
                "when": {"schedule.sampling": "temperature"},
            },
            "optim.epochs": {"int": [1, 3]},
            "model.pooling": "mean",
        },
    }
    raw.update(changes)
    return raw


def write(tmp_path: Path, raw: dict[str, Any]) -> Path:
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def test_valid_space_parses_every_kind_of_parameter(tmp_path: Path) -> None:
    space = load_space(write(tmp_path, space_dict()))
    kinds = {p.key: p.kind for p in space.params}
    assert kinds == {
        "optim.lr": "float",
        "smart.weight": "choice",
        "smart.epsilon": "float",
        "schedule.sampling": "choice",
        "schedule.temperature": "float",
        "optim.epochs": "int",
        "model.pooling": "fixed",
    }
    lr = space.params[0]
    assert (lr.low, lr.high, lr.log) == (1e-5, 1e-3, True)
    assert space.params[2].when == (Condition("smart.weight", "gt", 0),)
    assert space.params[4].when == (Condition("schedule.sampling", "eq", "temperature"),)
    # Defaults: dev/overall maximised, TPE, ASHA up to the largest swept epoch count.
    assert (space.metric, space.mode, space.sampler) == ("dev/overall", "max", "tpe")
    assert space.scheduler.name == "asha" and space.scheduler.max_epochs == 3
    assert space.base.model.hidden_size == 32  # from configs/tiny.yaml


def test_yaml_exponent_without_dot_reads_as_float(tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    path.write_text(f"base: {TINY}\nspace:\n  optim.lr: {{float: [1e-5, 3e-4], log: true}}\n")
    assert load_space(path).params[0].low == pytest.approx(1e-5)


def test_base_path_is_relative_to_the_space_file(tmp_path: Path) -> None:
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "b.yaml").write_text("optim: {epochs: 4}\n")
    (tmp_path / "spaces").mkdir()
    path = tmp_path / "spaces" / "s.yaml"
    path.write_text("base: ../configs/b.yaml\nspace:\n  optim.lr: {float: [1.0e-5, 1.0e-4]}\n")
    space = load_space(path)
    assert space.base.optim.epochs == 4 and space.name == "s"


def test_conditions_hold_only_for_sampled_values() -> None:
    gt = Condition("smart.weight", "gt", 0)
    assert gt.holds({"smart.weight": 1.0}) and not gt.holds({"smart.weight": 0.0})
    assert not gt.holds({})  # the parameter itself was inactive
    assert Condition("a", "in", ("x", "y")).holds({"a": "y"})
    assert Condition("a", "not_in", ("x",)).holds({"a": "y"})
    assert not Condition("a", "gt", 1).holds({"a": "text"})  # incomparable: false, not a crash


def test_apply_params_and_run_name() -> None:
    space = parse_space(space_dict())
    cfg = apply_params(
        space.base, {"optim.lr": 3e-5, "smart.weight": 2.1, "model.pooling": "mean"}
    )
    assert (cfg.optim.lr, cfg.smart.weight, cfg.model.pooling) == (3e-5, 2.1, "mean")
    assert cfg.model.hidden_size == 32  # untouched base values survive
    name = run_name(space, {"smart.weight": 2.1, "optim.lr": 3e-5, "model.pooling": "mean"})
    assert name == "optim.lr=3e-05 smart.weight=2.1"  # swept keys only, in file order


BAD_SPACES = [
    ({"space": {"optim.lrr": {"float": [1e-5, 1e-3]}}}, "space.optim.lrr: unknown config key"),
    ({"space": {"optim.lr": {"float": [1e-3, 1e-5]}}}, "space.optim.lr: lo must be < hi"),
    ({"space": {"optim.lr": {"float": [0.0, 1e-3], "log": True}}}, "log range needs lo > 0"),
    ({"space": {"optim.lr": {"float": [-1e-3, 1e-3], "log": True}}}, "log range needs lo > 0"),
    ({"space": {"smart.weight": {"choice": []}}}, "space.smart.weight: choice needs a non-empty"),
    ({"space": {"optim.epochs": {"float": [1.0, 3.0]}}}, "space.optim.epochs: float range on"),
    ({"space": {"model.pooling": {"choice": ["cls", "max"]}}}, "space.model.pooling: config key"),
    ({"space": {"optim.epochs": "three"}}, "space.optim.epochs: config key 'optim.epochs'"),
    ({"space": {"optim.lr": {"float": [1e-5]}}}, "space.optim.lr: float needs [lo, hi]"),
    ({"space": {"optim.lr": {"flaot": [1e-5, 1e-3]}}}, "space.optim.lr: expected exactly one"),
    (
        {"space": {"smart.epsilon": {"float": [1e-6, 1e-4], "when": {"smart.weight": {"gt": 0}}}}},
        "space.smart.epsilon.when.smart.weight: condition on a parameter that does not exist",
    ),
    (
        {
            "space": {
                "smart.weight": 1.0,
                "smart.epsilon": {"value": 1, "when": {"smart.weight": {"gtt": 0}}},
            }
        },
        "space.smart.epsilon.when.smart.weight: expected one of eq",
    ),
    ({"space": {"optim.lr": {"float": [0.0, 1e-3]}}}, "'optim.lr' must be a finite number > 0"),
    (
        {"space": {"schedule.sampling": {"choice": ["proportional", "sqrt"]},
                   "schedule.temperature": {"float": [1.5, 5.0],
                                            "when": {"schedule.sampling": "temperatur"}}}},
        "schedule.sampling: 'temperatur' is not a value schedule.sampling takes",
    ),
    (
        {"space": {"schedule.sampling": {"choice": ["proportional", "sqrt"]},
                   "schedule.temperature": {"float": [1.5, 5.0],
                                            "when": {"schedule.sampling": {"gt": 1}}}}},
        "gt compares numbers, but schedule.sampling takes",
    ),
    (
        {"space": {"smart.weight": {"float": [0.0, 2.0]},
                   "smart.epsilon": {"float": [1e-6, 1e-4],
                                     "when": {"smart.weight": {"eq": {"a": 1}}}}}},
        "space.smart.epsilon.when.smart.weight: expected a value or one of",
    ),
    ({"space": {"optim.epochs": {"int": [1, 4], "step": 10}}}, "optim.epochs.step: 10 exceeds"),
    ({"space": {}}, "space: expected a non-empty mapping"),
    ({"metric": "dev/accuracy"}, "metric: 'dev/accuracy' is not one of"),
    ({"mode": "maximize"}, "mode: expected max or min"),
    ({"sampler": "bayes"}, "sampler: 'bayes' is not one of"),
    ({"num_samples": 0}, "num_samples: expected an integer >= 1"),
    ({"resources": {"cpu": 0}}, "resources.cpu: expected a number > 0"),
    ({"resources": {"gpus": 1}}, "resources.gpus: unknown key"),
    ({"scheduler": {"name": "asha", "grace_period": 5}}, "scheduler.grace_period: 5 exceeds"),
    ({"scheduler": {"name": "hyperband"}}, "scheduler.name: expected asha or none"),
    ({"scheduler": {"reduction_factor": 1}}, "scheduler.reduction_factor: expected a number > 1"),
    ({"repeats": 2, "space": {"seed": {"int": [0, 9]}}}, "repeats: repeats > 1 sets the seed"),
    ({"base": "nope/missing.yaml"}, "base: no such config file"),
    ({"base": {"optim": {"lrr": 1}}}, "base: unknown config key 'optim.lrr'"),
    ({"name": "bad name"}, "name: expected letters"),
    ({"sampler": "grid"}, "space.optim.lr: grid sampler"),
    ({"spaces": {}}, "spaces: unknown key"),
]


@pytest.mark.parametrize(("changes", "message"), BAD_SPACES, ids=[m for _, m in BAD_SPACES])
def test_bad_space_names_file_and_key(tmp_path: Path, changes: dict, message: str) -> None:
    path = write(tmp_path, space_dict(**changes))
    with pytest.raises(SpaceError) as caught:
        load_space(path)
    text = str(caught.value)
    assert text.startswith(f"{path}: "), text
    assert message in text, text
    assert "\n" not in text


def test_missing_and_malformed_files(tmp_path: Path) -> None:
    with pytest.raises(SpaceError, match="no such search-space file"):
        load_space(tmp_path / "absent.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("space: {optim.lr: [1, 2\n")
    with pytest.raises(SpaceError, match=r"bad.yaml: line \d+ malformed YAML"):
        load_space(bad)


def test_fixed_mapping_on_a_section_becomes_one_value_per_leaf() -> None:
    space = parse_space(space_dict(space={"data.max_examples": {"sst": 800, "para": 600}}))
    assert [(p.key, p.kind, p.value) for p in space.params] == [
        ("data.max_examples.sst", "fixed", 800),
        ("data.max_examples.para", "fixed", 600),
    ]
    with pytest.raises(SpaceError, match=r"space.data.max_examples.ssst: unknown config key"):
        parse_space(space_dict(space={"data.max_examples": {"ssst": 800}}))


def test_space_yaml_reads_1e_minus_5_and_rejects_a_repeated_key(tmp_path: Path) -> None:
    path = tmp_path / "space.yaml"
    text = yaml.safe_dump(space_dict()).replace("optim.lr:", "optim.lr: {float: [1e-5, 1e-3]}\n"
                                                "  optim.lr:", 1)
    path.write_text(text)
    with pytest.raises(SpaceError, match=r"space.yaml: line \d+ malformed YAML \(duplicate key"):
        load_space(path)


def test_a_space_file_that_is_not_utf8_is_one_line_error(tmp_path: Path) -> None:
    path = tmp_path / "binary.yaml"
    path.write_bytes(b"\xff\xfe\x00bad")
    with pytest.raises(SpaceError, match=r"binary.yaml: not UTF-8 text \(byte 0\)"):
        load_space(path)
