"""The three tasks' train / dev / test sets, read, subsampled and tokenized for one TrainConfig."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from model.config import TASKS, TrainConfig
from model.data import DataError, EncodedTask, read_task_file
from model.token_cache import TokenCache, encode_subsample
from model.weights import TextTokenizer, load_tokenizer

# Dev subsets use a fixed seed, not the run's seed, so every trial of a sweep is scored on the same
# examples and their dev metrics are comparable.
DEV_SUBSET_SEED = 1234


@dataclass
class TaskData:
    """Tokenized examples per task and split; `dev_labels` are the gold labels of `dev`."""

    tokenizer: TextTokenizer
    train: dict[str, EncodedTask] = field(default_factory=dict)
    dev: dict[str, EncodedTask] = field(default_factory=dict)
    test: dict[str, EncodedTask] = field(default_factory=dict)

    @property
    def pad_id(self) -> int:
        return self.tokenizer.pad_id

    @property
    def dev_labels(self) -> dict[str, np.ndarray]:
        return {task: enc.labels for task, enc in self.dev.items() if enc.labels is not None}


def task_file(cfg: TrainConfig, task: str, split: str) -> str:
    return getattr(cfg.data, f"{task}_{split}")


def resolve_data_path(data_dir: Path, name: str) -> Path:
    path = Path(name)
    return path if path.is_absolute() else data_dir / path


def load_task_data(cfg: TrainConfig, data_dir: Path, tokenizer_dir: Path) -> TaskData:
    """Read every task's files, subsample as configured and tokenize; test files are optional."""
    tokenizer = load_tokenizer(tokenizer_dir, cfg.model.max_length)
    data = TaskData(tokenizer=tokenizer)
    encoding = cfg.model.pair_encoding
    # Tokenized ids are cached per file when data.cache_dir is set (see model/token_cache.py).
    cache = TokenCache(Path(cfg.data.cache_dir), tokenizer) if cfg.data.cache_dir else None
    for i, task in enumerate(TASKS):
        train_path = resolve_data_path(data_dir, task_file(cfg, task, "train"))
        train_files = [(train_path, read_task_file(task, train_path, labelled=True))]
        for extra in getattr(cfg.data.extra_train, task):
            extra_path = resolve_data_path(data_dir, extra)
            train_files.append((extra_path, read_task_file(task, extra_path, labelled=True)))
        data.train[task] = encode_subsample(
            task,
            train_files,
            tokenizer,
            encoding,
            max_examples=getattr(cfg.data.max_examples, task),
            ratio=getattr(cfg.data.subsample_ratio, task),
            seed=cfg.seed + i,
            cache=cache,
        )

        dev_path = resolve_data_path(data_dir, task_file(cfg, task, "dev"))
        dev = read_task_file(task, dev_path, labelled=True)
        data.dev[task] = encode_subsample(
            task,
            [(dev_path, dev)],
            tokenizer,
            encoding,
            max_examples=getattr(cfg.data.dev_max_examples, task),
            seed=DEV_SUBSET_SEED,
            cache=cache,
        )

        test_path = resolve_data_path(data_dir, task_file(cfg, task, "test"))
        if test_path.is_file():
            test = read_task_file(task, test_path, labelled=False)
            data.test[task] = encode_subsample(
                task, [(test_path, test)], tokenizer, encoding, cache=cache
            )
        else:
            warnings.warn(f"{test_path}: not found, no {task} test predictions", stacklevel=2)
    if not data.train:
        raise DataError(f"{data_dir}: no training data loaded")
    return data
