"""The GPU fast path: bf16 numerics, fused attention kernels, no host sync per step, memory caps.

Marked `gpu`; skipped without CUDA. Run with `pytest -m gpu tests/gpu`.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

from model.batching import Batch
from model.bert import BertConfig, BertModel, compile_encoder
from model.config import TrainConfig, build_config
from model.heads import MultitaskBert
from model.optim import build_optimizer, linear_warmup_decay
from model.packing import PackedTokens
from model.step import StepContext, training_step

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"),
]

CUDA = torch.device("cuda")
SMALL = BertConfig(
    vocab_size=1000,
    hidden_size=256,
    num_hidden_layers=4,
    num_attention_heads=4,  # head dim 64: every fused kernel supports it
    intermediate_size=1024,
    max_position_embeddings=128,
)


def random_batch(lengths: list[int], seed: int, vocab: int = 1000) -> tuple[torch.Tensor, ...]:
    """(B, T) ids right-padded with 0, their 1/0 mask and token types, on the GPU."""
    gen = torch.Generator().manual_seed(seed)
    T = max(lengths)
    ids = torch.randint(1, vocab, (len(lengths), T), generator=gen)
    mask = (torch.arange(T)[None, :] < torch.tensor(lengths)[:, None]).long()
    types = torch.zeros_like(ids)
    return (ids * mask).to(CUDA), mask.to(CUDA), types.to(CUDA)


def rel_err(out: torch.Tensor, ref: torch.Tensor) -> float:
    out, ref = out.double(), ref.double()
    return float((out - ref).norm() / ref.norm())


def small_model(seed: int = 0) -> BertModel:
    torch.manual_seed(seed)
    return BertModel(SMALL).to(CUDA).eval()


def test_bf16_autocast_matches_fp32_within_bf16_tolerance() -> None:
    model = small_model()
    ids, mask, types = random_batch([40, 17, 33, 8], seed=1)
    real = mask.bool()
    with torch.no_grad():
        ref, ref_pooled = model(ids, mask, types)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            out, pooled = model(ids, mask, types)
    assert out.dtype == torch.float32  # LayerNorm output stays fp32 under autocast
    err = rel_err(out[real], ref[real])
    assert 1e-5 < err < 2e-2, err  # bf16 really was used, and stayed accurate
    assert rel_err(pooled, ref_pooled) < 2e-2


def test_unpadded_batch_runs_on_the_flash_kernel() -> None:
    model = small_model().train()
    ids, mask, types = random_batch([24, 24, 24], seed=2)
    with torch.autocast("cuda", dtype=torch.bfloat16), sdpa_kernel(SDPBackend.FLASH_ATTENTION):
        seq, _ = model(ids, mask, types, has_padding=False)  # no mask -> flash is allowed
        seq.float().square().mean().backward()
        # The masked path cannot use flash: the same call must then find no kernel at all.
        with pytest.raises(RuntimeError):
            model(ids, mask, types, has_padding=True)
    assert all(p.grad is not None for p in model.encoder.parameters())


def test_flash_and_masked_kernels_agree_with_the_math_reference() -> None:
    model = small_model()
    ids, mask, types = random_batch([24, 24], seed=3)
    padded_ids, padded_mask, padded_types = random_batch([24, 11], seed=4)
    with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
        with sdpa_kernel(SDPBackend.MATH):
            ref, _ = model(ids, mask, types, has_padding=True)
            ref_padded, _ = model(padded_ids, padded_mask, padded_types, has_padding=True)
        with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
            flash, _ = model(ids, mask, types, has_padding=False)
        with sdpa_kernel([SDPBackend.EFFICIENT_ATTENTION, SDPBackend.CUDNN_ATTENTION]):
            fused, _ = model(padded_ids, padded_mask, padded_types, has_padding=True)
    assert rel_err(flash, ref) < 1e-2
    real = padded_mask.bool()
    assert rel_err(fused[real], ref_padded[real]) < 1e-2


@pytest.mark.parametrize("kernel", ["auto", "varlen", "jagged"])
def test_unpadded_encoder_matches_the_padded_reference_in_outputs_and_gradients(
    kernel: str,
) -> None:
    ids, mask, types = random_batch([40, 17, 33, 8, 1], seed=5)
    packing = PackedTokens.from_mask(mask).with_attention(kernel)  # host-built, then moved
    assert packing.for_device(mask, torch.bfloat16, head_dim=64).attention in ("varlen", kernel)
    real = mask.bool()
    probe = torch.randn(SMALL.hidden_size, device=CUDA)

    def run(unpadded: bool) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        model = small_model()  # eval mode: no dropout, so both layouts compute the same thing
        with torch.autocast("cuda", dtype=torch.bfloat16):
            if unpadded:
                seq, _ = model(ids, mask, types, packing=packing)
            else:
                with sdpa_kernel(SDPBackend.MATH):
                    seq, _ = model(ids, mask, types, has_padding=True)
            (seq[real].float() @ probe).square().mean().backward()
        return seq[real].detach(), {n: p.grad for n, p in model.named_parameters()
                                    if p.grad is not None}

    ref, ref_grads = run(unpadded=False)
    out, grads = run(unpadded=True)
    assert rel_err(out, ref) < 2e-2
    assert grads.keys() == ref_grads.keys()
    for name, grad in grads.items():
        if name.endswith("attention.self.key.bias"):
            continue  # zero in theory (softmax ignores a per-query shift): rounding noise only
        assert rel_err(grad, ref_grads[name]) < 5e-2, name

    model = small_model().train()  # attention dropout inside the varlen kernel, and backward
    with torch.autocast("cuda", dtype=torch.bfloat16):
        seq, _ = model(ids, mask, types, packing=packing)
        seq[real].float().square().mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all()
               for p in model.encoder.parameters())


def test_compiled_unpadded_encoder_matches_eager() -> None:
    import torch._dynamo

    torch._dynamo.reset()
    eager = small_model()
    compiled = small_model()
    compile_encoder(compiled)
    for k, lengths in enumerate(([16, 16, 9], [24, 3, 24, 24, 5], [40, 40, 2])):
        ids, mask, types = random_batch(lengths, seed=20 + k)
        packing = PackedTokens.from_mask(mask)
        with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
            ref, _ = eager(ids, mask, types, packing=packing)
            out, _ = compiled(ids, mask, types, packing=packing)
        real = mask.bool()
        assert rel_err(out[real], ref[real]) < 2e-2


def tiny_train_config() -> TrainConfig:
    return build_config(
        TrainConfig,
        {"model": {"random_init": True, "hidden_size": 64, "num_hidden_layers": 2,
                   "num_attention_heads": 2, "intermediate_size": 128},
         "device": "cuda"},
    )


def cuda_batch(task: str, seed: int) -> Batch:
    ids, mask, types = random_batch([20, 13, 20, 7], seed=seed, vocab=30522)
    labels = {"sst": torch.tensor([0, 4, 2, 1]), "para": torch.tensor([0.0, 1.0, 1.0, 0.0]),
              "sts": torch.tensor([0.5, 4.0, 2.5, 3.0])}[task]
    return Batch(task, ids.cpu(), mask.cpu(), types.cpu(), labels=labels).pin_memory().to(
        CUDA, non_blocking=True
    )


def test_training_step_never_synchronises_with_the_host() -> None:
    # The default config runs the unpadded encoder: its layout comes from the host, so packing
    # and varlen attention must not read anything back either.
    from model.weights import load_encoder, resolve_model_dir

    cfg = tiny_train_config()
    overrides = {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
                 "intermediate_size": 128}
    encoder, _ = load_encoder(resolve_model_dir("minilm"), random_init=True, overrides=overrides)
    model = MultitaskBert(encoder, cfg.model).to(CUDA).train()
    optimizer = build_optimizer(model, cfg, CUDA)
    assert optimizer.defaults["fused"]
    scheduler = linear_warmup_decay(optimizer, 100, 0.1)
    ctx = StepContext(model, optimizer, scheduler, cfg, CUDA, torch.bfloat16, None)
    batches = {t: cuda_batch(t, seed=i) for i, t in enumerate(("sst", "para", "sts"))}
    training_step(ctx, batches)  # first step: lazy optimizer state, cuBLAS handles
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        losses = [training_step(ctx, batches) for _ in range(3)]
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert all(torch.isfinite(loss).item() for loss in losses)


def test_compiled_encoder_matches_eager_and_does_not_recompile_per_shape() -> None:
    import torch._dynamo

    torch._dynamo.reset()
    eager = small_model()
    compiled = small_model()
    compile_encoder(compiled)
    frames_before = torch._dynamo.utils.counters["stats"]["unique_graphs"]
    for k, lengths in enumerate(([16, 16, 9], [24, 3, 24, 24, 5], [40, 40], [8] * 7)):
        ids, mask, types = random_batch(lengths, seed=10 + k)
        with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
            ref, _ = eager(ids, mask, types, has_padding=True)
            out, _ = compiled(ids, mask, types, has_padding=True)
        real = mask.bool()
        assert rel_err(out[real], ref[real]) < 2e-2
    graphs = torch._dynamo.utils.counters["stats"]["unique_graphs"] - frames_before
    assert graphs <= 2, graphs  # four batch shapes, at most a static and a dynamic graph


def test_limit_cuda_memory_makes_an_oversized_allocation_fail() -> None:
    script = textwrap.dedent(
        """
        import torch
        from model.device import limit_cuda_memory
        assert limit_cuda_memory(0.02)
        total = torch.cuda.get_device_properties(0).total_memory
        small = torch.empty(int(0.01 * total), dtype=torch.uint8, device="cuda")
        try:
            torch.empty(int(0.05 * total), dtype=torch.uint8, device="cuda")
        except torch.OutOfMemoryError:
            print("capped")
        """
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         check=True, timeout=120)
    assert out.stdout.strip() == "capped", out.stderr
