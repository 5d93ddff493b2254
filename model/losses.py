"""Task losses: cross-entropy for SST, BCE-with-logits for Quora, MSE for STS."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from model.config import LossConfig


def sentiment_class_weights(labels: Tensor, num_classes: int) -> Tensor:
    """Inverse-frequency class weights n / (C * n_c) from the training labels."""
    counts = torch.bincount(labels, minlength=num_classes).float().clamp_min(1.0)
    return labels.numel() / (num_classes * counts)


def task_loss(
    task: str,
    output: Tensor,
    labels: Tensor,
    cfg: LossConfig,
    class_weights: Tensor | None = None,
) -> Tensor:
    """Unweighted loss of one task's batch; `output` as returned by MultitaskBert.forward."""
    output = output.float()  # losses in fp32 even under bf16 autocast
    if task == "sst":
        return F.cross_entropy(
            output, labels, weight=class_weights, label_smoothing=cfg.sst_label_smoothing
        )
    if task == "para":
        return F.binary_cross_entropy_with_logits(output, labels.float())
    return F.mse_loss(output, labels.float())


def weighted_sum(losses: dict[str, Tensor], cfg: LossConfig) -> Tensor:
    """Sum of task losses times their configured weights."""
    weights = cfg.task_weights
    return torch.stack([getattr(weights, task) * loss for task, loss in losses.items()]).sum()
