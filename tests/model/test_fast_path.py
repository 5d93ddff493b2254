"""CPU-side pieces of the fast path: padding to a multiple, prefetch, the has_padding hint."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import torch

from model.batching import Batch, collate, prefetch
from model.config import ModelConfig
from model.data import EncodedTask
from model.device import limit_cuda_memory
from model.heads import MultitaskBert
from model.weights import load_encoder, resolve_model_dir


def encoded(lengths: list[int], seed: int = 0) -> EncodedTask:
    rng = np.random.default_rng(seed)
    rows = [rng.integers(1, 99, n).astype(np.int32) for n in lengths]
    types = [np.zeros(n, np.int32) for n in lengths]
    return EncodedTask("sst", [str(i) for i in range(len(rows))], None, rows, types)


def test_collate_pads_rows_in_order_and_rounds_the_width_up() -> None:
    enc = encoded([5, 1, 9, 3])
    batch = collate(enc, np.array([2, 0, 1]), pad_id=0, pad_to_multiple=8)
    assert batch.input_ids.shape == (3, 16)
    for row, i in enumerate([2, 0, 1]):
        n = len(enc.input_ids[i])
        assert batch.input_ids[row, :n].tolist() == enc.input_ids[i].tolist()
        assert batch.input_ids[row, n:].eq(0).all()
        assert batch.attention_mask[row].sum() == n
    assert (batch.real_tokens, batch.padded_tokens, batch.has_padding) == (15, 48, True)
    exact = collate(enc, np.array([2]), pad_id=0)
    assert exact.input_ids.shape == (1, 9) and exact.has_padding is False
    with pytest.raises(ValueError, match="pad_to_multiple"):
        collate(enc, np.array([0]), pad_id=0, pad_to_multiple=0)


def test_prefetch_yields_everything_in_order_ahead_of_the_consumer() -> None:
    produced: list[int] = []

    def slow_source():
        for i in range(6):
            produced.append(i)
            yield i

    stream = prefetch(slow_source(), depth=2)
    assert next(stream) == 0
    time.sleep(0.2)
    assert len(produced) >= 3  # items 1 and 2 were made while we were away
    assert list(stream) == [1, 2, 3, 4, 5]


def test_prefetch_reraises_producer_errors_and_stops_when_closed() -> None:
    def failing():
        yield 1
        raise KeyError("bad row")

    stream = prefetch(failing())
    assert next(stream) == 1
    with pytest.raises(KeyError, match="bad row"):
        next(stream)

    before = threading.active_count()
    endless = prefetch(iter(range(10**9)), depth=1)
    next(endless)
    endless.close()  # what a `break` in the training loop does
    assert threading.active_count() <= before


def test_multitask_model_passes_the_batch_padding_hint_to_attention() -> None:
    torch.manual_seed(0)
    overrides = {
        "hidden_size": 32,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "intermediate_size": 64,
    }
    encoder, _ = load_encoder(resolve_model_dir("minilm"), random_init=True, overrides=overrides)
    model = MultitaskBert(encoder, ModelConfig(pooling="mean")).eval()
    ids = torch.randint(1, 1000, (2, 7))
    mask = torch.tensor([[1] * 7, [1] * 4 + [0] * 3])
    batch = Batch("sst", ids * mask, mask, torch.zeros_like(ids))
    assert batch.has_padding is True
    with torch.no_grad():
        honest = model(batch)
        # A (false) promise of no padding drops the mask: only visible if the hint arrives.
        lied = model(Batch("sst", ids * mask, mask, torch.zeros_like(ids), has_padding=False))
    torch.testing.assert_close(honest[0], lied[0])  # the unpadded row is unaffected
    assert (honest[1] - lied[1]).abs().max() > 1e-4


def test_limit_cuda_memory_checks_the_fraction() -> None:
    with pytest.raises(ValueError, match="fraction"):
        limit_cuda_memory(0.0)
    with pytest.raises(ValueError, match="fraction"):
        limit_cuda_memory(1.5)
    if not torch.cuda.is_available():
        assert limit_cuda_memory(0.25) is False


def test_progress_bar_mutes_torch_warnings_only_while_it_is_shown() -> None:
    import warnings

    from model.progress import TrainingProgress

    before = list(warnings.filters)
    with TrainingProgress(True, total=3, done=0) as bar:
        bar.advance(1)
        assert ("ignore", None, UserWarning) == warnings.filters[0][:3]
    assert warnings.filters == before
    with TrainingProgress(False, total=3, done=0):
        assert warnings.filters == before


def test_cpu_optimizer_is_fused_and_takes_the_same_step_as_torchs_loop() -> None:
    from model.optim import build_optimizer
    from tests.model.tiny_training import make_context, trainable_config

    cfg = trainable_config()
    model = make_context(cfg, total_steps=1).model
    fused = build_optimizer(model, cfg, torch.device("cpu"))
    assert fused.defaults["fused"]
    reference_model = MultitaskBert(model.encoder.__class__(model.encoder.config), cfg.model)
    reference_model.load_state_dict(model.state_dict())
    reference = build_optimizer(reference_model, cfg, torch.device("cpu"))
    for group in reference.param_groups:
        group["fused"], group["foreach"] = False, False  # torch's per-tensor loop
    for m in (model, reference_model):
        for i, p in enumerate(m.parameters()):
            p.grad = torch.full_like(p, 0.01 * (i % 7 - 3))
    for _ in range(3):
        fused.step()
        reference.step()
    for (name, p), q in zip(model.named_parameters(), reference_model.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-7, msg=name)
    assert any(not torch.equal(p, q0) for p, q0 in
               zip(model.parameters(), make_context(cfg, 1).model.parameters(), strict=True))
