"""The unpadded encoder: its token layout, and the padded encoder's and transformers' numbers."""

from __future__ import annotations

import dataclasses
import shutil

import numpy as np
import pytest
import torch

from model.batching import Batch, collate
from model.bert import BertConfig, BertModel
from model.config import ModelConfig
from model.data import EncodedTask
from model.heads import MultitaskBert
from model.packing import PackedTokens
from tests.model.test_bert import TINY, assert_same_outputs, padded_batch, tiny_pair

KERNELS = ["padded", "jagged"]  # jagged runs torch's per-sequence math path on CPU


def test_layout_from_lengths() -> None:
    packing = PackedTokens.from_lengths(np.array([2, 3, 1]), width=4)
    assert packing.token_index.tolist() == [0, 1, 4, 5, 6, 8]
    assert packing.cu_seqlens.tolist() == [0, 2, 5, 6]
    assert (packing.batch_size, packing.width) == (3, 4)
    assert (packing.min_seqlen, packing.max_seqlen, packing.num_tokens) == (1, 3, 6)


def test_from_mask_equals_from_lengths_and_rejects_what_it_cannot_pack() -> None:
    _, mask, _ = padded_batch([3, 5, 1], vocab_size=50)
    by_mask = PackedTokens.from_mask(mask)
    by_lengths = PackedTokens.from_lengths(np.array([3, 5, 1]), 5)
    assert torch.equal(by_mask.token_index, by_lengths.token_index)
    assert torch.equal(by_mask.cu_seqlens, by_lengths.cu_seqlens)
    with pytest.raises(ValueError, match="right-padded"):
        PackedTokens.from_mask(torch.tensor([[0, 1, 1]]))
    with pytest.raises(ValueError, match=r"in \[1, 3\]"):
        PackedTokens.from_mask(torch.tensor([[1, 1, 0], [0, 0, 0]]))


def test_pack_then_unpack_restores_real_tokens_and_zeros_padding() -> None:
    _, mask, _ = padded_batch([3, 5, 1], vocab_size=50)
    packing = PackedTokens.from_mask(mask)
    x = torch.randn(3, 5, 7)
    packed = packing.pack(x)
    assert packed.shape == (9, 7)
    back = packing.unpack(packed)
    real = mask.bool()
    assert torch.equal(back[real], x[real])
    assert back[~real].abs().max() == 0


@pytest.mark.parametrize("kernel", KERNELS)
def test_unpadded_encoder_matches_transformers(kernel: str) -> None:
    hf, ours = tiny_pair()
    ids, mask, types = padded_batch([7, 3, 12, 1, 9], TINY["vocab_size"], seed=3, pairs=True)
    packing = PackedTokens.from_mask(mask).with_attention(kernel)
    assert_same_outputs(hf, ours, ids, mask, types, packing=packing)


@pytest.mark.parametrize("kernel", KERNELS)
def test_unpadded_encoder_has_the_padded_encoders_gradients(kernel: str) -> None:
    torch.manual_seed(0)
    model = BertModel(BertConfig(**{**TINY, "hidden_dropout_prob": 0.0,
                                    "attention_probs_dropout_prob": 0.0})).train()
    ids, mask, types = padded_batch([7, 3, 12, 1, 9], TINY["vocab_size"], seed=4)
    probe = torch.randn(TINY["hidden_size"])  # a loss whose gradient reaches every parameter
    real = mask.bool()

    def grads(packing: PackedTokens | None) -> dict[str, torch.Tensor]:
        model.zero_grad(set_to_none=True)
        seq, pooled = model(ids, mask, types, packing=packing)
        ((seq[real] @ probe).square().sum() + pooled.sum()).backward()
        return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    padded = grads(None)
    unpadded = grads(PackedTokens.from_mask(mask).with_attention(kernel))
    assert padded.keys() == unpadded.keys()
    assert len(padded) == len(list(model.parameters()))  # the probe reaches every parameter
    # Absolute tolerance from the largest gradient: some are exactly zero in theory (the key
    # bias: softmax ignores a per-query shift) and only rounding noise in practice.
    scale = max(float(g.abs().max()) for g in padded.values())
    for name, grad in padded.items():
        torch.testing.assert_close(unpadded[name], grad, rtol=1e-4, atol=1e-6 * scale, msg=name)


def test_auto_kernel_is_padded_off_cuda_and_fills_the_key_mask_once() -> None:
    _, mask, _ = padded_batch([3, 5, 1], vocab_size=50)
    resolved = PackedTokens.from_mask(mask).for_device(mask, torch.bfloat16, head_dim=64)
    assert resolved.attention == "padded"
    assert resolved.key_mask is not None and resolved.key_mask.shape == (3, 1, 1, 5)
    assert torch.equal(resolved.key_mask[:, 0, 0], mask.bool())
    jagged = PackedTokens.from_mask(mask).with_attention("jagged")
    assert jagged.for_device(mask, torch.float32, head_dim=64).key_mask is None


def test_varlen_kernel_call_has_the_right_shapes_and_gradients_on_the_meta_device() -> None:
    # The flash kernel itself needs CUDA (tests/gpu checks its numbers); the meta device runs
    # the same op's shape functions and autograd, so the call and the backward are checked here.
    torch.manual_seed(0)
    cfg = BertConfig(**{**TINY, "hidden_size": 64, "num_attention_heads": 4})  # head dim 16
    model = BertModel(cfg).to(device="meta", dtype=torch.bfloat16).train()
    ids, mask, types = padded_batch([7, 3, 12, 1], cfg.vocab_size)
    packing = PackedTokens.from_mask(mask).with_attention("varlen").to("meta")
    seq, pooled = model(ids.to("meta"), mask.to("meta"), types.to("meta"), packing=packing)
    assert seq.shape == (4, 12, 64) and pooled.shape == (4, 64)
    (seq.float().sum() + pooled.float().sum()).backward()
    query = model.encoder.layer[0].attention.self.query.weight
    assert query.grad is not None and query.grad.shape == query.shape


def test_an_unpadded_batch_skips_the_packing_and_keeps_the_fused_path() -> None:
    _, ours = tiny_pair()
    ids, mask, types = padded_batch([6, 6], TINY["vocab_size"])
    packing = PackedTokens.from_mask(mask)
    with torch.no_grad():
        plain, _ = ours(ids, mask, types, has_padding=False)
        hinted, _ = ours(ids, mask, types, has_padding=False, packing=packing)
    assert torch.equal(plain, hinted)


def _pair_task(n: int = 6) -> EncodedTask:
    rng = np.random.default_rng(0)
    rows = [rng.integers(5, 90, size=int(k)) for k in rng.integers(2, 9, size=n)]
    rows_b = [rng.integers(5, 90, size=int(k)) for k in rng.integers(2, 9, size=n)]
    return EncodedTask(
        task="sts",
        input_ids=rows,
        token_type_ids=[np.zeros_like(r) for r in rows],
        input_ids_b=rows_b,
        token_type_ids_b=[np.zeros_like(r) for r in rows_b],
        labels=rng.uniform(0, 5, size=n).astype(np.float32),
        ids=[f"id{i}" for i in range(n)],
    )


def test_collate_builds_both_layouts_and_moving_keeps_them() -> None:
    task = _pair_task()
    batch = collate(task, np.arange(6), pad_id=0, pad_to_multiple=8)
    assert batch.packing is not None and batch.packing_b is not None
    assert batch.packing.width == 8 and batch.input_ids.shape[1] == 8
    assert batch.packing.num_tokens + batch.packing_b.num_tokens == batch.real_tokens
    assert torch.equal(batch.packing.token_index,
                       PackedTokens.from_mask(batch.attention_mask).token_index)
    moved = batch.to("cpu")
    assert moved.packing is not None and torch.equal(moved.packing.cu_seqlens,
                                                      batch.packing.cu_seqlens)


@pytest.mark.parametrize("pair_encoding,pooling", [("cross", "cls"), ("sbert", "mean"),
                                                   ("cosine", "pooler")])
def test_multitask_outputs_do_not_depend_on_the_layout(pair_encoding: str, pooling: str) -> None:
    torch.manual_seed(0)
    encoder = BertModel(BertConfig(**{**TINY, "vocab_size": 100}))
    cfg = ModelConfig(pair_encoding=pair_encoding, pooling=pooling)  # type: ignore[arg-type]
    model = MultitaskBert(encoder, cfg).eval()
    task = _pair_task()
    if pair_encoding == "cross":
        task = dataclasses.replace(task, input_ids_b=None, token_type_ids_b=None)
    batch = collate(task, np.arange(6), pad_id=0)
    assert batch.has_padding
    with torch.no_grad():
        unpadded = model(batch)
        model.cfg = dataclasses.replace(cfg, unpadded=False)
        padded = model(batch)
    torch.testing.assert_close(unpadded, padded, rtol=1e-5, atol=1e-6)


def test_hand_built_batch_without_a_packable_mask_uses_the_padded_encoder() -> None:
    ids = torch.tensor([[5, 6, 0], [0, 0, 0]])
    batch = Batch("sst", ids, (ids > 0).long(), torch.zeros_like(ids))
    assert batch.packing is None  # an empty row has no unpadded layout


@pytest.mark.parametrize("sections", [{}, {"smart": {"weight": 1.0, "steps": 1}},
                                      {"model": {"pooling": "mean"}}])
def test_training_steps_are_the_same_with_either_encoder(sections: dict) -> None:
    # Dropout is off in the tiny config, so the two layouts must compute the same training run:
    # the same losses step after step, SMART's adversarial term included.
    from tests.model.tiny_training import (
        make_context,
        synthetic_batches,
        train_plan,
        trainable_config,
    )

    def padded(batch: Batch, row_lengths: list[int]) -> Batch:
        mask = (torch.arange(batch.input_ids.shape[1])[None, :]
                < torch.tensor(row_lengths)[:, None]).long()
        return Batch(batch.task, batch.input_ids * mask, mask, batch.token_type_ids,
                     labels=batch.labels)

    lengths = [6, 3, 5, 2, 6, 4, 3, 6]
    data = {t: [padded(b, lengths) for b in synthetic_batches(t, n_batches=3)]
            for t in ("sst", "para", "sts")}
    plan = [("sst", "para", "sts")] * 6
    runs = {}
    for unpadded in (True, False):
        cfg = trainable_config(**sections)
        cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, unpadded=unpadded))
        runs[unpadded] = train_plan(make_context(cfg, total_steps=len(plan)), plan, data)
    assert runs[True][-1] < runs[True][0]  # it trained
    np.testing.assert_allclose(runs[True], runs[False], rtol=1e-4)


@pytest.mark.integration  # inductor compiles C++ for the CPU: ~20 s, so not in the quick run
@pytest.mark.skipif(not (shutil.which("g++") or shutil.which("c++")), reason="needs C++")
def test_compiled_encoder_matches_eager_in_both_layouts_without_a_recompile_per_shape() -> None:
    import torch._dynamo

    from model.bert import compile_encoder

    torch._dynamo.reset()
    torch.manual_seed(0)
    eager = BertModel(BertConfig(**TINY)).eval()
    compiled = BertModel(BertConfig(**TINY)).eval()
    compiled.load_state_dict(eager.state_dict())
    compile_encoder(compiled)
    before = torch._dynamo.utils.counters["stats"]["unique_graphs"]
    for k, lengths in enumerate(([5, 9, 1, 7], [3, 3, 8], [12, 2, 2, 2, 2])):
        ids, mask, types = padded_batch(lengths, TINY["vocab_size"], seed=k)
        real = mask.bool()
        for packing in (None, PackedTokens.from_mask(mask)):
            with torch.no_grad():
                ref, _ = eager(ids, mask, types, packing=packing)
                out, _ = compiled(ids, mask, types, packing=packing)
            torch.testing.assert_close(out[real], ref[real], rtol=1e-4, atol=1e-5)
    graphs = torch._dynamo.utils.counters["stats"]["unique_graphs"] - before
    assert graphs <= 4, graphs  # per layout: a first static graph, then one dynamic graph
