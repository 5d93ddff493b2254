"""Typed, frozen training configuration: one dataclass per concern, valid by construction.

Every config key used anywhere (YAML, `--set`, search spaces, Ray trial dicts, MLflow params) is a
dotted path into `TrainConfig`, e.g. `optim.lr`, `smart.weight`, `data.max_examples.sst`.
`build_config` turns a nested mapping into these dataclasses once, at the edge; each dataclass
checks its own types and ranges in `__post_init__`, so a direct `OptimConfig(eps=-1)` fails too,
with a `ConfigError` that names the key.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from model.config_mapping import (
    ConfigError,
    NewFieldsDefault,
    build_config,
    check_field_types,
    check_ranges,
    config_to_dict,
    flatten,
    flatten_config,
    hint_name,
    is_finite_number,
    merge,
    unflatten,
)
from model.config_tasks import (
    TASKS,
    Activation,
    HeadNorm,
    HeadShape,
    PerTaskFiles,
    PerTaskFloat,
    PerTaskInt,
    TaskHead,
    fraction_or_none,
    known_tasks,
)

__all__ = [
    "CROSS_ENCODINGS",
    "TASKS",
    "ConfigError",
    "DataConfig",
    "HeadShape",
    "LossConfig",
    "ModelConfig",
    "OptimConfig",
    "PCGradConfig",
    "PerTaskFiles",
    "PerTaskFloat",
    "PerTaskInt",
    "ScheduleConfig",
    "SmartConfig",
    "TaskHead",
    "TrainConfig",
    "build_config",
    "config_field_types",
    "config_to_dict",
    "flatten",
    "flatten_config",
    "hint_name",
    "is_finite_number",
    "merge",
    "unflatten",
]

# cross_cosine_mix: one cross-encoded pass whose pair vector feeds an MLP, mixed by a learned
# weight with the scaled cosine of the two sentences' mean token vectors in that pass (heads.py).
PairEncoding = Literal["cross", "bi_concat", "sbert", "cosine", "cosine_mix", "cross_cosine_mix"]
CROSS_ENCODINGS = ("cross", "cross_cosine_mix")  # one token sequence per pair
Pooling = Literal["cls", "pooler", "mean"]
TrainMode = Literal["finetune", "frozen"]
ScheduleKind = Literal["simultaneous", "round_robin", "sequential", "epoch_round_robin"]
Sampling = Literal["proportional", "sqrt", "temperature", "uniform", "annealed"]
Divergence = Literal["sym_kl", "kl", "kl_then_sym_kl"]
SmartVariant = Literal["paper", "smart_pytorch"]
StsLoss = Literal["mse", "cosine", "pearson"]
HeadPenalty = Literal["none", "l1", "l2", "linf"]
LrSchedule = Literal["linear", "constant"]
Exhausted = Literal["recycle", "drop"]

def _at_least(value: float | None, low: float) -> bool:
    """`value >= low`, or None (the key's "not set")."""
    return value is None or value >= low


def _finite_positive(value: float) -> bool:
    # `1e400` parses as inf: finite is part of "> 0" for a learning rate.
    return math.isfinite(value) and value > 0


def _per_task(
    section: str, values: Any, ok: Callable[[Any], bool], message: str
) -> list[tuple[str, bool, str]]:
    """One range check per task of a PerTask* field, whose rules depend on the field."""
    return [(f"{section}.{task}", ok(getattr(values, task)), message) for task in TASKS]


@dataclass(frozen=True)
class ModelConfig(NewFieldsDefault):
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
    # Per task: the head's shape where it differs from head_* above, and the pair encoding of
    # Quora / STS where it differs from pair_encoding (None = the shared setting).
    sst_head: TaskHead = field(default_factory=TaskHead)
    para_head: TaskHead = field(default_factory=TaskHead)
    sts_head: TaskHead = field(default_factory=TaskHead)
    para_pair_encoding: PairEncoding | None = None
    sts_pair_encoding: PairEncoding | None = None
    mode: TrainMode = "finetune"
    # torch.compile the encoder's layers (GPU speed; the first steps pay the compile time).
    compile: bool = False
    # Run the transformer stack on real tokens only (model/packing.py): no FLOPs on padding;
    # attention is varlen on CUDA. Same numerics as the padded encoder (within float rounding).
    unpadded: bool = True

    def __post_init__(self) -> None:
        check_field_types(self, "model.")
        sizes = ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size")
        check_ranges("model.", [
            *((name, _at_least(getattr(self, name), 1), "must be >= 1") for name in sizes),
            ("hidden_dropout", fraction_or_none(self.hidden_dropout), "must be in [0, 1)"),
            ("attention_dropout", fraction_or_none(self.attention_dropout), "must be in [0, 1)"),
            ("max_length", 8 <= self.max_length <= 512, "must be in [8, 512]"),
            ("head_layers", self.head_layers >= 1, "must be >= 1"),
            ("head_hidden", self.head_hidden >= 1, "must be >= 1"),
            ("head_dropout", fraction_or_none(self.head_dropout), "must be in [0, 1)"),
            *(check for task in TASKS
              for check in getattr(self, f"{task}_head").range_checks(f"{task}_head.")),
        ])  # fmt: skip

    def encoding_for(self, task: str) -> str:
        """How `task`'s sentence pairs are encoded (SST has single sentences: `cross`)."""
        if task == "sst":
            return "cross"
        own = self.para_pair_encoding if task == "para" else self.sts_pair_encoding
        return own if own is not None else self.pair_encoding

    def head_shape(self, task: str) -> HeadShape:
        """`task`'s head: its own `<task>_head` values where set, else the global `head_*`."""
        own: TaskHead = getattr(self, f"{task}_head")
        return HeadShape(
            layers=own.layers if own.layers is not None else self.head_layers,
            hidden=own.hidden if own.hidden is not None else self.head_hidden,
            dropout=own.dropout if own.dropout is not None else self.head_dropout,
            activation=own.activation if own.activation is not None else self.head_activation,
            norm=own.norm if own.norm is not None else self.head_norm,
        )


@dataclass(frozen=True)
class DataConfig(NewFieldsDefault):
    """Where the CS224N files are and how they are batched."""

    data_dir: str | None = None  # else $ORCHESTRATOR_DATA_DIR, else ./data
    sst_train: str = "ids-sst-train.csv"
    sst_dev: str = "ids-sst-dev.csv"
    sst_test: str = "ids-sst-test-student.csv"
    # auto: quora-train.csv if the data dir has it, else the 5,000-pair partial file (data_dir.py)
    para_train: str = "auto"
    para_dev: str = "quora-dev.csv"
    para_test: str = "quora-test-student.csv"
    sts_train: str = "sts-train.csv"
    sts_dev: str = "sts-dev.csv"
    sts_test: str = "sts-test-student.csv"
    max_examples: PerTaskInt = field(default_factory=PerTaskInt)  # seeded training subsample
    dev_max_examples: PerTaskInt = field(default_factory=PerTaskInt)  # fixed seeded dev subset
    subsample_ratio: PerTaskFloat = field(default_factory=PerTaskFloat)  # e.g. para: 0.1
    # Fraction of each task's training file held out, with a fixed seed, as the selection split:
    # fit picks its best epoch (and sweeps may rank) on it, so dev stays a clean reporting split.
    selection: float = 0.0
    extra_train: PerTaskFiles = field(default_factory=PerTaskFiles)
    batch_size: int = 32
    eval_batch_size: int = 128
    bucketing: bool = True  # length-bucketed batches with dynamic padding
    token_budget: int | None = None  # batch by padded tokens instead of examples when set
    cache_dir: str | None = None  # tokenized-id cache (parquet); None = no cache

    def __post_init__(self) -> None:
        check_field_types(self, "data.")
        check_ranges("data.", [
            ("batch_size", self.batch_size >= 1, "must be >= 1"),
            ("eval_batch_size", self.eval_batch_size >= 1, "must be >= 1"),
            ("selection", 0 <= self.selection < 0.5, "must be in [0, 0.5) (0 = no split)"),
            ("token_budget", _at_least(self.token_budget, 1),
             "must be >= 1 (or null to batch by examples)"),
            *_per_task("subsample_ratio", self.subsample_ratio, lambda r: 0 < r <= 1,
                       "must be in (0, 1]"),
            *_per_task("max_examples", self.max_examples, lambda n: _at_least(n, 1),
                       "must be >= 1"),
            *_per_task("dev_max_examples", self.dev_max_examples, lambda n: _at_least(n, 1),
                       "must be >= 1"),
        ])  # fmt: skip


@dataclass(frozen=True)
class OptimConfig(NewFieldsDefault):
    """AdamW, warm-up then linear decay or a constant rate, clipping, epochs."""

    lr: float = 2e-5
    head_lr: float | None = None  # None = same as lr
    weight_decay: float = 0.01
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    warmup_ratio: float = 0.1
    # After warm-up: linear decay to 0 at the last step, or constant (several reports ran so).
    lr_schedule: LrSchedule = "linear"
    grad_clip: float | None = 1.0
    epochs: int = 3

    def __post_init__(self) -> None:
        check_field_types(self, "optim.")
        check_ranges("optim.", [
            ("lr", _finite_positive(self.lr), "must be a finite number > 0"),
            ("head_lr", self.head_lr is None or _finite_positive(self.head_lr),
             "must be a finite number > 0"),
            ("epochs", self.epochs >= 1, "must be >= 1"),
            ("warmup_ratio", 0 <= self.warmup_ratio < 1, "must be in [0, 1)"),
            ("weight_decay", self.weight_decay >= 0, "must be >= 0"),
            ("betas", all(0 <= b < 1 for b in self.betas), "must both be in [0, 1)"),
            ("eps", self.eps > 0, "must be > 0"),
            ("grad_clip", self.grad_clip is None or self.grad_clip > 0,
             "must be > 0 (or null for no clipping)"),
        ])  # fmt: skip


@dataclass(frozen=True)
class ScheduleConfig(NewFieldsDefault):
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
    # simultaneous: a task whose pass over its data ends before the epoch does is recycled
    # (reshuffled, trained again) or dropped from the epoch's remaining steps.
    exhausted: Exhausted = "recycle"
    max_steps_per_epoch: int | None = None  # cap on any epoch's steps (None = the plan's own)

    def __post_init__(self) -> None:
        check_field_types(self, "schedule.")
        length = self.epoch_length
        ok_length = length in ("min", "max", *TASKS) if isinstance(length, str) else length > 0
        check_ranges("schedule.", [
            ("temperature", self.temperature > 0, "must be > 0"),
            ("para_warmup_epochs", self.para_warmup_epochs >= 0, "must be >= 0"),
            ("order", *known_tasks(self.order)),
            ("epoch_length", ok_length, "must be min, max, a task or a step count"),
            ("max_steps_per_epoch", _at_least(self.max_steps_per_epoch, 1),
             "must be >= 1 (or null for no cap)"),
        ])  # fmt: skip


@dataclass(frozen=True)
class SmartConfig(NewFieldsDefault):
    """SMART adversarial regularizer + Bregman proximal point (Jiang et al. 2020); off by default.

    The paper's defaults are ε 1e-5, η 1e-3, σ 1e-5, K 1, L∞, symmetric KL, μ 1, β 0.99; we keep
    all of them except weight (λ_s) and bregman_mu (μ), which are 0 so SMART costs nothing unless
    a config turns it on. variant smart_pytorch runs the smart-pytorch library's ascent instead
    (unit per-token L∞ noise, epsilon only a stabiliser; library default 1e-6). See model/smart.py.
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
    variant: SmartVariant = "paper"  # paper: Jiang et al.; smart_pytorch: archinetai's SMARTLoss

    def __post_init__(self) -> None:
        check_field_types(self, "smart.")
        check_ranges("smart.", [
            ("weight", self.weight >= 0, "must be >= 0"),
            ("epsilon", self.epsilon > 0, "must be > 0"),
            ("step_size", self.step_size > 0, "must be > 0"),
            ("noise_std", self.noise_std >= 0, "must be >= 0"),
            ("steps", self.steps >= 0, "must be >= 0"),
            ("bregman_mu", self.bregman_mu >= 0, "must be >= 0"),
            ("bregman_beta", fraction_or_none(self.bregman_beta), "must be in [0, 1)"),
            ("tasks", *known_tasks(self.tasks)),
        ])  # fmt: skip


@dataclass(frozen=True)
class PCGradConfig(NewFieldsDefault):
    """Projecting conflicting gradients (Yu et al. 2020); off by default."""

    enabled: bool = False

    def __post_init__(self) -> None:
        check_field_types(self, "pcgrad.")


@dataclass(frozen=True)
class LossConfig(NewFieldsDefault):
    """Task losses, their weights and head regularizers."""

    task_weights: PerTaskFloat = field(default_factory=PerTaskFloat)
    sst_label_smoothing: float = 0.0
    sst_class_weights: bool = False  # n / (C * n_c)
    sts_loss: StsLoss = "mse"
    head_penalty: HeadPenalty = "none"
    head_penalty_coef: float = 0.0
    head_penalty_tasks: tuple[str, ...] = TASKS  # whose heads the penalty applies to

    def __post_init__(self) -> None:
        check_field_types(self, "loss.")
        check_ranges("loss.", [
            *_per_task("task_weights", self.task_weights, lambda w: w >= 0, "must be >= 0"),
            ("sst_label_smoothing", fraction_or_none(self.sst_label_smoothing),
             "must be in [0, 1)"),
            ("head_penalty_coef", self.head_penalty_coef >= 0, "must be >= 0"),
            ("head_penalty_tasks", *known_tasks(self.head_penalty_tasks)),
        ])  # fmt: skip


@dataclass(frozen=True)
class TrainConfig(NewFieldsDefault):
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
    # auto: bf16 autocast on CUDA and on CPUs that compute bf16 natively, else fp32 (device.py)
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    log_every: int = 50  # steps between reading the loss back from the device

    def __post_init__(self) -> None:
        check_field_types(self, "")
        check_ranges("", [
            ("seed", 0 <= self.seed < 2**32, "must be in [0, 2**32)"),
            ("log_every", self.log_every >= 1, "must be >= 1"),
        ])  # fmt: skip


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
