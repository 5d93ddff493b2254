"""PCGrad against hand-computed projections and against the plain summed-loss step."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from torch import nn

from model.pcgrad import pcgrad_backward, project_conflicting_gradients


def reference_pcgrad(grads: list[np.ndarray], orders: list[list[int]]) -> np.ndarray:
    """Yu et al.'s Algorithm 1 with an explicit order of the other tasks for each task."""
    total = np.zeros_like(grads[0])
    for i, order in enumerate(orders):
        g = grads[i].copy()
        for j in order:
            dot = g @ grads[j]
            if dot < 0:
                g = g - dot / (grads[j] @ grads[j]) * grads[j]
        total += g
    return total


def test_two_conflicting_vectors_match_hand_computation() -> None:
    # g1.g2 = -1: g1' = g1 + 0.5 g2 = [0.5, 0.5]; g2' = g2 + 1 g1 = [0, 1]; sum = [0.5, 1.5].
    g1, g2 = torch.tensor([1.0, 0.0]), torch.tensor([-1.0, 1.0])
    out = project_conflicting_gradients([g1, g2], torch.Generator().manual_seed(0))
    torch.testing.assert_close(out, torch.tensor([0.5, 1.5]))


def test_projected_gradients_no_longer_conflict() -> None:
    g1, g2 = torch.tensor([3.0, -2.0, 1.0]), torch.tensor([-1.0, 4.0, 0.5])
    p1 = project_conflicting_gradients([g1, g2 * 0], None)  # a zero gradient removes nothing
    torch.testing.assert_close(p1, g1)
    out = project_conflicting_gradients([g1, g2])
    g1p = g1 - (g1 @ g2) / (g2 @ g2) * g2
    g2p = g2 - (g2 @ g1) / (g1 @ g1) * g1
    torch.testing.assert_close(out, g1p + g2p)
    assert abs(float(g1p @ g2)) < 1e-5 and abs(float(g2p @ g1)) < 1e-5


def test_non_conflicting_gradients_pass_unchanged() -> None:
    grads = [
        torch.tensor([1.0, 2.0, 0.0]),
        torch.tensor([0.5, 0.0, 3.0]),
        torch.tensor([0, 1.0, 1]),
    ]
    out = project_conflicting_gradients(grads, torch.Generator().manual_seed(3))
    torch.testing.assert_close(out, sum(grads))


def test_three_tasks_match_reference_for_the_drawn_orders() -> None:
    # Every pair conflicts, and each of the 8 order combinations gives a different sum.
    grads = [np.array([2.0, 0, 0]), np.array([-1.0, 1, 0]), np.array([-1.0, -0.5, 1])]
    candidates = [
        reference_pcgrad(grads, [list(a), list(b), list(c)])
        for a in itertools.permutations([1, 2])
        for b in itertools.permutations([0, 2])
        for c in itertools.permutations([0, 1])
    ]
    seen = set()
    for seed in range(40):
        out = project_conflicting_gradients(
            [torch.tensor(g, dtype=torch.float64) for g in grads],
            torch.Generator().manual_seed(seed),
        ).numpy()
        matches = [k for k, ref in enumerate(candidates) if np.allclose(out, ref, atol=1e-12)]
        assert matches, f"seed {seed}: {out} matches no order's reference"
        seen.add(tuple(np.round(out, 9)))
    assert len(seen) > 1  # the order really is random, and it matters for these vectors
    again = project_conflicting_gradients(
        [torch.tensor(g) for g in grads], torch.Generator().manual_seed(5)
    )
    first = project_conflicting_gradients(
        [torch.tensor(g) for g in grads], torch.Generator().manual_seed(5)
    )
    torch.testing.assert_close(again, first)


class TwoHeads(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.shared = nn.Linear(3, 4)
        self.head_a = nn.Linear(4, 1)
        self.head_b = nn.Linear(4, 1)

    def losses(self, x: torch.Tensor, scale_b: float) -> list[torch.Tensor]:
        h = torch.tanh(self.shared(x))
        return [self.head_a(h).sum(), scale_b * self.head_b(h).sum()]


def _grads(model: nn.Module) -> dict[str, torch.Tensor]:
    return {
        n: p.grad.clone() if p.grad is not None else torch.zeros_like(p)
        for n, p in model.named_parameters()
    }


def test_step_equals_plain_summed_loss_without_conflict() -> None:
    x = torch.randn(5, 3, generator=torch.Generator().manual_seed(1))
    models = [TwoHeads(), TwoHeads()]
    for m in models:
        m.head_b.load_state_dict(m.head_a.state_dict())  # task b's shared grad = 0.5 x task a's
    plain, pc = models
    opt_plain = torch.optim.AdamW(plain.parameters(), lr=0.1)
    opt_pc = torch.optim.AdamW(pc.parameters(), lr=0.1)
    sum(plain.losses(x, 0.5)).backward()
    pcgrad_backward(
        pc.losses(x, 0.5),
        list(pc.shared.parameters()),
        [*pc.head_a.parameters(), *pc.head_b.parameters()],
    )
    for name, g in _grads(plain).items():
        torch.testing.assert_close(dict(pc.named_parameters())[name].grad, g, msg=name)
    opt_plain.step()
    opt_pc.step()
    for (name, a), b in zip(plain.named_parameters(), pc.parameters(), strict=True):
        torch.testing.assert_close(a, b, msg=name)


def test_conflicting_step_projects_shared_and_keeps_head_gradients() -> None:
    x = torch.randn(5, 3, generator=torch.Generator().manual_seed(1))
    model = TwoHeads()
    model.head_b.load_state_dict(model.head_a.state_dict())
    # scale_b < 0: task b's shared gradient is exactly opposite to a's, so PCGrad cancels both.
    task_grads = []
    for t in range(2):
        model.zero_grad()
        model.losses(x, -2.0)[t].backward()
        task_grads.append(_grads(model))
    model.zero_grad()
    pcgrad_backward(
        model.losses(x, -2.0),
        list(model.shared.parameters()),
        [*model.head_a.parameters(), *model.head_b.parameters()],
    )
    for name, p in model.named_parameters():
        if name.startswith("shared"):
            torch.testing.assert_close(p.grad, torch.zeros_like(p), msg=name)
        else:
            own = task_grads[0 if name.startswith("head_a") else 1][name]
            torch.testing.assert_close(p.grad, own, msg=name)


def test_grad_scaler_gives_the_unscaled_projection() -> None:
    x = torch.randn(5, 3, generator=torch.Generator().manual_seed(2))
    ref, scaled = TwoHeads(), TwoHeads()
    pcgrad_backward(
        ref.losses(x, -0.7),
        list(ref.shared.parameters()),
        [*ref.head_a.parameters(), *ref.head_b.parameters()],
    )
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10)
    opt = torch.optim.SGD(scaled.parameters(), lr=0.1)
    pcgrad_backward(
        scaled.losses(x, -0.7),
        list(scaled.shared.parameters()),
        [*scaled.head_a.parameters(), *scaled.head_b.parameters()],
        scaler=scaler,
    )
    ratio = scaled.shared.weight.grad.abs().max() / ref.shared.weight.grad.abs().max()
    assert float(ratio) == pytest.approx(2.0**10)
    scaler.unscale_(opt)
    for (name, a), b in zip(ref.named_parameters(), scaled.parameters(), strict=True):
        torch.testing.assert_close(b.grad, a.grad, msg=name)


@pytest.mark.parametrize("n_tasks", [1, 3])
def test_one_or_three_losses(n_tasks: int) -> None:
    w = nn.Parameter(torch.tensor([1.0, -1.0]))
    targets = [torch.tensor([2.0, 0.0]), torch.tensor([-1.0, 0.5]), torch.tensor([0.0, -3.0])]
    losses = [((w - t) ** 2).sum() for t in targets[:n_tasks]]
    pcgrad_backward(losses, [w], generator=torch.Generator().manual_seed(0))
    grads = [2 * (w.detach() - t) for t in targets[:n_tasks]]
    if n_tasks == 1:
        torch.testing.assert_close(w.grad, grads[0])
    else:
        candidates = [
            reference_pcgrad([g.numpy() for g in grads], [list(a), list(b), list(c)])
            for a in itertools.permutations([1, 2])
            for b in itertools.permutations([0, 2])
            for c in itertools.permutations([0, 1])
        ]
        assert any(np.allclose(w.grad.numpy(), c, atol=1e-6) for c in candidates)


def test_tiny_model_trains_with_pcgrad_in_the_trainer_step() -> None:
    from tests.model.tiny_training import (
        eval_loss,
        make_context,
        synthetic_batches,
        train_plan,
        trainable_config,
    )

    data = {t: synthetic_batches(t) for t in ("sst", "para", "sts")}
    plan = [("sst", "para", "sts")] * 20
    ctx = make_context(trainable_config(pcgrad={"enabled": True}, optim={"lr": 5e-3}), len(plan))
    before = eval_loss(ctx, data)
    train_plan(ctx, plan, data)
    after = eval_loss(ctx, data)
    assert all(after[t] < before[t] for t in before) and after["sts"] < 0.5 * before["sts"]

    # The task gradients do conflict here, so PCGrad trains a different encoder.
    query = {}
    for enabled in (False, True):
        ctx = make_context(trainable_config(pcgrad={"enabled": enabled}), 3)
        train_plan(ctx, plan[:3], data)
        query[enabled] = ctx.model.encoder.encoder.layer[0].attention.self.query.weight.detach()
    assert not torch.allclose(query[False], query[True])
