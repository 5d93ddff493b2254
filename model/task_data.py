"""The three tasks' train / dev / test sets, read, subsampled and tokenized for one TrainConfig."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np

from model.config import TASKS, TrainConfig
from model.data import (
    DataError,
    EncodedTask,
    Examples,
    hold_out,
    read_task_file,
)
from model.data_dir import resolve_data_files, resolve_para_train
from model.evaluate import SELECTION_SPLIT
from model.token_cache import TokenCache, encode_subsample
from model.tokenizer import TextTokenizer, load_tokenizer

# Dev subsets use a fixed seed, not the run's seed, so every trial of a sweep is scored on the same
# examples and their dev metrics are comparable.
DEV_SUBSET_SEED = 1234
# So does the selection split (data.selection): every arm and seed of a study holds out, and ranks
# on, the same training examples.
SELECTION_SEED = 4321

TaskFile = tuple[Path, Examples]  # a file and the examples read from it


@dataclass
class TaskData:
    """Tokenized examples per task and split; `selection` is held out of the training files
    (empty unless data.selection > 0)."""

    tokenizer: TextTokenizer
    train: dict[str, EncodedTask] = field(default_factory=dict)
    dev: dict[str, EncodedTask] = field(default_factory=dict)
    selection: dict[str, EncodedTask] = field(default_factory=dict)
    test: dict[str, EncodedTask] = field(default_factory=dict)

    @property
    def pad_id(self) -> int:
        return self.tokenizer.pad_id

    def split(self, name: str) -> dict[str, EncodedTask]:
        """The tasks of a split by name: train, dev, selection or test."""
        splits = {"train": self.train, "dev": self.dev, "test": self.test}
        return self.selection if name == SELECTION_SPLIT else splits[name]

    def labels(self, split: str) -> dict[str, np.ndarray]:
        """Gold labels per task of a labelled split."""
        return {t: enc.labels for t, enc in self.split(split).items() if enc.labels is not None}

    @property
    def dev_labels(self) -> dict[str, np.ndarray]:
        return self.labels("dev")


def task_file(cfg: TrainConfig, task: str, split: str) -> str:
    return getattr(cfg.data, f"{task}_{split}")


def resolve_data_path(data_dir: Path, name: str) -> Path:
    """A config's file name as a path: relative ones are under `data_dir`; `auto` (para_train) is
    the Quora training file `resolve_para_train` picks there."""
    path = Path(resolve_para_train(name, data_dir))
    return path if path.is_absolute() else data_dir / path


def load_task_data(cfg: TrainConfig, data_dir: Path, tokenizer_dir: Path) -> TaskData:
    """Read every task's files, hold out the selection split, subsample as configured and
    tokenize; test files are optional."""
    cfg = resolve_data_files(cfg, data_dir)
    tokenizer = load_tokenizer(tokenizer_dir, cfg.model.max_length)
    data = TaskData(tokenizer=tokenizer)
    # Tokenized ids are cached per file when data.cache_dir is set (see model/token_cache.py).
    cache = TokenCache(Path(cfg.data.cache_dir), tokenizer) if cfg.data.cache_dir else None
    for i, task in enumerate(TASKS):
        pairs = cfg.model.encoding_for(task)
        encode = partial(encode_subsample, tokenizer=tokenizer, pair_encoding=pairs, cache=cache)
        train_files, held_out = _train_files(cfg, task, data_dir, SELECTION_SEED + i)
        data.train[task] = encode(
            task,
            train_files,
            max_examples=getattr(cfg.data.max_examples, task),
            ratio=getattr(cfg.data.subsample_ratio, task),
            seed=cfg.seed + i,
        )
        if held_out is not None:
            data.selection[task] = encode(task, [held_out])

        dev_path = resolve_data_path(data_dir, task_file(cfg, task, "dev"))
        dev = read_task_file(task, dev_path, labelled=True)
        data.dev[task] = encode(
            task,
            [(dev_path, dev)],
            max_examples=getattr(cfg.data.dev_max_examples, task),
            seed=DEV_SUBSET_SEED,
        )

        test_path = resolve_data_path(data_dir, task_file(cfg, task, "test"))
        if test_path.is_file():
            test = read_task_file(task, test_path, labelled=False)
            data.test[task] = encode(task, [(test_path, test)])
        else:
            warnings.warn(f"{test_path}: not found, no {task} test predictions", stacklevel=2)
    if not data.train:
        raise DataError(f"{data_dir}: no training data loaded")
    return data


def _train_files(
    cfg: TrainConfig, task: str, data_dir: Path, selection_seed: int
) -> tuple[list[TaskFile], TaskFile | None]:
    """The task's training file and extra files, read, and the training file's held-out
    selection slice (None when data.selection is 0).

    The slice comes from the training file alone, before any subsampling, so arms that change
    max_examples, subsample_ratio or extra_train still hold out (and rank on) the same examples.
    """
    path = resolve_data_path(data_dir, task_file(cfg, task, "train"))
    examples: Examples = read_task_file(task, path, labelled=True)
    held_out: TaskFile | None = None
    if cfg.data.selection > 0:
        try:
            examples, selection = hold_out(examples, cfg.data.selection, selection_seed)
        except ValueError as err:
            raise DataError(f"{path}: data.selection: {err}") from None
        held_out = (path, selection)
    files: list[TaskFile] = [(path, examples)]
    for extra in getattr(cfg.data.extra_train, task):
        extra_path = resolve_data_path(data_dir, extra)
        files.append((extra_path, read_task_file(task, extra_path, labelled=True)))
    return files, held_out
