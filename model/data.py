"""CS224N data: tab-separated readers, tokenized tasks, length-bucketed batches.

The data directory itself (where it is, file checks) lives in model/data_dir.py.

Files are read by column name (the SST test header is `0\\t\\tid\\tsentence`), rows with an
unusable label are skipped with one warning, and batches are padded to their own longest sequence.
"""

from __future__ import annotations

import dataclasses
import queue
import threading
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

import numpy as np
import pandas as pd
import torch

from model.config import TASKS
from model.packing import PackedTokens

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
# Pools of this many batches are sorted by length: similar lengths inside a batch, yet batches
# still differ between epochs and seeds.
BUCKET_POOL_BATCHES = 50


class DataError(ValueError):
    """A data file is missing or malformed; the message names the file (and row / column)."""


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


# ---------------------------------------------------------------------------------------------
# Reading files


def _read_table(path: Path) -> pd.DataFrame:
    if not path.is_file():
        raise DataError(f"{path}: data file not found")
    try:
        # dtype=str + keep_default_na=False: labels stay text ("" for empty) and are parsed below.
        return pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as err:
        raise DataError(f"{path}: cannot parse as tab-separated CSV: {err}") from err


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
    frame = _read_table(path)
    label_column = LABEL_COLUMNS[task]
    if labelled is None:
        labelled = label_column in frame.columns
    _require_columns(path, frame, ("id", *SENTENCE_COLUMNS[task]))
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

    keep = np.ones(len(frame), dtype=bool)
    labels: np.ndarray | None = None
    if labelled:
        _require_columns(path, frame, (label_column,))
        labels, keep = _parse_labels(task, frame[label_column])
        skipped = np.flatnonzero(~keep)
        if len(skipped):
            some = ", ".join(ids.iloc[skipped[:3]])
            warnings.warn(
                f"{path}: skipped {len(skipped)} rows with a missing or invalid "
                f"'{label_column}' label (ids {some}{', ...' if len(skipped) > 3 else ''})",
                stacklevel=2,
            )

    # An empty text is a truncated row (pandas fills missing trailing fields with ""): a labelled
    # one is skipped like a bad label; a test row still needs its prediction, so it stays.
    for column in SENTENCE_COLUMNS[task]:
        empty_text = np.flatnonzero(keep & (frame[column].str.strip() == "").to_numpy())
        if len(empty_text):
            some = ", ".join(ids.iloc[empty_text[:3]])
            more = ", ..." if len(empty_text) > 3 else ""
            action = "skipped" if labelled else "predicting from empty text for"
            warnings.warn(
                f"{path}: {action} {len(empty_text)} rows with an empty '{column}' "
                f"(ids {some}{more})",
                stacklevel=2,
            )
            if labelled:
                keep[empty_text] = False

    rows = np.flatnonzero(keep)
    if not len(rows):
        reason = "no rows" if not len(frame) else "every row lacks a label or a sentence"
        raise DataError(f"{path}: no usable examples ({reason})")
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
    return [examples[i] for i in keep]


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
        lengths = _lengths(self.input_ids)
        if self.input_ids_b is not None:
            lengths = np.maximum(lengths, _lengths(self.input_ids_b))
        return lengths


def _lengths(rows: Sequence[np.ndarray]) -> np.ndarray:
    return np.fromiter((len(r) for r in rows), np.int64, len(rows))


def _as_arrays(rows: list[list[int]]) -> list[np.ndarray]:
    return [np.asarray(row, dtype=np.int32) for row in rows]


def encode_task(
    task: str,
    examples: Sequence[SentenceExample] | Sequence[PairExample],
    tokenizer: Tokenizer,
    pair_encoding: str,
) -> EncodedTask:
    """Tokenize examples; pairs become one sequence when pair_encoding == "cross", else two."""
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
    if pair_encoding == "cross":
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


# ---------------------------------------------------------------------------------------------
# Batching


def _chunk(
    order: np.ndarray, lengths: np.ndarray, batch_size: int, token_budget: int | None
) -> list[np.ndarray]:
    """Consecutive batches of `order`: batch_size each, or at most token_budget padded tokens."""
    if token_budget is None:
        return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    batches, start, longest = [], 0, 0
    for pos, length in enumerate(lengths[order].tolist()):
        if pos > start and max(longest, length) * (pos - start + 1) > token_budget:
            batches.append(order[start:pos])
            start, longest = pos, length
        else:
            longest = max(longest, length)
    if start < len(order):
        batches.append(order[start:])
    return batches


def batch_indices(
    lengths: np.ndarray,
    batch_size: int,
    *,
    bucketing: bool,
    shuffle: bool,
    seed: int,
    token_budget: int | None = None,
) -> list[np.ndarray]:
    """Split example positions into batches, each position exactly once; deterministic per seed.

    Bucketing sorts by length inside shuffled pools of BUCKET_POOL_BATCHES batches (the whole set
    when not shuffling) and then shuffles the batch order. With token_budget, each batch holds at
    most token_budget padded tokens (longest length x size, at least one example) and batch_size
    is ignored.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if token_budget is not None and token_budget < 1:
        raise ValueError(f"token_budget must be >= 1, got {token_budget}")
    lengths = np.asarray(lengths, dtype=np.int64)
    n = len(lengths)
    rng = np.random.default_rng(seed)
    order = rng.permutation(n) if shuffle else np.arange(n)
    if not bucketing:
        return _chunk(order, lengths, batch_size, token_budget)

    typical_batch = batch_size
    if token_budget is not None and n:
        typical_batch = max(1, token_budget // max(1, int(lengths.mean())))
    pool = BUCKET_POOL_BATCHES * typical_batch if shuffle else max(n, 1)
    batches: list[np.ndarray] = []
    for start in range(0, n, pool):
        members = order[start : start + pool]
        members = members[np.argsort(lengths[members], kind="stable")]
        batches.extend(_chunk(members, lengths, batch_size, token_budget))
    if shuffle:
        batches = [batches[i] for i in rng.permutation(len(batches))]
    return batches


@dataclass
class Batch:
    """One padded batch of a single task; `_b` fields are the second sentences of bi-encoders."""

    task: str
    input_ids: torch.Tensor  # [B, T] long
    attention_mask: torch.Tensor  # [B, T] long, 1 = real token, 0 = padding
    token_type_ids: torch.Tensor  # [B, T] long
    input_ids_b: torch.Tensor | None = None  # [B, T_b]
    attention_mask_b: torch.Tensor | None = None
    token_type_ids_b: torch.Tensor | None = None
    labels: torch.Tensor | None = None  # [B] long (sst) or float (para, sts)
    index: torch.Tensor | None = None  # [B] long, positions in the EncodedTask
    real_tokens: int | None = None
    padded_tokens: int | None = None
    has_padding: bool | None = None  # False lets attention skip the mask
    # Real-token layouts of input_ids / input_ids_b for the unpadded encoder (model/packing.py).
    packing: PackedTokens | None = None
    packing_b: PackedTokens | None = None

    def __post_init__(self) -> None:
        # Filled in for hand-built batches (tests, benchmarks); collate passes them all.
        masks = [m for m in (self.attention_mask, self.attention_mask_b) if m is not None]
        if self.index is None:
            self.index = torch.arange(self.input_ids.shape[0])
        if self.real_tokens is None:
            self.real_tokens = int(sum(int(m.sum()) for m in masks))
        if self.padded_tokens is None:
            self.padded_tokens = int(sum(m.numel() for m in masks))
        if self.has_padding is None:
            self.has_padding = self.real_tokens < self.padded_tokens
        if self.packing is None:
            self.packing = _packing_or_none(self.attention_mask)
        if self.packing_b is None and self.attention_mask_b is not None:
            self.packing_b = _packing_or_none(self.attention_mask_b)

    @property
    def size(self) -> int:
        return int(self.input_ids.shape[0])

    def to(self, device: torch.device | str, non_blocking: bool = False) -> Batch:
        """A copy with every tensor on `device`."""
        return self._map(lambda t: t.to(device, non_blocking=non_blocking))

    def pin_memory(self) -> Batch:
        """A copy in page-locked host memory: `.to("cuda", non_blocking=True)` is then async."""
        return self._map(lambda t: t.pin_memory())

    def _map(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> Batch:
        moved: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, torch.Tensor):
                value = fn(value)
            elif isinstance(value, PackedTokens):
                value = value._map(fn)
            moved[f.name] = value
        return Batch(**moved)


def _packing_or_none(attention_mask: torch.Tensor) -> PackedTokens | None:
    """The unpadded layout of a hand-built batch; None (padded encoder) if it has none."""
    try:
        return PackedTokens.from_mask(attention_mask)
    except ValueError:  # an empty row, or padding before real tokens
        return None


def _pad(
    rows: list[np.ndarray], pad_value: int, multiple: int = 1
) -> tuple[np.ndarray, np.ndarray]:
    """[B, T] int64 ids padded with pad_value and the [B, T] int64 mask.

    T is the longest row, rounded up to a multiple of `multiple` (compiled models see few shapes).
    Every row needs at least one token ([CLS]), so the unpadded layout has no empty sequence.
    """
    lengths = _lengths(rows)
    width = max(1, int(lengths.max(initial=0)))
    width = -(-width // multiple) * multiple
    real = np.arange(width)[None, :] < lengths[:, None]  # [B, T] bool, a prefix of each row
    padded = np.full((len(rows), width), pad_value, dtype=np.int64)
    if len(rows):
        # Row-major boolean assignment fills each row's prefix in order: one copy, no Python loop.
        padded[real] = np.concatenate(rows)
    return padded, real.astype(np.int64)


def collate(
    encoded: EncodedTask, indices: np.ndarray, pad_id: int, *, pad_to_multiple: int = 1
) -> Batch:
    """Pad the examples at `indices` to the batch's longest sequence and build tensors.

    `pad_to_multiple` rounds the padded length up (e.g. 8 for torch.compile); 1 = no rounding.
    """
    if pad_to_multiple < 1:
        raise ValueError(f"pad_to_multiple must be >= 1, got {pad_to_multiple}")
    indices = np.asarray(indices, dtype=np.int64)
    ids, mask = _pad([encoded.input_ids[i] for i in indices], pad_id, pad_to_multiple)
    types, _ = _pad([encoded.token_type_ids[i] for i in indices], 0, pad_to_multiple)
    real, padded = int(mask.sum()), mask.size
    fields: dict[str, Any] = {"packing": PackedTokens.from_lengths(mask.sum(1), mask.shape[1])}
    if encoded.input_ids_b is not None and encoded.token_type_ids_b is not None:
        ids_b, mask_b = _pad([encoded.input_ids_b[i] for i in indices], pad_id, pad_to_multiple)
        types_b, _ = _pad([encoded.token_type_ids_b[i] for i in indices], 0, pad_to_multiple)
        real, padded = real + int(mask_b.sum()), padded + mask_b.size
        fields |= {
            "input_ids_b": torch.from_numpy(ids_b),
            "attention_mask_b": torch.from_numpy(mask_b),
            "token_type_ids_b": torch.from_numpy(types_b),
            "packing_b": PackedTokens.from_lengths(mask_b.sum(1), mask_b.shape[1]),
        }
    labels = None
    if encoded.labels is not None:
        labels = torch.from_numpy(np.ascontiguousarray(encoded.labels[indices]))
    return Batch(
        task=encoded.task,
        input_ids=torch.from_numpy(ids),
        attention_mask=torch.from_numpy(mask),
        token_type_ids=torch.from_numpy(types),
        labels=labels,
        index=torch.from_numpy(indices.copy()),
        real_tokens=real,
        padded_tokens=padded,
        has_padding=real < padded,
        **fields,
    )


def prefetch(items: Iterable[T], depth: int = 2) -> Iterator[T]:
    """Yield `items` while a background thread produces up to `depth` of them ahead.

    Collating and pinning the next batches then overlaps the current step's kernel launches.
    Items come out in order; an exception in the producer is re-raised here. Closing the
    iterator early (break, an exception in the loop) stops the producer.
    """
    if depth < 1:
        raise ValueError(f"prefetch depth must be >= 1, got {depth}")
    buffer: queue.Queue[tuple[str, Any]] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def produce() -> None:
        try:
            for item in items:
                if not _put(("item", item)):
                    return
            _put(("done", None))
        except BaseException as err:  # handed to the consumer, which re-raises it
            _put(("error", err))

    def _put(entry: tuple[str, Any]) -> bool:
        while not stop.is_set():
            try:
                buffer.put(entry, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    worker = threading.Thread(target=produce, name="batch-prefetch", daemon=True)
    worker.start()
    try:
        while True:
            kind, value = buffer.get()
            if kind == "done":
                return
            if kind == "error":
                raise value
            yield value
    finally:
        stop.set()
        worker.join()


def padding_overhead(batches: Iterable[Batch]) -> float:
    """Padded tokens / real tokens over the batches (1.0 = no padding at all)."""
    real = padded = 0
    for batch in batches:
        real += int(batch.real_tokens or 0)
        padded += int(batch.padded_tokens or 0)
    return padded / real if real else 1.0
