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

__all__ = [
    "autocast_dtype",
    "cpu_bf16_features",
    "device_named",
    "limit_cuda_memory",
    "precision_line",
    "resolve_device",
    "resolved_precision",
]


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


def cpu_bf16_features() -> list[str]:
    """This CPU's instructions that compute bf16 natively, as torch reports them: `avx512_bf16`
    (AMD Zen 4 and later, Intel Cooper Lake) and `amx` (Intel Sapphire Rapids and later). Empty
    elsewhere: there bf16 is emulated and slower than fp32."""
    probes = {"avx512_bf16": "_is_avx512_bf16_supported", "amx": "_is_amx_tile_supported"}
    found = []
    for feature, probe in probes.items():
        check = getattr(torch.cpu, probe, None)  # private torch API: absent means unknown, no
        if check is not None and check():
            found.append(feature)
    return found


def resolved_precision(cfg: TrainConfig, device: torch.device) -> tuple[str, str]:
    """("bf16" or "fp32", why): `precision: auto` is bf16 autocast on CUDA and on a CPU that
    computes bf16 natively (`cpu_bf16_features`), fp32 elsewhere; fp32 and bf16 are as set."""
    if cfg.precision != "auto":
        return cfg.precision, "set in the config"
    if device.type == "cuda":
        return "bf16", "auto: CUDA"
    features = cpu_bf16_features()
    if features:
        return "bf16", f"auto: this CPU computes bf16 natively ({', '.join(features)})"
    return "fp32", "auto: this CPU has no native bf16 (no avx512_bf16 or AMX), so fp32"


def autocast_dtype(cfg: TrainConfig, device: torch.device) -> torch.dtype | None:
    """The dtype training, evaluation and prediction autocast to (`resolved_precision`), or
    None for fp32 (no autocast)."""
    precision, _ = resolved_precision(cfg, device)
    return torch.bfloat16 if precision == "bf16" else None


def precision_line(cfg: TrainConfig, device: torch.device) -> str:
    """What a run says first: its device and the precision it chose, and why."""
    precision, why = resolved_precision(cfg, device)
    return f"device {device}, precision {precision} ({why})"


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
