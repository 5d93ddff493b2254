"""A tiny random BERT, learnable synthetic batches and the trainer's own step, for ablation tests.

The label of every synthetic example is a function of its second token, so a few dozen steps of
the real `training_step` visibly lower the loss; nothing is read from disk but MiniLM's vocab size.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import torch

from model.batching import Batch
from model.config import TrainConfig, merge
from model.optim import build_optimizer, warmup_then
from model.step import StepContext, training_step
from model.train import build_model
from tests.tiny_model import tiny_config

# Where the tiny model learns the synthetic labels within a few dozen steps: no dropout, a large
# constant learning rate.
LEARNS_FAST: dict[str, Any] = {
    "model": {"hidden_dropout": 0.0, "attention_dropout": 0.0, "head_dropout": 0.0},
    "optim": {"lr": 3e-3, "warmup_ratio": 0.0, "weight_decay": 0.0},
}


def trainable_config(**sections: dict[str, Any]) -> TrainConfig:
    """`tests.tiny_model.tiny_config` set up to learn fast, with `sections` merged over it."""
    return tiny_config(**merge(LEARNS_FAST, sections))


def synthetic_batches(task: str, n_batches: int = 4, size: int = 8, seed: int = 0) -> list[Batch]:
    """Fixed batches whose label is determined by the second token (id 1000-1009)."""
    g = torch.Generator().manual_seed(seed + {"sst": 0, "para": 1, "sts": 2}[task])
    out = []
    for _ in range(n_batches):
        key = torch.randint(0, 10, (size,), generator=g)
        ids = torch.randint(2000, 2100, (size, 6), generator=g)
        ids[:, 0], ids[:, 1], ids[:, -1] = 101, 1000 + key, 102
        labels = {
            "sst": key % 5,
            "para": (key % 2).float(),
            "sts": (key % 6).float(),
        }[task]
        mask = torch.ones_like(ids)
        out.append(Batch(task, ids, mask, torch.zeros_like(ids), labels=labels))
    return out


def make_context(cfg: TrainConfig, total_steps: int) -> StepContext:
    torch.manual_seed(cfg.seed)
    model, _ = build_model(cfg)
    model.train()
    optimizer = build_optimizer(model, cfg, torch.device("cpu"))
    scheduler = warmup_then(optimizer, total_steps, cfg.optim.warmup_ratio, cfg.optim.lr_schedule)
    return StepContext(model, optimizer, scheduler, cfg, torch.device("cpu"), None, None)


def train_plan(ctx: StepContext, plan: list[tuple[str, ...]], data: dict[str, list[Batch]]):
    """Run the trainer's `training_step` over `plan`; returns each step's total loss."""
    losses = []
    cursor = dict.fromkeys(data, 0)
    for tasks in plan:
        batches = {}
        for t in tasks:
            batches[t] = data[t][cursor[t] % len(data[t])]
            cursor[t] += 1
        losses.append(float(training_step(ctx, batches)))
    return losses


def eval_loss(ctx: StepContext, data: dict[str, list[Batch]]) -> dict[str, float]:
    """Mean plain task loss per task over its synthetic batches, no regularizers."""
    from model.losses import task_loss

    plain = replace(ctx.cfg.loss, head_penalty="none")
    ctx.model.eval()
    with torch.no_grad():
        out = {
            task: sum(float(task_loss(task, ctx.model(b), b.labels, plain)) for b in batches)
            / len(batches)
            for task, batches in data.items()
        }
    ctx.model.train()
    return out
