"""Where a run computes: its device and autocast precision from the config, and sharing one GPU
between several training processes (fractional-GPU sweep trials).

A Ray trial that asks for `resources.gpu: 0.25` shares the card with up to three others; CUDA does
not enforce that share, so each trial caps its own caching allocator at its fraction. The cap
makes a trial that outgrows its share fail with an out-of-memory error of its own instead of
starving its neighbours.
"""

from __future__ import annotations

import torch

from model.config import ConfigError, TrainConfig

__all__ = ["autocast_dtype", "limit_cuda_memory", "resolve_device"]


def resolve_device(cfg: TrainConfig) -> torch.device:
    if cfg.device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("config key 'device' is cuda, but torch sees no CUDA device here")
    if cfg.device == "cuda" or (cfg.device == "auto" and torch.cuda.is_available()):
        return torch.device("cuda")
    return torch.device("cpu")


def autocast_dtype(cfg: TrainConfig, device: torch.device) -> torch.dtype | None:
    """bf16 autocast on CUDA unless fp32 is asked for; CPU bf16 only when asked explicitly."""
    if cfg.precision == "fp32":
        return None
    if cfg.precision == "bf16" or device.type == "cuda":
        return torch.bfloat16
    return None


def limit_cuda_memory(fraction: float, device: int | torch.device | None = None) -> bool:
    """Cap this process's CUDA allocations at `fraction` of the device's memory; False on CPU.

    Call it before the first CUDA allocation of the process (e.g. first thing in a trial).
    A fraction of 1.0 (a whole GPU) leaves the allocator unlimited.
    """
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"GPU memory fraction must be in (0, 1], got {fraction}")
    if not torch.cuda.is_available():
        return False
    if fraction < 1.0:
        torch.cuda.set_per_process_memory_fraction(fraction, device)
    return True
