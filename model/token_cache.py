"""Tokenize each data file once per (file, tokenizer, max length, pair encoding): a Parquet cache.

Every trial of a sweep reads the same CSVs with the same tokenizer; with `data.cache_dir` set the
first trial writes each file's token ids to `<cache_dir>/<task>-<file stem>-<key>.parquet` and
the others read them back instead of re-tokenizing. The key hashes the task, the sentences
themselves (so an edited file or a different skipped-row set is a different entry), the
tokenizer's full serialisation (vocabulary, normalisation, truncation = max length) and whether
pairs are cross-encoded. Subsampling (`max_examples`, `subsample_ratio`) happens after the cache,
on positions, and selects exactly the examples the uncached path selects.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from model.config import CROSS_ENCODINGS
from model.data import EncodedTask, Examples, SentenceExample, encode_task, subsample
from model.tokenizer import TextTokenizer

__all__ = ["TokenCache", "concat_encoded", "encode_subsample", "select_encoded"]

CACHE_FORMAT = 1  # bump when the stored layout changes: old entries are then simply not found
_TOKEN_FIELDS = ("input_ids", "token_type_ids", "input_ids_b", "token_type_ids_b")


class TokenCache:
    """Parquet files of token ids under `root`: one per (task, file, tokenizer, pair encoding)."""

    def __init__(self, root: Path, tokenizer: TextTokenizer) -> None:
        self.root = Path(root)
        self.tokenizer = tokenizer
        serialised = tokenizer.tokenizer.to_str()  # vocab, normaliser and truncation settings
        self._tokenizer_key = hashlib.sha256(
            f"{CACHE_FORMAT}|{tokenizer.max_length}|{serialised}".encode()
        ).hexdigest()
        self.hits = 0
        self.misses = 0

    def path_for(self, task: str, source: Path, examples: Examples, pair_encoding: str) -> Path:
        """Where the ids of `examples` (read from `source`) live for this tokenizer / encoding."""
        digest = hashlib.sha256(self._tokenizer_key.encode())
        digest.update(f"|{task}|{_encoding_kind(pair_encoding)}|{len(examples)}".encode())
        for example in examples:
            texts = (
                (example.sentence,)
                if isinstance(example, SentenceExample)
                else (example.sentence1, example.sentence2)
            )
            digest.update("\x1f".join(texts).encode() + b"\x1e")
        stem = "".join(c if c.isalnum() or c in "-_" else "_" for c in Path(source).stem)
        return self.root / f"{task}-{stem}-{digest.hexdigest()[:20]}.parquet"

    def encode(
        self, task: str, source: Path, examples: Examples, pair_encoding: str
    ) -> EncodedTask:
        """`encode_task(task, examples, ...)`, read back when this file was tokenized before."""
        path = self.path_for(task, source, examples, pair_encoding)
        ids = [e.id for e in examples]
        if path.is_file():
            columns = _read_columns(path)
            if columns is not None and len(columns["input_ids"]) == len(examples):
                self.hits += 1
                return EncodedTask(
                    task,
                    ids,
                    _labels(task, examples),
                    columns["input_ids"],
                    columns["token_type_ids"],
                    columns.get("input_ids_b"),
                    columns.get("token_type_ids_b"),
                )
        self.misses += 1
        encoded = encode_task(task, examples, self.tokenizer, pair_encoding)
        _write_columns(path, encoded)
        return encoded


def _encoding_kind(pair_encoding: str) -> str:
    # Every bi-encoder tokenizes the two sentences separately, identically.
    return "cross" if pair_encoding in CROSS_ENCODINGS else "separate"


def _labels(task: str, examples: Examples) -> np.ndarray | None:
    """As encode_task does: all labelled -> an array, none -> None."""
    raw = [e.label for e in examples]
    if examples and all(y is not None for y in raw):
        return np.asarray(raw, dtype=np.int64 if task == "sst" else np.float32)
    if any(y is not None for y in raw):
        raise ValueError(f"task {task}: some examples are labelled and some are not")
    return None


def _to_list_array(rows: Sequence[np.ndarray]) -> pa.ListArray:
    offsets = np.zeros(len(rows) + 1, dtype=np.int32)
    np.cumsum([len(r) for r in rows], out=offsets[1:])
    values = np.concatenate(rows).astype(np.int32) if rows else np.zeros(0, np.int32)
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(values))


def _from_list_array(column: pa.ChunkedArray) -> list[np.ndarray]:
    array = column.combine_chunks()
    offsets = array.offsets.to_numpy()
    values = array.values.to_numpy(zero_copy_only=False).astype(np.int32, copy=False)
    return np.split(values, offsets[1:-1]) if len(array) else []


def _write_columns(path: Path, encoded: EncodedTask) -> None:
    """Write atomically (temp file + rename): concurrent trials may write the same entry."""
    columns = {
        name: _to_list_array(getattr(encoded, name))
        for name in _TOKEN_FIELDS
        if getattr(encoded, name) is not None
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        pq.write_table(pa.table(columns), tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _read_columns(path: Path) -> dict[str, list[np.ndarray]] | None:
    """The stored id columns, or None when the file is unreadable (then it is rewritten)."""
    try:
        table = pq.read_table(path)
    except (OSError, pa.ArrowException):
        return None
    if not {"input_ids", "token_type_ids"} <= set(table.column_names):
        return None
    return {name: _from_list_array(table[name]) for name in table.column_names}


def select_encoded(encoded: EncodedTask, positions: Sequence[int] | np.ndarray) -> EncodedTask:
    """The examples of `encoded` at `positions`, in that order."""
    positions = np.asarray(positions, dtype=np.int64)

    def pick(rows: list[np.ndarray]) -> list[np.ndarray]:
        return [rows[i] for i in positions]

    return EncodedTask(
        encoded.task,
        [encoded.ids[i] for i in positions],
        None if encoded.labels is None else encoded.labels[positions],
        pick(encoded.input_ids),
        pick(encoded.token_type_ids),
        None if encoded.input_ids_b is None else pick(encoded.input_ids_b),
        None if encoded.token_type_ids_b is None else pick(encoded.token_type_ids_b),
    )


def concat_encoded(parts: Sequence[EncodedTask]) -> EncodedTask:
    """One EncodedTask holding `parts` one after the other (e.g. a training file and extras)."""
    if len(parts) == 1:
        return parts[0]
    first = parts[0]

    def join(name: str) -> list[np.ndarray]:
        return [row for part in parts for row in getattr(part, name)]

    labels = [p.labels for p in parts if p.labels is not None]
    bi = first.input_ids_b is not None
    return EncodedTask(
        first.task,
        [i for part in parts for i in part.ids],
        np.concatenate(labels) if len(labels) == len(parts) else None,
        join("input_ids"),
        join("token_type_ids"),
        join("input_ids_b") if bi else None,
        join("token_type_ids_b") if bi else None,
    )


def encode_subsample(
    task: str,
    files: Sequence[tuple[Path, Examples]],
    tokenizer: TextTokenizer,
    pair_encoding: str,
    *,
    max_examples: int | None = None,
    ratio: float = 1.0,
    seed: int = 0,
    cache: TokenCache | None = None,
) -> EncodedTask:
    """Tokenize the examples of `files` (in order) and keep a seeded subsample of them.

    Without a cache only the kept examples are tokenized; with one, each whole file is tokenized
    once (or read back) and the same subsample is taken on positions.
    """
    examples = [e for _, file_examples in files for e in file_examples]
    if cache is None:
        kept = subsample(examples, max_examples, ratio, seed)
        return encode_task(task, kept, tokenizer, pair_encoding)
    parts = [cache.encode(task, path, ex, pair_encoding) for path, ex in files]
    positions = subsample(range(len(examples)), max_examples, ratio, seed)
    return select_encoded(concat_encoded(parts), positions)
