"""Task schedules: which task(s) each training step of an epoch trains on (see ScheduleConfig).

An epoch's plan is a list with one entry per optimizer step, each entry the tuple of tasks whose
batches that step trains on. Plans depend only on (config, batch counts, epoch, seed), so a resumed
run rebuilds exactly the plan it was interrupted in.

Kinds:
- `simultaneous`: every step trains one batch of every task (losses summed, or PCGrad-combined).
  A task whose pass over its data ends before the epoch does is reshuffled and trained again
  (`exhausted: recycle`) or leaves the epoch's remaining steps (`exhausted: drop`: every task
  each step until the longest ends, as report 000 trained). The plan counts each task's batches
  of its first pass: under `data.token_budget` later passes may hold a few more or fewer, so a
  dropped task's epoch ends near, not exactly at, the end of its pass.
- `round_robin`: every step trains one task's batch. `draw: cycle` interleaves the tasks
  deterministically in proportion to the sampling probabilities (uniform = strict alternation
  sst, para, sts, ...); `draw: random` draws each step's task independently from them.
- `sequential`: within an epoch, task after task, one full pass over each task's data, in
  `schedule.order`. (Task after task over the whole run is `epoch_round_robin` with an order such
  as `[sst, sst, para, para, sts, sts]`.)
- `epoch_round_robin`: epoch e trains only `order[(e - 1) % len(order)]`, one pass over its data,
  e.g. SUM12's `sst para sts sts sst para para sts sst`.
Before any of these, `para_warmup_epochs` epochs train Quora alone (one pass each); they count
towards `optim.epochs`, and epoch-dependent schedules (annealing, epoch order) start after them.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from model.config import ConfigError, Sampling, ScheduleConfig

__all__ = ["epoch_steps", "sample_task_order", "task_probabilities"]

Plan = list[tuple[str, ...]]


def task_probabilities(
    sizes: Mapping[str, int],
    sampling: Sampling,
    temperature: float = 2.0,
    epoch: int = 1,
    total_epochs: int = 1,
) -> dict[str, float]:
    """Probability of drawing each task's next batch, from its size (examples or batches).

    proportional p ∝ n, sqrt p ∝ √n, temperature p ∝ n^(1/T), uniform, and annealed
    p ∝ n^α with α = 1 − 0.8 (e − 1) / (E − 1) for epoch e of E (Stickland & Murray 2019).
    """
    if not sizes:
        raise ValueError("task_probabilities: no tasks given")
    if any(n <= 0 for n in sizes.values()):
        raise ValueError(f"task_probabilities: every task needs data, got sizes {dict(sizes)}")
    if sampling == "proportional":
        alpha = 1.0
    elif sampling == "sqrt":
        alpha = 0.5
    elif sampling == "temperature":
        if temperature <= 0:
            raise ConfigError(f"config key 'schedule.temperature': must be > 0, got {temperature}")
        alpha = 1.0 / temperature
    elif sampling == "uniform":
        alpha = 0.0
    elif sampling == "annealed":
        if not 1 <= epoch <= total_epochs:
            raise ValueError(f"annealed sampling: epoch {epoch} is outside 1..{total_epochs}")
        alpha = 1.0 - 0.8 * (epoch - 1) / (total_epochs - 1) if total_epochs > 1 else 1.0
    else:
        raise ConfigError(f"config key 'schedule.sampling': unknown sampling {sampling!r}")
    weights = {task: float(n) ** alpha for task, n in sizes.items()}
    total = sum(weights.values())
    return {task: w / total for task, w in weights.items()}


def epoch_steps(batch_counts: Mapping[str, int], epoch_length: str | int) -> int:
    """Rounds in a multitask epoch: `min` / `max` of the tasks' batch counts, a task's, or a count.

    A round is one batch of every task: one step when simultaneous, one step per task when
    round-robin, so both kinds see the same number of batches.
    """
    if epoch_length == "max":
        return max(batch_counts.values())
    if epoch_length == "min":
        return min(batch_counts.values())
    if isinstance(epoch_length, str) and epoch_length in batch_counts:
        return batch_counts[epoch_length]
    if isinstance(epoch_length, str) and epoch_length.strip().isdigit():
        epoch_length = int(epoch_length)
    if isinstance(epoch_length, int) and not isinstance(epoch_length, bool) and epoch_length > 0:
        return epoch_length
    raise ConfigError(
        f"config key 'schedule.epoch_length': {epoch_length!r} is not 'min', 'max', a positive "
        f"integer or a trained task ({', '.join(batch_counts)})"
    )


def sample_task_order(
    schedule: ScheduleConfig,
    batch_counts: Mapping[str, int],
    epoch: int,
    total_epochs: int,
    seed: int = 0,
) -> Plan:
    """The tasks of every step of `epoch` (1-based of `total_epochs`); see the module docstring.

    `batch_counts` maps each trained task to its batches per pass over its data; its order is
    the order of tasks within a step / cycle. Random choices come from (seed, epoch) alone.
    `schedule.max_steps_per_epoch` cuts every epoch's plan, warm-up epochs included, to its
    first steps (a task's batch stream then runs on across epochs; a resumed run restarts each
    stream at a fresh pass, so its batches differ from an uninterrupted run's).
    """
    plan = _uncapped_plan(schedule, batch_counts, epoch, total_epochs, seed)
    cap = schedule.max_steps_per_epoch
    return plan if cap is None else plan[:cap]


def _uncapped_plan(
    schedule: ScheduleConfig,
    batch_counts: Mapping[str, int],
    epoch: int,
    total_epochs: int,
    seed: int,
) -> Plan:
    tasks = tuple(batch_counts)
    if not tasks:
        raise ValueError("sample_task_order: no tasks to train")
    warmup = schedule.para_warmup_epochs  # >= 0: ScheduleConfig checks it
    if warmup and "para" not in batch_counts:
        raise ConfigError("config key 'schedule.para_warmup_epochs': no Quora (para) data loaded")
    if epoch <= warmup:
        return [("para",)] * batch_counts["para"]
    epoch, total_epochs = epoch - warmup, max(total_epochs - warmup, 1)

    kind = schedule.kind
    if kind == "simultaneous":
        steps = epoch_steps(batch_counts, schedule.epoch_length)
        if schedule.exhausted == "recycle":
            return [tasks] * steps
        live = [tuple(t for t in tasks if i < batch_counts[t]) for i in range(steps)]
        return [step for step in live if step]
    if kind == "round_robin":
        steps = epoch_steps(batch_counts, schedule.epoch_length) * len(tasks)
        probs = task_probabilities(
            batch_counts, schedule.sampling, schedule.temperature, epoch, total_epochs
        )
        if schedule.draw == "random":
            rng = np.random.default_rng([seed, epoch + warmup])
            drawn = rng.choice(len(tasks), size=steps, p=[probs[t] for t in tasks])
            return [(tasks[i],) for i in drawn]
        return [(t,) for t in _interleave(probs, steps)]
    order = _checked_order(schedule.order, batch_counts)
    if kind == "sequential":
        return [(t,) for t in order for _ in range(batch_counts[t])]
    if kind == "epoch_round_robin":
        task = order[(epoch - 1) % len(order)]
        return [(task,)] * batch_counts[task]
    raise ConfigError(f"config key 'schedule.kind': unknown schedule {kind!r}")


def _interleave(probs: Mapping[str, float], steps: int) -> list[str]:
    """Smooth weighted round robin: each task's count is within 1 of steps × p, evenly spread."""
    credit = dict.fromkeys(probs, 0.0)
    out = []
    for _ in range(steps):
        for task, p in probs.items():
            credit[task] += p
        top = max(credit.values())
        # Ties (up to float rounding of the credits) go to the earlier task.
        best = next(t for t, c in credit.items() if c >= top - 1e-9)
        credit[best] -= 1.0
        out.append(best)
    return out


def _checked_order(order: tuple[str, ...], batch_counts: Mapping[str, int]) -> tuple[str, ...]:
    if not order:
        raise ConfigError("config key 'schedule.order': must name at least one task")
    for i, task in enumerate(order):
        if task not in batch_counts:
            raise ConfigError(
                f"config key 'schedule.order[{i}]': {task!r} is not a trained task "
                f"({', '.join(batch_counts)})"
            )
    return order
