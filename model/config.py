"""Typed, frozen training configuration: one dataclass per concern.

Every config key used anywhere (YAML, `--set`, search spaces, Ray trial dicts, MLflow params) is a
dotted path into `TrainConfig`, e.g. `optim.lr`, `smart.weight`, `data.max_examples.sst`.
`build_config` turns a nested mapping into these dataclasses once, at the edge, and rejects unknown
keys and wrong types with a `ConfigError` that names the key.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar, Union

TASKS: tuple[str, ...] = ("sst", "para", "sts")

PairEncoding = Literal["cross", "bi_concat", "sbert", "cosine", "cosine_mix"]
Pooling = Literal["cls", "pooler", "mean"]
HeadNorm = Literal["none", "batch", "layer"]
Activation = Literal["relu", "leaky_relu", "gelu"]
TrainMode = Literal["finetune", "frozen"]
ScheduleKind = Literal["simultaneous", "round_robin", "sequential", "epoch_round_robin"]
Sampling = Literal["proportional", "sqrt", "temperature", "uniform", "annealed"]
Divergence = Literal["sym_kl", "kl", "kl_then_sym_kl"]
StsLoss = Literal["mse", "cosine", "pearson"]
HeadPenalty = Literal["none", "l1", "l2", "linf"]


class ConfigError(ValueError):
    """A config value is unknown, of the wrong type or out of range; the message names the key."""


@dataclass(frozen=True)
class PerTaskInt:
    """An optional integer per task (None = no limit)."""

    sst: int | None = None
    para: int | None = None
    sts: int | None = None


@dataclass(frozen=True)
class PerTaskFloat:
    """A float per task (defaults to 1.0, e.g. loss weights or subsample ratios)."""

    sst: float = 1.0
    para: float = 1.0
    sts: float = 1.0


@dataclass(frozen=True)
class PerTaskFiles:
    """Extra training files per task, in the same CSV format as the task's training file."""

    sst: tuple[str, ...] = ()
    para: tuple[str, ...] = ()
    sts: tuple[str, ...] = ()


@dataclass(frozen=True)
class ModelConfig:
    """Encoder choice, task heads and how sentence pairs are encoded."""

    # `minilm` (packaged all-MiniLM-L6-v2), `bert-base-uncased` (local HF cache) or a directory.
    name: str = "minilm"
    # Random init with the named model's architecture (overridden below) instead of its weights:
    # tests and speed benchmarks use tiny or bert-base shapes without downloading anything.
    random_init: bool = False
    hidden_size: int | None = None
    num_hidden_layers: int | None = None
    num_attention_heads: int | None = None
    intermediate_size: int | None = None
    hidden_dropout: float | None = None  # None keeps the checkpoint's hidden_dropout_prob
    attention_dropout: float | None = None  # None keeps attention_probs_dropout_prob
    max_length: int = 128
    pair_encoding: PairEncoding = "cross"
    pooling: Pooling = "cls"
    head_layers: int = 1  # 1 = a single linear layer; n > 1 = MLP with n-1 hidden layers
    head_hidden: int = 256
    head_norm: HeadNorm = "none"
    head_activation: Activation = "gelu"
    head_dropout: float = 0.1
    mode: TrainMode = "finetune"
    # torch.compile the encoder's layers (GPU speed; the first steps pay the compile time).
    compile: bool = False
    # Run the transformer stack on real tokens only (model/packing.py): no FLOPs on padding;
    # attention is varlen on CUDA. Same numerics as the padded encoder (within float rounding).
    unpadded: bool = True


@dataclass(frozen=True)
class DataConfig:
    """Where the CS224N files are and how they are batched."""

    data_dir: str | None = None  # else $ORCHESTRATOR_DATA_DIR, else ../shared/data/cs224n
    sst_train: str = "ids-sst-train.csv"
    sst_dev: str = "ids-sst-dev.csv"
    sst_test: str = "ids-sst-test-student.csv"
    # Only the first 5,000 rows of quora-train.csv exist here; the full file works unchanged.
    para_train: str = "partial/quora-train-head5000.csv"
    para_dev: str = "quora-dev.csv"
    para_test: str = "quora-test-student.csv"
    sts_train: str = "sts-train.csv"
    sts_dev: str = "sts-dev.csv"
    sts_test: str = "sts-test-student.csv"
    max_examples: PerTaskInt = field(default_factory=PerTaskInt)  # seeded training subsample
    dev_max_examples: PerTaskInt = field(default_factory=PerTaskInt)  # fixed seeded dev subset
    subsample_ratio: PerTaskFloat = field(default_factory=PerTaskFloat)  # e.g. para: 0.1
    extra_train: PerTaskFiles = field(default_factory=PerTaskFiles)
    batch_size: int = 32
    eval_batch_size: int = 128
    bucketing: bool = True  # length-bucketed batches with dynamic padding
    token_budget: int | None = None  # batch by padded tokens instead of examples when set
    cache_dir: str | None = None  # tokenized-id cache (parquet); None = no cache


@dataclass(frozen=True)
class OptimConfig:
    """AdamW, linear warm-up/decay, clipping, epochs."""

    lr: float = 2e-5
    head_lr: float | None = None  # None = same as lr
    weight_decay: float = 0.01
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    warmup_ratio: float = 0.1
    grad_clip: float | None = 1.0
    epochs: int = 3


@dataclass(frozen=True)
class ScheduleConfig:
    """Which task each step trains and how often (see model/schedule.py)."""

    kind: ScheduleKind = "simultaneous"
    sampling: Sampling = "proportional"
    temperature: float = 2.0
    # Epoch length: "min" / "max" over tasks' batch counts, a task name, or a number of steps.
    epoch_length: str | int = "max"
    # epoch_round_robin: the task trained in each epoch, cycled (e.g. SUM12's order).
    order: tuple[str, ...] = ("sst", "para", "sts")
    para_warmup_epochs: int = 0  # Quora-only epochs before multitask training
    # round_robin: "cycle" interleaves tasks deterministically by the sampling probabilities
    # (uniform = strict alternation); "random" draws each step's task from them, seeded.
    draw: Literal["cycle", "random"] = "cycle"


@dataclass(frozen=True)
class SmartConfig:
    """SMART adversarial regularizer + Bregman proximal point (Jiang et al. 2020); off by default.

    The paper's defaults are ε 1e-5, η 1e-3, σ 1e-5, K 1, L∞, symmetric KL, μ 1, β 0.99; we keep
    all of them except weight (λ_s) and bregman_mu (μ), which are 0 so SMART costs nothing unless
    a config turns it on. See model/smart.py.
    """

    weight: float = 0.0  # lambda_s; 0 disables the adversarial term
    epsilon: float = 1e-5  # radius of the per-example ball around the embedding output
    step_size: float = 1e-3  # eta, of each normalised ascent step
    noise_std: float = 1e-5  # sigma of the starting perturbation
    steps: int = 1  # K ascent steps
    norm: Literal["l2", "linf"] = "linf"
    divergence: Divergence = "sym_kl"  # kl: KL throughout; kl_then_sym_kl: KL ascent, sym at end
    bregman_mu: float = 0.0  # mu; 0 disables the proximal term (paper: 1)
    bregman_beta: float = 0.99  # momentum of the EMA copy
    tasks: tuple[str, ...] = TASKS  # tasks whose batches get the SMART terms


@dataclass(frozen=True)
class PCGradConfig:
    """Projecting conflicting gradients (Yu et al. 2020); off by default."""

    enabled: bool = False


@dataclass(frozen=True)
class LossConfig:
    """Task losses, their weights and head regularizers."""

    task_weights: PerTaskFloat = field(default_factory=PerTaskFloat)
    sst_label_smoothing: float = 0.0
    sst_class_weights: bool = False  # n / (C * n_c)
    sts_loss: StsLoss = "mse"
    head_penalty: HeadPenalty = "none"
    head_penalty_coef: float = 0.0


@dataclass(frozen=True)
class TrainConfig:
    """Everything one training run needs; built once from YAML / overrides / a Ray trial dict."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    smart: SmartConfig = field(default_factory=SmartConfig)
    pcgrad: PCGradConfig = field(default_factory=PCGradConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    seed: int = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"
    precision: Literal["auto", "fp32", "bf16"] = "auto"  # auto = bf16 autocast on CUDA
    log_every: int = 50  # steps between reading the loss back from the device


T = TypeVar("T")


def build_config(cls: type[T], values: Mapping[str, Any] | None, prefix: str = "") -> T:
    """Build dataclass `cls` from a nested mapping, checking every key and type."""
    values = {} if values is None else values
    if not isinstance(values, Mapping):
        where = prefix.rstrip(".") or "config"
        raise ConfigError(f"config key '{where}': expected a mapping, got {_type_name(values)}")
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    kwargs: dict[str, Any] = {}
    for key, value in values.items():
        dotted = f"{prefix}{key}"
        if key not in known:
            raise ConfigError(f"unknown config key '{dotted}'{_suggest(str(key), known)}")
        kwargs[key] = _coerce(hints[key], value, dotted)
    return cls(**kwargs)


def config_to_dict(config: Any) -> dict[str, Any]:
    """Nested plain-dict view of a config (tuples become lists), for JSON/YAML/MLflow."""
    raw = dataclasses.asdict(config)
    return _lists(raw)


def flatten(nested: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """{'optim': {'lr': 1}} -> {'optim.lr': 1}."""
    flat: dict[str, Any] = {}
    for key, value in nested.items():
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def flatten_config(config: Any) -> dict[str, Any]:
    """Dotted view of a whole config (`optim.lr` -> 2e-5), for params, tags and hashes."""
    return flatten(config_to_dict(config))


def unflatten(flat: Mapping[str, Any]) -> dict[str, Any]:
    """{'optim.lr': 1} -> {'optim': {'lr': 1}}; later keys win over earlier ones."""
    nested: dict[str, Any] = {}
    for dotted, value in flat.items():
        node = nested
        *parents, leaf = dotted.split(".")
        for part in parents:
            child = node.get(part)
            if not isinstance(child, dict):
                child = node[part] = {}
            node = child
        node[leaf] = value
    return nested


def merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """Deep-merge two nested mappings; `override` wins."""
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def config_field_types() -> dict[str, Any]:
    """Every leaf dotted key of TrainConfig mapped to its type hint (for search spaces)."""
    out: dict[str, Any] = {}

    def walk(cls: type, prefix: str) -> None:
        for name, hint in typing.get_type_hints(cls).items():
            if dataclasses.is_dataclass(hint):
                walk(hint, f"{prefix}{name}.")  # type: ignore[arg-type]
            else:
                out[f"{prefix}{name}"] = hint

    walk(TrainConfig, "")
    return out


def _coerce(hint: Any, value: Any, key: str) -> Any:
    """Check `value` against type hint `hint`; allow int -> float and list -> tuple."""
    if dataclasses.is_dataclass(hint):
        return build_config(hint, value, prefix=f"{key}.")  # type: ignore[arg-type]
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(arg, value, key)
            except ConfigError as err:
                errors.append(err)
        raise (
            errors[0]
            if len(errors) == 1
            else ConfigError(f"config key '{key}': expected {_hint_name(hint)}, got {value!r}")
        )
    if origin is Literal:
        if value not in args:
            choices = ", ".join(repr(a) for a in args)
            raise ConfigError(f"config key '{key}': {value!r} is not one of {choices}")
        return value
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"config key '{key}': expected a list, got {_type_name(value)}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(args[0], v, f"{key}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            raise ConfigError(f"config key '{key}': expected {len(args)} items, got {len(value)}")
        pairs = enumerate(zip(args, value, strict=True))
        return tuple(_coerce(a, v, f"{key}[{i}]") for i, (a, v) in pairs)
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"config key '{key}': expected true/false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise ConfigError(f"config key '{key}': expected an integer, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"config key '{key}': expected a number, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"config key '{key}': expected a string, got {value!r}")
        return value
    raise ConfigError(
        f"config key '{key}': unsupported type {_hint_name(hint)}"
    )  # pragma: no cover


def _lists(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _lists(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_lists(v) for v in value]
    return value


def _suggest(key: str, known: set[str]) -> str:
    import difflib

    close = difflib.get_close_matches(key, sorted(known), n=1)
    return f" (did you mean '{close[0]}'?)" if close else f" (known: {', '.join(sorted(known))})"


def _type_name(value: Any) -> str:
    return type(value).__name__


def _hint_name(hint: Any) -> str:
    return getattr(hint, "__name__", None) or str(hint).replace("typing.", "")


def check_ranges(cfg: TrainConfig) -> None:
    """Reject values of the right type but outside their meaningful range; names the key."""
    optim, model, smart = cfg.optim, cfg.model, cfg.smart
    checks: list[tuple[str, bool, str]] = [
        # `1e400` parses as inf: finite is part of "> 0" for a learning rate.
        ("optim.lr", math.isfinite(optim.lr) and optim.lr > 0, "must be a finite number > 0"),
        ("optim.head_lr", optim.head_lr is None
         or (math.isfinite(optim.head_lr) and optim.head_lr > 0), "must be a finite number > 0"),
        ("optim.epochs", optim.epochs >= 1, "must be >= 1"),
        ("optim.warmup_ratio", 0 <= optim.warmup_ratio < 1, "must be in [0, 1)"),
        ("optim.weight_decay", optim.weight_decay >= 0, "must be >= 0"),
        ("optim.betas", all(0 <= b < 1 for b in optim.betas), "must both be in [0, 1)"),
        ("optim.eps", optim.eps > 0, "must be > 0"),
        ("optim.grad_clip", optim.grad_clip is None or optim.grad_clip > 0,
         "must be > 0 (or null for no clipping)"),
        ("seed", 0 <= cfg.seed < 2**32, "must be in [0, 2**32)"),
        ("data.batch_size", cfg.data.batch_size >= 1, "must be >= 1"),
        ("data.eval_batch_size", cfg.data.eval_batch_size >= 1, "must be >= 1"),
        ("data.token_budget", cfg.data.token_budget is None or cfg.data.token_budget >= 1,
         "must be >= 1 (or null to batch by examples)"),
        ("model.head_hidden", model.head_hidden >= 1, "must be >= 1"),
        ("schedule.temperature", cfg.schedule.temperature > 0, "must be > 0"),
        ("schedule.para_warmup_epochs", cfg.schedule.para_warmup_epochs >= 0, "must be >= 0"),
        ("smart.weight", smart.weight >= 0, "must be >= 0"),
        ("smart.epsilon", smart.epsilon > 0, "must be > 0"),
        ("smart.step_size", smart.step_size > 0, "must be > 0"),
        ("smart.noise_std", smart.noise_std >= 0, "must be >= 0"),
        ("smart.bregman_mu", smart.bregman_mu >= 0, "must be >= 0"),
        ("smart.bregman_beta", 0 <= smart.bregman_beta < 1, "must be in [0, 1)"),
        ("loss.sst_label_smoothing", 0 <= cfg.loss.sst_label_smoothing < 1, "must be in [0, 1)"),
        ("loss.head_penalty_coef", cfg.loss.head_penalty_coef >= 0, "must be >= 0"),
        ("model.max_length", 8 <= cfg.model.max_length <= 512, "must be in [8, 512]"),
        ("model.head_layers", cfg.model.head_layers >= 1, "must be >= 1"),
        ("model.head_dropout", 0 <= cfg.model.head_dropout < 1, "must be in [0, 1)"),
        ("log_every", cfg.log_every >= 1, "must be >= 1"),
    ]
    for name in ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size"):
        size = getattr(model, name)
        checks.append((f"model.{name}", size is None or size >= 1, "must be >= 1"))
    for name in ("hidden_dropout", "attention_dropout"):
        value = getattr(cfg.model, name)
        checks.append((f"model.{name}", value is None or 0 <= value < 1, "must be in [0, 1)"))
    for task in TASKS:
        weight = getattr(cfg.loss.task_weights, task)
        checks.append((f"loss.task_weights.{task}", weight >= 0, "must be >= 0"))
        ratio = getattr(cfg.data.subsample_ratio, task)
        checks.append((f"data.subsample_ratio.{task}", 0 < ratio <= 1, "must be in (0, 1]"))
        for section in ("max_examples", "dev_max_examples"):
            n = getattr(getattr(cfg.data, section), task)
            checks.append((f"data.{section}.{task}", n is None or n >= 1, "must be >= 1"))
    checks.append(("smart.steps", cfg.smart.steps >= 0, "must be >= 0"))
    for key, names in (("smart.tasks", cfg.smart.tasks), ("schedule.order", cfg.schedule.order)):
        unknown = sorted(set(names) - set(TASKS))
        checks.append((key, not unknown, f"names unknown tasks {unknown}; tasks are {TASKS}"))
    spec = cfg.schedule.epoch_length
    ok_length = spec in ("min", "max", *TASKS) if isinstance(spec, str) else spec > 0
    checks.append(("schedule.epoch_length", ok_length, "must be min, max, a task or a step count"))
    for key, ok, message in checks:
        if not ok:
            raise ConfigError(f"config key '{key}' {message}")
