"""PCGrad: project conflicting task gradients on the shared encoder (Yu et al., NeurIPS 2020).

Each task's gradient g_i of the shared parameters is visited in turn; against every other task j,
in a random order, the component of g_i that points against the ORIGINAL g_j (g_i . g_j < 0) is
removed: g_i <- g_i - (g_i . g_j / |g_j|^2) g_j. The projected gradients are summed. Parameters
that belong to one task (its head) get the plain gradient of that task's loss: heads are untouched.

Composition, not inheritance: `pcgrad_backward` replaces `loss.backward()` in the training step and
leaves the optimizer, clipping and grad scaling exactly as they are.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

__all__ = ["pcgrad_backward", "project_conflicting_gradients"]


def project_conflicting_gradients(
    task_grads: Sequence[Tensor], generator: torch.Generator | None = None
) -> Tensor:
    """Sum of task gradients (each [P], flattened) after removing pairwise conflicting components.

    Each task meets the others in a fresh random order (drawn from `generator`, else torch's global
    RNG); with two tasks the order does not matter.
    """
    if not task_grads:
        raise ValueError("project_conflicting_gradients: no task gradients given")
    originals = [g.reshape(-1).float() for g in task_grads]  # T x [P], fp32 for the dot products
    sq_norms = [torch.dot(g, g) for g in originals]
    total = torch.zeros_like(originals[0])
    for i, g_i in enumerate(originals):
        projected = g_i.clone()
        others = [j for j in range(len(originals)) if j != i]
        for k in torch.randperm(len(others), generator=generator).tolist():
            j = others[k]
            dot = torch.dot(projected, originals[j])
            # Branch-free, so no host sync on accelerators: the coefficient is 0 when there is no
            # conflict, and when g_j is zero (a task that does not touch these parameters).
            coef = torch.where(
                (dot < 0) & (sq_norms[j] > 0), dot / sq_norms[j].clamp_min(1e-30), 0.0
            )
            projected = projected - coef * originals[j]
        total += projected
    return total.to(task_grads[0].dtype)


def pcgrad_backward(
    losses: Sequence[Tensor],
    shared_params: Sequence[nn.Parameter],
    task_params: Sequence[nn.Parameter] = (),
    *,
    scaler: torch.amp.GradScaler | None = None,
    generator: torch.Generator | None = None,
) -> None:
    """Like `sum(losses).backward()`, but shared parameters receive the PCGrad-combined gradient.

    `task_params` (heads) get the gradient of the summed loss, which is each head's own task
    gradient because a head only feeds its own loss. Gradients are added to `.grad` as `backward`
    does, so call `optimizer.zero_grad()` first. With one loss this is exactly the plain backward.

    Grad scaling: with a `scaler`, each loss is scaled (`scaler.scale(loss)`) before autograd and
    the projection runs on the scaled gradients. The projection is positively homogeneous,
    P(s g_1, ..., s g_T) = s P(g_1, ..., g_T) for s > 0, so this is exactly "unscale, project,
    rescale"; the caller then runs the usual `scaler.unscale_(optimizer)` and
    `scaler.step(optimizer)`, which still see any inf/NaN (it propagates through the projection)
    and skip that step. Costs one backward pass per loss instead of one in all.
    """
    if not losses:
        raise ValueError("pcgrad_backward: no losses given")
    if scaler is not None:
        losses = [scaler.scale(loss) for loss in losses]
    shared = [p for p in shared_params if p.requires_grad]
    heads = [p for p in task_params if p.requires_grad]
    if len(losses) == 1 or not shared:
        torch.stack([loss.reshape(()) for loss in losses]).sum().backward()
        return

    flat_grads, head_grads = _task_gradients(losses, shared, heads)
    combined = project_conflicting_gradients(flat_grads, generator)
    offset = 0
    for p in shared:
        n = p.numel()
        _accumulate(p, combined[offset : offset + n].view_as(p))
        offset += n
    for p, g in zip(heads, head_grads, strict=True):
        if g is not None:
            _accumulate(p, g)


def _task_gradients(
    losses: Sequence[Tensor], shared: list[nn.Parameter], heads: list[nn.Parameter]
) -> tuple[list[Tensor], list[Tensor | None]]:
    """Each loss's gradient of the shared parameters (flattened, [P]) and the heads' gradients
    summed over the losses (None for a head no loss reaches); one autograd pass per loss."""
    head_grads: list[Tensor | None] = [None] * len(heads)
    flat_grads: list[Tensor] = []
    for t, loss in enumerate(losses):
        grads = torch.autograd.grad(
            loss,
            [*shared, *heads],
            retain_graph=t < len(losses) - 1,
            allow_unused=True,  # e.g. the pooler under mean pooling, another task's head
        )
        # A parameter this task does not reach has gradient 0 for it: [P] flattened.
        flat_grads.append(
            torch.cat(
                [
                    (g if g is not None else torch.zeros_like(p)).reshape(-1)
                    for g, p in zip(grads[: len(shared)], shared, strict=True)
                ]
            )
        )
        for h, g in enumerate(grads[len(shared) :]):
            if g is not None:
                summed = head_grads[h]
                head_grads[h] = g if summed is None else summed + g
    return flat_grads, head_grads


def _accumulate(param: nn.Parameter, grad: Tensor) -> None:
    if param.grad is None:
        param.grad = grad.detach().to(param.dtype).clone()
    else:
        param.grad.add_(grad.detach().to(param.grad.dtype))
