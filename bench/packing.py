"""Aggregate training throughput of 1, 2 and 4 concurrent MiniLM trainings sharing one GPU.

Each trial is its own process (as a fractional-GPU Ray trial is), caps its CUDA memory at its
share with `model.device.limit_cuda_memory(1 / N)`, trains the real data mix with the trainer's
step on bucketed batches of the sweep's usual size, and starts timing at a common barrier.
Aggregate = all processes' real tokens / the slowest process's time.

    python bench/packing.py --model-dir .gpu/minilm --procs 1 2 4 --steps 300
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import queue
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--procs", type=int, nargs="+", default=[1, 2, 4])
    p.add_argument("--steps", type=int, default=300, help="timed steps per process")
    p.add_argument("--warmup", type=int, default=20)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--token-budget", type=int, default=None)
    p.add_argument("--model-dir", default=None, help="MiniLM directory (default: the package)")
    p.add_argument("--data-dir", type=Path, default=None)
    p.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    return p.parse_args(argv)


def trial_config(args: argparse.Namespace, cache_dir: str, seed: int):
    from model.config import TrainConfig, build_config

    raw = {
        "model": {"name": args.model_dir or "minilm"},
        "data": {"batch_size": args.batch_size, "token_budget": args.token_budget,
                 "cache_dir": cache_dir, "dev_max_examples": {"sst": 8, "para": 8, "sts": 8}},
        "optim": {"warmup_ratio": 0.0},
        "device": args.device,
        "seed": seed,
    }
    return build_config(TrainConfig, raw)


def worker(rank: int, n: int, args: argparse.Namespace, cache_dir: str, barrier, results) -> None:
    """One trial: limit memory, build model and batches, warm up, wait, time `steps` steps."""
    warnings.filterwarnings("ignore")
    import torch

    from model.batching import TaskBatches
    from model.data_dir import default_data_dir
    from model.device import limit_cuda_memory
    from model.step import StepContext, training_step
    from model.task_data import load_task_data
    from model.train import autocast_dtype, build_model, build_optimizer, seed_everything

    fraction = 1.0 / n
    limit_cuda_memory(fraction)
    if args.device == "cpu":
        # As a Ray trial with its share of the CPUs: N processes with every core's threads each
        # would oversubscribe the cores and measure the contention instead.
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // n))
    cfg = trial_config(args, cache_dir, seed=rank)
    seed_everything(rank)
    device = torch.device(args.device)
    model, model_dir = build_model(cfg)
    model.to(device).train()
    data = load_task_data(cfg, args.data_dir or default_data_dir(), model_dir)
    optimizer = build_optimizer(model, cfg, device)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    ctx = StepContext(model, optimizer, scheduler, cfg, device, autocast_dtype(cfg, device), None)
    streams = [TaskBatches(enc, cfg, data.pad_id, seed=rank * 7 + i)
               for i, enc in enumerate(data.train.values())]

    def steps(count: int) -> tuple[int, int]:
        tokens = examples = 0
        for k in range(count):
            batch = streams[k % len(streams)].next()
            if device.type == "cuda":
                batch = batch.pin_memory().to(device, non_blocking=True)
            training_step(ctx, {batch.task: batch})
            tokens += int(batch.real_tokens or 0)
            examples += batch.size
        return tokens, examples

    steps(args.warmup)
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    barrier.wait()
    start = time.perf_counter()
    tokens, examples = steps(args.steps)
    if device.type == "cuda":
        torch.cuda.synchronize()
    elapsed = time.perf_counter() - start
    peak = torch.cuda.max_memory_allocated() if device.type == "cuda" else 0
    total = torch.cuda.get_device_properties(0).total_memory if device.type == "cuda" else 0
    results.put({"rank": rank, "tokens": tokens, "examples": examples, "seconds": elapsed,
                 "peak_gib": peak / 2**30, "cap_gib": fraction * total / 2**30})


def run(n: int, args: argparse.Namespace, cache_dir: str) -> dict[str, Any]:
    ctx = mp.get_context("spawn")  # CUDA cannot be forked
    barrier, results = ctx.Barrier(n), ctx.Queue()
    procs = [ctx.Process(target=worker, args=(r, n, args, cache_dir, barrier, results))
             for r in range(n)]
    for p in procs:
        p.start()
    rows: list[dict[str, Any]] = []
    while len(rows) < n:
        try:
            rows.append(results.get(timeout=5))
        except queue.Empty:
            dead = [p.exitcode for p in procs if p.exitcode not in (None, 0)]
            if dead:
                for p in procs:
                    p.kill()
                raise RuntimeError(f"a packing worker failed (exit codes {dead})") from None
    for p in procs:
        p.join()
    slowest = max(r["seconds"] for r in rows)
    return {
        "procs": n,
        "tokens_per_s": sum(r["tokens"] for r in rows) / slowest,
        "examples_per_s": sum(r["examples"] for r in rows) / slowest,
        "per_proc_tokens_per_s": [r["tokens"] / r["seconds"] for r in rows],
        "peak_gib": max(r["peak_gib"] for r in rows),
        "cap_gib": rows[0]["cap_gib"],
    }


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="packing-cache-") as cache_dir:
        # Tokenize once here; every trial process then reads the shared token cache.
        from model.data_dir import default_data_dir
        from model.task_data import load_task_data
        from model.train import build_model

        warnings.filterwarnings("ignore")
        cfg = trial_config(args, cache_dir, seed=0)
        _, model_dir = build_model(cfg)
        load_task_data(cfg, args.data_dir or default_data_dir(), model_dir)
        table = [run(n, args, cache_dir) for n in args.procs]
    base = table[0]["tokens_per_s"]
    unit = f"{args.token_budget} tokens" if args.token_budget else f"{args.batch_size} examples"
    print(f"\n## Packing: MiniLM trials sharing one GPU ({args.steps} steps each, batches of "
          f"{unit})")
    print("| processes | aggregate real tok/s | examples/s | x one trial | per-process tok/s | "
          "memory cap / peak per process (GiB) |")
    print("|---:|---:|---:|---:|---|---:|")
    for row in table:
        per = ", ".join(f"{x:,.0f}" for x in row["per_proc_tokens_per_s"])
        print(f"| {row['procs']} | {row['tokens_per_s']:,.0f} | {row['examples_per_s']:,.0f} | "
              f"{row['tokens_per_s'] / base:.2f}x | {per} | "
              f"{row['cap_gib']:.1f} / {row['peak_gib']:.2f} |")
    return table


if __name__ == "__main__":
    main()
