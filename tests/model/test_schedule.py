"""Task schedules: probabilities against their formulas, exact orders, seeded reproducibility."""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import replace

import pytest

from model.config import ConfigError, ScheduleConfig
from model.schedule import epoch_steps, sample_task_order, task_probabilities

SIZES = {"sst": 267, "para": 4422, "sts": 189}  # batches per pass at batch size 32 (full Quora)


@pytest.mark.parametrize(
    ("sampling", "alpha"),
    [("proportional", 1.0), ("sqrt", 0.5), ("temperature", 1 / 3), ("uniform", 0.0)],
)
def test_probabilities_follow_their_power_of_n(sampling: str, alpha: float) -> None:
    probs = task_probabilities(SIZES, sampling, temperature=3.0)  # type: ignore[arg-type]
    norm = sum(n**alpha for n in SIZES.values())
    for task, n in SIZES.items():
        assert probs[task] == pytest.approx(n**alpha / norm)
    assert sum(probs.values()) == pytest.approx(1.0)


def test_annealed_goes_from_proportional_to_n_to_the_point_two() -> None:
    first = task_probabilities(SIZES, "annealed", epoch=1, total_epochs=5)
    middle = task_probabilities(SIZES, "annealed", epoch=3, total_epochs=5)  # alpha = 0.6
    last = task_probabilities(SIZES, "annealed", epoch=5, total_epochs=5)  # alpha = 0.2
    assert first == pytest.approx(task_probabilities(SIZES, "proportional"))
    total = sum(n**0.6 for n in SIZES.values())
    assert middle["para"] == pytest.approx(4422**0.6 / total)
    total = sum(n**0.2 for n in SIZES.values())
    assert last["sst"] == pytest.approx(267**0.2 / total)
    assert first["para"] > middle["para"] > last["para"]
    assert task_probabilities(SIZES, "annealed", epoch=1, total_epochs=1)["para"] == pytest.approx(
        4422 / sum(SIZES.values())
    )


def test_bad_temperature_and_empty_task_are_errors() -> None:
    with pytest.raises(ConfigError, match=r"schedule\.temperature"):
        task_probabilities(SIZES, "temperature", temperature=0.0)
    with pytest.raises(ValueError, match="every task needs data"):
        task_probabilities({"sst": 3, "para": 0}, "uniform")


@pytest.mark.parametrize(
    ("length", "expected"), [("max", 4422), ("min", 189), ("sst", 267), (50, 50), ("70", 70)]
)
def test_epoch_steps(length: str | int, expected: int) -> None:
    assert epoch_steps(SIZES, length) == expected


@pytest.mark.parametrize("length", ["longest", 0, "-3", "cfimdb"])
def test_epoch_steps_rejects_bad_lengths(length: str | int) -> None:
    with pytest.raises(ConfigError, match=r"schedule\.epoch_length"):
        epoch_steps(SIZES, length)


def test_simultaneous_trains_every_task_each_step() -> None:
    plan = sample_task_order(ScheduleConfig(epoch_length="sst"), SIZES, 1, 3)
    assert plan == [("sst", "para", "sts")] * 267


def test_round_robin_uniform_cycle_alternates_exactly() -> None:
    cfg = ScheduleConfig(kind="round_robin", sampling="uniform", epoch_length=4)
    plan = sample_task_order(cfg, SIZES, 1, 3)
    assert plan == [("sst",), ("para",), ("sts",)] * 4


def test_round_robin_cycle_realises_probabilities_exactly_and_evenly() -> None:
    cfg = ScheduleConfig(kind="round_robin", sampling="sqrt", epoch_length="min")
    plan = sample_task_order(cfg, SIZES, 1, 3)
    probs = task_probabilities(SIZES, "sqrt")
    counts = Counter(t for (t,) in plan)
    assert len(plan) == 189 * 3
    for task, p in probs.items():
        assert abs(counts[task] - p * len(plan)) <= 1
    # Evenly spread: in every window of 100 steps, each task is within 2 of its share.
    for start in range(0, len(plan) - 100, 37):
        window = Counter(t for (t,) in plan[start : start + 100])
        for task, p in probs.items():
            assert abs(window[task] - 100 * p) <= 2


@pytest.mark.parametrize(
    "sampling", ["proportional", "sqrt", "temperature", "uniform", "annealed"]
)
def test_random_draws_match_probabilities(sampling: str) -> None:
    cfg = ScheduleConfig(kind="round_robin", sampling=sampling, draw="random", epoch_length=4000)
    plan = sample_task_order(cfg, SIZES, 2, 3, seed=11)
    probs = task_probabilities(SIZES, sampling, cfg.temperature, 2, 3)  # type: ignore[arg-type]
    counts = Counter(t for (t,) in plan)
    n = len(plan)
    for task, p in probs.items():
        # 5 standard deviations of a binomial count: fails only if the sampler is wrong.
        assert abs(counts[task] - n * p) <= 5 * math.sqrt(n * p * (1 - p)) + 1, (task, counts)


def test_random_draws_are_seeded_and_vary_with_seed_and_epoch() -> None:
    cfg = ScheduleConfig(kind="round_robin", sampling="uniform", draw="random", epoch_length=50)
    first = sample_task_order(cfg, SIZES, 1, 3, seed=4)
    assert sample_task_order(cfg, SIZES, 1, 3, seed=4) == first
    assert sample_task_order(cfg, SIZES, 1, 3, seed=5) != first
    assert sample_task_order(cfg, SIZES, 2, 3, seed=4) != first


def test_sequential_runs_each_task_pass_in_order() -> None:
    counts = {"sst": 3, "para": 2, "sts": 4}
    cfg = ScheduleConfig(kind="sequential", order=("sts", "sst", "para"))
    plan = sample_task_order(cfg, counts, 1, 2)
    assert plan == [("sts",)] * 4 + [("sst",)] * 3 + [("para",)] * 2


def test_epoch_round_robin_follows_sum12_order() -> None:
    order = ("sst", "para", "sts", "sts", "sst", "para", "para", "sts", "sst")
    counts = {"sst": 3, "para": 2, "sts": 4}
    cfg = ScheduleConfig(kind="epoch_round_robin", order=order)
    plans = [sample_task_order(cfg, counts, e, 12) for e in range(1, 13)]
    assert [p[0][0] for p in plans] == [*order, *order[:3]]
    for plan in plans:
        (task,) = set(plan)
        assert len(plan) == counts[task[0]]


def test_para_warmup_epochs_come_first_then_the_schedule_starts() -> None:
    counts = {"sst": 3, "para": 2, "sts": 4}
    cfg = ScheduleConfig(kind="epoch_round_robin", order=("sts", "sst"), para_warmup_epochs=2)
    plans = [sample_task_order(cfg, counts, e, 5) for e in range(1, 6)]
    assert plans[0] == plans[1] == [("para",)] * 2
    assert [p[0] for p in plans[2:]] == [("sts",), ("sst",), ("sts",)]
    annealed = ScheduleConfig(kind="round_robin", sampling="annealed", para_warmup_epochs=1)
    # Epoch 2 of 4 is the first multitask epoch: annealing starts at alpha = 1 there.
    plan = sample_task_order(replace(annealed, epoch_length=100), counts, 2, 4)
    assert Counter(t for (t,) in plan)["sts"] == pytest.approx(300 * 4 / 9, abs=1)


def test_bad_orders_name_the_key() -> None:
    with pytest.raises(ConfigError, match=r"schedule\.order' names unknown tasks \['qqp'\]"):
        ScheduleConfig(kind="sequential", order=("sst", "qqp"))
    untrained = {"sst": 2, "para": 3}  # a known task, but not one this run trains
    with pytest.raises(ConfigError, match=r"schedule\.order\[1\]': 'sts' is not a trained task"):
        sample_task_order(ScheduleConfig(kind="sequential", order=("sst", "sts")), untrained, 1, 1)
    with pytest.raises(ConfigError, match="para_warmup_epochs"):
        sample_task_order(ScheduleConfig(para_warmup_epochs=1), {"sst": 2}, 1, 1)


@pytest.mark.parametrize(
    "schedule",
    [
        {"kind": "simultaneous", "epoch_length": "min"},
        {"kind": "round_robin", "sampling": "sqrt", "epoch_length": "min"},
        {"kind": "round_robin", "sampling": "annealed", "draw": "random", "epoch_length": 3},
        {"kind": "sequential", "order": ["sts", "para", "sst"]},
        {"kind": "epoch_round_robin", "order": ["sst", "para", "sts", "sts", "sst", "para"]},
        {"kind": "simultaneous", "para_warmup_epochs": 1, "epoch_length": "min"},
    ],
    ids=["simultaneous", "round_robin", "random", "sequential", "epoch_rr", "warmup"],
)
def test_tiny_model_trains_with_each_schedule(schedule: dict) -> None:
    from tests.model.tiny_training import (
        eval_loss,
        make_context,
        synthetic_batches,
        train_plan,
        trainable_config,
    )

    cfg = trainable_config(schedule=schedule, optim={"lr": 5e-3})
    counts = {"sst": 4, "para": 3, "sts": 2}
    data = {t: synthetic_batches(t, n_batches=n) for t, n in counts.items()}
    epochs = 4
    plans = [
        sample_task_order(cfg.schedule, counts, e, epochs, seed=0) for e in range(1, epochs + 1)
    ]
    ctx = make_context(cfg, sum(len(p) for p in plans))
    before = eval_loss(ctx, data)
    for plan in plans:
        train_plan(ctx, plan, data)
    after = eval_loss(ctx, data)
    trained = {t for plan in plans for step in plan for t in step}
    assert trained == set(counts)
    assert sum(after.values()) < 0.75 * sum(before.values()), (before, after)
    assert after["sst"] < before["sst"] and after["sts"] < 0.7 * before["sts"], (before, after)
