"""A trained model for prediction: one checkpoint, or an ensemble loaded from its manifest.

`load_predictor(source)` takes a checkpoint directory (a trial's best: model.safetensors,
config.json, tokenizer files) or an ensemble directory (`manifest.json`, verified member by
member). `Predictor.predict_examples` runs every member on one task's examples exactly as
`orchestrator ensemble` and `train` do (each member's tokenizer, eval batch size and autocast;
length-bucketed batches through `model.evaluate.predict_task`) and combines them with the
manifest's method, a member counted once per weight; so its output reproduces their prediction
files. `predict` and `predict_frame` return the same as a DataFrame; `predict_frame` is what the
MLflow model serves.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from model.checkpoint import CONFIG_FILE, CheckpointError, load_checkpoint_model
from model.config import TASKS, ConfigError, TrainConfig
from model.data import EncodedTask, Examples, PairExample, SentenceExample, encode_task
from model.device import autocast_dtype, device_named
from model.evaluate import SST_CLASSES, TaskPredictions, predict_task
from model.heads import MultitaskBert
from model.tokenizer import TextTokenizer
from model.weights import WeightsError
from orchestrator.contract import ENSEMBLE_MANIFEST_FILE
from orchestrator.ensemble.combine import combine_tasks
from orchestrator.ensemble.manifest import EnsembleManifest, read_manifest
from orchestrator.ensemble.request import DEFAULT_METHOD
from orchestrator.predict.inputs import check_task

# Columns of predict_frame's input; `sentence` is accepted for SST's `sentence1`.
TASK_COLUMN = "task"
ID_COLUMN = "id"
SENTENCE1_COLUMN = "sentence1"
SENTENCE2_COLUMN = "sentence2"
SST_SENTENCE_COLUMN = "sentence"
# Columns of the output: id, task, prediction (class id, 0/1 or STS score), class probabilities.
PREDICTION_COLUMN = "prediction"
PROBABILITY_PREFIX = "prob_"
PROBABILITY_COLUMNS: dict[str, tuple[str, ...]] = {
    "sst": tuple(f"{PROBABILITY_PREFIX}{c}" for c in range(SST_CLASSES)),
    "para": (f"{PROBABILITY_PREFIX}0", f"{PROBABILITY_PREFIX}1"),
    "sts": (),  # the prediction is the score
}
# on_batch(rows) after every batch of every member: progress in rows predicted.
BatchCallback = Callable[[int], None]


class PredictError(ConfigError):
    """A model cannot be loaded, or cannot predict what it is given; one line naming the file,
    row or model."""


def output_columns(task: str) -> tuple[str, ...]:
    """The columns `Predictor.predict(task, ...)` returns, in order."""
    return (ID_COLUMN, TASK_COLUMN, PREDICTION_COLUMN, *PROBABILITY_COLUMNS[task])


@dataclass
class LoadedMember:
    """One member in memory: its model on the predictor's device, tokenizer, config and votes."""

    checkpoint: Path
    weight: int
    model: MultitaskBert
    tokenizer: TextTokenizer
    cfg: TrainConfig
    tokenizer_key: str  # sha256 of the tokenizer's definition: members sharing it share encodings

    def encoding_key(self, task: str) -> tuple[str, str]:
        return self.tokenizer_key, self.cfg.model.encoding_for(task)


class Predictor:
    """Members loaded once, predicting any of the three tasks; a single checkpoint is an
    ensemble of one whose predictions are passed through uncombined."""

    tasks: tuple[str, ...] = TASKS

    def __init__(
        self,
        members: Sequence[LoadedMember],
        *,
        method: str,
        device: torch.device,
        source: Path,
        manifest: EnsembleManifest | None = None,
    ):
        self.members = list(members)
        self.method = method
        self.device = device
        self.source = source
        self.manifest = manifest

    @property
    def is_ensemble(self) -> bool:
        return self.manifest is not None

    def predict_examples(
        self, task: str, examples: Examples, on_batch: BatchCallback | None = None
    ) -> TaskPredictions:
        """Every member's predictions on `examples` of `task`, combined (example order kept)."""
        check_task(task)
        if not examples:
            raise PredictError(f"{self.source}: nothing to predict (no {task} examples)")
        encoded: dict[tuple[str, str], EncodedTask] = {}
        per_member = []
        for member in self.members:
            key = member.encoding_key(task)
            if key not in encoded:
                encoded[key] = encode_task(task, examples, member.tokenizer, key[1])
            predictions = predict_task(
                member.model,
                encoded[key],
                batch_size=member.cfg.data.eval_batch_size,
                device=self.device,
                pad_id=member.tokenizer.pad_id,
                autocast_dtype=autocast_dtype(member.cfg, self.device),
                on_batch=on_batch,
            )
            per_member += [{task: predictions}] * member.weight
        if not self.is_ensemble:
            return per_member[0][task]
        return combine_tasks(per_member, self.method)[task]

    def predict(
        self, task: str, inputs: Examples, on_batch: BatchCallback | None = None
    ) -> pd.DataFrame:
        """`predict_examples` as a frame of `output_columns(task)`."""
        return predictions_frame(self.predict_examples(task, inputs, on_batch))

    def predict_frame(self, frame: pd.DataFrame, task: str | None = None) -> pd.DataFrame:
        """Predict the rows of `frame` (columns `task`, `sentence1`, `sentence2`, optional `id`;
        `task` may be left out when `task=` names the one task of every row). Output rows keep
        the input's order: `id`, `task`, `prediction`, then the probabilities of the tasks
        present (`prob_0..4` for SST, `prob_0..1` for Quora; empty for rows of other tasks)."""
        tasks, ids = _row_tasks(frame, task), _row_ids(frame)
        parts = []
        for name in TASKS:
            rows = np.flatnonzero(tasks == name)
            if len(rows):
                examples = _frame_examples(frame, name, rows, ids)
                part = self.predict(name, examples)
                part.index = rows
                parts.append(part)
        if not parts:
            raise PredictError("predict_frame: the input has no rows")
        out = pd.concat(parts).sort_index()
        columns = [ID_COLUMN, TASK_COLUMN, PREDICTION_COLUMN]
        for name in TASKS:
            columns += [c for c in PROBABILITY_COLUMNS[name] if c in out and c not in columns]
        return out[columns].reset_index(drop=True)


def predictions_frame(predictions: TaskPredictions) -> pd.DataFrame:
    """One task's predictions as `output_columns(task)`: SST class probabilities, Quora's
    P(not duplicate) and P(duplicate); STS has its score as the prediction and nothing more."""
    task = predictions.task
    columns: dict[str, Any] = {
        ID_COLUMN: list(predictions.ids),
        TASK_COLUMN: [task] * len(predictions.ids),
        PREDICTION_COLUMN: predictions.values,
    }
    probabilities = predictions.probabilities
    if task == "sst" and probabilities is not None:
        columns |= {c: probabilities[:, i] for i, c in enumerate(PROBABILITY_COLUMNS["sst"])}
    elif task == "para" and probabilities is not None:
        p = np.asarray(probabilities, dtype=np.float32).reshape(-1)
        columns |= dict(zip(PROBABILITY_COLUMNS["para"], (1.0 - p, p), strict=True))
    return pd.DataFrame(columns)


# ---------------------------------------------------------------------------------------------
# Loading


def load_predictor(source: str | os.PathLike[str], *, device: str = "cpu") -> Predictor:
    """The model in `source`: an ensemble directory (with manifest.json, every member verified
    against its sha256) or a checkpoint directory. PredictError names what is missing."""
    source = Path(source)
    torch_device = device_named(device, "--device")
    if not source.is_dir():
        raise PredictError(f"{source}: no such directory (expected a checkpoint or an ensemble)")
    if (source / ENSEMBLE_MANIFEST_FILE).is_file():
        manifest = read_manifest(source)
        members = [
            load_member(m.checkpoint, torch_device, weight=m.weight) for m in manifest.members
        ]
        return Predictor(
            members, method=manifest.method, device=torch_device, source=source, manifest=manifest
        )
    if not (source / CONFIG_FILE).is_file():
        raise PredictError(
            f"{source}: neither a checkpoint (no {CONFIG_FILE}) nor an ensemble "
            f"(no {ENSEMBLE_MANIFEST_FILE})"
        )
    member = load_member(source, torch_device)
    return Predictor([member], method=DEFAULT_METHOD, device=torch_device, source=source)


def load_member(checkpoint: Path, device: torch.device, *, weight: int = 1) -> LoadedMember:
    """A checkpoint's model (in eval mode, on `device`), tokenizer and config."""
    try:
        model, tokenizer, cfg = load_checkpoint_model(checkpoint)
    except (CheckpointError, WeightsError, OSError) as err:
        raise PredictError(str(err).splitlines()[0]) from err
    model.to(device).eval()
    key = hashlib.sha256(tokenizer.tokenizer.to_str().encode()).hexdigest()
    return LoadedMember(Path(checkpoint), weight, model, tokenizer, cfg, key)


# ---------------------------------------------------------------------------------------------
# predict_frame's input


def _row_tasks(frame: pd.DataFrame, task: str | None) -> np.ndarray:
    """[N] the task of each row: the `task` column, else `task` for every row."""
    if TASK_COLUMN in frame.columns:
        tasks = frame[TASK_COLUMN].astype(str).str.strip().to_numpy()
        unknown = [i for i, t in enumerate(tasks) if t not in TASKS]
        if unknown:
            row = unknown[0]
            raise PredictError(
                f"row {row + 1}: unknown task {tasks[row]!r} (expected one of {', '.join(TASKS)})"
            )
        if task is not None and any(t != task for t in tasks):
            raise PredictError(f"the 'task' column holds other tasks than {task!r}")
        return tasks
    if task is None:
        raise PredictError(
            f"the input has no '{TASK_COLUMN}' column (one of {', '.join(TASKS)} per row)"
        )
    check_task(task)
    return np.full(len(frame), task, dtype=object)


def _row_ids(frame: pd.DataFrame) -> list[str]:
    """The `id` column as text, else the row numbers from 1; a repeated id names its row."""
    if ID_COLUMN not in frame.columns:
        return [str(i + 1) for i in range(len(frame))]
    ids = [str(v).strip() for v in frame[ID_COLUMN].tolist()]
    seen: dict[str, int] = {}
    for row, value in enumerate(ids):
        if value in seen:
            raise PredictError(
                f"row {row + 1}: duplicate id '{value}' (first at row {seen[value] + 1})"
            )
        seen[value] = row
    return ids


def _text(frame: pd.DataFrame, column: str, rows: np.ndarray, task: str) -> list[str]:
    if column not in frame.columns:
        raise PredictError(f"{task} rows need a '{column}' column (found {list(frame.columns)})")
    values = frame[column].to_numpy()[rows]
    missing = [i for i, v in zip(rows, values, strict=True) if not isinstance(v, str)]
    if missing:
        raise PredictError(f"row {missing[0] + 1}: {task} needs a text '{column}'")
    return [v.strip() for v in values]


def _frame_examples(
    frame: pd.DataFrame, task: str, rows: np.ndarray, ids: list[str]
) -> list[SentenceExample] | list[PairExample]:
    row_ids = [ids[i] for i in rows]
    if task == "sst":
        first = SENTENCE1_COLUMN
        if first not in frame.columns and SST_SENTENCE_COLUMN in frame.columns:
            first = SST_SENTENCE_COLUMN
        texts = _text(frame, first, rows, task)
        return [SentenceExample(i, s, None) for i, s in zip(row_ids, texts, strict=True)]
    firsts = _text(frame, SENTENCE1_COLUMN, rows, task)
    seconds = _text(frame, SENTENCE2_COLUMN, rows, task)
    return [PairExample(i, a, b, None) for i, a, b in zip(row_ids, firsts, seconds, strict=True)]
