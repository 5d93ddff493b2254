"""Loss variants against hand-computed values, and their switches inside the trainer's step."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.stats import pearsonr
from torch import nn

from model.config import LossConfig, PerTaskFloat
from model.losses import (
    head_weight_penalty,
    sentiment_class_weights,
    sts_loss,
    task_loss,
    weighted_sum,
)


def test_class_weights_are_n_over_c_times_n_c() -> None:
    labels = torch.tensor([0, 0, 0, 1, 2, 2, 3, 4, 4, 4])
    weights = sentiment_class_weights(labels, 5)
    torch.testing.assert_close(weights, torch.tensor([10 / 15, 10 / 5, 10 / 10, 10 / 5, 10 / 15]))


def test_sst_class_weights_and_label_smoothing_change_the_loss_as_defined() -> None:
    logits = torch.tensor([[2.0, 0.5, -1.0, 0.0, 0.3], [0.1, 0.2, 3.0, -0.5, 0.0]])
    labels = torch.tensor([0, 2])
    logp = logits.log_softmax(-1)
    plain = task_loss("sst", logits, labels, LossConfig())
    assert float(plain) == pytest.approx(float(-(logp[0, 0] + logp[1, 2]) / 2))
    # Label smoothing 0.1: target = 0.9 one-hot + 0.1 / 5 everywhere.
    smooth = task_loss("sst", logits, labels, LossConfig(sst_label_smoothing=0.1))
    target = torch.full_like(logp, 0.02)
    target[0, 0] += 0.9
    target[1, 2] += 0.9
    assert float(smooth) == pytest.approx(float(-(target * logp).sum(-1).mean()))
    # Class weights: a weighted mean, Σ w_y (-log p_y) / Σ w_y.
    w = torch.tensor([2.0, 1.0, 0.5, 1.0, 1.0])
    weighted = task_loss("sst", logits, labels, LossConfig(), class_weights=w)
    expected = -(2.0 * logp[0, 0] + 0.5 * logp[1, 2]) / 2.5
    assert float(weighted) == pytest.approx(float(expected))


def test_sts_losses_match_their_formulas() -> None:
    scores = torch.tensor([4.0, 1.0, -2.0, 6.0])
    labels = torch.tensor([5.0, 0.0, 2.5, 3.0])
    assert float(sts_loss(scores, labels, "mse")) == pytest.approx((1 + 1 + 20.25 + 9) / 4)
    c = np.clip(scores.numpy() / 5, -1, 1)
    s = labels.numpy() / 5
    expected = np.mean(s * (1 - c) + (1 - s) * np.maximum(c, 0))
    assert float(sts_loss(scores, labels, "cosine")) == pytest.approx(float(expected))
    r = pearsonr(scores.numpy(), labels.numpy()).statistic
    assert float(sts_loss(scores, labels, "pearson")) == pytest.approx(1 - r, rel=1e-5)
    # A perfectly correlated (but shifted and scaled) prediction has zero Pearson loss.
    assert float(sts_loss(2 * labels + 1, labels, "pearson")) == pytest.approx(0.0, abs=1e-6)
    assert math.isfinite(float(sts_loss(torch.ones(3), torch.ones(3), "pearson")))
    cfg = LossConfig(sts_loss="pearson")
    assert float(task_loss("sts", scores, labels, cfg)) == pytest.approx(1 - r, rel=1e-5)


def test_head_penalties() -> None:
    head = nn.Sequential(nn.Linear(2, 3), nn.GELU(), nn.Linear(3, 1))
    with torch.no_grad():
        head[0].weight.copy_(torch.tensor([[1.0, -2.0], [0.5, 0.0], [0.0, 3.0]]))
        head[2].weight.copy_(torch.tensor([[-1.0, 1.0, 0.25]]))
    head.requires_grad_(False)
    assert head_weight_penalty(head, "none") is None
    assert float(head_weight_penalty(head, "l1")) == pytest.approx(6.5 + 2.25)
    assert float(head_weight_penalty(head, "l2")) == pytest.approx(14.25 + 2.0625)
    assert float(head_weight_penalty(head, "linf")) == pytest.approx(3.0 + 1.0)
    assert head_weight_penalty(nn.Identity(), "l2") is None  # e.g. a pure cosine pair head


def test_per_task_weights() -> None:
    losses = {"sst": torch.tensor(2.0), "para": torch.tensor(3.0), "sts": torch.tensor(5.0)}
    cfg = LossConfig(task_weights=PerTaskFloat(sst=0.5, para=2.0, sts=0.0))
    assert float(weighted_sum(losses, cfg)) == pytest.approx(1.0 + 6.0)


@pytest.mark.parametrize("kind", ["l1", "l2", "linf"])
def test_head_penalty_in_the_trainer_step_shrinks_the_head(kind: str) -> None:
    from tests.model.tiny_training import (
        make_context,
        synthetic_batches,
        train_plan,
        trainable_config,
    )

    data = {"sst": synthetic_batches("sst")}
    norms = {}
    for coef in (0.0, 0.1):
        cfg = trainable_config(loss={"head_penalty": kind, "head_penalty_coef": coef})
        ctx = make_context(cfg, 10)
        train_plan(ctx, [("sst",)] * 10, data)
        norms[coef] = float(head_weight_penalty(ctx.model.sst_head, kind).detach())
    # l∞ only pushes on the current largest weight, so the maximum falls slowly.
    assert norms[0.1] < (0.99 if kind == "linf" else 0.9) * norms[0.0], norms


def test_sts_loss_switch_reaches_the_trainer_step() -> None:
    from model.step import compute_task_losses
    from tests.model.tiny_training import make_context, synthetic_batches, trainable_config

    batch = synthetic_batches("sts")[0]
    values = {}
    for kind in ("mse", "pearson"):
        ctx = make_context(trainable_config(loss={"sts_loss": kind}), 1)
        values[kind] = float(compute_task_losses(ctx, {"sts": batch})["sts"])
        scores = ctx.model(batch).detach()
        assert values[kind] == pytest.approx(float(sts_loss(scores, batch.labels, kind)))
    assert values["mse"] != pytest.approx(values["pearson"])
