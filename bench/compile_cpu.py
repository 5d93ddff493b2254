"""Is torch.compile worth it for CPU training here? Times MiniLM training steps (the quickstart
model, SST batches of 32 at the padded lengths a compiled run uses) eager and compiled, in the
config's precision, and prints the compile cost (the first steps' extra time) beside the
steady-state step time, so the break-even step count is a figure, not a guess.

    python bench/compile_cpu.py --steps 60 --precision bf16
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

from model.batching import Batch
from model.bert import COMPILE_PAD_MULTIPLE, compile_encoder
from model.device import autocast_dtype
from model.optim import build_optimizer
from model.step import StepContext, training_step
from model.train import build_model
from orchestrator.config import load_train_config

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "quickstart.yaml"


def batches(steps: int, seed: int = 0) -> list[Batch]:
    """SST batches whose lengths cycle through the multiples of 8 a compiled run pads to."""
    g = torch.Generator().manual_seed(seed)
    lengths = [COMPILE_PAD_MULTIPLE * k for k in (2, 3, 4, 5, 6, 8)]
    out = []
    for i in range(steps):
        ids = torch.randint(1000, 20000, (32, lengths[i % len(lengths)]), generator=g)
        ids[:, 0] = 101
        labels = torch.randint(0, 5, (32,), generator=g)
        out.append(Batch("sst", ids, torch.ones_like(ids), torch.zeros_like(ids), labels=labels))
    return out


def step_times(compiled: bool, precision: str, items: list[Batch]) -> list[float]:
    cfg = load_train_config(CONFIG, (f"precision={precision}",))
    torch.manual_seed(0)
    model, _ = build_model(cfg)
    model.train()
    if compiled:
        compile_encoder(model.encoder)
    device = torch.device("cpu")
    optimizer = build_optimizer(model, cfg, device)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    ctx = StepContext(model, optimizer, scheduler, cfg, device, autocast_dtype(cfg, device), None)
    times = []
    for batch in items:
        start = time.perf_counter()
        training_step(ctx, {"sst": batch})
        times.append(time.perf_counter() - start)
    return times


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--precision", choices=["fp32", "bf16"], default="bf16")
    args = p.parse_args()
    items = batches(args.steps)
    eager = step_times(False, args.precision, items)
    compiled = step_times(True, args.precision, items)
    half = args.steps // 2  # the second half: every length seen, compiled graphs cached
    eager_ms = 1e3 * statistics.median(eager[half:])
    compiled_ms = 1e3 * statistics.median(compiled[half:])
    extra_s = sum(compiled) - sum(eager) - (compiled_ms - eager_ms) / 1e3 * args.steps
    gain = eager_ms / compiled_ms
    print(f"# MiniLM SST steps of 32 on {torch.get_num_threads()} threads, {args.precision}, "
          f"{args.steps} steps (lengths {sorted({b.input_ids.shape[1] for b in items})})")
    print("| variant | median ms/step (2nd half) | total s |")
    print("|---|---:|---:|")
    print(f"| eager | {eager_ms:.1f} | {sum(eager):.1f} |")
    print(f"| compiled | {compiled_ms:.1f} | {sum(compiled):.1f} |")
    print(f"steady-state gain {gain:.2f}x; compile cost ~{extra_s:.0f} s", end="")
    saved = (eager_ms - compiled_ms) / 1e3
    print(f"; break-even after ~{extra_s / saved:.0f} steps" if saved > 0 else "; never pays off")


if __name__ == "__main__":
    main()
