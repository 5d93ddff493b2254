"""One training step: task losses (plus SMART and head penalties), backward (plain or PCGrad),
clipping, optimizer and LR schedule, SMART's EMA update. `fit` runs it once per planned step."""

from __future__ import annotations

from contextlib import nullcontext

import torch
from torch import Tensor

from model.batching import Batch
from model.config import TrainConfig
from model.losses import head_weight_penalty, task_loss, weighted_sum
from model.pcgrad import pcgrad_backward
from model.smart import BregmanProximalPoint, smart_penalty


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
        assert batch.labels is not None  # training batches are always labelled
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
        head_penalty = None
        if task in loss_cfg.head_penalty_tasks and loss_cfg.head_penalty_coef > 0:
            head_penalty = head_weight_penalty(ctx.model.task_head(task), loss_cfg.head_penalty)
        if head_penalty is not None:
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
