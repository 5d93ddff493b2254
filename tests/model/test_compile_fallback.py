"""`model.compile: true` never breaks a run: where the compiler cannot build a graph (here: no
working C++ compiler for the CPU backend), the encoder runs eagerly and gives eager's output."""

from __future__ import annotations

import pytest
import torch
import torch._dynamo
import torch._inductor.config as inductor_config

from model.bert import BertConfig, BertModel, compile_encoder


def test_a_compile_that_fails_runs_the_encoder_eagerly(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(inductor_config.cpp, "cxx", ("/nonexistent/g++",))
    monkeypatch.setattr(torch._dynamo.config, "suppress_errors", False)  # restored after
    torch.manual_seed(0)
    config = BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=1,
                        num_attention_heads=2, intermediate_size=64)  # fmt: skip
    model = BertModel(config).eval()
    ids = torch.randint(0, 100, (2, 8))
    try:
        with torch.no_grad():
            eager = model(ids, torch.ones_like(ids))[0]
            compile_encoder(model)
            compiled = model(ids, torch.ones_like(ids))[0]
    finally:
        torch._dynamo.reset()
    assert torch.equal(eager, compiled)
