"""Per-task config sections: a value per task (sst, para, sts) and each task head's overrides.

Imported through model.config, the config's public face. `TaskHead` lets one task's head differ
from the global `model.head_*` settings (e.g. SST dropout 0.5, Quora 0.3, a two-layer STS head);
`None` in a field means "as the global setting says".
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from model.config_mapping import NewFieldsDefault, check_field_types

TASKS: tuple[str, ...] = ("sst", "para", "sts")

HeadNorm = Literal["none", "batch", "layer"]
Activation = Literal["relu", "leaky_relu", "gelu"]


def fraction_or_none(value: float | None) -> bool:
    """In [0, 1), or None: a dropout or smoothing probability, a momentum."""
    return value is None or 0 <= value < 1


def known_tasks(names: tuple[str, ...]) -> tuple[bool, str]:
    unknown = sorted(set(names) - set(TASKS))
    return not unknown, f"names unknown tasks {unknown}; tasks are {TASKS}"


@dataclass(frozen=True)
class PerTaskInt(NewFieldsDefault):
    """An optional integer per task (None = no limit)."""

    sst: int | None = None
    para: int | None = None
    sts: int | None = None

    def __post_init__(self) -> None:
        check_field_types(self, "")  # ranges depend on the field: its section checks them


@dataclass(frozen=True)
class PerTaskFloat(NewFieldsDefault):
    """A float per task (defaults to 1.0, e.g. loss weights or subsample ratios)."""

    sst: float = 1.0
    para: float = 1.0
    sts: float = 1.0

    def __post_init__(self) -> None:
        check_field_types(self, "")


@dataclass(frozen=True)
class PerTaskFiles(NewFieldsDefault):
    """Extra training files per task, in the same CSV format as the task's training file."""

    sst: tuple[str, ...] = ()
    para: tuple[str, ...] = ()
    sts: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        check_field_types(self, "")


@dataclass(frozen=True)
class TaskHead(NewFieldsDefault):
    """One task head's shape where it differs from `model.head_*` (None = the global value)."""

    layers: int | None = None
    hidden: int | None = None
    dropout: float | None = None
    activation: Activation | None = None
    norm: HeadNorm | None = None

    def __post_init__(self) -> None:
        check_field_types(self, "")  # ranges: ModelConfig checks them, naming the task's key

    def range_checks(self, prefix: str) -> list[tuple[str, bool, str]]:
        """`(key, ok, message)` per ranged field, keys under `prefix` (e.g. `sts_head.`)."""
        return [
            (f"{prefix}layers", self.layers is None or self.layers >= 1, "must be >= 1"),
            (f"{prefix}hidden", self.hidden is None or self.hidden >= 1, "must be >= 1"),
            (f"{prefix}dropout", fraction_or_none(self.dropout), "must be in [0, 1)"),
        ]


@dataclass(frozen=True)
class HeadShape:
    """A head's resolved shape: the task's override, else the global `model.head_*` value."""

    layers: int
    hidden: int
    dropout: float
    activation: Activation
    norm: HeadNorm
