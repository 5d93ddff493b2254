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

__all__ = ["autocast_dtype", "device_named", "limit_cuda_memory", "resolve_device"]


def resolve_device(cfg: TrainConfig) -> torch.device:
    """The device of the config's `device` key (auto: CUDA where torch sees one)."""
    return device_named(cfg.device, "config key 'device'")


def device_named(name: str, what: str) -> torch.device:
    """`auto`, `cpu`, `cuda` or `cuda:N` as a torch device; ConfigError naming `what` (the key
    or option it came from) for another name, or for CUDA where torch sees none."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        device = None
    if device is None or device.type not in ("cpu", "cuda"):
        raise ConfigError(f"{what} is {name}: not a device (use cpu or cuda)")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"{what} is {name}, but torch sees no CUDA device here")
    return device


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
