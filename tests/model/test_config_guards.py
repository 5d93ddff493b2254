"""Config interaction guards: each inert setting is found, names exactly its keys, and is inert
in the trainer's own code (schedules, heads, batches, SMART, PCGrad)."""

from __future__ import annotations

import warnings
from dataclasses import replace
from typing import Any

import numpy as np
import pytest
import torch

from model.batching import batch_indices
from model.config import (
    ConfigError,
    ModelConfig,
    SmartConfig,
    TrainConfig,
    build_config,
    config_field_types,
    unflatten,
)
from model.config_guards import (
    InertSettingError,
    InertSettingWarning,
    check_inert_settings,
    inert_settings,
)
from model.heads import make_head
from model.pcgrad import pcgrad_backward
from model.schedule import sample_task_order
from model.smart import smart_penalty


def config(**flat: Any) -> TrainConfig:
    """A TrainConfig from dotted keys: config(**{"pcgrad.enabled": True})."""
    return build_config(TrainConfig, unflatten(flat))


def found(flat: dict[str, Any]) -> list[tuple[str, tuple[str, ...]]]:
    return [(s.key, s.because) for s in inert_settings(config(**flat))]


KIND: tuple[str, ...] = ("schedule.kind",)
# SMART's adversarial knobs, each set alone while smart.weight stays 0.
SMART_WITHOUT_WEIGHT: list[tuple[str, dict[str, Any], list[tuple[str, tuple[str, ...]]]]] = [
    (f"smart-{name}-without-weight", {f"smart.{name}": value},
     [(f"smart.{name}", ("smart.weight",))])
    for name, value in [("epsilon", 1e-3), ("step_size", 0.1), ("noise_std", 0.0), ("steps", 2),
                        ("norm", "l2")]
]  # fmt: skip
# (overrides, every inert setting they leave: (inert key, the keys that make it inert))
CASES: list[tuple[str, dict[str, Any], list[tuple[str, tuple[str, ...]]]]] = [
    ("pcgrad-round_robin", {"pcgrad.enabled": True, "schedule.kind": "round_robin"},
     [("pcgrad.enabled", KIND)]),
    ("pcgrad-sequential", {"pcgrad.enabled": True, "schedule.kind": "sequential"},
     [("pcgrad.enabled", KIND)]),
    ("pcgrad-epoch_round_robin",
     {"pcgrad.enabled": True, "schedule.kind": "epoch_round_robin", "optim.epochs": 3},
     [("pcgrad.enabled", KIND)]),
    ("pcgrad-warmup-only",
     {"pcgrad.enabled": True, "schedule.para_warmup_epochs": 2, "optim.epochs": 2},
     [("pcgrad.enabled", ("schedule.para_warmup_epochs", "optim.epochs")),
      ("schedule.para_warmup_epochs", ("optim.epochs",))]),
    ("pcgrad-frozen", {"pcgrad.enabled": True, "model.mode": "frozen"},
     [("pcgrad.enabled", ("model.mode",))]),
    ("pcgrad-one-weighted-task",
     {"pcgrad.enabled": True, "loss.task_weights.sst": 0.0, "loss.task_weights.sts": 0.0},
     [("pcgrad.enabled", ("loss.task_weights.sst", "loss.task_weights.sts"))]),
    ("sampling-simultaneous", {"schedule.sampling": "sqrt"}, [("schedule.sampling", KIND)]),
    ("draw-sequential", {"schedule.draw": "random", "schedule.kind": "sequential"},
     [("schedule.draw", KIND)]),
    ("temperature-without-temperature-sampling",
     {"schedule.kind": "round_robin", "schedule.sampling": "sqrt", "schedule.temperature": 3.0},
     [("schedule.temperature", ("schedule.sampling",))]),
    ("temperature-simultaneous",
     {"schedule.sampling": "temperature", "schedule.temperature": 3.0},
     [("schedule.sampling", KIND), ("schedule.temperature", KIND)]),
    ("annealed-one-epoch",
     {"schedule.kind": "round_robin", "schedule.sampling": "annealed", "optim.epochs": 1},
     [("schedule.sampling", ("optim.epochs",))]),
    ("annealed-one-epoch-after-warmup",
     {"schedule.kind": "round_robin", "schedule.sampling": "annealed", "optim.epochs": 3,
      "schedule.para_warmup_epochs": 2},
     [("schedule.sampling", ("optim.epochs", "schedule.para_warmup_epochs"))]),
    ("order-simultaneous", {"schedule.order": ["sts", "sst", "para"]},
     [("schedule.order", KIND)]),
    ("order-round_robin", {"schedule.order": ["sts"], "schedule.kind": "round_robin"},
     [("schedule.order", KIND)]),
    ("epoch_length-sequential", {"schedule.epoch_length": "min", "schedule.kind": "sequential"},
     [("schedule.epoch_length", KIND)]),
    ("warmup-every-epoch", {"schedule.para_warmup_epochs": 3, "optim.epochs": 3},
     [("schedule.para_warmup_epochs", ("optim.epochs",))]),
    ("epoch_round_robin-order-cut-short",
     {"schedule.kind": "epoch_round_robin", "optim.epochs": 2},
     [("schedule.order", ("optim.epochs",))]),
    ("epoch_round_robin-order-after-warmup",
     {"schedule.kind": "epoch_round_robin", "optim.epochs": 3, "schedule.para_warmup_epochs": 1},
     [("schedule.order", ("optim.epochs", "schedule.para_warmup_epochs"))]),
    *SMART_WITHOUT_WEIGHT,
    ("smart-step_size-without-steps",
     {"smart.weight": 1.0, "smart.steps": 0, "smart.step_size": 0.1},
     [("smart.step_size", ("smart.steps",))]),
    ("bregman_beta-without-mu", {"smart.bregman_beta": 0.9},
     [("smart.bregman_beta", ("smart.bregman_mu",))]),
    ("smart-divergence-off", {"smart.divergence": "kl"},
     [("smart.divergence", ("smart.weight", "smart.bregman_mu"))]),
    ("smart-tasks-off", {"smart.tasks": ["sst"]},
     [("smart.tasks", ("smart.weight", "smart.bregman_mu"))]),
    ("kl_then_sym_kl-proximal-only",
     {"smart.bregman_mu": 1.0, "smart.divergence": "kl_then_sym_kl"},
     [("smart.divergence", ("smart.weight",))]),
    ("kl_then_sym_kl-without-steps",
     {"smart.weight": 1.0, "smart.steps": 0, "smart.divergence": "kl_then_sym_kl"},
     [("smart.divergence", ("smart.steps",))]),
    ("smart-no-tasks", {"smart.weight": 1.0, "smart.bregman_mu": 1.0, "smart.tasks": []},
     [("smart.weight", ("smart.tasks",)), ("smart.bregman_mu", ("smart.tasks",))]),
    ("smart-variant-without-weight", {"smart.variant": "smart_pytorch"},
     [("smart.variant", ("smart.weight",))]),
    ("smart_pytorch-norm",
     {"smart.weight": 1.0, "smart.variant": "smart_pytorch", "smart.norm": "l2"},
     [("smart.norm", ("smart.variant",))]),
    ("smart_pytorch-bregman_mu",
     {"smart.weight": 1.0, "smart.variant": "smart_pytorch", "smart.bregman_mu": 1.0},
     [("smart.bregman_mu", ("smart.variant",))]),
    ("smart_pytorch-proximal-only", {"smart.variant": "smart_pytorch", "smart.bregman_mu": 1.0},
     [("smart.bregman_mu", ("smart.variant",))]),
    ("head_penalty-without-coef", {"loss.head_penalty": "l2"},
     [("loss.head_penalty", ("loss.head_penalty_coef",))]),
    ("head_penalty_coef-without-penalty", {"loss.head_penalty_coef": 0.01},
     [("loss.head_penalty_coef", ("loss.head_penalty",))]),
    ("sst-options-unweighted",
     {"loss.task_weights.sst": 0.0, "loss.sst_label_smoothing": 0.1,
      "loss.sst_class_weights": True},
     [("loss.sst_label_smoothing", ("loss.task_weights.sst",)),
      ("loss.sst_class_weights", ("loss.task_weights.sst",))]),
    ("sts_loss-unweighted", {"loss.task_weights.sts": 0.0, "loss.sts_loss": "pearson"},
     [("loss.sts_loss", ("loss.task_weights.sts",))]),
    ("head-mlp-options-one-layer",
     {"model.head_hidden": 64, "model.head_norm": "layer", "model.head_activation": "relu"},
     [("model.head_hidden", ("model.head_layers",)), ("model.head_norm", ("model.head_layers",)),
      ("model.head_activation", ("model.head_layers",))]),
    ("lr-frozen-encoder", {"model.mode": "frozen", "optim.head_lr": 1e-3, "optim.lr": 5e-5},
     [("optim.lr", ("model.mode", "optim.head_lr"))]),
    ("batch_size-token_budget", {"data.token_budget": 2048, "data.batch_size": 16},
     [("data.batch_size", ("data.token_budget",))]),
    # The seed systems' switches.
    ("exhausted-round_robin", {"schedule.exhausted": "drop", "schedule.kind": "round_robin"},
     [("schedule.exhausted", KIND)]),
    ("exhausted-min-epoch", {"schedule.exhausted": "drop", "schedule.epoch_length": "min"},
     [("schedule.exhausted", ("schedule.epoch_length",))]),
    ("head_penalty_tasks-without-penalty", {"loss.head_penalty_tasks": ["sts"]},
     [("loss.head_penalty_tasks", ("loss.head_penalty",))]),
    ("task-head-options-one-layer", {"model.sts_head.hidden": 64},
     [("model.sts_head.hidden", ("model.head_layers",))]),
    ("task-head-one-layer-override",
     {"model.head_layers": 2, "model.sst_head.layers": 1, "model.sst_head.norm": "batch"},
     [("model.sst_head.norm", ("model.head_layers", "model.sst_head.layers"))]),
    ("task-head-plain-cosine",
     {"model.sts_pair_encoding": "cosine", "model.sts_head.dropout": 0.2},
     [("model.sts_head.dropout", ("model.sts_pair_encoding",))]),
    ("global-head-option-every-task-overrides",
     {"model.head_dropout": 0.3, "model.sst_head.dropout": 0.5, "model.para_head.dropout": 0.5,
      "model.sts_head.dropout": 0.5},
     [("model.head_dropout", ("model.sst_head.dropout", "model.para_head.dropout",
                              "model.sts_head.dropout"))]),
    ("pair_encoding-both-tasks-override",
     {"model.pair_encoding": "sbert", "model.para_pair_encoding": "cross",
      "model.sts_pair_encoding": "cosine"},
     [("model.pair_encoding", ("model.para_pair_encoding", "model.sts_pair_encoding"))]),
]  # fmt: skip


@pytest.mark.parametrize(("flat", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_each_inert_setting_names_its_key_and_the_keys_that_disable_it(
    flat: dict[str, Any], expected: list[tuple[str, tuple[str, ...]]]
) -> None:
    assert found(flat) == expected
    for setting in inert_settings(config(**flat)):
        assert "\n" not in setting.message
        for key in (setting.key, *setting.because):
            assert key in config_field_types()
            assert key in setting.message


# The same knobs where the rest of the config makes them work: nothing to report.
ACTIVE: list[dict[str, Any]] = [
    {},
    {"pcgrad.enabled": True},
    {"pcgrad.enabled": True, "schedule.para_warmup_epochs": 1, "optim.epochs": 2},
    {"pcgrad.enabled": True, "loss.task_weights.sst": 0.0},
    {"schedule.kind": "round_robin", "schedule.sampling": "sqrt", "schedule.draw": "random"},
    {
        "schedule.kind": "round_robin",
        "schedule.sampling": "temperature",
        "schedule.temperature": 3,
    },
    {"schedule.kind": "round_robin", "schedule.sampling": "annealed", "optim.epochs": 2},
    {"schedule.kind": "sequential", "schedule.order": ["sts", "sst"]},
    {"schedule.kind": "epoch_round_robin", "optim.epochs": 3},
    {"schedule.epoch_length": "min", "schedule.kind": "round_robin"},
    {"schedule.para_warmup_epochs": 1, "optim.epochs": 2},
    {"smart.weight": 1.0, "smart.epsilon": 1e-3, "smart.steps": 2, "smart.norm": "l2"},
    {"smart.weight": 1.0, "smart.divergence": "kl_then_sym_kl", "smart.tasks": ["sst"]},
    {"smart.bregman_mu": 1.0, "smart.bregman_beta": 0.9, "smart.divergence": "kl"},
    {
        "smart.weight": 1.0,
        "smart.variant": "smart_pytorch",
        "smart.epsilon": 1e-6,
        "smart.divergence": "kl_then_sym_kl",
    },
    {"loss.head_penalty": "l1", "loss.head_penalty_coef": 0.01},
    {"loss.task_weights.sts": 0.0, "loss.sst_label_smoothing": 0.1},
    {"model.head_layers": 2, "model.head_hidden": 64, "model.head_norm": "batch"},
    {"schedule.exhausted": "drop"},
    {"schedule.kind": "epoch_round_robin", "schedule.max_steps_per_epoch": 200},
    {
        "loss.head_penalty": "linf",
        "loss.head_penalty_coef": 0.05,
        "loss.head_penalty_tasks": ["sts"],
    },
    {"model.sts_head.layers": 2, "model.sts_head.hidden": 64, "model.head_dropout": 0.3},
    {"model.sts_pair_encoding": "cross_cosine_mix", "model.sts_head.dropout": 0.2},
    {"optim.lr_schedule": "constant", "optim.warmup_ratio": 0.0},
    {"model.mode": "frozen", "optim.lr": 5e-5},
    {"model.mode": "frozen", "optim.head_lr": 1e-3},
    {"data.token_budget": 2048},
]


@pytest.mark.parametrize("flat", ACTIVE, ids=[",".join(f) or "defaults" for f in ACTIVE])
def test_knobs_that_take_effect_are_not_reported(flat: dict[str, Any]) -> None:
    assert found(flat) == []


def test_pcgrad_under_round_robin_is_an_error_naming_both_keys() -> None:
    cfg = config(**{"pcgrad.enabled": True, "schedule.kind": "round_robin"})
    with pytest.raises(InertSettingError) as err:
        check_inert_settings(cfg, "configs/x.yaml: ")
    assert isinstance(err.value, ConfigError)  # the CLI's one-line error, exit 2
    assert str(err.value) == (
        "configs/x.yaml: pcgrad.enabled: true has no effect with schedule.kind: round_robin "
        "(each step trains one task, so there is nothing to project; use simultaneous)"
    )


def test_several_errors_share_one_line_and_warnings_only_warn() -> None:
    both = config(**{"schedule.sampling": "sqrt", "model.head_hidden": 64})
    with pytest.raises(InertSettingError, match=r"schedule\.sampling.*; model\.head_hidden"):
        check_inert_settings(both)
    frozen = config(**{"model.mode": "frozen", "optim.head_lr": 1e-3, "optim.lr": 5e-5})
    with pytest.warns(
        InertSettingWarning,
        match=r"^optim\.lr: 5e-05 has no effect with "
        r"model\.mode: frozen, optim\.head_lr: 0\.001",
    ):
        check_inert_settings(frozen)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_inert_settings(config())  # nothing to say about the defaults


def test_epoch_round_robin_names_the_tasks_that_never_train() -> None:
    cfg = config(**{"schedule.kind": "epoch_round_robin", "optim.epochs": 2})
    (setting,) = inert_settings(cfg)
    assert setting.message.endswith(
        "(the entries after the first 2 have no effect; sts never train)"
    )


# --- The guards' claims hold in the trainer's code --------------------------------------------

COUNTS = {"sst": 5, "para": 7, "sts": 3}


def plans(cfg: TrainConfig) -> list[list[tuple[str, ...]]]:
    epochs = cfg.optim.epochs
    return [
        sample_task_order(cfg.schedule, COUNTS, e, epochs, seed=3) for e in range(1, epochs + 1)
    ]


@pytest.mark.parametrize(
    "case",
    [c for c in CASES if all(k.startswith(("schedule.", "optim.epochs")) for k, _ in c[2])],
    ids=lambda c: c[0],
)
def test_inert_schedule_settings_leave_every_plan_unchanged(case: Any) -> None:
    _, flat, expected = case
    cfg = config(**flat)
    # Every epoch's plan is the same with each inert key back at its default.
    for key, _ in expected:
        if key == "schedule.para_warmup_epochs":
            assert all(plan == [("para",)] * COUNTS["para"] for plan in plans(cfg))
            continue
        section, leaf = key.split(".")
        default = getattr(TrainConfig(), section).__getattribute__(leaf)
        reset = replace(cfg, schedule=replace(cfg.schedule, **{leaf: default}))
        if key == "schedule.order":  # cut short: only its first multitask entries count
            kept = cfg.schedule.order[: cfg.optim.epochs - cfg.schedule.para_warmup_epochs]
            reset = replace(cfg, schedule=replace(cfg.schedule, order=kept))
        assert plans(reset) == plans(cfg), key


def test_head_mlp_options_do_not_change_a_one_layer_head() -> None:
    plain = make_head(16, 5, ModelConfig().head_shape("sst"))
    tuned = make_head(
        16,
        5,
        ModelConfig(head_hidden=64, head_norm="layer", head_activation="relu").head_shape("sst"),
    )
    assert repr(plain) == repr(tuned)
    assert repr(make_head(16, 5, ModelConfig(head_layers=2).head_shape("sst"))) != repr(
        make_head(16, 5, ModelConfig(head_layers=2, head_norm="layer").head_shape("sst"))
    )


def test_batch_size_is_ignored_under_a_token_budget() -> None:
    lengths = np.random.default_rng(0).integers(4, 40, size=200)
    runs = [
        batch_indices(lengths, size, bucketing=True, shuffle=True, seed=1, token_budget=256)
        for size in (16, 32)
    ]
    assert [b.tolist() for b in runs[0]] == [b.tolist() for b in runs[1]]


def test_pcgrad_with_one_task_is_the_plain_backward() -> None:
    torch.manual_seed(0)
    shared, head = torch.nn.Linear(3, 3), torch.nn.Linear(3, 1)
    x = torch.randn(4, 3)
    loss = head(shared(x)).pow(2).mean()
    plain = torch.autograd.grad(loss, [*shared.parameters()], retain_graph=True)
    pcgrad_backward([loss], list(shared.parameters()), list(head.parameters()))
    for p, g in zip(shared.parameters(), plain, strict=True):
        assert p.grad is not None and torch.equal(p.grad, g)


def test_smart_without_weight_or_mu_adds_nothing_whatever_its_knobs() -> None:
    knobs = SmartConfig(epsilon=1e-3, step_size=0.1, steps=2, norm="l2", divergence="kl")
    for cfg in (knobs, replace(knobs, weight=1.0, bregman_mu=1.0, tasks=())):
        batch = type("B", (), {"task": "sst"})()
        assert smart_penalty(None, batch, (), torch.zeros(2, 5), cfg) is None  # type: ignore[arg-type]
