"""Batches: length-bucketed index batches, padding into tensors, per-task training streams.

`batch_indices` splits a task's examples into batches (bucketed by length inside shuffled pools),
`collate` pads one batch to its own longest sequence, `TaskBatches` is the endless seeded stream
`fit` draws a task's batches from, and `prefetch` builds the next batches in a thread.
"""

from __future__ import annotations

import dataclasses
import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import torch

from model.bert import COMPILE_PAD_MULTIPLE
from model.config import TrainConfig
from model.data import EncodedTask, sequence_lengths
from model.packing import PackedTokens

T = TypeVar("T")

# Pools of this many batches are sorted by length: similar lengths inside a batch, yet batches
# still differ between epochs and seeds.
BUCKET_POOL_BATCHES = 50


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
    lengths = sequence_lengths(rows)
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


class TaskBatches:
    """Endless, seeded stream of one task's training batches, reshuffled at every pass."""

    def __init__(self, encoded: EncodedTask, cfg: TrainConfig, pad_id: int, seed: int):
        self.encoded, self.cfg, self.pad_id, self.seed = encoded, cfg, pad_id, seed
        self.passes = 0
        self.per_pass = len(self._indices())
        self._iter: Iterator[np.ndarray] = iter(())

    def _indices(self) -> list[np.ndarray]:
        data = self.cfg.data
        return batch_indices(
            self.encoded.lengths,
            data.batch_size,
            bucketing=data.bucketing,
            shuffle=True,
            seed=self.seed * 1_000_003 + self.passes,
            token_budget=data.token_budget,
        )

    def next(self) -> Batch:
        try:
            indices = next(self._iter)
        except StopIteration:
            self._iter = iter(self._indices())
            self.passes += 1
            indices = next(self._iter)
        multiple = COMPILE_PAD_MULTIPLE if self.cfg.model.compile else 1
        return collate(self.encoded, indices, self.pad_id, pad_to_multiple=multiple)


def device_batches(
    streams: dict[str, TaskBatches], plan: list[tuple[str, ...]], device: torch.device
) -> Iterator[dict[str, Batch]]:
    """Each planned step's batches on `device`, collated (pinned on CUDA) ahead in a thread."""
    pin = device.type == "cuda"

    def on_host() -> Iterator[dict[str, Batch]]:
        for step_tasks in plan:
            batches = {t: streams[t].next() for t in step_tasks}
            yield {t: b.pin_memory() for t, b in batches.items()} if pin else batches

    for batches in prefetch(on_host(), depth=2):
        yield {t: b.to(device, non_blocking=True) for t, b in batches.items()}
