"""`fit`: train one multitask minBERT from a TrainConfig, evaluating on dev (and on the held-out
selection split when data.selection is set) after every epoch.

Knows nothing of Ray or MLflow: progress goes out through the `on_epoch` callback, state comes back
in through `resume_from`. Read top to bottom: data -> model -> optimizer -> epochs (plan, steps,
evaluate, checkpoint) -> best checkpoint's predictions. One step is model/step.py.
"""

from __future__ import annotations

import math
import random
import shutil
import sys
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from model.batching import TaskBatches, device_batches
from model.bert import compile_encoder
from model.checkpoint import (
    WEIGHTS_FILE,
    ResumeState,
    RunLayout,
    TrainerState,
    load_checkpoint_model,
    load_resume_state,
    load_weights,
    save_checkpoint,
    write_json_atomic,
)
from model.config import ConfigError, TrainConfig
from model.device import autocast_dtype, precision_line, resolve_device
from model.evaluate import (
    EPOCH,
    OVERALL,
    SELECTION_OVERALL,
    SELECTION_SPLIT,
    TRAIN_LOSS,
    TaskPredictions,
    dev_metrics,
    predict_task,
    prediction_filename,
    split_metrics,
    sst_detail_metrics,
    write_predictions,
)
from model.heads import NUM_SENTIMENT_CLASSES, MultitaskBert
from model.losses import sentiment_class_weights
from model.optim import build_optimizer, warmup_then
from model.progress import TrainingProgress
from model.schedule import Plan, sample_task_order
from model.smart import BregmanProximalPoint
from model.step import StepContext, training_step
from model.task_data import TaskData, load_task_data, resolve_data_files
from model.tokenizer import check_tokenizer_fits, load_tokenizer
from model.weights import load_encoder, resolve_model_dir

__all__ = [
    "EpochResult",
    "FitResult",
    "NonFiniteLossError",
    "best_epoch_metric",
    "fit",
    "load_checkpoint_model",
]


class NonFiniteLossError(ConfigError, RuntimeError):
    """The training loss became NaN or infinite; the message names the epoch, step and the
    config keys to change.

    A ConfigError, so the CLI reports it in one line (exit 2) without importing this module at
    startup; still a RuntimeError for callers that catch it as one.
    """


@dataclass
class EpochResult:
    """What `on_epoch` receives after each epoch's dev evaluation and checkpoint."""

    epoch: int
    metrics: dict[str, float]
    checkpoint_dir: Path
    best_checkpoint_dir: Path
    is_best: bool


@dataclass
class FitResult:
    best_metrics: dict[str, float]
    best_checkpoint: Path
    epochs_run: int
    history: list[dict[str, float]] = field(default_factory=list)
    selected_by: str = OVERALL  # the metric that picked the best epoch (best_epoch_metric)
    train_examples: dict[str, int] = field(default_factory=dict)  # per task, as trained on
    precision: str = "fp32"  # what `precision: auto` resolved to here (device.resolved_precision)


def best_epoch_metric(cfg: TrainConfig) -> str:
    """What `fit` picks its best epoch by: selection/overall when data.selection holds a
    selection split out of the training data, else dev/overall."""
    return SELECTION_OVERALL if cfg.data.selection > 0 else OVERALL


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def build_model(cfg: TrainConfig) -> tuple[MultitaskBert, Path]:
    """Encoder from the configured checkpoint (or random init with its architecture) plus heads."""
    model_dir = resolve_model_dir(cfg.model.name)
    overrides = {
        "hidden_size": cfg.model.hidden_size,
        "num_hidden_layers": cfg.model.num_hidden_layers,
        "num_attention_heads": cfg.model.num_attention_heads,
        "intermediate_size": cfg.model.intermediate_size,
        "hidden_dropout_prob": cfg.model.hidden_dropout,
        "attention_probs_dropout_prob": cfg.model.attention_dropout,
    }
    encoder, bert_config = load_encoder(
        model_dir, random_init=cfg.model.random_init, overrides=overrides
    )
    # Checked here, before the data is tokenized, rather than as an IndexError mid-epoch.
    tokenizer = load_tokenizer(model_dir, cfg.model.max_length)
    encodings = [cfg.model.encoding_for(task) for task in ("para", "sts")]
    check_tokenizer_fits(bert_config, tokenizer, encodings, model_dir / "config.json")
    return MultitaskBert(encoder, cfg.model), model_dir


def plan_epoch(cfg: TrainConfig, batches_per_task: dict[str, int], epoch: int) -> Plan:
    """The tasks each step of this epoch trains on (see model/schedule.py and ScheduleConfig)."""
    return sample_task_order(cfg.schedule, batches_per_task, epoch, cfg.optim.epochs, cfg.seed)


@dataclass
class _Run:
    """What `fit` sets up once: step context, data, batch streams and each epoch's plan."""

    ctx: StepContext
    model_dir: Path
    data: TaskData
    streams: dict[str, TaskBatches]
    plans: list[Plan]

    @property
    def total_steps(self) -> int:
        return sum(len(plan) for plan in self.plans)

    def predict(
        self, split: str, model: MultitaskBert | None = None
    ) -> dict[str, TaskPredictions]:
        """Predictions on `split` for every task that has it loaded, by the run's model or
        another one (the best checkpoint's)."""
        ctx = self.ctx
        model = ctx.model if model is None else model
        model.eval()
        tasks = self.data.split(split)
        out = {
            task: predict_task(
                model,
                encoded,
                batch_size=ctx.cfg.data.eval_batch_size,
                device=ctx.device,
                pad_id=self.data.pad_id,
                autocast_dtype=ctx.amp_dtype,
            )
            for task, encoded in tasks.items()
        }
        model.train()
        return out


def fit(
    cfg: TrainConfig,
    *,
    data_dir: Path,
    out_dir: Path,
    on_epoch: Callable[[EpochResult], None] | None = None,
    resume_from: Path | None = None,
    progress: bool = False,
    prediction_splits: tuple[str, ...] = ("dev", "test"),
) -> FitResult:
    """Train, evaluate after each epoch, keep the best epoch by `best_epoch_metric(cfg)`."""
    layout = RunLayout(Path(out_dir))
    run = _prepare(cfg, Path(data_dir))
    state = _start(run, resume_from)
    # Before any step: where the run computes and in which precision (auto picks per machine);
    # after set-up, so a bad config or model directory is still a one-line error.
    print(precision_line(cfg, run.ctx.device), file=sys.stderr, flush=True)
    selected_by = best_epoch_metric(cfg)
    best_dev_predictions: dict[str, TaskPredictions] = {}
    with TrainingProgress(progress, run.total_steps, state.global_step, cfg.optim.epochs) as bar:
        for epoch in range(state.epoch + 1, cfg.optim.epochs + 1):
            train_loss, steps = _train_epoch(run, epoch, state.global_step, bar)
            metrics, predictions = _evaluate(run)
            metrics.update({TRAIN_LOSS: train_loss, EPOCH: float(epoch)})
            is_best = metrics[selected_by] > state.best_score
            if is_best:
                best_dev_predictions = predictions
            state = _after_epoch(state, epoch, steps, metrics, metrics[selected_by])
            _save_epoch(run, layout, state, metrics, predictions if is_best else None)
            bar.epoch_done(metrics, state.global_step)  # a line per epoch, bar or not
            if on_epoch is not None:
                on_epoch(EpochResult(epoch, metrics, layout.last, layout.best, is_best))

    _write_best_outputs(run, layout, prediction_splits, best_dev_predictions)
    write_json_atomic(layout.metrics, state.best_metrics)
    sizes = {task: len(encoded) for task, encoded in run.data.train.items()}
    precision = "bf16" if run.ctx.amp_dtype is torch.bfloat16 else "fp32"
    return FitResult(
        state.best_metrics, layout.best, state.epoch, state.history, selected_by, sizes, precision
    )


def _prepare(cfg: TrainConfig, data_dir: Path) -> _Run:
    """Seed, then build model, data, batch streams, plans and optimizer, in this order: the
    order fixes which random draws each of them gets, so a seed reproduces a run."""
    cfg = resolve_data_files(cfg, data_dir)  # para_train: auto -> the file read, as saved
    seed_everything(cfg.seed)
    device = resolve_device(cfg)
    amp_dtype = autocast_dtype(cfg, device)
    _warn_if_smart_below_bf16(cfg, amp_dtype)
    model, model_dir = build_model(cfg)
    data = load_task_data(cfg, data_dir, model_dir)
    model.to(device).train()
    if cfg.model.compile:
        compile_encoder(model.encoder)

    streams = {
        task: TaskBatches(encoded, cfg, data.pad_id, seed=cfg.seed + i)
        for i, (task, encoded) in enumerate(data.train.items())
    }
    batches_per_task = {task: stream.per_pass for task, stream in streams.items()}
    plans = [plan_epoch(cfg, batches_per_task, epoch) for epoch in range(1, cfg.optim.epochs + 1)]
    optimizer = build_optimizer(model, cfg, device)
    total_steps = sum(len(plan) for plan in plans)
    optim = cfg.optim
    scheduler = warmup_then(optimizer, total_steps, optim.warmup_ratio, optim.lr_schedule)
    class_weights = None
    if cfg.loss.sst_class_weights and "sst" in data.train:
        labels = torch.from_numpy(data.train["sst"].labels)
        class_weights = sentiment_class_weights(labels, NUM_SENTIMENT_CLASSES).to(device)
    ctx = StepContext(model, optimizer, scheduler, cfg, device, amp_dtype, class_weights)
    return _Run(ctx, model_dir, data, streams, plans)


def _warn_if_smart_below_bf16(cfg: TrainConfig, amp_dtype: torch.dtype | None) -> None:
    s = cfg.smart  # smart_pytorch's perturbation is ~1 per token: only the paper's ball is tiny
    if s.weight > 0 and s.variant == "paper" and amp_dtype is torch.bfloat16 and s.epsilon < 1e-2:
        # bf16 rounding alone moved bert-base outputs by ~3e-3 on an H100: more than the ball.
        warnings.warn(
            f"smart.epsilon={cfg.smart.epsilon:g} is below bf16's resolution of the outputs; "
            "use precision: fp32 with SMART at the paper's settings",
            stacklevel=4,  # fit's caller
        )


def _start(run: _Run, resume_from: Path | None) -> TrainerState:
    """A fresh TrainerState, or the one saved in `resume_from` with weights, optimizer, schedule,
    RNG and stream positions restored; SMART's proximal EMA is set up (and restored) here too."""
    cfg, ctx = run.ctx.cfg, run.ctx
    state = TrainerState(epoch=0, global_step=0, best_score=-math.inf, best_metrics={}, history=[])
    resume = None
    if resume_from is not None:
        resume = load_resume_state(resume_from)
        load_weights(resume_from, ctx.model)
        ctx.optimizer.load_state_dict(resume.optimizer)
        ctx.scheduler.load_state_dict(resume.scheduler)
        torch.set_rng_state(resume.torch_rng)
        for task, passes in resume.stream_passes.items():
            if task in run.streams:
                run.streams[task].passes = passes
        state = resume.progress
    if cfg.smart.bregman_mu > 0 and cfg.smart.variant == "paper":  # smart_pytorch has no μ term
        ctx.bregman = BregmanProximalPoint(ctx.model, cfg.smart.bregman_beta)
        if resume is not None:
            if resume.bregman_ema is None:
                raise ValueError(
                    f"{resume_from}: no SMART Bregman EMA state (smart.bregman_mu changed?)"
                )
            ctx.bregman.load_state_dict(resume.bregman_ema)
    return state


def _train_epoch(
    run: _Run, epoch: int, steps_before: int, bar: TrainingProgress
) -> tuple[float, int]:
    """Every planned step of `epoch`; returns the epoch's mean training loss and its step count."""
    ctx, plan = run.ctx, run.plans[epoch - 1]
    loss_sum = torch.zeros((), device=ctx.device)
    steps = 0
    for batches in device_batches(run.streams, plan, ctx.device):
        loss_sum += training_step(ctx, batches)
        steps += 1
        global_step = steps_before + steps
        bar.advance(global_step)
        if global_step % ctx.cfg.log_every == 0 or steps == len(plan):
            # Reading the loss forces a host-device sync: only at log intervals.
            mean_loss = (loss_sum / steps).item()
            if not math.isfinite(mean_loss):
                raise NonFiniteLossError(
                    f"training loss is {mean_loss} at epoch {epoch}, step {global_step}; "
                    "lower optim.lr, set optim.grad_clip or use precision: fp32"
                )
            bar.update(global_step, f"epoch {epoch} loss {mean_loss:.4f}")
    return (loss_sum / max(steps, 1)).item(), steps


def _evaluate(run: _Run) -> tuple[dict[str, float], dict[str, TaskPredictions]]:
    """The epoch's dev metrics with SST details, selection metrics when that split is held out,
    and the dev predictions they came from."""
    predictions = run.predict("dev")
    labels = run.data.labels("dev")
    metrics = dev_metrics(predictions, labels)
    metrics.update(sst_detail_metrics(labels["sst"], predictions["sst"].values))
    if run.data.selection:
        selection = run.predict(SELECTION_SPLIT)
        metrics.update(split_metrics(selection, run.data.labels(SELECTION_SPLIT), SELECTION_SPLIT))
    return metrics, predictions


def _after_epoch(
    state: TrainerState, epoch: int, steps: int, metrics: dict[str, float], score: float
) -> TrainerState:
    """The state after an epoch whose best-epoch metric is `score`."""
    return TrainerState(
        epoch=epoch,
        global_step=state.global_step + steps,
        best_score=max(state.best_score, score),
        best_metrics=dict(metrics) if score > state.best_score else state.best_metrics,
        history=[*state.history, metrics],
    )


def _save_epoch(
    run: _Run,
    layout: RunLayout,
    state: TrainerState,
    metrics: dict[str, float],
    best_predictions: dict[str, TaskPredictions] | None,
) -> None:
    """The best checkpoint with its dev predictions when this epoch is the best so far (given its
    predictions); always the last, resumable one."""
    ctx = run.ctx
    if best_predictions is not None:
        best, model, cfg = layout.best, ctx.model, ctx.cfg
        save_checkpoint(best, model, cfg, run.model_dir, metrics, dev_predictions=best_predictions)
    resume = ResumeState(
        progress=state,
        optimizer=ctx.optimizer.state_dict(),
        scheduler=ctx.scheduler.state_dict(),
        torch_rng=torch.get_rng_state(),
        stream_passes={task: stream.passes for task, stream in run.streams.items()},
        bregman_ema=None if ctx.bregman is None else ctx.bregman.state_dict(),
    )
    save_checkpoint(layout.last, ctx.model, ctx.cfg, run.model_dir, metrics, resume=resume)


def _write_best_outputs(
    run: _Run,
    layout: RunLayout,
    splits: tuple[str, ...],
    dev_predictions: dict[str, TaskPredictions],
) -> None:
    """Prediction files of the best epoch for `splits`, in the CS224N leaderboard format.

    Dev predictions of the best epoch are kept from its evaluation (unless training resumed after
    it), so only the test sets are predicted again, with the best checkpoint's weights.
    """
    if not splits or not (layout.best / WEIGHTS_FILE).is_file():
        return
    by_split = {"dev": dev_predictions} if dev_predictions else {}
    if any(split not in by_split for split in splits):
        model, _, _ = load_checkpoint_model(layout.best)
        model.to(run.ctx.device)
        for split in splits:
            if split not in by_split:
                by_split[split] = run.predict(split, model)
    # Written aside, then swapped in whole: a rerun into the same --out leaves no stale file of an
    # earlier run (e.g. a test set that is absent now), and a crash leaves the old set intact.
    final = layout.predictions
    partial = final.with_name(f"{final.name}.partial")
    shutil.rmtree(partial, ignore_errors=True)
    try:
        for split in splits:
            for task, preds in by_split[split].items():
                write_predictions(partial / prediction_filename(task, split), preds)
    except BaseException:  # Ctrl-C or a full disk: leave no half-written set behind
        shutil.rmtree(partial, ignore_errors=True)
        raise
    shutil.rmtree(final, ignore_errors=True)
    if partial.is_dir():
        partial.rename(final)
