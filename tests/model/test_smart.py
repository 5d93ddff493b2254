"""SMART: divergences against closed forms, the ascent against the known worst case, the wiring."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch

from model.batching import Batch
from model.bert import BertConfig, BertModel
from model.config import ModelConfig, SmartConfig
from model.heads import MultitaskBert
from model.smart import (
    BregmanProximalPoint,
    output_divergence,
    smart_adversarial_loss,
    smart_penalty,
    smart_pytorch_adversarial_loss,
)

ON = SmartConfig(weight=1.0, epsilon=1e-2, step_size=1.0, noise_std=1e-3, steps=1)


def tiny_model(pair_encoding: str = "cross", dropout: float = 0.0) -> MultitaskBert:
    torch.manual_seed(0)
    encoder = BertModel(
        BertConfig(
            vocab_size=40,
            hidden_size=16,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=32,
            hidden_dropout_prob=dropout,
            attention_probs_dropout_prob=dropout,
        )
    )
    return MultitaskBert(encoder, ModelConfig(pair_encoding=pair_encoding, head_dropout=dropout))


def tiny_batch(task: str, bi: bool) -> Batch:
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(1, 40, (4, 7), generator=g)
    mask = torch.ones(4, 7, dtype=torch.long)
    mask[0, 5:] = 0  # one padded example
    labels = {
        "sst": torch.tensor([0, 4, 2, 1]),
        "para": torch.tensor([0.0, 1.0, 1.0, 0.0]),
        "sts": torch.tensor([0.5, 4.0, 2.2, 3.1]),
    }[task]
    extra = {}
    if bi:
        extra = dict(
            input_ids_b=torch.randint(1, 40, (4, 6), generator=g),
            attention_mask_b=torch.ones(4, 6, dtype=torch.long),
            token_type_ids_b=torch.zeros(4, 6, dtype=torch.long),
        )
    return Batch(task, ids, mask, torch.zeros_like(ids), labels=labels, **extra)


def test_divergences_match_closed_forms() -> None:
    p = torch.tensor([[2.0, 0.0, -1.0]])
    q = torch.tensor([[0.0, 1.0, 0.5]])
    pp, qq = p.softmax(-1), q.softmax(-1)
    kl_pq = (pp * (pp / qq).log()).sum()
    kl_qp = (qq * (qq / pp).log()).sum()
    assert output_divergence(p, q, "classes", symmetric=False) == pytest.approx(float(kl_pq))
    assert output_divergence(p, q, "classes") == pytest.approx(float(kl_pq + kl_qp))
    # Bernoulli from one logit: KL(Ber(a) ‖ Ber(b)) = a log(a/b) + (1−a) log((1−a)/(1−b)).
    a, b = torch.sigmoid(torch.tensor(1.5)), torch.sigmoid(torch.tensor(-0.5))
    ber = a * (a / b).log() + (1 - a) * ((1 - a) / (1 - b)).log()
    got = output_divergence(torch.tensor([1.5]), torch.tensor([-0.5]), "binary", symmetric=False)
    assert got == pytest.approx(float(ber))
    got = output_divergence(torch.tensor([1.0, 3.0]), torch.tensor([1.5, 1.0]), "regression")
    assert got == pytest.approx((0.25 + 4.0) / 2)


@pytest.mark.parametrize("norm", ["l2", "linf"])
def test_one_ascent_step_reaches_the_worst_case_of_a_linear_model(norm: str) -> None:
    # f(x) = <W, x> per example, D = (f(x+δ) − f(x))² = <W, δ>²: the worst δ in the ε-ball gives
    # ε² ‖W‖₂² (L2 ball) or ε² ‖W‖₁² (L∞ ball); from tiny noise one normalised step of η ≫ ε
    # lands on it, while the starting noise alone gives almost nothing.
    W = torch.randn(1, 5, 3, generator=torch.Generator().manual_seed(2))
    x = torch.randn(3, 5, 3, generator=torch.Generator().manual_seed(3))

    def forward(e: tuple[torch.Tensor, ...]) -> torch.Tensor:
        return (e[0] * W).sum((1, 2))

    cfg = SmartConfig(weight=1.0, epsilon=0.01, step_size=1.0, noise_std=1e-6, steps=1, norm=norm)
    g = torch.Generator().manual_seed(0)
    value = smart_adversarial_loss(forward, (x,), forward((x,)), "regression", cfg, generator=g)
    dual = W.norm() if norm == "l2" else W.abs().sum()
    assert float(value) == pytest.approx(float((0.01 * dual) ** 2), rel=1e-3)
    start = smart_adversarial_loss(
        forward, (x,), forward((x,)), "regression", replace(cfg, steps=0), generator=g
    )
    assert float(start) < 1e-6 * float(value)


@pytest.mark.parametrize(
    ("task", "encoding"),
    [("sst", "cross"), ("para", "cross"), ("sts", "sbert"), ("para", "cosine")],
)
def test_zero_noise_and_no_ascent_give_zero(task: str, encoding: str) -> None:
    model = tiny_model(encoding).eval()
    batch = tiny_batch(task, bi=encoding != "cross")
    embeddings = model.embed_inputs(batch)
    output = model.head_outputs(batch, embeddings)
    # No perturbation at all (epsilon=0 is not a valid SmartConfig: steps=0 keeps delta at 0).
    cfg = replace(ON, noise_std=0.0, steps=0)
    penalty = smart_penalty(model, batch, embeddings, output, cfg)
    assert penalty is not None and float(penalty.detach()) == 0.0


@pytest.mark.parametrize(
    ("task", "encoding"), [("sst", "cross"), ("para", "cross"), ("sts", "cosine")]
)
def test_ascent_increases_divergence_over_the_starting_noise(task: str, encoding: str) -> None:
    model = tiny_model(encoding).eval()
    batch = tiny_batch(task, bi=encoding != "cross")
    embeddings = model.embed_inputs(batch)
    output = model.head_outputs(batch, embeddings)
    masks = (batch.attention_mask, batch.attention_mask_b)[: len(embeddings)]
    values = {}
    for steps in (0, 1, 2):
        torch.manual_seed(5)  # same starting noise for every K
        cfg = replace(ON, steps=steps, epsilon=0.05, noise_std=0.01, norm="l2")
        forward = lambda e: model.head_outputs(batch, e)  # noqa: E731
        values[steps] = float(
            smart_adversarial_loss(forward, embeddings, output, _kind(task), cfg, masks).detach()
        )
    assert values[1] > 3 * values[0] > 0
    assert values[2] >= 0.9 * values[1]


def _kind(task: str):
    return {"sst": "classes", "para": "binary", "sts": "regression"}[task]


@pytest.mark.parametrize(("task", "encoding"), [("sst", "cross"), ("sts", "sbert")])
def test_gradients_reach_the_encoder_and_embeddings(task: str, encoding: str) -> None:
    model = tiny_model(encoding).eval()
    batch = tiny_batch(task, bi=encoding != "cross")
    embeddings = model.embed_inputs(batch)
    output = model.head_outputs(batch, embeddings).detach()  # only the regularizer's gradient
    penalty = smart_penalty(model, batch, embeddings, output, replace(ON, epsilon=0.05))
    assert penalty is not None
    penalty.backward()
    params = dict(model.named_parameters())
    for name in (
        "encoder.embeddings.word_embeddings.weight",
        "encoder.encoder.layer.0.attention.self.query.weight",
        "encoder.encoder.layer.1.output.dense.weight",
    ):
        assert params[name].grad is not None and float(params[name].grad.abs().sum()) > 0, name


def test_bi_encoding_perturbs_both_sentences_but_never_padding() -> None:
    x1, x2 = torch.randn(2, 4, 3), torch.randn(2, 5, 3)
    W = torch.randn(5, 3)
    mask2 = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    cfg = replace(ON, epsilon=0.1)
    # An output that depends on the second sentence only: its perturbation must show.
    second = lambda e: (e[1] * W).sum((1, 2))  # noqa: E731
    value = smart_adversarial_loss(second, (x1, x2), second((x1, x2)), "regression", cfg)
    assert float(value) > 1e-4
    # An output that reads only padded positions of the first example sees no perturbation.
    padding = lambda e: (e[1][0, 3:] * W[3:]).sum().reshape(1)  # noqa: E731
    masks = (torch.ones(2, 4), mask2)
    value = smart_adversarial_loss(padding, (x1, x2), padding((x1, x2)), "regression", cfg, masks)
    assert float(value) == 0.0


def test_divergence_variants_pick_kl_or_symmetric_kl() -> None:
    model = tiny_model("cross").eval()
    batch = tiny_batch("sst", bi=False)
    embeddings = model.embed_inputs(batch)
    clean = model.head_outputs(batch, embeddings)
    values, last = {}, {}
    for variant in ("sym_kl", "kl", "kl_then_sym_kl"):
        torch.manual_seed(3)
        cfg = replace(ON, divergence=variant, epsilon=0.05)

        def forward(e, variant=variant):
            last[variant] = model.head_outputs(batch, e)
            return last[variant]

        values[variant] = float(
            smart_adversarial_loss(forward, embeddings, clean, "classes", cfg).detach()
        )
    clean = clean.detach()
    kl = output_divergence(clean, last["kl"].detach(), "classes", symmetric=False)
    sym = output_divergence(clean, last["sym_kl"].detach(), "classes", symmetric=True)
    assert values["kl"] == pytest.approx(float(kl))
    assert values["sym_kl"] == pytest.approx(float(sym))
    assert values["kl_then_sym_kl"] == pytest.approx(
        float(output_divergence(clean, last["kl_then_sym_kl"].detach(), "classes"))
    )
    assert values["sym_kl"] > values["kl"] > 0


# --- variant smart_pytorch (archinetai's SMARTLoss) ---------------------------------------------

LIBRARY = SmartConfig(weight=1.0, variant="smart_pytorch", divergence="kl_then_sym_kl")


def _recording(forward):
    """`forward` that keeps its last input, so a test can read the final perturbation."""
    seen: list[tuple[torch.Tensor, ...]] = []

    def wrapped(e: tuple[torch.Tensor, ...]) -> torch.Tensor:
        seen.append(tuple(x.detach() for x in e))
        return forward(e)

    return wrapped, seen


def _sym_kl(p: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    return ((p * (p / r).log()).sum(-1) + (r * (r / p).log()).sum(-1)).mean()


def test_smart_pytorch_one_step_matches_a_hand_computation() -> None:
    # logits_b = Σ_t A x_bt: KL(p ‖ q) averaged over B has gradient Aᵀ(q_b − p_b) / B in each δ_bt.
    # One step: s = δ0 + η g at real tokens, δ1 = s / (‖s‖∞ per token + ε); then sym KL at δ1.
    B, T, H = 2, 3, 4
    A = torch.randn(3, H, generator=torch.Generator().manual_seed(7))
    x = torch.randn(B, T, H, generator=torch.Generator().manual_seed(8))
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    logits = lambda e: torch.einsum("bth,ch->bc", e, A)  # noqa: E731  reads padding too
    forward, seen = _recording(lambda e: logits(e[0]))
    cfg = replace(LIBRARY, noise_std=0.1, step_size=2.0, epsilon=1e-3, steps=1)
    clean = logits(x)
    g0 = torch.Generator().manual_seed(0)
    value = smart_pytorch_adversarial_loss(forward, (x,), clean, "classes", cfg, (mask,), g0)

    m = mask[..., None].float()
    d0 = 0.1 * torch.randn(B, T, H, generator=torch.Generator().manual_seed(0)) * m
    p, q = clean.softmax(-1), (clean + logits(d0)).softmax(-1)
    grad = torch.einsum("bc,ch->bh", (q - p) / B, A)[:, None, :] * m
    step = d0 + 2.0 * grad
    d1 = step / (step.abs().amax(-1, keepdim=True) + 1e-3)
    torch.testing.assert_close(seen[-1][0] - x, d1, atol=1e-6, rtol=0)
    r = (clean + logits(d1)).softmax(-1)
    assert float(value) == pytest.approx(float(_sym_kl(p, r)), abs=1e-6)
    assert float(d1.abs().amax()) > 0.99  # unit noise, far outside the paper's ε-ball


def test_smart_pytorch_noise_is_unit_per_token_and_padding_changes_nothing() -> None:
    # f(x) = Σ_t <W_t, x_t> reads every position, padding included. With η ≫ σ the step points
    # along ±W_t, so δ_t = ±W_t / ‖W_t‖∞ and D = (Σ_t ‖W_t‖₂² / ‖W_t‖∞)² whatever the draw.
    B, T, H, pad = 3, 4, 5, 3
    W = torch.randn(T + pad, H, generator=torch.Generator().manual_seed(2))
    x = torch.randn(B, T + pad, H, generator=torch.Generator().manual_seed(3))
    mask = torch.ones(B, T + pad)
    mask[:, T:] = 0
    mask[0, T - 1] = 0  # the first example is padded already
    cfg = replace(LIBRARY, noise_std=1e-3, step_size=1e6, epsilon=1e-6, steps=1)
    values, noise = [], []
    for width in (T, T + pad):
        forward, seen = _recording(lambda e, w=width: (e[0] * W[:w]).sum((1, 2)))
        xs, ms = x[:, :width], mask[:, :width]
        value = smart_pytorch_adversarial_loss(
            forward, (xs,), forward((xs,)), "regression", cfg, (ms,)
        )
        values.append(float(value))
        noise.append(seen[-1][0] - xs)
    per_token = noise[1].abs().amax(-1)
    torch.testing.assert_close(per_token, mask, atol=1e-4, rtol=0)
    assert float(noise[1][mask == 0].abs().max()) == 0.0
    assert values[0] == pytest.approx(values[1], rel=1e-5)
    dual = W.norm(dim=-1).pow(2) / W.abs().amax(-1)
    expected = torch.stack([(dual * row).sum().pow(2) for row in mask]).mean()
    assert values[1] == pytest.approx(float(expected), rel=1e-4)


def test_variant_switch_changes_the_penalty() -> None:
    model = tiny_model("cross").eval()
    batch = tiny_batch("sst", bi=False)
    embeddings = model.embed_inputs(batch)
    output = model.head_outputs(batch, embeddings)
    values = {}
    for variant in ("paper", "smart_pytorch"):
        torch.manual_seed(4)  # the same starting noise
        cfg = replace(ON, variant=variant, divergence="kl_then_sym_kl")
        penalty = smart_penalty(model, batch, embeddings, output, cfg)
        assert penalty is not None
        values[variant] = float(penalty.detach())
    # Unit per-token noise against the paper's ε = 1e-2 ball: about 10x here (the tiny random
    # head's near-uniform softmax caps the divergence); the same code path would give equal values.
    assert values["smart_pytorch"] > 5 * values["paper"] > 0
    # No proximal term under smart_pytorch: μ alone adds nothing.
    bregman = BregmanProximalPoint(model, beta=0.9)
    proximal = SmartConfig(bregman_mu=1.0, variant="smart_pytorch")
    assert smart_penalty(model, batch, embeddings, output, proximal, bregman) is None


@pytest.mark.parametrize("divergence", ["kl", "kl_then_sym_kl"])
def test_smart_pytorch_last_step_reaches_the_clean_output(divergence: str) -> None:
    # The library's loss_last_fn gets the undetached state. Its sym_kl_loss detaches each
    # direction's target, so the clean logits get only ∂ KL(r ‖ p) / ∂ z_p = (p − r) / B.
    A = torch.randn(3, 4, generator=torch.Generator().manual_seed(5))
    x = torch.randn(2, 3, 4, generator=torch.Generator().manual_seed(6))
    forward, seen = _recording(lambda e: torch.einsum("bth,ch->bc", e[0], A))
    clean = forward((x,)).detach().requires_grad_()
    cfg = replace(LIBRARY, divergence=divergence, noise_std=0.1, step_size=1.0)
    value = smart_pytorch_adversarial_loss(forward, (x,), clean, "classes", cfg)
    (grad,) = torch.autograd.grad(value, clean)
    assert float(grad.abs().sum()) > 1e-3
    if divergence == "kl_then_sym_kl":
        p, r = clean.detach().softmax(-1), forward(seen[-1]).softmax(-1)
        torch.testing.assert_close(grad, (p - r) / 2, atol=1e-6, rtol=0)


def test_off_switches_and_task_filter_return_none() -> None:
    model = tiny_model()
    batch = tiny_batch("sst", bi=False)
    embeddings = model.embed_inputs(batch)
    output = model.head_outputs(batch, embeddings)
    off = SmartConfig()
    assert off.weight == 0.0 and off.bregman_mu == 0.0
    assert smart_penalty(model, batch, embeddings, output, off) is None
    assert smart_penalty(model, batch, embeddings, output, replace(ON, tasks=("sts",))) is None


def test_bregman_ema_update_and_penalty() -> None:
    model = tiny_model().eval()
    batch = tiny_batch("para", bi=False)
    bregman = BregmanProximalPoint(model, beta=0.9)
    cfg = SmartConfig(bregman_mu=2.0)
    embeddings = model.embed_inputs(batch)
    output = model.head_outputs(batch, embeddings)
    penalty = smart_penalty(model, batch, embeddings, output, cfg, bregman)
    assert penalty is not None and float(penalty.detach()) == pytest.approx(0.0, abs=1e-7)

    before = {n: p.detach().clone() for n, p in bregman.ema.named_parameters()}
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05)
    output = model(batch)
    target = bregman.ema(batch)
    penalty = smart_penalty(model, batch, embeddings, output, cfg, bregman)
    expected = 2.0 * output_divergence(target, output, "binary", symmetric=True)
    assert (
        penalty is not None and float(penalty) == pytest.approx(float(expected)) and expected > 0
    )
    penalty.backward()
    assert all(p.grad is None for p in bregman.ema.parameters())  # the EMA is a fixed target
    assert model.para_head.mlp[-1].weight.grad is not None

    bregman.update(model)
    for name, p in model.named_parameters():
        ema = dict(bregman.ema.named_parameters())[name]
        torch.testing.assert_close(ema, 0.9 * before[name] + 0.1 * p.detach())


# --- in the trainer's step ----------------------------------------------------------------------

SIMULTANEOUS = [("sst", "para", "sts")]


def _run(cfg, steps: int, bregman: bool = False, total_steps: int | None = None):
    from tests.model.tiny_training import make_context, synthetic_batches, train_plan

    ctx = make_context(cfg, total_steps or steps)
    if bregman:
        ctx.bregman = BregmanProximalPoint(ctx.model, cfg.smart.bregman_beta)
    data = {t: synthetic_batches(t) for t in ("sst", "para", "sts")}
    torch.manual_seed(123)
    train_plan(ctx, SIMULTANEOUS * steps, data)
    return ctx, torch.get_rng_state()


def test_weight_zero_and_mu_zero_are_exactly_the_plain_step() -> None:
    from tests.model.tiny_training import trainable_config

    plain, plain_rng = _run(trainable_config(), 3)
    off = {"weight": 0.0, "bregman_mu": 0.0, "steps": 3, "noise_std": 0.5, "epsilon": 0.5}
    quiet, quiet_rng = _run(trainable_config(smart=off), 3)
    for (name, a), b in zip(plain.model.named_parameters(), quiet.model.parameters(), strict=True):
        assert torch.equal(a, b), name
    assert torch.equal(plain_rng, quiet_rng)  # not even a noise draw
    on, _ = _run(trainable_config(smart={**off, "weight": 1.0}), 3)
    assert not torch.equal(plain.model.sst_head[-1].weight, on.model.sst_head[-1].weight)


def test_tiny_model_trains_with_smart_and_bregman_on() -> None:
    from tests.model.tiny_training import (
        eval_loss,
        synthetic_batches,
        train_plan,
        trainable_config,
    )

    cfg = trainable_config(
        smart={"weight": 1.0, "epsilon": 1e-3, "bregman_mu": 1.0, "bregman_beta": 0.9},
        optim={"lr": 5e-3},
    )
    data = {t: synthetic_batches(t) for t in ("sst", "para", "sts")}
    ctx, _ = _run(cfg, 0, bregman=True, total_steps=20)
    before = eval_loss(ctx, data)
    ema_before = ctx.bregman.ema.sst_head[-1].weight.clone()
    train_plan(ctx, SIMULTANEOUS * 20, data)
    after = eval_loss(ctx, data)
    assert all(after[t] < before[t] for t in before), (before, after)
    assert after["sts"] < 0.5 * before["sts"]
    assert not torch.equal(ctx.bregman.ema.sst_head[-1].weight, ema_before)


def test_fit_with_smart_bregman_and_pcgrad_resumes_the_ema(tiny_config_dict, data_dir, tmp_path):
    from model.checkpoint import load_resume_state
    from model.config import TrainConfig, build_config, merge
    from model.train import fit

    on = {
        "smart": {"weight": 1.0, "epsilon": 1e-3, "bregman_mu": 1.0},
        "pcgrad": {"enabled": True},
        "optim": {"epochs": 1},
    }
    cfg = build_config(TrainConfig, merge(tiny_config_dict, on))
    first = fit(cfg, data_dir=data_dir, out_dir=tmp_path / "a", prediction_splits=())
    last = tmp_path / "a" / "checkpoints" / "last"
    ema = load_resume_state(last).bregman_ema
    assert ema is not None
    assert set(ema) == set(load_checkpoint_state(last))
    assert first.epochs_run == 1 and math.isfinite(first.history[0]["train/loss"])

    cfg2 = build_config(TrainConfig, merge(tiny_config_dict, {**on, "optim": {"epochs": 2}}))
    second = fit(
        cfg2, data_dir=data_dir, out_dir=tmp_path / "a", resume_from=last, prediction_splits=()
    )
    assert second.epochs_run == 2 and len(second.history) == 2
    assert second.history[1]["train/loss"] < second.history[0]["train/loss"]
    resumed_ema = load_resume_state(last).bregman_ema
    assert resumed_ema is not None
    name = "sst_head.1.weight"
    assert not torch.equal(resumed_ema[name], ema[name])  # the EMA kept moving after resume


def load_checkpoint_state(checkpoint):
    from safetensors.torch import load_file

    return load_file(str(checkpoint / "model.safetensors"))
