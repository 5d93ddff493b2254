"""The optimizer and learning-rate schedule `fit` trains with: AdamW, linear warm-up, then linear
decay or a constant rate (`optim.lr_schedule`)."""

from __future__ import annotations

import torch

from model.config import LrSchedule, TrainConfig
from model.heads import MultitaskBert

__all__ = ["build_optimizer", "linear_warmup_decay", "warmup_then"]


def build_optimizer(
    model: MultitaskBert, cfg: TrainConfig, device: torch.device
) -> torch.optim.AdamW:
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


def linear_warmup_decay(
    optimizer: torch.optim.Optimizer, total_steps: int, warmup_ratio: float
) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up over `warmup_ratio` of the steps, then linear decay to 0 at `total_steps`."""
    return warmup_then(optimizer, total_steps, warmup_ratio, "linear")


def warmup_then(
    optimizer: torch.optim.Optimizer, total_steps: int, warmup_ratio: float, after: LrSchedule
) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up over `warmup_ratio` of the steps (none at 0), then `after`: linear decay
    to 0 at `total_steps`, or the configured rate held constant."""
    warmup = max(1, int(total_steps * warmup_ratio)) if warmup_ratio > 0 else 0

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        if after == "constant":
            return 1.0
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
