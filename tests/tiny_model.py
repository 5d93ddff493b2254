"""The tiny random BERT shared by the test helpers: fast on CPU, nothing downloaded."""

from __future__ import annotations

from typing import Any

# `model` config keys: random init with these shapes instead of a checkpoint's weights.
TINY_ARCHITECTURE: dict[str, Any] = {
    "random_init": True,
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "intermediate_size": 64,
}
