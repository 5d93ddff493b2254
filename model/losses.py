"""Task losses: cross-entropy for SST, BCE-with-logits for Quora, MSE for STS, and their variants.

Variants (LossConfig): SST label smoothing and class weights n / (C n_c); STS `mse`, `cosine` (a
cosine-embedding style loss on the scaled cosine) or `pearson` (1 − Pearson r over the batch); an
l1 / l2 / l∞ penalty on each trained head's weight matrices; per-task loss weights.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from model.config import HeadPenalty, LossConfig, StsLoss
from model.heads import STS_MAX_SCORE


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
    return sts_loss(output, labels.float(), cfg.sts_loss)


def sts_loss(scores: Tensor, labels: Tensor, kind: StsLoss) -> Tensor:
    """STS loss of [B] predicted scores against [B] gold similarities on the 0-5 scale.

    `cosine`: with c = scores / 5 clipped to [-1, 1] (cos(u, v) for the cosine pair encodings) and
    s = label / 5, mean of s (1 − c) + (1 − s) max(0, c): CosineEmbeddingLoss with soft targets.
    `pearson`: 1 − Pearson correlation of scores and labels over the batch.
    """
    if kind == "mse":
        return F.mse_loss(scores, labels)
    if kind == "cosine":
        cosine = (scores / STS_MAX_SCORE).clamp(-1.0, 1.0)
        similar = labels / STS_MAX_SCORE
        return (similar * (1 - cosine) + (1 - similar) * cosine.clamp_min(0.0)).mean()
    if kind == "pearson":
        x, y = scores - scores.mean(), labels - labels.mean()
        # eps: a batch with constant labels or predictions has no correlation, not a NaN.
        return 1.0 - (x * y).sum() / (x.norm() * y.norm() + 1e-8)
    raise ValueError(f"loss.sts_loss must be mse, cosine or pearson, got {kind!r}")


def head_weight_penalty(head: nn.Module, kind: HeadPenalty) -> Tensor | None:
    """Σ|w| (l1), Σw² (l2) or max|w| (linf), summed over the head's weight matrices, else None."""
    if kind == "none":
        return None
    weights = [p for name, p in head.named_parameters() if name.endswith("weight") and p.ndim >= 2]
    if not weights:  # e.g. a pure cosine pair head
        return None
    if kind == "l1":
        terms = [w.abs().sum() for w in weights]
    elif kind == "l2":
        terms = [w.pow(2).sum() for w in weights]
    elif kind == "linf":
        terms = [w.abs().max() for w in weights]
    else:
        raise ValueError(f"loss.head_penalty must be none, l1, l2 or linf, got {kind!r}")
    return torch.stack(terms).sum().float()


def weighted_sum(losses: dict[str, Tensor], cfg: LossConfig) -> Tensor:
    """Sum of task losses times their configured weights."""
    weights = cfg.task_weights
    return torch.stack([getattr(weights, task) * loss for task, loss in losses.items()]).sum()
