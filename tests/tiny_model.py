"""The tiny random BERT shared by the test helpers: fast on CPU, nothing downloaded."""

from __future__ import annotations

from typing import Any

from model.config import TrainConfig, build_config, merge

# `model` config keys: random init with these shapes instead of a checkpoint's weights.
TINY_ARCHITECTURE: dict[str, Any] = {
    "random_init": True,
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "intermediate_size": 64,
}
# The tiny model on CPU in fp32 (every other key at its default): deterministic and quick.
TINY: dict[str, Any] = {
    "model": {**TINY_ARCHITECTURE, "max_length": 32},
    "device": "cpu",
    "precision": "fp32",
}


def tiny_config(seed: int = 0, **sections: Any) -> TrainConfig:
    """The tiny config with `sections` (e.g. `optim={"lr": 1e-3}`) merged over it."""
    return build_config(TrainConfig, merge(merge(TINY, {"seed": seed}), sections))
