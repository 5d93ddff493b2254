"""CS224N data: tab-separated readers and tokenized tasks.

The data directory itself (where it is, file checks) lives in model/data_dir.py; batching the
tokenized tasks in model/batching.py.

Files are read by model/tsv_reader.py (one row per line) and by column name (the SST test header
is `0\\t\\tid\\tsentence`). Rows with an empty label are skipped with one warning (two rows of
quora-dev.csv have none); a label outside its task's range means a wrong or corrupt file and is
an error naming the row.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, TypeVar

import numpy as np
import pandas as pd

from model.config import CROSS_ENCODINGS, TASKS

# DataError's home is model.tsv_reader (the reader raises it); importers of it here keep working.
from model.tsv_reader import DataError as DataError
from model.tsv_reader import read_table

T = TypeVar("T")

LABEL_COLUMNS: dict[str, str] = {"sst": "sentiment", "para": "is_duplicate", "sts": "similarity"}
SENTENCE_COLUMNS: dict[str, tuple[str, ...]] = {
    "sst": ("sentence",),
    "para": ("sentence1", "sentence2"),
    "sts": ("sentence1", "sentence2"),
}
# (integer-valued?, low, high) per label kind; cfimdb only appears in the data-dir check.
_LABEL_RULES: dict[str, tuple[bool, float, float]] = {
    "sst": (True, 0, 4),
    "cfimdb": (True, 0, 1),
    "para": (True, 0, 1),
    "sts": (False, 0.0, 5.0),
}


class Tokenizer(Protocol):
    """What `encode_task` needs from a tokenizer (model/weights.py provides one)."""

    pad_id: int

    def encode(self, texts: Sequence[str]) -> tuple[list[list[int]], list[list[int]]]: ...

    def encode_pairs(
        self, first: Sequence[str], second: Sequence[str]
    ) -> tuple[list[list[int]], list[list[int]]]: ...


@dataclass(frozen=True)
class SentenceExample:
    id: str
    sentence: str
    label: int | None


@dataclass(frozen=True)
class PairExample:
    id: str
    sentence1: str
    sentence2: str
    label: float | None


# One task's examples: all SentenceExample (sst) or all PairExample (para, sts).
Examples = Sequence[SentenceExample | PairExample]


# ---------------------------------------------------------------------------------------------
# Reading files


def _require_columns(path: Path, frame: pd.DataFrame, columns: Iterable[str]) -> None:
    for column in columns:
        if column not in frame.columns:
            found = ", ".join(repr(c) for c in frame.columns)
            raise DataError(f"{path}: missing column '{column}' (found {found})")


def _parse_labels(kind: str, raw: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """Labels as float64 and a mask of the valid ones (parseable, in range, integer if needed)."""
    integer, low, high = _LABEL_RULES[kind]
    values = pd.to_numeric(raw.str.strip(), errors="coerce").to_numpy(dtype=np.float64)
    with np.errstate(invalid="ignore"):
        valid = np.isfinite(values) & (values >= low) & (values <= high)
        if integer:
            valid &= np.equal(np.round(values), values)
    return values, valid


def read_task_file(
    task: str, path: Path, labelled: bool | None = None
) -> list[SentenceExample] | list[PairExample]:
    """Read a CS224N file for `task`; labelled=None means labelled iff the label column exists."""
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r} (expected one of {', '.join(TASKS)})")
    path = Path(path)
    frame = read_table(path)
    label_column = LABEL_COLUMNS[task]
    if labelled is None:
        labelled = label_column in frame.columns
    _require_columns(path, frame, ("id", *SENTENCE_COLUMNS[task]))
    ids = _unique_ids(path, frame)
    labels: np.ndarray | None = None
    keep = np.ones(len(frame), dtype=bool)
    if labelled:
        labels, keep = _read_labels(task, path, frame, ids)
    _check_empty_texts(task, path, frame, ids, keep, labelled)
    rows = np.flatnonzero(keep)
    if not len(rows):
        reason = "no rows" if not len(frame) else "every row lacks a label or a sentence"
        raise DataError(f"{path}: no usable examples ({reason})")
    return _examples(task, frame, ids, labels, rows)


def _unique_ids(path: Path, frame: pd.DataFrame) -> pd.Series:
    """The stripped `id` column; an empty or repeated id is a DataError naming its row."""
    ids = frame["id"].str.strip()
    empty = np.flatnonzero((ids == "").to_numpy())
    if len(empty):
        raise DataError(f"{path}: row {empty[0] + 1}: empty 'id'")
    # Predictions and ensembles are keyed by id: a repeated id would silently merge two rows.
    repeated = np.flatnonzero(ids.duplicated().to_numpy())
    if len(repeated):
        row = repeated[0]
        first = int(np.flatnonzero((ids == ids.iloc[row]).to_numpy())[0])
        raise DataError(
            f"{path}: row {row + 1}: duplicate id '{ids.iloc[row]}' (first at row {first + 1})"
        )
    return ids


def _read_labels(
    task: str, path: Path, frame: pd.DataFrame, ids: pd.Series
) -> tuple[np.ndarray, np.ndarray]:
    """The label column parsed, and the mask of rows to keep: rows without a label are skipped
    with one warning; a label that is no valid value of the task is a DataError naming its row
    (a wrong or corrupt file, which training would otherwise fit minus those rows)."""
    label_column = LABEL_COLUMNS[task]
    _require_columns(path, frame, (label_column,))
    raw = frame[label_column].str.strip()
    labels, valid = _parse_labels(task, raw)
    missing = (raw == "").to_numpy()
    wrong = np.flatnonzero(~valid & ~missing)
    if len(wrong):
        row = int(wrong[0])
        raise DataError(
            f"{path}: row {row + 1}: '{label_column}' label {raw.iloc[row]!r} (id "
            f"{ids.iloc[row]}) is not {_label_range(task)}; {len(wrong)} such row(s): a "
            "wrong or corrupt file?"
        )
    skipped = np.flatnonzero(missing)
    if len(skipped):
        warnings.warn(
            f"{path}: skipped {len(skipped)} rows with a missing '{label_column}' label (ids "
            f"{_some_ids(ids, skipped)})",
            stacklevel=3,  # the caller of read_task_file
        )
    return labels, valid


def _label_range(kind: str) -> str:
    """`an integer from 0 to 4`, `0 or 1`, `a number from 0 to 5`: a task's valid labels."""
    integer, low, high = _LABEL_RULES[kind]
    if integer and high - low == 1:
        return f"{low:g} or {high:g}"
    return f"{'an integer' if integer else 'a number'} from {low:g} to {high:g}"


def _check_empty_texts(
    task: str, path: Path, frame: pd.DataFrame, ids: pd.Series, keep: np.ndarray, labelled: bool
) -> None:
    """Warn about rows with an empty sentence; a labelled one is dropped from `keep` in place.

    An empty text is a truncated row (pandas fills missing trailing fields with ""): a labelled
    one is skipped like a bad label; a test row still needs its prediction, so it stays.
    """
    for column in SENTENCE_COLUMNS[task]:
        empty_text = np.flatnonzero(keep & (frame[column].str.strip() == "").to_numpy())
        if not len(empty_text):
            continue
        action = "skipped" if labelled else "predicting from empty text for"
        warnings.warn(
            f"{path}: {action} {len(empty_text)} rows with an empty '{column}' "
            f"(ids {_some_ids(ids, empty_text)})",
            stacklevel=3,  # the caller of read_task_file
        )
        if labelled:
            keep[empty_text] = False


def _some_ids(ids: pd.Series, rows: np.ndarray) -> str:
    """The first three ids of `rows`, and `...` when there are more."""
    return ", ".join(ids.iloc[rows[:3]]) + (", ..." if len(rows) > 3 else "")


def _examples(
    task: str, frame: pd.DataFrame, ids: pd.Series, labels: np.ndarray | None, rows: np.ndarray
) -> list[SentenceExample] | list[PairExample]:
    """The kept `rows` as examples of `task`, in file order."""
    id_list = ids.to_numpy()[rows].tolist()
    # Like the handout we strip surrounding whitespace (SST sentences start with a space).
    texts = [frame[c].str.strip().to_numpy()[rows].tolist() for c in SENTENCE_COLUMNS[task]]
    if task == "sst":
        sst_labels = [None] * len(rows) if labels is None else labels[rows].astype(int).tolist()
        rows_sst = zip(id_list, texts[0], sst_labels, strict=True)
        return [SentenceExample(i, s, y) for i, s, y in rows_sst]
    pair_labels = [None] * len(rows) if labels is None else labels[rows].tolist()
    rows_pair = zip(id_list, texts[0], texts[1], pair_labels, strict=True)
    return [PairExample(i, a, b, y) for i, a, b, y in rows_pair]


def subsample(
    examples: Sequence[T], max_examples: int | None, ratio: float = 1.0, seed: int = 0
) -> list[T]:
    """A seeded random subset in the original order: keep `ratio` of the examples, then cap."""
    if not 0.0 < ratio <= 1.0:
        raise ValueError(f"subsample ratio must be in (0, 1], got {ratio}")
    if max_examples is not None and max_examples < 0:
        raise ValueError(f"max_examples must be >= 0, got {max_examples}")
    rng = np.random.default_rng(seed)
    keep = np.arange(len(examples))
    if ratio < 1.0 and len(keep):
        count = max(1, round(len(keep) * ratio))
        keep = np.sort(rng.choice(keep, size=count, replace=False))
    if max_examples is not None and len(keep) > max_examples:
        keep = np.sort(rng.choice(keep, size=max_examples, replace=False))
    return [examples[i] for i in keep.tolist()]


def hold_out(examples: Sequence[T], fraction: float, seed: int) -> tuple[list[T], list[T]]:
    """(kept, held out): a seeded `fraction` of the examples (at least one) set aside, both
    parts in the original order."""
    count = max(1, round(len(examples) * fraction))
    if not 0.0 < fraction < 1.0 or count >= len(examples):
        raise ValueError(f"cannot hold out {fraction} of {len(examples)} examples")
    held = np.zeros(len(examples), dtype=bool)
    held[np.random.default_rng(seed).choice(len(examples), size=count, replace=False)] = True
    return (
        [e for e, out in zip(examples, held, strict=True) if not out],
        [e for e, out in zip(examples, held, strict=True) if out],
    )


# ---------------------------------------------------------------------------------------------
# Tokenized tasks


@dataclass
class EncodedTask:
    """Token ids of one task's examples; `_b` fields hold the second sentences of bi-encoders."""

    task: str
    ids: list[str]
    labels: np.ndarray | None  # [N] int64 (sst) or float32 (para, sts)
    input_ids: list[np.ndarray]  # N int32 arrays of varying length
    token_type_ids: list[np.ndarray]
    input_ids_b: list[np.ndarray] | None = None
    token_type_ids_b: list[np.ndarray] | None = None

    def __post_init__(self) -> None:
        n = len(self.ids)
        sizes = [len(self.input_ids), len(self.token_type_ids)]
        if self.labels is not None:
            sizes.append(len(self.labels))
        if self.input_ids_b is not None:
            sizes.append(len(self.input_ids_b))
            sizes.append(len(self.token_type_ids_b or ()))
        if any(size != n for size in sizes):
            raise ValueError(f"EncodedTask {self.task}: field lengths {sizes} differ from {n} ids")

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def lengths(self) -> np.ndarray:
        """[N] sequence lengths used for bucketing (the longer side for bi-encoded pairs)."""
        lengths = sequence_lengths(self.input_ids)
        if self.input_ids_b is not None:
            lengths = np.maximum(lengths, sequence_lengths(self.input_ids_b))
        return lengths


def sequence_lengths(rows: Sequence[np.ndarray]) -> np.ndarray:
    """[N] int64 lengths of N token-id rows."""
    return np.fromiter((len(r) for r in rows), np.int64, len(rows))


def _as_arrays(rows: list[list[int]]) -> list[np.ndarray]:
    return [np.asarray(row, dtype=np.int32) for row in rows]


def encode_task(
    task: str,
    examples: Examples,
    tokenizer: Tokenizer,
    pair_encoding: str,
) -> EncodedTask:
    """Tokenize examples; pairs become one sequence under a cross encoding, else two."""
    ids = [e.id for e in examples]
    labels_raw = [e.label for e in examples]
    labels: np.ndarray | None = None
    if examples and all(y is not None for y in labels_raw):
        labels = np.asarray(labels_raw, dtype=np.int64 if task == "sst" else np.float32)
    elif any(y is not None for y in labels_raw):
        raise ValueError(f"task {task}: some examples are labelled and some are not")
    if task == "sst":
        input_ids, types = tokenizer.encode([e.sentence for e in examples])  # type: ignore[union-attr]
        return EncodedTask(task, ids, labels, _as_arrays(input_ids), _as_arrays(types))
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r} (expected one of {', '.join(TASKS)})")
    first = [e.sentence1 for e in examples]  # type: ignore[union-attr]
    second = [e.sentence2 for e in examples]  # type: ignore[union-attr]
    if pair_encoding in CROSS_ENCODINGS:
        input_ids, types = tokenizer.encode_pairs(first, second)
        return EncodedTask(task, ids, labels, _as_arrays(input_ids), _as_arrays(types))
    ids_a, types_a = tokenizer.encode(first)
    ids_b, types_b = tokenizer.encode(second)
    return EncodedTask(
        task,
        ids,
        labels,
        _as_arrays(ids_a),
        _as_arrays(types_a),
        _as_arrays(ids_b),
        _as_arrays(types_b),
    )
