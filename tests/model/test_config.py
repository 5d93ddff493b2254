"""TrainConfig building: unknown keys, wrong types and bad ranges are errors that name the key."""

from __future__ import annotations

import pytest

from model.config import (
    ConfigError,
    LossConfig,
    OptimConfig,
    PerTaskFloat,
    TaskHead,
    TrainConfig,
    build_config,
    config_field_types,
    config_to_dict,
    flatten,
    unflatten,
)


def test_defaults_round_trip_through_dict():
    cfg = TrainConfig()
    assert build_config(TrainConfig, config_to_dict(cfg)) == cfg


def test_nested_values_are_typed():
    cfg = build_config(
        TrainConfig,
        {"optim": {"lr": 1, "betas": [0.8, 0.9]}, "data": {"max_examples": {"sst": 10}}},
    )
    assert cfg.optim.lr == 1.0 and isinstance(cfg.optim.lr, float)
    assert cfg.optim.betas == (0.8, 0.9)
    assert cfg.data.max_examples.sst == 10 and cfg.data.max_examples.para is None


@pytest.mark.parametrize(
    ("values", "needle"),
    [
        ({"optim": {"lrr": 1e-3}}, "optim.lrr"),
        ({"model": {"pair_encoding": "triple"}}, "model.pair_encoding"),
        ({"optim": {"epochs": "three"}}, "optim.epochs"),
        ({"data": {"bucketing": "yes"}}, "data.bucketing"),
        ({"data": {"max_examples": {"quora": 5}}}, "data.max_examples.quora"),
        ({"optim": 3}, "optim"),
        ({"optim": {"betas": [0.9]}}, "optim.betas"),
        ({"data": {"max_examples": 3}}, "'data.max_examples': expected a mapping"),
    ],
)
def test_bad_values_name_the_key(values, needle):
    with pytest.raises(ConfigError, match=needle.replace(".", r"\.")):
        build_config(TrainConfig, values)


def test_unknown_key_suggests_the_close_one():
    with pytest.raises(ConfigError, match="did you mean 'lr'"):
        build_config(TrainConfig, {"optim": {"lrr": 1e-3}})


@pytest.mark.parametrize(
    ("values", "needle"),
    [
        ({"optim": {"lr": -1.0}}, "optim.lr"),
        ({"optim": {"epochs": 0}}, "optim.epochs"),
        ({"data": {"subsample_ratio": {"para": 1.5}}}, "data.subsample_ratio.para"),
        ({"schedule": {"epoch_length": "longest"}}, "schedule.epoch_length"),
        ({"model": {"hidden_dropout": 1.0}}, "model.hidden_dropout"),
        ({"smart": {"tasks": ["sst", "quora"]}}, "smart.tasks"),
        ({"schedule": {"order": ["sst", "nli"]}}, "schedule.order"),
        ({"smart": {"steps": -1}}, "smart.steps"),
        ({"optim": {"lr": float("inf")}}, "optim.lr"),
        ({"optim": {"head_lr": -1.0}}, "optim.head_lr"),
        ({"optim": {"eps": -1.0}}, "optim.eps"),
        ({"optim": {"betas": [2.0, 0.9]}}, "optim.betas"),
        ({"optim": {"grad_clip": -1.0}}, "optim.grad_clip"),
        ({"loss": {"sst_label_smoothing": 2.0}}, "loss.sst_label_smoothing"),
        ({"loss": {"task_weights": {"sst": -1.0}}}, "loss.task_weights.sst"),
        ({"loss": {"head_penalty_coef": -1.0}}, "loss.head_penalty_coef"),
        ({"seed": -1}, "seed"),
        ({"seed": 2**32}, "seed"),
        ({"data": {"token_budget": 0}}, "data.token_budget"),
        ({"model": {"hidden_size": 0}}, "model.hidden_size"),
        ({"model": {"num_hidden_layers": -1}}, "model.num_hidden_layers"),
        ({"model": {"head_hidden": 0}}, "model.head_hidden"),
        ({"schedule": {"temperature": 0.0}}, "schedule.temperature"),
        ({"smart": {"bregman_beta": 2.0}}, "smart.bregman_beta"),
        ({"smart": {"epsilon": 0.0}}, "smart.epsilon"),
        ({"smart": {"variant": "library"}}, "smart.variant"),
    ],
)
def test_ranges(values, needle):
    with pytest.raises(ConfigError, match=needle.replace(".", r"\.")):
        build_config(TrainConfig, values)


def test_a_config_built_directly_is_checked_too():
    """`fit()` callers build dataclasses without build_config: the same checks apply."""
    with pytest.raises(ConfigError, match=r"^config key 'optim\.eps' must be > 0$"):
        OptimConfig(eps=-1)
    with pytest.raises(ConfigError, match=r"^config key 'loss\.task_weights\.sst' must be >= 0$"):
        TrainConfig(loss=LossConfig(task_weights=PerTaskFloat(sst=-0.5)))
    with pytest.raises(ConfigError, match=r"^config key 'seed' must be in \[0, 2\*\*32\)$"):
        TrainConfig(seed=-1)
    with pytest.raises(ConfigError, match=r"^config key 'optim\.lr': expected a number, got 'x'$"):
        OptimConfig(lr="x")  # type: ignore[arg-type]


def test_a_config_built_directly_is_normalised_like_a_built_one():
    direct = TrainConfig(optim=OptimConfig(lr=1, betas=[0.8, 0.9]))  # type: ignore[arg-type]
    assert direct == build_config(TrainConfig, {"optim": {"lr": 1, "betas": [0.8, 0.9]}})
    assert isinstance(direct.optim.lr, float) and direct.optim.betas == (0.8, 0.9)


def test_flatten_unflatten_inverse():
    nested = {"optim": {"lr": 1.0}, "data": {"max_examples": {"sst": 3}}, "seed": 1}
    flat = flatten(nested)
    assert flat == {"optim.lr": 1.0, "data.max_examples.sst": 3, "seed": 1}
    assert unflatten(flat) == nested


def test_field_types_cover_every_leaf():
    types = config_field_types()
    assert "smart.weight" in types and "data.max_examples.sst" in types
    assert set(flatten(config_to_dict(TrainConfig()))) == set(types)


def test_a_config_pickled_before_a_field_existed_unpickles_with_its_default() -> None:
    """A sweep's Ray state (or an old registered model) holds configs pickled by older code."""
    import copyreg
    import pickle

    cfg = build_config(TrainConfig, {"model": {"sts_head": {"layers": 2}}, "optim": {"lr": 3e-5}})
    state = {k: v for k, v in cfg.model.__dict__.items() if k != "sst_head"}
    old_model = copyreg._reconstructor, (type(cfg.model), object, None), state  # an older pickle
    restored = pickle.loads(pickle.dumps(_Reduced(old_model)))
    assert restored.sst_head == TaskHead() and restored.sts_head == TaskHead(layers=2)
    assert pickle.loads(pickle.dumps(cfg)) == cfg


class _Reduced:
    """Pickles as the given (callable, args, state): a stand-in for an object saved earlier."""

    def __init__(self, reduced: tuple) -> None:
        self.reduced = reduced

    def __reduce__(self) -> tuple:
        return self.reduced
