"""Checkpoint directories: written atomically, loaded without unpickling.

Layout (shared with the sweep and ensemble commands):
  model.safetensors    every parameter and buffer of MultitaskBert
  config.json          {"bert": BertConfig, "train_config": TrainConfig, "tokenizer": reference,
                        "weights_sha256": sha256 of model.safetensors, checked at every load}
  tokenizer files      copied from the model directory, so a checkpoint predicts on its own
  metrics.json         metrics of the epoch it holds (dev, SST details, selection split)
  optimizer.pt         optional: optimizer, LR schedule and RNG state (loaded weights_only=True)
  trainer_state.json   optional: epoch, global step and best-so-far, for resuming
The two optional files are one `ResumeState`, written and read only here.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

# write_json_atomic's home is model.atomic_write; importers of it here keep working.
from model.atomic_write import write_json_atomic as write_json_atomic
from model.bert import BertConfig, BertModel
from model.config import TrainConfig, build_config, config_to_dict
from model.heads import MultitaskBert
from model.tokenizer import TextTokenizer, check_tokenizer_fits, load_tokenizer
from model.weights import WeightsError, shape_mismatch

if TYPE_CHECKING:
    from model.evaluate import TaskPredictions

TOKENIZER_FILES = (
    "tokenizer.json",
    "vocab.txt",
    "tokenizer_config.json",
    "special_tokens_map.json",
)
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.json"
OPTIMIZER_FILE = "optimizer.pt"
TRAINER_STATE_FILE = "trainer_state.json"
# config.json's record of model.safetensors' sha256 (hex), written at save and checked at load:
# a flipped bit in a weight otherwise loads and predicts garbage without a word.
WEIGHTS_DIGEST_KEY = "weights_sha256"
# Left in a checkpoint whose weights were deleted to save disk (a sweep's retention setting),
# saying why in one line; its config, metrics and stored predictions stay.
WEIGHTS_DROPPED_FILE = "weights_dropped.txt"


@dataclass(frozen=True)
class RunLayout:
    """Where `fit` writes under its output directory; the one place these names are spelled."""

    out_dir: Path

    @property
    def best(self) -> Path:
        """The best epoch's checkpoint (what ensembles and predictions load)."""
        return self.out_dir / "checkpoints" / "best"

    @property
    def last(self) -> Path:
        """The last epoch's checkpoint with resume state (optimizer, RNG): resuming reads it."""
        return self.out_dir / "checkpoints" / "last"

    @property
    def metrics(self) -> Path:
        return self.out_dir / METRICS_FILE

    @property
    def predictions(self) -> Path:
        return self.out_dir / "predictions"


class CheckpointError(ValueError):
    """A checkpoint directory is missing, incomplete or corrupt; the message names the path."""


@dataclass(frozen=True)
class TrainerState:
    """Where training stands after an epoch, to resume without counting anything twice."""

    epoch: int
    global_step: int
    best_score: float
    best_metrics: dict[str, float]
    history: list[dict[str, float]]


@dataclass(frozen=True)
class ResumeState:
    """Everything resuming needs besides the weights: progress (trainer_state.json) and the
    optimizer, LR schedule, torch RNG, passes of each task's batch stream and, when SMART's
    proximal term is on, its EMA copy of the model (optimizer.pt)."""

    progress: TrainerState
    optimizer: dict[str, Any]
    scheduler: dict[str, Any]
    torch_rng: torch.Tensor
    stream_passes: dict[str, int]
    bregman_ema: dict[str, torch.Tensor] | None = None

    def tensors(self) -> dict[str, Any]:
        """The optimizer.pt payload: plain containers of tensors, so it loads weights_only."""
        payload = {
            "optimizer": self.optimizer,
            "scheduler": self.scheduler,
            "torch_rng": self.torch_rng,
            "stream_passes": self.stream_passes,
        }
        if self.bregman_ema is not None:
            payload["bregman_ema"] = self.bregman_ema
        return payload


def save_checkpoint(
    target: Path,
    model: MultitaskBert,
    cfg: TrainConfig,
    tokenizer_dir: Path,
    metrics: dict[str, float],
    *,
    resume: ResumeState | None = None,
    dev_predictions: Mapping[str, TaskPredictions] | None = None,
) -> Path:
    """Write a checkpoint into a temp dir beside `target`, then swap it into place; with `resume`,
    one that training can continue from; with `dev_predictions`, its epoch's dev predictions
    (stored_predictions.py), which an ensemble reads instead of running it again."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}."))
    try:
        state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
        save_file(state, str(tmp / WEIGHTS_FILE))
        config = {
            "bert": model.encoder.config.to_dict(),
            "train_config": config_to_dict(cfg),
            "tokenizer": str(tokenizer_dir),
            WEIGHTS_DIGEST_KEY: weights_sha256(tmp / WEIGHTS_FILE),
        }
        (tmp / CONFIG_FILE).write_text(json.dumps(config, indent=2, sort_keys=True))
        (tmp / METRICS_FILE).write_text(json.dumps(metrics, indent=2, sort_keys=True))
        for name in TOKENIZER_FILES:
            if (tokenizer_dir / name).is_file():
                shutil.copy2(tokenizer_dir / name, tmp / name)
        if dev_predictions:
            # Imported here: evaluate.py pulls scipy and sklearn, which `orchestrator --help`
            # (it imports this module) should not pay for.
            from model.stored_predictions import write_dev_predictions

            write_dev_predictions(tmp, dev_predictions)
        if resume is not None:
            torch.save(resume.tensors(), tmp / OPTIMIZER_FILE)
            progress = json.dumps(dataclasses.asdict(resume.progress), indent=2)
            (tmp / TRAINER_STATE_FILE).write_text(progress)
        _swap_into_place(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def _swap_into_place(tmp: Path, target: Path) -> None:
    # A directory cannot be replaced atomically while it exists: move the old one aside first, so
    # at every moment either the old or the new complete checkpoint is at a known path.
    old = _moved_aside(target)
    if old.exists():
        shutil.rmtree(old)
    if target.exists():
        os.replace(target, old)
    os.replace(tmp, target)
    shutil.rmtree(old, ignore_errors=True)


def _moved_aside(target: Path) -> Path:
    return target.with_name(f".{target.name}.old")


def saved_versions(target: Path) -> list[Path]:
    """Where `save_checkpoint(target, ...)` left a complete checkpoint, newest first: `target`,
    then the previous one it moved aside, which a crash between its two renames leaves behind."""
    return [path for path in (target, _moved_aside(target)) if path.is_dir()]


def check_resumable(checkpoint: Path) -> None:
    """CheckpointError unless training can continue from `checkpoint`: its files are there, its
    weights match the digest recorded at save and its resume state loads (a copy cut short
    fails one of these)."""
    checkpoint = Path(checkpoint)
    for name in (WEIGHTS_FILE, CONFIG_FILE, METRICS_FILE):
        if not (checkpoint / name).is_file():
            raise CheckpointError(f"{checkpoint}: missing {name}")
    _check_weights_digest(checkpoint, checkpoint / WEIGHTS_FILE)
    load_resume_state(checkpoint)


def read_checkpoint_config(checkpoint: Path) -> tuple[BertConfig, TrainConfig]:
    """The encoder architecture and training config stored in a checkpoint's config.json."""
    raw = _read_config_json(checkpoint)
    path = Path(checkpoint) / CONFIG_FILE
    try:
        return BertConfig.from_dict(raw["bert"]), build_config(TrainConfig, raw["train_config"])
    except KeyError as err:
        raise CheckpointError(f"{path}: unreadable checkpoint config (no {err} entry)") from err
    except (TypeError, ValueError) as err:  # ValueError: BertConfig's checks, ConfigError
        raise CheckpointError(f"{path}: unreadable checkpoint config ({err})") from err


def load_checkpoint_model(checkpoint: Path) -> tuple[MultitaskBert, TextTokenizer, TrainConfig]:
    """Rebuild a trained MultitaskBert and its tokenizer from a checkpoint directory."""
    checkpoint = Path(checkpoint)
    bert_config, cfg = read_checkpoint_config(checkpoint)
    model = MultitaskBert(BertModel(bert_config), cfg.model)
    load_weights(checkpoint, model)
    tokenizer_dir = checkpoint if _has_tokenizer(checkpoint) else _tokenizer_ref(checkpoint)
    try:
        tokenizer = load_tokenizer(tokenizer_dir, cfg.model.max_length)
        encodings = [cfg.model.encoding_for(task) for task in ("para", "sts")]
        check_tokenizer_fits(bert_config, tokenizer, encodings, checkpoint / CONFIG_FILE)
    except WeightsError as err:  # it names the tokenizer file or config field at fault
        raise CheckpointError(str(err)) from err
    return model, tokenizer, cfg


def load_weights(checkpoint: Path, model: MultitaskBert) -> None:
    """Load a checkpoint's model.safetensors into `model`, strictly (every key, every shape),
    after checking it against the sha256 its config.json recorded; a NaN or inf weight is an
    error too (a checkpoint saved from a diverged run, or written with a bad digest)."""
    weights = Path(checkpoint) / WEIGHTS_FILE
    if not weights.is_file():
        why = weights_dropped(Path(checkpoint))
        because = f" ({why})" if why else ""
        raise CheckpointError(f"{checkpoint}: missing {WEIGHTS_FILE}{because}")
    _check_weights_digest(Path(checkpoint), weights)
    try:
        state = load_file(str(weights))
    except (OSError, SafetensorError) as err:  # e.g. a truncated file
        raise CheckpointError(f"{weights}: cannot load weights ({err})") from err
    mismatch = shape_mismatch(model.state_dict(), state)
    if mismatch:
        raise CheckpointError(f"{weights}: does not match {CONFIG_FILE}: {mismatch}")
    for key, tensor in state.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            bad = int((~torch.isfinite(tensor)).sum())
            raise CheckpointError(f"{weights}: {key} holds {bad} non-finite values (NaN or inf)")
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:  # missing or unexpected keys, listed after a header line
        raise CheckpointError(f"{weights}: {' '.join(str(err).split())}") from err


def drop_weights(checkpoint: Path, why: str) -> bool:
    """Delete a checkpoint's weights, leaving a note that says `why`; False if it had none.
    The note is written first: a crash in between leaves weights and note, never weights gone
    without a word."""
    weights = Path(checkpoint) / WEIGHTS_FILE
    if not weights.is_file():
        return False
    (Path(checkpoint) / WEIGHTS_DROPPED_FILE).write_text(f"{why}\n")
    weights.unlink()
    return True


def weights_dropped(checkpoint: Path) -> str | None:
    """Why a checkpoint's weights were deleted (`drop_weights`), or None if they were not."""
    note = Path(checkpoint) / WEIGHTS_DROPPED_FILE
    return note.read_text().strip() if note.is_file() else None


def weights_sha256(path: Path) -> str:
    """sha256 (hex) of a weights file, as config.json records it."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _check_weights_digest(checkpoint: Path, weights: Path) -> None:
    """CheckpointError naming `weights` when it differs from the sha256 config.json recorded.

    Checkpoints written before the digest existed have no entry (or no config.json beside a
    bare weights file): they load unchecked, without a warning, as they always did."""
    if not (checkpoint / CONFIG_FILE).is_file():
        return
    expected = _read_config_json(checkpoint).get(WEIGHTS_DIGEST_KEY)
    if expected is None:
        return
    if not isinstance(expected, str) or len(expected) != 64:
        raise CheckpointError(
            f"{checkpoint / CONFIG_FILE}: '{WEIGHTS_DIGEST_KEY}' is not a sha256 ({expected!r})"
        )
    try:
        actual = weights_sha256(weights)
    except OSError as err:
        raise CheckpointError(f"{weights}: cannot read weights ({err.strerror})") from err
    if actual != expected.lower():
        raise CheckpointError(
            f"{weights}: sha256 {actual} differs from the {expected} recorded in {CONFIG_FILE} "
            "at save: the file changed or is corrupt (copy the checkpoint again, or retrain)"
        )


def load_resume_state(checkpoint: Path) -> ResumeState:
    """The ResumeState `save_checkpoint(..., resume=...)` wrote into `checkpoint`."""
    checkpoint = Path(checkpoint)
    try:
        payload = torch.load(checkpoint / OPTIMIZER_FILE, map_location="cpu", weights_only=True)
        progress = TrainerState(**json.loads((checkpoint / TRAINER_STATE_FILE).read_text()))
        return ResumeState(progress=progress, **payload)
    except (OSError, json.JSONDecodeError, TypeError, RuntimeError) as err:
        raise CheckpointError(f"{checkpoint}: cannot resume from it ({err})") from err


def _has_tokenizer(directory: Path) -> bool:
    return (directory / "tokenizer.json").is_file() or (directory / "vocab.txt").is_file()


def _tokenizer_ref(checkpoint: Path) -> Path:
    """The model directory whose tokenizer a checkpoint without tokenizer files refers to."""
    ref = _read_config_json(checkpoint).get("tokenizer")
    if not isinstance(ref, str):
        raise CheckpointError(
            f"{checkpoint / CONFIG_FILE}: no tokenizer files in {checkpoint} and no "
            "'tokenizer' entry naming a model directory"
        )
    return Path(ref)


def _read_config_json(checkpoint: Path) -> dict[str, Any]:
    path = Path(checkpoint) / CONFIG_FILE
    if not path.is_file():
        raise CheckpointError(f"{checkpoint}: not a checkpoint (no {CONFIG_FILE})")
    try:
        raw = json.loads(path.read_text())
    except (OSError, ValueError) as err:  # ValueError: bad JSON or not UTF-8
        raise CheckpointError(f"{path}: unreadable checkpoint config ({err})") from err
    if not isinstance(raw, dict):
        raise CheckpointError(
            f"{path}: unreadable checkpoint config (expected a JSON object, got "
            f"{type(raw).__name__})"
        )
    return raw
