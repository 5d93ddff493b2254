"""Config interaction guards: settings that have no effect under the rest of a TrainConfig.

The trainer reads some keys only under a value of another (SMART's ε only when smart.weight > 0,
schedule.order only under sequential schedules, PCGrad only when a step trains two or more tasks).
`inert_settings` lists every such setting whose value differs from its default, each naming the
inert key and the keys that disable it. `orchestrator train` refuses them; sweeps, which may sample
them legitimately, warn (see orchestrator/space/guards.py).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Literal

from model.config import TASKS, ConfigError, TrainConfig

__all__ = [
    "InertSetting",
    "InertSettingError",
    "InertSettingWarning",
    "check_inert_settings",
    "inert_settings",
    "warn_inert_settings",
]

Severity = Literal["error", "warning"]
_DEFAULTS = TrainConfig()
# Schedules whose every step trains a single task's batch.
ONE_TASK_PER_STEP = ("round_robin", "sequential", "epoch_round_robin")


class InertSettingWarning(UserWarning):
    """A config setting has no effect under the rest of the config; the run goes on."""


class InertSettingError(ConfigError):
    """A config setting has no effect under the rest of the config (a single training run)."""


@dataclass(frozen=True)
class InertSetting:
    """`key` has no effect because of the values of `because`; `message` names all of them.

    `severity` "warning" marks a setting a base config sensibly carries (a learning rate) that a
    mode switch disables: `orchestrator train` warns about those instead of refusing.
    """

    key: str
    because: tuple[str, ...]
    message: str
    severity: Severity = "error"


def config_value(cfg: TrainConfig, key: str) -> Any:
    """The value of dotted `key` in `cfg`, e.g. `loss.task_weights.sst`."""
    node: Any = cfg
    for part in key.split("."):
        node = getattr(node, part)
    return node


def _changed(cfg: TrainConfig, key: str) -> bool:
    return bool(config_value(cfg, key) != config_value(_DEFAULTS, key))


def show(value: Any) -> str:
    """A value as YAML spells it: true, null, [sst, para], 1e-05."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, (tuple, list)):
        return "[" + ", ".join(show(v) for v in value) + "]"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _inert(
    cfg: TrainConfig, key: str, because: tuple[str, ...], why: str, severity: Severity = "error"
) -> InertSetting:
    """`key: v has no effect with b1: x, b2: y (why)`."""
    causes = ", ".join(f"{b}: {show(config_value(cfg, b))}" for b in because)
    message = f"{key}: {show(config_value(cfg, key))} has no effect with {causes} ({why})"
    return InertSetting(key, because, message, severity)


def _multitask_epochs(cfg: TrainConfig) -> int:
    """Epochs after the Quora-only warm-up: the ones the schedule's kind shapes."""
    return cfg.optim.epochs - cfg.schedule.para_warmup_epochs


def _warmup_keys(cfg: TrainConfig) -> tuple[str, ...]:
    warmup = ("schedule.para_warmup_epochs",) if cfg.schedule.para_warmup_epochs else ()
    return ("optim.epochs", *warmup)


def _pcgrad(cfg: TrainConfig) -> Iterator[InertSetting]:
    """PCGrad projects between two or more task gradients of the shared encoder in one step
    (model/step.py, model/pcgrad.py); the first reason it cannot is reported."""
    if not cfg.pcgrad.enabled:
        return
    key = "pcgrad.enabled"
    weights = cfg.loss.task_weights
    unweighted = tuple(f"loss.task_weights.{t}" for t in TASKS if getattr(weights, t) == 0)
    if cfg.schedule.kind in ONE_TASK_PER_STEP:
        why = "each step trains one task, so there is nothing to project; use simultaneous"
        yield _inert(cfg, key, ("schedule.kind",), why)
    elif _multitask_epochs(cfg) <= 0:
        why = "every epoch is a Quora-only warm-up epoch"
        yield _inert(cfg, key, ("schedule.para_warmup_epochs", "optim.epochs"), why)
    elif cfg.model.mode == "frozen":
        yield _inert(cfg, key, ("model.mode",), "the encoder the tasks share is not trained")
    elif len(unweighted) >= len(TASKS) - 1:
        yield _inert(cfg, key, unweighted, "fewer than two tasks' losses reach the gradient")


def _sampling(cfg: TrainConfig) -> Iterator[InertSetting]:
    """Task sampling (sampling, draw, temperature) is read by round_robin alone."""
    s, kind = cfg.schedule, ("schedule.kind",)
    if s.kind != "round_robin":
        for name in ("sampling", "draw"):
            if _changed(cfg, f"schedule.{name}"):
                yield _inert(cfg, f"schedule.{name}", kind, "only round_robin draws tasks")
    if _changed(cfg, "schedule.temperature") and s.sampling != "temperature":
        why = "only sampling: temperature reads it"
        yield _inert(cfg, "schedule.temperature", ("schedule.sampling",), why)
    elif _changed(cfg, "schedule.temperature") and s.kind != "round_robin":
        yield _inert(cfg, "schedule.temperature", kind, "only round_robin draws tasks")
    if s.kind == "round_robin" and s.sampling == "annealed" and _multitask_epochs(cfg) == 1:
        why = "annealing over one multitask epoch is proportional sampling"
        yield _inert(cfg, "schedule.sampling", _warmup_keys(cfg), why)


def _order_and_length(cfg: TrainConfig) -> Iterator[InertSetting]:
    """schedule.order shapes sequential schedules only; schedule.epoch_length the others; an
    epoch_round_robin order longer than the multitask epochs is cut short."""
    s, kind = cfg.schedule, ("schedule.kind",)
    if s.kind in ("simultaneous", "round_robin") and _changed(cfg, "schedule.order"):
        why = "only sequential and epoch_round_robin follow an order"
        yield _inert(cfg, "schedule.order", kind, why)
    if s.kind in ("sequential", "epoch_round_robin") and _changed(cfg, "schedule.epoch_length"):
        yield _inert(cfg, "schedule.epoch_length", kind, "each task runs one full pass instead")
    if s.exhausted == "drop" and s.kind != "simultaneous":
        why = "only simultaneous steps train tasks whose data may run out mid-epoch"
        yield _inert(cfg, "schedule.exhausted", kind, why)
    elif s.exhausted == "drop" and s.epoch_length == "min":
        why = "no task's data runs out before the shortest task's epoch ends"
        yield _inert(cfg, "schedule.exhausted", ("schedule.epoch_length",), why)
    epochs = _multitask_epochs(cfg)
    if epochs <= 0 and s.para_warmup_epochs > 0:
        message = (
            f"schedule.para_warmup_epochs: {s.para_warmup_epochs} leaves no multitask epoch of "
            f"optim.epochs: {cfg.optim.epochs} (every epoch trains Quora alone; sst and sts "
            "never train)"
        )
        yield InertSetting("schedule.para_warmup_epochs", ("optim.epochs",), message)
    elif s.kind == "epoch_round_robin" and len(s.order) > epochs:
        untrained = sorted(set(s.order) - set(s.order[:epochs]))
        never = f"; {', '.join(untrained)} never train" if untrained else ""
        causes = ", ".join(f"{k}: {show(config_value(cfg, k))}" for k in _warmup_keys(cfg))
        message = (
            f"schedule.order: {show(s.order)} has {len(s.order)} entries, but {causes} leaves "
            f"{epochs} epoch(s) to follow it under epoch_round_robin (the entries after the "
            f"first {epochs} have no effect{never})"
        )
        yield InertSetting("schedule.order", _warmup_keys(cfg), message)


def _smart(cfg: TrainConfig) -> Iterator[InertSetting]:
    """The adversarial term's knobs need smart.weight > 0 (and ascent steps); the proximal
    term's need smart.bregman_mu > 0 and the paper variant; both need tasks (model/smart.py)."""
    s = cfg.smart
    library = s.variant == "smart_pytorch"
    if s.weight == 0:
        for name in ("epsilon", "step_size", "noise_std", "steps", "norm"):
            if _changed(cfg, f"smart.{name}"):
                why = "only SMART's adversarial term reads it"
                yield _inert(cfg, f"smart.{name}", ("smart.weight",), why)
        if _changed(cfg, "smart.variant") and s.bregman_mu == 0:  # else it drops the proximal term
            why = "only SMART's adversarial term reads it"
            yield _inert(cfg, "smart.variant", ("smart.weight",), why)
    elif s.steps == 0 and _changed(cfg, "smart.step_size"):
        yield _inert(cfg, "smart.step_size", ("smart.steps",), "no ascent step is taken")
    if library and s.weight > 0 and _changed(cfg, "smart.norm"):
        why = "smart_pytorch normalises each token's perturbation in L∞"
        yield _inert(cfg, "smart.norm", ("smart.variant",), why)
    if library and s.bregman_mu > 0:
        why = "smart_pytorch has no proximal term"
        yield _inert(cfg, "smart.bregman_mu", ("smart.variant",), why)
    if s.bregman_mu == 0 and _changed(cfg, "smart.bregman_beta"):
        why = "only the proximal term's EMA reads it"
        yield _inert(cfg, "smart.bregman_beta", ("smart.bregman_mu",), why)
    off = ("smart.weight", "smart.bregman_mu")
    if s.weight == 0 and s.bregman_mu == 0:
        for name in ("divergence", "tasks"):
            if _changed(cfg, f"smart.{name}"):
                yield _inert(cfg, f"smart.{name}", off, "SMART is off")
    elif s.divergence == "kl_then_sym_kl" and (s.weight == 0 or s.steps == 0):
        because = ("smart.weight",) if s.weight == 0 else ("smart.steps",)
        why = "it differs from sym_kl only in the ascent steps"
        yield _inert(cfg, "smart.divergence", because, why)
    if not s.tasks:
        for name in off:
            if config_value(cfg, name) > 0:
                why = "no task's batches get the SMART terms"
                yield _inert(cfg, name, ("smart.tasks",), why)


def _losses(cfg: TrainConfig) -> Iterator[InertSetting]:
    """Head penalties need both a kind and a coefficient; a task's loss options need its loss
    weight above 0."""
    loss = cfg.loss
    if loss.head_penalty != "none" and loss.head_penalty_coef == 0:
        why = "the penalty is multiplied by 0"
        yield _inert(cfg, "loss.head_penalty", ("loss.head_penalty_coef",), why)
    if loss.head_penalty == "none" and loss.head_penalty_coef > 0:
        why = "there is no penalty to scale"
        yield _inert(cfg, "loss.head_penalty_coef", ("loss.head_penalty",), why)
    if loss.head_penalty == "none" and _changed(cfg, "loss.head_penalty_tasks"):
        why = "there is no penalty to apply"
        yield _inert(cfg, "loss.head_penalty_tasks", ("loss.head_penalty",), why)
    per_task = {"sst": ("sst_label_smoothing", "sst_class_weights"), "sts": ("sts_loss",)}
    for task, names in per_task.items():
        if getattr(loss.task_weights, task) == 0:
            for name in names:
                if _changed(cfg, f"loss.{name}"):
                    weight = (f"loss.task_weights.{task}",)
                    yield _inert(cfg, f"loss.{name}", weight, f"the {task} loss is weighted by 0")


def _heads(cfg: TrainConfig) -> Iterator[InertSetting]:
    """Hidden-layer options of heads that are one linear layer (or no layer: a plain cosine
    pair head), global head options every task overrides, and a shared pair encoding both
    pair tasks override."""
    model, hidden_options = cfg.model, ("hidden", "norm", "activation")
    if all(model.head_shape(task).layers == 1 for task in TASKS):
        for name in (f"head_{option}" for option in hidden_options):
            if _changed(cfg, f"model.{name}"):
                why = "a one-layer head is a single linear layer"
                yield _inert(cfg, f"model.{name}", _head_layer_keys(cfg), why)
    for option in ("layers", "dropout", *hidden_options):
        overrides = tuple(f"model.{t}_head.{option}" for t in TASKS)
        if _changed(cfg, f"model.head_{option}") and all(_changed(cfg, k) for k in overrides):
            why = "every task's head sets its own"
            yield _inert(cfg, f"model.head_{option}", overrides, why)
    for task in TASKS:
        own, prefix = getattr(model, f"{task}_head"), f"model.{task}_head"
        no_mlp = task != "sst" and model.encoding_for(task) == "cosine"
        options = ("layers", "dropout", *hidden_options) if no_mlp else hidden_options
        if not no_mlp and model.head_shape(task).layers > 1:
            continue
        because = (_encoding_key(cfg, task),) if no_mlp else _head_layer_keys(cfg, task)
        why = "a plain cosine pair head has no layers" if no_mlp else "its head is one layer"
        for option in options:
            if getattr(own, option) is not None:
                yield _inert(cfg, f"{prefix}.{option}", because, why)
    own_encodings = ("model.para_pair_encoding", "model.sts_pair_encoding")
    if _changed(cfg, "model.pair_encoding") and all(_changed(cfg, k) for k in own_encodings):
        yield _inert(cfg, "model.pair_encoding", own_encodings, "both pair tasks set their own")


def _encoding_key(cfg: TrainConfig, task: str) -> str:
    """The key that sets `task`'s pair encoding: its own, else the shared one."""
    own = f"model.{task}_pair_encoding"
    return own if config_value(cfg, own) is not None else "model.pair_encoding"


def _head_layer_keys(cfg: TrainConfig, task: str | None = None) -> tuple[str, ...]:
    """The keys that make a head (or every head) one layer: the global and any override."""
    tasks = TASKS if task is None else (task,)
    own = tuple(f"model.{t}_head.layers" for t in tasks if _changed(cfg, f"model.{t}_head.layers"))
    return ("model.head_layers", *own)


def _model_and_data(cfg: TrainConfig) -> Iterator[InertSetting]:
    """The encoder's learning rate when it is frozen, and the batch size when batches are built
    by token budget."""
    if cfg.model.mode == "frozen" and cfg.optim.head_lr is not None and _changed(cfg, "optim.lr"):
        why = "the frozen encoder is the only part trained at optim.lr"
        because = ("model.mode", "optim.head_lr")
        yield _inert(cfg, "optim.lr", because, why, severity="warning")
    if cfg.data.token_budget is not None and _changed(cfg, "data.batch_size"):
        why = "batches hold up to token_budget padded tokens instead"
        yield _inert(cfg, "data.batch_size", ("data.token_budget",), why)


RULES: tuple[Callable[[TrainConfig], Iterable[InertSetting]], ...] = (
    _pcgrad,
    _sampling,
    _order_and_length,
    _smart,
    _losses,
    _heads,
    _model_and_data,
)


def inert_settings(cfg: TrainConfig) -> list[InertSetting]:
    """Every setting of `cfg` that differs from its default yet has no effect, in rule order."""
    return [setting for rule in RULES for setting in rule(cfg)]


def warn_inert_settings(
    settings: Iterable[InertSetting], prefix: str = "", stacklevel: int = 2
) -> None:
    """One InertSettingWarning per setting, its message after `prefix` (e.g. a file name)."""
    for setting in settings:
        warnings.warn(f"{prefix}{setting.message}", InertSettingWarning, stacklevel=stacklevel + 1)


def check_inert_settings(cfg: TrainConfig, prefix: str = "") -> None:
    """Refuse a config with inert settings (one line naming them all), warn about the ones of
    severity "warning"; `prefix` says where the config came from."""
    settings = inert_settings(cfg)
    errors = [s.message for s in settings if s.severity == "error"]
    if errors:
        raise InertSettingError(prefix + "; ".join(errors))
    warn_inert_settings(settings, prefix, stacklevel=3)
