"""`fit`: train one multitask minBERT from a TrainConfig, evaluating on dev after every epoch.

Knows nothing of Ray or MLflow: progress goes out through the `on_epoch` callback, state comes back
in through `resume_from`. Read top to bottom: data -> model -> optimizer -> epochs (plan, steps,
evaluate, checkpoint) -> best checkpoint's predictions.
"""

from __future__ import annotations

import math
import random
import shutil
import warnings
from collections.abc import Callable, Iterator
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from model.bert import COMPILE_PAD_MULTIPLE, compile_encoder
from model.checkpoint import (
    TrainerState,
    load_checkpoint_model,
    load_resume_state,
    save_checkpoint,
    write_json_atomic,
)
from model.config import ConfigError, TrainConfig
from model.data import Batch, EncodedTask, batch_indices, collate, prefetch
from model.evaluate import (
    TaskPredictions,
    dev_metrics,
    predict_task,
    prediction_filename,
    write_predictions,
)
from model.heads import NUM_SENTIMENT_CLASSES, MultitaskBert
from model.losses import head_weight_penalty, sentiment_class_weights, task_loss, weighted_sum
from model.pcgrad import pcgrad_backward
from model.schedule import sample_task_order
from model.smart import BregmanProximalPoint, smart_penalty
from model.task_data import TaskData, load_task_data
from model.weights import check_tokenizer_fits, load_encoder, load_tokenizer, resolve_model_dir

__all__ = ["EpochResult", "FitResult", "NonFiniteLossError", "fit", "load_checkpoint_model"]


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


def resolve_device(cfg: TrainConfig) -> torch.device:
    if cfg.device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("config key 'device' is cuda, but torch sees no CUDA device here")
    if cfg.device == "cuda" or (cfg.device == "auto" and torch.cuda.is_available()):
        return torch.device("cuda")
    return torch.device("cpu")


def autocast_dtype(cfg: TrainConfig, device: torch.device) -> torch.dtype | None:
    """bf16 autocast on CUDA unless fp32 is asked for; CPU bf16 only when asked explicitly."""
    if cfg.precision == "fp32":
        return None
    if cfg.precision == "bf16" or device.type == "cuda":
        return torch.bfloat16
    return None


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
    check_tokenizer_fits(
        bert_config, tokenizer, cfg.model.pair_encoding, model_dir / "config.json"
    )
    return MultitaskBert(encoder, cfg.model), model_dir


def build_optimizer(model: MultitaskBert, cfg: TrainConfig, device: torch.device):
    """AdamW without decay on biases / LayerNorm, optional separate head learning rate."""
    groups: dict[tuple[bool, bool], list[torch.nn.Parameter]] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        decay = param.ndim >= 2 and "LayerNorm" not in name
        is_head = not name.startswith("encoder.")
        groups.setdefault((decay, is_head), []).append(param)
    head_lr = cfg.optim.head_lr if cfg.optim.head_lr is not None else cfg.optim.lr
    param_groups = [
        {
            "params": params,
            "weight_decay": cfg.optim.weight_decay if decay else 0.0,
            "lr": head_lr if is_head else cfg.optim.lr,
        }
        for (decay, is_head), params in groups.items()
    ]
    return torch.optim.AdamW(
        param_groups,
        betas=cfg.optim.betas,
        eps=cfg.optim.eps,
        # One fused kernel for all parameters: on GPU one launch instead of hundreds, on CPU
        # 5.5 ms instead of ~38 ms per MiniLM step (torch's per-tensor loop), same update rule.
        fused=device.type in ("cuda", "cpu"),
    )


def linear_warmup_decay(optimizer, total_steps: int, warmup_ratio: float):
    warmup = max(1, int(total_steps * warmup_ratio)) if warmup_ratio > 0 else 0

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


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


def _device_batches(
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


def plan_epoch(
    cfg: TrainConfig, batches_per_task: dict[str, int], epoch: int
) -> list[tuple[str, ...]]:
    """The tasks each step of this epoch trains on (see model/schedule.py and ScheduleConfig)."""
    return sample_task_order(cfg.schedule, batches_per_task, epoch, cfg.optim.epochs, cfg.seed)


class StepContext:
    """What a training step needs besides its batches."""

    def __init__(self, model, optimizer, scheduler, cfg: TrainConfig, device, amp_dtype, weights):
        self.model, self.optimizer, self.scheduler = model, optimizer, scheduler
        self.cfg, self.device, self.amp_dtype = cfg, device, amp_dtype
        self.class_weights = weights
        # SMART's proximal point: an EMA copy of the model, only when smart.bregman_mu > 0.
        self.bregman: BregmanProximalPoint | None = None

    def autocast(self):
        if self.amp_dtype is None:
            return nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)


def compute_task_losses(ctx: StepContext, batches: dict[str, Batch]) -> dict[str, Tensor]:
    """Forward each task's batch; its loss (not yet task-weighted) plus SMART / head penalties."""
    losses = {}
    smart, loss_cfg = ctx.cfg.smart, ctx.cfg.loss
    for task, batch in batches.items():
        with ctx.autocast():
            if smart.weight > 0 and task in smart.tasks:
                # SMART perturbs the embedding output, so split the forward there.
                embeddings = ctx.model.embed_inputs(batch)
                output = ctx.model.head_outputs(batch, embeddings)
            else:
                embeddings, output = (), ctx.model(batch)
            weights = ctx.class_weights if task == "sst" else None
            loss = task_loss(task, output, batch.labels, loss_cfg, weights)
            penalty = smart_penalty(ctx.model, batch, embeddings, output, smart, ctx.bregman)
        if penalty is not None:
            loss = loss + penalty
        head_penalty = head_weight_penalty(ctx.model.task_head(task), loss_cfg.head_penalty)
        if head_penalty is not None and loss_cfg.head_penalty_coef > 0:
            loss = loss + loss_cfg.head_penalty_coef * head_penalty
        losses[task] = loss
    return losses


def training_step(ctx: StepContext, batches: dict[str, Batch]) -> Tensor:
    """One optimizer step on one batch per listed task; returns the (device) loss, not synced."""
    ctx.optimizer.zero_grad(set_to_none=True)
    losses = compute_task_losses(ctx, batches)
    total = weighted_sum(losses, ctx.cfg.loss)
    if ctx.cfg.pcgrad.enabled and len(losses) > 1:
        weights = ctx.cfg.loss.task_weights
        pcgrad_backward(
            [getattr(weights, task) * loss for task, loss in losses.items()],
            list(ctx.model.encoder.parameters()),
            ctx.model.head_parameters(),
        )
    else:
        total.backward()
    if ctx.cfg.optim.grad_clip is not None:
        torch.nn.utils.clip_grad_norm_(ctx.model.parameters(), ctx.cfg.optim.grad_clip)
    ctx.optimizer.step()
    ctx.scheduler.step()
    if ctx.bregman is not None:
        ctx.bregman.update(ctx.model)
    return total.detach()


def evaluate(model, data: TaskData, split: str, cfg: TrainConfig, device, amp_dtype, pad_id):
    """Predictions for every task that has the split loaded."""
    model.eval()
    tasks = data.dev if split == "dev" else data.test
    out = {
        task: predict_task(
            model,
            encoded,
            batch_size=cfg.data.eval_batch_size,
            device=device,
            pad_id=pad_id,
            autocast_dtype=amp_dtype,
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
    """Train, evaluate after each epoch, keep the best epoch by dev/overall."""
    out_dir = Path(out_dir)
    seed_everything(cfg.seed)
    device = resolve_device(cfg)
    amp_dtype = autocast_dtype(cfg, device)
    if cfg.smart.weight > 0 and amp_dtype is torch.bfloat16 and cfg.smart.epsilon < 1e-2:
        # Measured on an H100: bf16 rounding alone moves bert-base outputs by ~3e-3, so a smaller
        # adversarial ball regularises rounding noise rather than the perturbation.
        warnings.warn(
            f"smart.epsilon={cfg.smart.epsilon:g} is below bf16's resolution of the outputs; "
            "use precision: fp32 with SMART at the paper's settings",
            stacklevel=2,
        )

    model, model_dir = build_model(cfg)
    data = load_task_data(cfg, Path(data_dir), model_dir)
    model.to(device).train()
    if cfg.model.compile:
        compile_encoder(model.encoder)

    streams = {
        task: TaskBatches(encoded, cfg, data.pad_id, seed=cfg.seed + i)
        for i, (task, encoded) in enumerate(data.train.items())
    }
    batches_per_task = {task: stream.per_pass for task, stream in streams.items()}
    plans = [plan_epoch(cfg, batches_per_task, epoch) for epoch in range(1, cfg.optim.epochs + 1)]
    total_steps = sum(len(plan) for plan in plans)
    optimizer = build_optimizer(model, cfg, device)
    scheduler = linear_warmup_decay(optimizer, total_steps, cfg.optim.warmup_ratio)
    class_weights = None
    if cfg.loss.sst_class_weights and "sst" in data.train:
        labels = torch.from_numpy(data.train["sst"].labels)
        class_weights = sentiment_class_weights(labels, NUM_SENTIMENT_CLASSES).to(device)
    ctx = StepContext(model, optimizer, scheduler, cfg, device, amp_dtype, class_weights)

    state = TrainerState(epoch=0, global_step=0, best_score=-math.inf, best_metrics={}, history=[])
    if resume_from is not None:
        state = _restore(resume_from, model, optimizer, scheduler, streams)
    if cfg.smart.bregman_mu > 0:
        ctx.bregman = BregmanProximalPoint(model, cfg.smart.bregman_beta)
        if resume_from is not None:
            ctx.bregman.load_state_dict(_resume_bregman(resume_from))

    last_dir, best_dir = out_dir / "checkpoints" / "last", out_dir / "checkpoints" / "best"
    best_dev_predictions: dict[str, TaskPredictions] = {}
    with _progress_bar(progress, total_steps, state.global_step) as bar:
        for epoch in range(state.epoch + 1, cfg.optim.epochs + 1):
            loss_sum = torch.zeros((), device=device)
            steps = 0
            for batches in _device_batches(streams, plans[epoch - 1], device):
                loss_sum += training_step(ctx, batches)
                steps += 1
                global_step = state.global_step + steps
                bar.advance(global_step)
                if global_step % cfg.log_every == 0 or steps == len(plans[epoch - 1]):
                    # Reading the loss forces a host-device sync: only at log intervals.
                    mean_loss = (loss_sum / steps).item()
                    if not math.isfinite(mean_loss):
                        raise NonFiniteLossError(
                            f"training loss is {mean_loss} at epoch {epoch}, step {global_step}; "
                            "lower optim.lr, set optim.grad_clip or use precision: fp32"
                        )
                    bar.update(global_step, f"epoch {epoch} loss {mean_loss:.4f}")
            train_loss = (loss_sum / max(steps, 1)).item()

            predictions = evaluate(model, data, "dev", cfg, device, amp_dtype, data.pad_id)
            metrics = dev_metrics(predictions, data.dev_labels)
            metrics.update({"train/loss": train_loss, "epoch": float(epoch)})
            is_best = metrics["dev/overall"] > state.best_score
            if is_best:
                best_dev_predictions = predictions
            best_metrics = dict(metrics) if is_best else state.best_metrics
            state = TrainerState(
                epoch=epoch,
                global_step=state.global_step + steps,
                best_score=max(state.best_score, metrics["dev/overall"]),
                best_metrics=best_metrics,
                history=[*state.history, metrics],
            )
            if is_best:
                save_checkpoint(best_dir, model, cfg, model_dir, metrics)
            save_checkpoint(
                last_dir,
                model,
                cfg,
                model_dir,
                metrics,
                resume_state=_resume_state(optimizer, scheduler, streams, ctx.bregman),
                trainer_state=state,
            )
            bar.log(_format_metrics(metrics))
            if on_epoch is not None:
                on_epoch(EpochResult(epoch, metrics, last_dir, best_dir, is_best))

    _write_best_outputs(
        best_dir, out_dir, data, cfg, device, amp_dtype, prediction_splits, best_dev_predictions
    )
    write_json_atomic(out_dir / "metrics.json", state.best_metrics)
    return FitResult(state.best_metrics, best_dir, state.epoch, state.history)


def _write_best_outputs(
    best_dir, out_dir, data: TaskData, cfg, device, amp_dtype, splits, dev_predictions
) -> None:
    """Prediction files of the best epoch for `splits`, in the CS224N leaderboard format.

    Dev predictions of the best epoch are kept from its evaluation (unless training resumed after
    it), so only the test sets are predicted again, with the best checkpoint's weights.
    """
    if not splits or not (best_dir / "model.safetensors").is_file():
        return
    by_split = {"dev": dev_predictions} if dev_predictions else {}
    if any(split not in by_split for split in splits):
        model, _, _ = load_checkpoint_model(best_dir)
        model.to(device)
        for split in splits:
            if split not in by_split:
                by_split[split] = evaluate(model, data, split, cfg, device, amp_dtype, data.pad_id)
    # Written aside, then swapped in whole: a rerun into the same --out leaves no stale file of an
    # earlier run (e.g. a test set that is absent now), and a crash leaves the old set intact.
    final, partial = out_dir / "predictions", out_dir / "predictions.partial"
    shutil.rmtree(partial, ignore_errors=True)
    for split in splits:
        for task, preds in by_split[split].items():
            write_predictions(partial / prediction_filename(task, split), preds)
    shutil.rmtree(final, ignore_errors=True)
    if partial.is_dir():
        partial.rename(final)


def _resume_state(optimizer, scheduler, streams: dict[str, TaskBatches], bregman=None) -> dict:
    state = {
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "torch_rng": torch.get_rng_state(),
        "stream_passes": {task: s.passes for task, s in streams.items()},
    }
    if bregman is not None:
        state["bregman_ema"] = bregman.state_dict()
    return state


def _resume_bregman(checkpoint: Path) -> dict[str, Tensor]:
    resume, _ = load_resume_state(checkpoint)
    if "bregman_ema" not in resume:
        raise ValueError(f"{checkpoint}: no SMART Bregman EMA state (smart.bregman_mu changed?)")
    return resume["bregman_ema"]


def _restore(checkpoint: Path, model, optimizer, scheduler, streams) -> TrainerState:
    from safetensors.torch import load_file

    resume, state = load_resume_state(checkpoint)
    model.load_state_dict(load_file(str(Path(checkpoint) / "model.safetensors")), strict=True)
    optimizer.load_state_dict(resume["optimizer"])
    scheduler.load_state_dict(resume["scheduler"])
    torch.set_rng_state(resume["torch_rng"])
    for task, passes in resume["stream_passes"].items():
        if task in streams:
            streams[task].passes = passes
    return state


def _format_metrics(metrics: dict[str, float]) -> str:
    keys = ("epoch", "train/loss", "dev/sst_acc", "dev/para_acc", "dev/sts_corr", "dev/overall")
    return "  ".join(f"{k}={metrics[k]:.4g}" for k in keys if k in metrics)


class _Progress:
    """A rich progress bar over training steps, or nothing when progress is off."""

    def __init__(self, enabled: bool, total: int, done: int):
        self.bar = None
        # torch's UserWarnings would tear the live bar apart; they are muted while it is shown
        # (and only then: the filter is restored when the bar closes).
        self._muted = warnings.catch_warnings()
        if enabled:
            self._muted.__enter__()
            warnings.filterwarnings("ignore", category=UserWarning, module="torch")
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeRemainingColumn,
            )

            self.bar = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeRemainingColumn(),
            )
            self.bar.start()
            self.task = self.bar.add_task("training", total=total, completed=done)

    def update(self, completed: int, description: str) -> None:
        if self.bar is not None:
            self.bar.update(self.task, completed=completed, description=description)

    def advance(self, completed: int) -> None:
        if self.bar is not None:
            self.bar.update(self.task, completed=completed)

    def log(self, message: str) -> None:
        if self.bar is not None:
            self.bar.console.print(message)

    def __enter__(self) -> _Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.stop()
            self._muted.__exit__(None, None, None)
            self.bar = None


def _progress_bar(enabled: bool, total: int, done: int) -> _Progress:
    return _Progress(enabled, total, done)
