"""An ensemble's members as predictions: the dev and test examples read once, and each ranked
candidate's predictions gathered until there are enough members.

A trial's best checkpoint keeps the dev predictions its best epoch made (every dev row it
evaluated, model/stored_predictions.py): those rows are taken from storage. Only what storage
lacks is predicted: the test files, and dev rows outside the trial's dev subset. Then the member
loads from its own best checkpoint and predicts with its own tokenizer and architecture, batched,
on the GPU when there is one; members are loaded one at a time, so memory holds one model. Every
member is scored on the same dev rows as the ensemble, so the gain over the best member compares
like with like. A test file that is missing (here `quora-test-student.csv`, absent from the
course data we have) gives no predictions for that task and split, and a note; the dev files are
required.
"""

from __future__ import annotations

import hashlib
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from model.checkpoint import CheckpointError, load_checkpoint_model, read_checkpoint_config
from model.config import TASKS, TrainConfig
from model.data import DataError, EncodedTask, Examples, encode_task, read_task_file, subsample
from model.data_dir import default_data_dir
from model.device import autocast_dtype
from model.evaluate import OVERALL, TaskPredictions, dev_metrics, predict_task
from model.progress import duration_text
from model.stored_predictions import (
    combine_rows,
    read_dev_predictions,
)
from model.task_data import DEV_SUBSET_SEED, resolve_data_path, task_file
from model.weights import WeightsError
from orchestrator.ensemble.request import Candidate, EnsembleError, EnsembleRequest

Predictions = dict[str, dict[str, TaskPredictions]]  # split -> task -> predictions
# resolve_data(the members' configured data dir or None) -> the data directory to read
DataResolver = Callable[[str | None], Path]


class SplitInputs:
    """Examples of every task and split read once, tokenized once per distinct tokenizer."""

    def __init__(
        self,
        cfg: TrainConfig,
        data_dir: Path,
        splits: Sequence[str],
        notes: list[str],
        dev_subset: bool = False,
    ):
        self.examples: dict[str, dict[str, Examples]] = {split: {} for split in splits}
        self.labels: dict[str, np.ndarray] = {}
        self._encoded: dict[tuple[str, str, str, str, str], EncodedTask] = {}
        for split in splits:
            for task in TASKS:
                self._read(cfg, data_dir, split, task, notes, dev_subset)

    def _read(
        self,
        cfg: TrainConfig,
        data_dir: Path,
        split: str,
        task: str,
        notes: list[str],
        dev_subset: bool,
    ) -> None:
        path = resolve_data_path(data_dir, task_file(cfg, task, split))
        if not path.is_file():
            if split == "dev":
                raise DataError(f"{path}: dev file not found (ensembles are scored on dev)")
            notes.append(f"{path} not found: no {task} {split} predictions")
            return
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            rows: Examples = read_task_file(task, path, labelled=split == "dev")
        notes += [str(w.message) for w in caught]
        if split == "dev" and dev_subset:
            # The trials' own fixed dev subset: fast, and comparable with the sweep.
            rows = subsample(rows, getattr(cfg.data.dev_max_examples, task), seed=DEV_SUBSET_SEED)
        self.examples[split][task] = rows
        if split == "dev":
            dtype = np.int64 if task == "sst" else np.float32
            self.labels[task] = np.asarray([row.label for row in rows], dtype=dtype)

    def encoded(
        self,
        split: str,
        task: str,
        tokenizer: Any,
        pair_encoding: str,
        indices: Sequence[int] | None = None,
    ) -> EncodedTask:
        """The examples (those at `indices`, or all) tokenized by `tokenizer`, cached by the
        tokenizer's full definition: members of one sweep share their encodings."""
        fingerprint = hashlib.sha256(tokenizer.tokenizer.to_str().encode()).hexdigest()
        rows = "all" if indices is None else hashlib.sha256(bytes(np.asarray(indices))).hexdigest()
        key = (split, task, fingerprint, pair_encoding, rows)
        if key not in self._encoded:
            examples = self.examples[split][task]
            chosen = examples if indices is None else [examples[i] for i in indices]
            self._encoded[key] = encode_task(task, chosen, tokenizer, pair_encoding)
        return self._encoded[key]


def predict_member(
    checkpoint: Path,
    inputs: SplitInputs,
    splits: Sequence[str],
    device: torch.device,
    stored: dict[str, TaskPredictions] | None = None,
) -> Predictions:
    """One checkpoint's predictions of every task of `splits`. Dev rows its best epoch already
    predicted come from its stored predictions (`stored`, read from the checkpoint when None;
    model/stored_predictions.py); the model runs, with its own tokenizer, only for the rest (test
    files, dev rows outside the trial's dev subset)."""
    if stored is None:
        stored = read_dev_predictions(checkpoint) if "dev" in splits else {}
    runner = _MemberRunner(checkpoint, inputs, device)
    try:
        # Loaded even when storage holds every row asked for: a checkpoint that no longer loads
        # is skipped here, not chosen and then failing `predict --ensemble` later.
        runner.load()
        by_split = {split: stored if split == "dev" else {} for split in splits}  # dev is stored
        return {
            split: {
                task: _task_predictions(runner, split, task, by_split[split].get(task))
                for task in inputs.examples[split]
            }
            for split in splits
        }
    finally:
        runner.close()


def _task_predictions(
    runner: _MemberRunner, split: str, task: str, stored: TaskPredictions | None
) -> TaskPredictions:
    rows = runner.inputs.examples[split][task]
    known = set(stored.ids) if stored is not None else set()
    missing = [i for i, row in enumerate(rows) if row.id not in known]
    if stored is None or len(missing) == len(rows):
        return runner.predict(split, task, None)
    parts = [stored] if not missing else [stored, runner.predict(split, task, missing)]
    return combine_rows([row.id for row in rows], parts)


class _MemberRunner:
    """A member's checkpoint, loaded once, run only for the rows its stored predictions lack."""

    def __init__(self, checkpoint: Path, inputs: SplitInputs, device: torch.device) -> None:
        self.checkpoint, self.inputs, self.device = checkpoint, inputs, device
        self.loaded: tuple[Any, Any, TrainConfig] | None = None

    def load(self) -> tuple[Any, Any, TrainConfig]:
        """The member's model (on the device), tokenizer and config, loaded once."""
        if self.loaded is None:
            model, tokenizer, cfg = load_checkpoint_model(self.checkpoint)
            self.loaded = (model.to(self.device), tokenizer, cfg)
        return self.loaded

    def predict(self, split: str, task: str, indices: Sequence[int] | None) -> TaskPredictions:
        """The model's predictions of `split`/`task`'s rows at `indices` (None: every row)."""
        model, tokenizer, cfg = self.load()
        encoding = cfg.model.encoding_for(task)
        encoded = self.inputs.encoded(split, task, tokenizer, encoding, indices)
        return predict_task(
            model,
            encoded,
            batch_size=cfg.data.eval_batch_size,
            device=self.device,
            pad_id=tokenizer.pad_id,
            autocast_dtype=autocast_dtype(cfg, self.device),
        )

    def close(self) -> None:
        self.loaded = None
        if self.device.type == "cuda":
            torch.cuda.empty_cache()


@dataclass
class MemberRun:
    """A member that loaded and predicted: its candidate entry and its dev scores."""

    candidate: Candidate
    predictions: Predictions
    dev: dict[str, float]


@dataclass
class MemberLibrary:
    """The members that loaded, best-ranked first, the examples they predicted, and notes on
    what was skipped or missing."""

    members: list[MemberRun]
    inputs: SplitInputs
    notes: list[str]
    device: torch.device

    def predict_split(self, indices: Sequence[int], split: str) -> None:
        """Add `split`'s predictions to the members at `indices` (each loaded once more)."""
        for index in indices:
            member = self.members[index]
            assert member.candidate.checkpoint is not None  # it loaded before
            extra = predict_member(member.candidate.checkpoint, self.inputs, (split,), self.device)
            member.predictions.update(extra)


def load_members(
    ranked: Sequence[Candidate],
    request: EnsembleRequest,
    *,
    sweep: str,
    resolve_data: DataResolver | None = None,
    echo: Callable[[str], None] = lambda line: None,
) -> MemberLibrary:
    """Predict with the best-ranked candidates until there are enough members; a candidate whose
    checkpoint will not load is skipped with a note. EnsembleError if fewer than `top` load."""
    # Greedy selection needs every loadable trial's dev predictions; top-K stops at K members.
    wanted = len(ranked) if request.greedy else request.top
    splits = ("dev",) if request.greedy else request.splits
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    members: list[MemberRun] = []
    notes: list[str] = []
    skipped: list[str] = []
    inputs: SplitInputs | None = None
    started = time.monotonic()
    for candidate in ranked:
        if len(members) == wanted:
            break
        try:
            if inputs is None:  # the first member's config names the data files
                inputs = _read_inputs(candidate, request, resolve_data, notes)
            stored = read_dev_predictions(_checkpoint(candidate)) if "dev" in splits else {}
            predictions = predict_member(_checkpoint(candidate), inputs, splits, device, stored)
        except (CheckpointError, WeightsError, OSError) as err:
            reason = str(err).splitlines()[0]
            skipped.append(f"{candidate.run_name} ({candidate.run_id[:8]}): {reason}")
            notes.append(f"skipped trial {candidate.trial_id}: {reason}")
            continue
        dev = dev_metrics(predictions["dev"], inputs.labels)
        members.append(MemberRun(candidate, predictions, dev))
        # A line per member, so a long ensemble shows its pace in a log as well as on a terminal.
        echo(
            f"member {len(members)}: {candidate.run_name}  {OVERALL} {dev[OVERALL]:.4f}  "
            f"elapsed {duration_text(time.monotonic() - started)}"
            + ("  (its stored dev predictions used)" if stored else "")
        )
    if len(members) < request.top:
        raise _too_few_loadable(len(members), len(ranked), skipped, sweep)
    assert inputs is not None  # at least one member loaded
    return MemberLibrary(members, inputs, notes, device)


def _too_few_loadable(loaded: int, finished: int, skipped: list[str], sweep: str) -> EnsembleError:
    reasons = "; ".join(skipped)
    if not loaded:
        return EnsembleError(
            f"no finished trial of sweep '{sweep}' has a loadable checkpoint ({reasons})"
        )
    return EnsembleError(
        f"only {loaded} of the {finished} finished trials of sweep '{sweep}' have a loadable "
        f"checkpoint ({reasons}); use --top {loaded} or fewer"
    )


def _checkpoint(candidate: Candidate) -> Path:
    if candidate.checkpoint is None:
        raise CheckpointError("trial has no best checkpoint recorded")
    return candidate.checkpoint


def _read_inputs(
    candidate: Candidate,
    request: EnsembleRequest,
    resolve_data: DataResolver | None,
    notes: list[str],
) -> SplitInputs:
    """Every split's examples, from --data-dir or else the data directory the member trained on."""
    cfg = read_checkpoint_config(_checkpoint(candidate))[1]
    data_dir = request.data_dir or (resolve_data or _configured_data_dir)(cfg.data.data_dir)
    return SplitInputs(cfg, Path(data_dir), request.splits, notes, request.dev_subset)


def _configured_data_dir(configured: str | None) -> Path:
    return Path(configured) if configured else default_data_dir()
