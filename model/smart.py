"""SMART (Jiang et al., ACL 2020): adversarial smoothness regularizer + Bregman proximal point.

Adversarial term, on the encoder's embedding output x (B, T, H): start from δ ~ N(0, σ²), take K
ascent steps δ <- Π_ε(δ + η g / ‖g‖) on the divergence D(f(x), f(x + δ)), g its gradient in δ,
norm and ε-ball per example (L2, or L∞ as in the paper), then return D(f(x), f(x + δ)).
Cross-encoded inputs have one embedding sequence to perturb; bi-encoded pairs have two, each with
its own δ and ε-ball. Padding positions are never perturbed (their noise would count in the
per-example norm yet change nothing), so the result does not depend on how a batch is padded.

Proximal term: an EMA copy θ̃ of the model (θ̃ <- β θ̃ + (1 − β) θ after every optimizer step) acts
as the previous iterate; μ D(f(x; θ), f(x; θ̃)) on clean inputs keeps each update close to it.

Variant smart_pytorch (smart.variant) is the ascent of the smart-pytorch library (archinetai's
SMARTLoss), which two CS224N reports ran: δ ~ σ N(0, I), K steps δ <- s / (‖s‖∞ + ε) with
s = δ + η g (g not normalised, ‖·‖∞ over each token's hidden vector), no ε-ball, no proximal term.

Paper defaults: ε 1e-5, η 1e-3, σ 1e-5, K 1, μ 1, β 0.99, L∞ ball, symmetric KL. SmartConfig keeps
those for ε, η, σ, K, β but defaults `weight` (λ_s) and `bregman_mu` (μ) to 0: SMART is off unless
a config turns it on, and then costs nothing. SMART is a function of the model's split forward
(`embed_inputs` / `head_outputs`), not a subclass of it.

Under dropout the clean and perturbed forwards draw different dropout masks, so the adversarial
term also holds a dropout-consistency part (as in the MT-DNN implementation). Under bf16 autocast
the first matmul rounds x + δ to ~3 significant digits: on an H100, bert-base outputs moved by
~3e-3 from rounding alone for ε = 1e-5 (1e-5 in fp32), so use precision fp32 with the paper's ε.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from typing import Literal, Protocol

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from model.batching import Batch
from model.config import Divergence, SmartConfig

__all__ = [
    "TASK_OUTPUT_KIND",
    "BregmanProximalPoint",
    "output_divergence",
    "smart_adversarial_loss",
    "smart_penalty",
    "smart_pytorch_adversarial_loss",
]

# How a task's output is read as a distribution: 5-way softmax (SST), one Bernoulli logit (Quora),
# or a real-valued score compared by squared error (STS).
OutputKind = Literal["classes", "binary", "regression"]
TASK_OUTPUT_KIND: dict[str, OutputKind] = {"sst": "classes", "para": "binary", "sts": "regression"}
_TINY = 1e-12  # keeps gradient normalisation finite when the gradient is exactly zero


class SplitForwardModel(Protocol):
    """A model whose forward splits at the embedding output (MultitaskBert)."""

    def embed_inputs(self, batch: Batch) -> tuple[Tensor, ...]: ...

    def head_outputs(self, batch: Batch, embeddings: tuple[Tensor, ...]) -> Tensor: ...


def output_divergence(
    reference: Tensor, other: Tensor, kind: OutputKind, symmetric: bool = True
) -> Tensor:
    """Mean over the batch of KL(p_ref ‖ p_other) (+ the reverse when symmetric), or of (a − b)².

    Gradients flow through both arguments; detach one to treat it as a fixed target.
    """
    reference, other = reference.float(), other.float()
    if kind == "regression":
        return (other - reference).pow(2).mean()
    if kind == "binary":
        # One logit z per pair -> the 2-class logits [0, z], whose softmax is [1 − σ(z), σ(z)].
        reference = torch.stack([torch.zeros_like(reference), reference], dim=-1)
        other = torch.stack([torch.zeros_like(other), other], dim=-1)
    log_p, log_q = F.log_softmax(reference, dim=-1), F.log_softmax(other, dim=-1)  # [B, C]
    divergence = (log_p.exp() * (log_p - log_q)).sum(-1)  # KL(p ‖ q), [B]
    if symmetric:
        divergence = divergence + (log_q.exp() * (log_q - log_p)).sum(-1)
    return divergence.mean()


def smart_adversarial_loss(
    forward: Callable[[tuple[Tensor, ...]], Tensor],
    embeddings: Sequence[Tensor],
    clean_output: Tensor,
    kind: OutputKind,
    cfg: SmartConfig,
    masks: Sequence[Tensor | None] | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """SMART's adversarial divergence at the perturbed embeddings (to be weighted by λ_s).

    `forward` maps embedding outputs (each [B, T, H]) to task outputs; `clean_output` is
    forward(embeddings); `masks` ([B, T], 1 = real token) keep padding unperturbed. The returned
    divergence backpropagates into the encoder (through the perturbed forward and the embeddings)
    and through `clean_output`.
    """
    masks = list(masks) if masks is not None else [None] * len(embeddings)
    deltas = [
        _project(d, cfg.norm, cfg.epsilon) for d in _start_noise(embeddings, masks, cfg, generator)
    ]

    def step(delta: Tensor, grad: Tensor, mask: Tensor | None) -> Tensor:
        moved = delta + cfg.step_size * _normalised(grad, cfg.norm)
        return _project(_masked(moved, mask), cfg.norm, cfg.epsilon)

    deltas = _ascend(forward, embeddings, deltas, clean_output, kind, cfg, masks, step)
    perturbed = _perturbed_forward(forward, embeddings, deltas, detach=False)
    return output_divergence(clean_output, perturbed, kind, symmetric=cfg.divergence != "kl")


def smart_pytorch_adversarial_loss(
    forward: Callable[[tuple[Tensor, ...]], Tensor],
    embeddings: Sequence[Tensor],
    clean_output: Tensor,
    kind: OutputKind,
    cfg: SmartConfig,
    masks: Sequence[Tensor | None] | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """smart-pytorch's SMARTLoss, with the arguments of `smart_adversarial_loss`.

    δ = σ·N(0, I); then K times s = δ + η ∇_δ D(f(x), f(x + δ)) (KL(p_clean ‖ p_perturbed) as the
    library's kl_loss(perturbed, clean)), δ <- s / (‖s‖∞ + ε) with the L∞ norm over the hidden
    dimension of each token: each real token ends at L∞ ≈ 1 (ε only keeps the division finite),
    there is no ε-ball and no gradient normalisation. Padding stays at 0: the per-token norm would
    give each padding token unit noise, which a model that masks padding ignores anyway; masking
    makes the result independent of the padding even for outputs that read padded positions.
    Divergences are batch means; the library's sym_kl_loss sums over the batch, so a report's
    weight λ with batch size B is smart.weight λ·B here.
    """
    masks = list(masks) if masks is not None else [None] * len(embeddings)

    def step(delta: Tensor, grad: Tensor, mask: Tensor | None) -> Tensor:
        ascended = _masked(delta + cfg.step_size * grad, mask)
        return ascended / (ascended.abs().amax(dim=-1, keepdim=True) + cfg.epsilon)

    # sym_kl climbs the symmetric KL itself (the library's sym_kl_loss as its loss_fn would push
    # by KL's gradient alone); kl and kl_then_sym_kl are its kl_loss exactly.
    deltas = _start_noise(embeddings, masks, cfg, generator)
    deltas = _ascend(forward, embeddings, deltas, clean_output, kind, cfg, masks, step)
    perturbed = _perturbed_forward(forward, embeddings, deltas, detach=False)
    if cfg.divergence == "kl" or kind == "regression":
        return output_divergence(clean_output, perturbed, kind, symmetric=False)
    # The library's sym_kl_loss detaches the target of each direction: KL(p_clean ‖ p_perturbed)
    # reaches the perturbed forward, KL(p_perturbed ‖ p_clean) the clean output.
    forth = output_divergence(clean_output.detach(), perturbed, kind, symmetric=False)
    return forth + output_divergence(perturbed.detach(), clean_output, kind, symmetric=False)


def _ascend(
    forward: Callable[[tuple[Tensor, ...]], Tensor],
    embeddings: Sequence[Tensor],
    deltas: list[Tensor],
    clean_output: Tensor,
    kind: OutputKind,
    cfg: SmartConfig,
    masks: Sequence[Tensor | None],
    step: Callable[[Tensor, Tensor, Tensor | None], Tensor],
) -> list[Tensor]:
    """K ascent steps on δ against the fixed clean output; `step(δ, ∂D/∂δ, mask)` is the variant's
    update (the paper's projected normalised step, or smart-pytorch's per-token rescaling)."""
    target = clean_output.detach()
    for _ in range(cfg.steps):
        deltas = [d.requires_grad_() for d in deltas]
        perturbed = _perturbed_forward(forward, embeddings, deltas, detach=True)
        divergence = output_divergence(target, perturbed, kind, cfg.divergence == "sym_kl")
        grads = _noise_grads(divergence, deltas)
        deltas = [step(d.detach(), g, m) for d, g, m in zip(deltas, grads, masks, strict=True)]
    return deltas


def _start_noise(
    embeddings: Sequence[Tensor],
    masks: Sequence[Tensor | None],
    cfg: SmartConfig,
    generator: torch.Generator | None,
) -> list[Tensor]:
    """σ N(0, I) per embedding sequence (fp32, drawn in order), zero at padding."""
    if cfg.steps < 0:
        raise ValueError(f"smart.steps must be >= 0, got {cfg.steps}")
    return [
        _masked(
            cfg.noise_std
            * torch.randn(e.shape, generator=generator, device=e.device, dtype=torch.float32),
            m,
        )
        for e, m in zip(embeddings, masks, strict=True)
    ]


def _perturbed_forward(
    forward: Callable[[tuple[Tensor, ...]], Tensor],
    embeddings: Sequence[Tensor],
    deltas: Sequence[Tensor],
    detach: bool,
) -> Tensor:
    """f(x + δ); `detach` for an ascent step, where only δ needs a gradient."""
    return forward(
        tuple(
            (e.detach() if detach else e) + d.to(e.dtype)
            for e, d in zip(embeddings, deltas, strict=True)
        )
    )


def _noise_grads(divergence: Tensor, deltas: Sequence[Tensor]) -> list[Tensor]:
    """∂ divergence / ∂ δ per sequence; zero where the output ignores a sequence."""
    raw = torch.autograd.grad(divergence, list(deltas), allow_unused=True)
    return [torch.zeros_like(d) if g is None else g for d, g in zip(deltas, raw, strict=True)]


def _per_example_norm(x: Tensor, norm: str) -> Tensor:
    """‖x_b‖ over all but the batch dimension, shaped [B, 1, ..., 1] to broadcast against x."""
    flat = x.reshape(x.shape[0], -1)
    value = flat.norm(dim=1) if norm == "l2" else flat.abs().amax(dim=1)
    return value.view(-1, *([1] * (x.dim() - 1)))


def _normalised(grad: Tensor, norm: str) -> Tensor:
    return grad / (_per_example_norm(grad, norm) + _TINY)


def _project(delta: Tensor, norm: str, epsilon: float) -> Tensor:
    """Nearest point of the per-example ε-ball: rescale (L2) or clip each coordinate (L∞)."""
    if norm == "linf":
        return delta.clamp(-epsilon, epsilon)
    if norm != "l2":
        raise ValueError(f"smart.norm must be 'l2' or 'linf', got {norm!r}")
    scale = (epsilon / (_per_example_norm(delta, "l2") + _TINY)).clamp(max=1.0)
    return delta * scale


def _masked(delta: Tensor, mask: Tensor | None) -> Tensor:
    return delta if mask is None else delta * mask.unsqueeze(-1).to(delta.dtype)  # [B, T, 1]


class BregmanProximalPoint:
    """EMA copy of the model (momentum β) and the proximal penalty D(f(x; θ), f(x; θ̃)).

    The copy runs in eval mode without gradients, so its outputs are a fixed target; call
    `update(model)` after every optimizer step.
    """

    def __init__(self, model: nn.Module, beta: float) -> None:
        if not 0.0 <= beta < 1.0:
            raise ValueError(f"smart.bregman_beta must be in [0, 1), got {beta}")
        self.beta = beta
        self.ema = copy.deepcopy(model).eval().requires_grad_(False)

    def divergence(
        self,
        output: Tensor,
        ema_forward: Callable[[nn.Module], Tensor],
        kind: OutputKind,
        divergence: Divergence = "sym_kl",
    ) -> Tensor:
        """D(f(x; θ̃), f(x; θ)) for `output` = f(x; θ), with ema_forward(ema_model) = f(x; θ̃)."""
        with torch.no_grad():
            target = ema_forward(self.ema)
        return output_divergence(target, output, kind, symmetric=divergence != "kl")

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """θ̃ <- β θ̃ + (1 − β) θ for parameters; buffers (e.g. batch-norm statistics) are copied."""
        for ema_p, p in zip(self.ema.parameters(), model.parameters(), strict=True):
            ema_p.lerp_(p.detach().to(ema_p.dtype), 1.0 - self.beta)
        for ema_b, b in zip(self.ema.buffers(), model.buffers(), strict=True):
            ema_b.copy_(b)

    def state_dict(self) -> dict[str, Tensor]:
        return self.ema.state_dict()

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        self.ema.load_state_dict(state)


def smart_penalty(
    model: SplitForwardModel,
    batch: Batch,
    embeddings: tuple[Tensor, ...],
    output: Tensor,
    cfg: SmartConfig,
    bregman: BregmanProximalPoint | None = None,
) -> Tensor | None:
    """λ_s × adversarial term (of smart.variant) + μ × proximal term (paper variant only) for one
    task's batch, or None when both are off.

    `embeddings` = model.embed_inputs(batch) and `output` = model.head_outputs(batch, embeddings),
    the clean forward the task loss is computed from.
    """
    if batch.task not in cfg.tasks:
        return None
    kind = TASK_OUTPUT_KIND[batch.task]
    terms = []
    if cfg.weight > 0:
        masks = (batch.attention_mask, batch.attention_mask_b)[: len(embeddings)]
        library = cfg.variant == "smart_pytorch"
        loss = smart_pytorch_adversarial_loss if library else smart_adversarial_loss
        adversarial = loss(
            lambda e: model.head_outputs(batch, e), embeddings, output, kind, cfg, masks
        )
        terms.append(cfg.weight * adversarial)
    # smart_pytorch has no proximal term (config_guards reports a bregman_mu > 0 with it as inert).
    if cfg.bregman_mu > 0 and bregman is not None and cfg.variant == "paper":
        proximal = bregman.divergence(output, lambda m: m(batch), kind, cfg.divergence)
        terms.append(cfg.bregman_mu * proximal)
    return torch.stack(terms).sum() if terms else None
