"""Training / evaluation throughput of minBERT against a plain `transformers` BERT loop.

One run, the same examples for every variant, timed in interleaved rounds (so a noisy machine
slows every variant alike):
  * minBERT: `model.step.training_step` on the trainer's length-bucketed batches (token budget
    when set), and on random batches; with its default unpadded encoder (per-token layers on real
    tokens only) and with the padded one (`model.unpadded: false`), same weights and optimizer;
  * transformers: `BertModel` (SDPA attention, same weights and heads, torch AdamW) on random
    batches padded to their own longest row, and on the identical bucketed batches;
  * the step-time ratio of SMART (K = 1) and PCGrad (3 tasks) against the plain 3-task step;
  * padding overhead (padded / real tokens) of random vs bucketed batches over the full real
    training data; MFU (6 x non-embedding parameters FLOPs per token); peak CUDA memory;
    evaluation examples/s (inference mode, large bucketed batches, all dev sets);
  * the plain minBERT step's GFLOP/s against this machine's own matmul peak in fp32 and in bf16
    autocast, measured at the end of the same run by a probe: the encoder's FFN-sized linear
    layer ([real tokens of a step x hidden] @ [hidden x intermediate], forward and backward).

    python bench/throughput.py --device cpu --model minilm               # 2 cores, 4 batches/task
    python bench/throughput.py --device cuda --model bert-base --compile   # H100, bf16
    python bench/throughput.py --device cuda --model minilm --model-dir .gpu/minilm
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from model.batching import Batch, batch_indices, collate  # noqa: E402
from model.bert import COMPILE_PAD_MULTIPLE, compile_encoder  # noqa: E402
from model.config import TASKS, TrainConfig, build_config  # noqa: E402
from model.data import EncodedTask, encode_task, read_task_file  # noqa: E402
from model.data_dir import default_data_dir  # noqa: E402
from model.evaluate import predict_task  # noqa: E402
from model.losses import task_loss  # noqa: E402
from model.step import StepContext, training_step  # noqa: E402
from model.task_data import load_task_data, resolve_data_path, task_file  # noqa: E402
from model.tokenizer import load_tokenizer  # noqa: E402
from model.train import (  # noqa: E402
    autocast_dtype,
    build_model,
    build_optimizer,
    seed_everything,
)

BERT_BASE = {
    "hidden_size": 768,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "intermediate_size": 3072,
}
H100_BF16_DENSE_TFLOPS = 989.0


# ---------------------------------------------------------------------------------------------
# Set-up


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--model", choices=["bert-base", "minilm"], default="minilm")
    p.add_argument("--model-dir", default=None, help="MiniLM directory (default: the package)")
    p.add_argument("--data-dir", type=Path, default=None)
    p.add_argument("--steps", type=int, default=None, help="timed steps per variant and round "
                   "(default: one full pass over the examples)")
    p.add_argument("--rounds", type=int, default=3, help="interleaved timed rounds")
    p.add_argument("--examples", type=int, default=None,
                   help="training examples per task to batch (default: all)")
    p.add_argument("--batches-per-task", type=int, default=None,
                   help="time this many of each task's batches, spread evenly over the length "
                   "range, so their padding is the full data's (default: all on cuda, 4 on cpu)")
    p.add_argument("--eval-examples", type=int, default=None,
                   help="dev examples per task (default: all on cuda, 128 on cpu)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--token-budget", type=int, default=None,
                   help="padded tokens per batch (default: 16384 on cuda, none on cpu)")
    p.add_argument("--cost-token-budget", type=int, default=None,
                   help="token budget of the SMART / PCGrad steps (default: --token-budget)")
    p.add_argument("--eval-batch-size", type=int, default=None)
    p.add_argument("--max-length", type=int, default=128)
    p.add_argument("--precision", choices=["auto", "fp32", "bf16"], default="auto")
    p.add_argument("--compile", action="store_true", help="also time a torch.compile'd minBERT")
    p.add_argument("--no-hf", action="store_true", help="skip the transformers loop")
    p.add_argument("--no-cudnn-attention", action="store_true",
                   help="keep SDPA off its cuDNN kernel (masked batches then use mem-efficient)")
    p.add_argument("--peak-tflops", type=float, default=H100_BF16_DENSE_TFLOPS)
    p.add_argument("--probe-seconds", type=float, default=0.3,
                   help="seconds of the matmul peak probe in each precision")
    p.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = p.parse_args(argv)
    cuda = args.device == "cuda"
    if cuda and not torch.cuda.is_available():
        p.error("--device cuda: CUDA is not available")
    if args.token_budget is None and cuda:
        args.token_budget = 16384
    if args.batches_per_task is None and not cuda:
        args.batches_per_task = 4
    if args.eval_examples is None and not cuda:
        args.eval_examples = 128
    if args.eval_batch_size is None:
        args.eval_batch_size = 1024 if cuda else 128
    return args


def bench_config(args: argparse.Namespace) -> TrainConfig:
    model: dict[str, Any] = {"name": args.model_dir or "minilm", "max_length": args.max_length}
    if args.model == "bert-base":
        model.update(random_init=True, **BERT_BASE)  # timing does not need real weights
    data = {
        "batch_size": args.batch_size,
        "token_budget": args.token_budget,
        "eval_batch_size": args.eval_batch_size,
        "max_examples": {t: args.examples for t in TASKS},
        "dev_max_examples": {t: args.eval_examples for t in TASKS},
    }
    raw = {
        "model": model,
        "data": data,
        "optim": {"warmup_ratio": 0.0},
        "device": args.device,
        "precision": args.precision,
    }
    return build_config(TrainConfig, raw)


def full_training_lengths(cfg: TrainConfig, data_dir: Path, model_dir: Path) -> dict[str, Any]:
    """Token lengths of every training example (no subsampling), for the padding table."""
    tokenizer = load_tokenizer(model_dir, cfg.model.max_length)
    lengths = {}
    for task in TASKS:
        path = resolve_data_path(data_dir, task_file(cfg, task, "train"))
        examples = read_task_file(task, path)
        encoded = encode_task(task, examples, tokenizer, cfg.model.encoding_for(task))
        lengths[task] = encoded.lengths
    return lengths


def padding_table(lengths: dict[str, np.ndarray], cfg: TrainConfig) -> list[tuple[str, float]]:
    """Padded / real tokens over all tasks' training data for several batching schemes."""
    bs, budget = cfg.data.batch_size, cfg.data.token_budget

    def overhead(bucketing: bool, token_budget: int | None, multiple: int = 1) -> float:
        real = padded = 0
        for lens in lengths.values():
            for idx in batch_indices(lens, bs, bucketing=bucketing, shuffle=True, seed=1,
                                     token_budget=token_budget):
                width = -(-int(lens[idx].max()) // multiple) * multiple
                real += int(lens[idx].sum())
                padded += width * len(idx)
        return padded / real

    rows = [
        (f"random batches of {bs}", overhead(False, None)),
        (f"bucketed batches of {bs}", overhead(True, None)),
    ]
    if budget is not None:
        rows.append((f"bucketed, token budget {budget}", overhead(True, budget)))
        rows.append((f"bucketed, budget {budget}, T rounded to {COMPILE_PAD_MULTIPLE}",
                     overhead(True, budget, COMPILE_PAD_MULTIPLE)))
    return rows


def make_batches(
    train: dict[str, EncodedTask], cfg: TrainConfig, per_task: int | None
) -> dict[str, dict[str, list[np.ndarray]]]:
    """Index sets: the trainer's bucketed batches and random batches of the same examples.

    With `per_task`, each task keeps that many of its bucketed batches, one from the middle of
    each stratum of the length-sorted list (short to long), so they carry about the full data's
    padding; the random batches then split the same examples into as many batches.
    """
    out: dict[str, dict[str, list[np.ndarray]]] = {"bucketed": {}, "random": {}, "random32": {}}
    for i, (task, enc) in enumerate(train.items()):
        bucketed = batch_indices(enc.lengths, cfg.data.batch_size, bucketing=True, shuffle=True,
                                 seed=11 + i, token_budget=cfg.data.token_budget)
        lengths = enc.lengths
        if per_task is not None and per_task < len(bucketed):
            by_length = sorted(bucketed, key=lambda idx: int(lengths[idx].max()))
            # The middle of each of per_task equal strata: the extremes (a pool's longest batch
            # spans the long tail) would be over-represented by evenly spaced end points.
            picks = ((np.arange(per_task) + 0.5) * len(by_length) / per_task).astype(int)
            bucketed = [by_length[k] for k in picks]
            np.random.default_rng(11 + i).shuffle(bucketed)  # type: ignore[arg-type]
        chosen = np.concatenate(bucketed)
        per_batch = -(-len(chosen) // len(bucketed))  # same number of steps, same examples
        shuffled = np.random.default_rng(11 + i).permutation(chosen)
        out["bucketed"][task] = bucketed
        out["random"][task] = [shuffled[k : k + per_batch]
                               for k in range(0, len(shuffled), per_batch)]
        out["random32"][task] = [shuffled[k : k + 32] for k in range(0, len(shuffled), 32)]
    return out


def round_robin(per_task: dict[str, list[Batch]]) -> list[Batch]:
    """Alternate tasks (sst, para, sts, sst, ...) until every batch is used once."""
    out, k = [], 0
    while any(k < len(b) for b in per_task.values()):
        out.extend(b[k] for b in per_task.values() if k < len(b))
        k += 1
    return out


def to_device(batches: list[Batch], device: torch.device) -> list[Batch]:
    if device.type == "cuda":
        return [b.pin_memory().to(device, non_blocking=True) for b in batches]
    return batches


# ---------------------------------------------------------------------------------------------
# Timing


@dataclass
class Variant:
    """One way of training on a list of step inputs; accumulates timed blocks."""

    name: str
    step: Callable[[Any], Any]
    items: list[Any]
    real_tokens: list[int]
    examples: list[int]
    group: str
    pos: int = 0
    seconds: list[float] = field(default_factory=list)
    tokens: int = 0
    n_examples: int = 0
    steps: int = 0
    peak_bytes: int = 0
    resident_bytes: int = 0
    error: str | None = None

    def run(self, n: int, device: torch.device, timed: bool = True) -> None:
        if self.error:
            return
        cuda = device.type == "cuda"
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            resident = torch.cuda.memory_allocated()
        tokens = examples = 0
        start = time.perf_counter()
        try:
            for _ in range(n):
                k = self.pos % len(self.items)
                self.step(self.items[k])
                tokens += self.real_tokens[k]
                examples += self.examples[k]
                self.pos += 1
            if cuda:
                torch.cuda.synchronize()
        except torch.OutOfMemoryError:
            self.error = "CUDA out of memory"
            torch.cuda.empty_cache()
            return
        except Exception as err:  # one broken variant must not cost the whole (GPU) run
            self.error = f"failed: {type(err).__name__}: {str(err).splitlines()[0][:80]}"
            print(f"# {self.name}: {self.error}", flush=True)
            return
        elapsed = time.perf_counter() - start
        if timed:
            self.seconds.append(elapsed)
            self.tokens += tokens
            self.n_examples += examples
            self.steps += n
            if cuda:
                self.peak_bytes = max(self.peak_bytes, torch.cuda.max_memory_allocated())
                self.resident_bytes = resident

    @property
    def total_seconds(self) -> float:
        return sum(self.seconds)

    def tokens_per_s(self) -> float:
        return self.tokens / self.total_seconds if self.seconds else float("nan")

    def step_ms(self) -> float:
        return 1e3 * self.total_seconds / self.steps if self.steps else float("nan")

    def spread(self) -> float:
        """(slowest - fastest) / fastest round: how noisy the machine was."""
        s = self.seconds
        return (max(s) - min(s)) / min(s) if len(s) > 1 else 0.0


def run_rounds(variants: list[Variant], args: argparse.Namespace, device: torch.device) -> None:
    """One warm-up block, then `rounds` timed blocks, variants interleaved in every round."""
    for v in variants:
        warm = len(v.items) if device.type == "cuda" else min(3, len(v.items))
        v.run(warm, device, timed=False)
        v.pos = 0
    for _ in range(args.rounds):
        for v in variants:
            v.run(args.steps or len(v.items), device)


# ---------------------------------------------------------------------------------------------
# The two training loops


def minbert_context(model, cfg: TrainConfig, device: torch.device) -> StepContext:
    optimizer = build_optimizer(model, cfg, device)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    return StepContext(model, optimizer, scheduler, cfg, device, autocast_dtype(cfg, device), None)


def hf_loop(model, cfg: TrainConfig, device: torch.device) -> tuple[Callable, Any]:
    """A plain transformers training step: BertModel (SDPA) + the same heads and losses."""
    import transformers

    enc_cfg = model.encoder.config.to_dict()
    hf_cfg = transformers.BertConfig(**enc_cfg, attn_implementation="sdpa")
    hf = transformers.BertModel(hf_cfg, add_pooling_layer=True)
    missing, unexpected = hf.load_state_dict(model.encoder.state_dict(), strict=False)
    if unexpected or [k for k in missing if not k.endswith(("position_ids", "token_type_ids"))]:
        raise RuntimeError(f"weights do not map onto transformers: {missing} {unexpected}")
    heads = torch.nn.ModuleDict(
        {t: copy.deepcopy(model.task_head(t)) for t in TASKS}
    )  # cross-encoded pair heads read the [CLS] vector, like ours
    hf.to(device).train()
    heads.to(device).train()
    params = [*hf.parameters(), *heads.parameters()]
    optimizer = torch.optim.AdamW(params, lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay)
    amp = autocast_dtype(cfg, device)

    def step(batch: Batch) -> torch.Tensor:
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=amp or torch.float32, enabled=amp is not None):
            hidden = hf(
                input_ids=batch.input_ids,
                attention_mask=batch.attention_mask,
                token_type_ids=batch.token_type_ids,
            ).last_hidden_state
            output = heads[batch.task](hidden[:, 0])
            loss = task_loss(batch.task, output, batch.labels, cfg.loss)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, cfg.optim.grad_clip or float("inf"))
        optimizer.step()
        return loss.detach()

    return step, hf


def equivalence_check(model, hf, batch: Batch) -> float:
    """max |minBERT - transformers| of the encoder output on real tokens, fp32, eval mode; the
    larger of minBERT's padded and unpadded encoders."""
    model.eval()
    hf.eval()
    with torch.no_grad():
        padded, _ = model.encoder(batch.input_ids, batch.attention_mask, batch.token_type_ids)
        unpadded, _ = model.encoder(batch.input_ids, batch.attention_mask, batch.token_type_ids,
                                    packing=batch.packing)
        ref = hf(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                 token_type_ids=batch.token_type_ids).last_hidden_state
    model.train()
    hf.train()
    real = batch.attention_mask.bool()
    return max(float((ours[real].float() - ref[real].float()).abs().max())
               for ours in (padded, unpadded))


def flops_per_token(model) -> float:
    """6 x parameters outside the embeddings (forward + backward matmuls), attention excluded."""
    n = sum(p.numel() for name, p in model.named_parameters()
            if not name.startswith("encoder.embeddings."))
    return 6.0 * n


# ---------------------------------------------------------------------------------------------
# This machine's matmul peak


def matmul_probe(
    device: torch.device, tokens: int, hidden: int, intermediate: int, bf16: bool, seconds: float
) -> float:
    """GFLOP/s of the best iteration of a [tokens x hidden] @ [hidden x intermediate] linear
    layer, forward and backward (three matmuls of 2 x T x H x I FLOPs), in fp32 or under bf16
    autocast: what this machine's matmul kernels reach at the step's own shapes, so that the
    step's GFLOP/s reads as a share of an attainable figure rather than of a datasheet's."""
    gen = torch.Generator(device=device).manual_seed(0)
    x = torch.randn(tokens, hidden, device=device, generator=gen, requires_grad=True)
    layer = torch.nn.Linear(hidden, intermediate, bias=False).to(device)
    flops = 3 * 2 * tokens * hidden * intermediate

    def once() -> float:
        start = time.perf_counter()
        x.grad = layer.weight.grad = None  # no accumulation: the matmuls only
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            y = layer(x)
        y.backward(torch.ones_like(y))
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - start

    once()
    once()  # warm-up: oneDNN / cuBLAS pick their kernels on the first calls
    best, end = float("inf"), time.perf_counter() + seconds
    while time.perf_counter() < end:
        best = min(best, once())
    return flops / best / 1e9


def render_matmul_peak(model, step: Variant, cfg: TrainConfig, device: torch.device, fpt: float,
                       args: argparse.Namespace) -> dict[str, Any]:
    """Probe the matmul peak in fp32 and bf16 autocast at the step's mean real tokens, print the
    plain minBERT step's GFLOP/s as a share of each; the figures for the JSON report."""
    enc = model.encoder.config
    hidden, intermediate = enc.hidden_size, enc.intermediate_size
    tokens = round(step.tokens / step.steps) if step.steps else 4096
    peaks = {name: matmul_probe(device, tokens, hidden, intermediate, name == "bf16",
                                args.probe_seconds) for name in ("fp32", "bf16")}
    chip = "GPU" if device.type == "cuda" else "CPU"
    print(f"\n## Training step against this {chip}'s matmul peak (probe: [{tokens} x {hidden}] @ "
          f"[{hidden} x {intermediate}] forward + backward, best iteration of "
          f"{args.probe_seconds:g} s, same run)")
    print("| precision | matmul peak GFLOP/s |\n|---|---:|")
    for name, peak in peaks.items():
        print(f"| {name}{' autocast' if name == 'bf16' else ''} | {peak:,.1f} |")
    out: dict[str, Any] = {"tokens": tokens, "peak_gflops": peaks}
    if step.error or not step.seconds:
        print(f"({step.name}: {step.error or 'not timed'}; no step GFLOP/s)")
        return out
    own = "bf16" if autocast_dtype(cfg, device) == torch.bfloat16 else "fp32"
    gflops = step.tokens_per_s() * fpt / 1e9
    for name in (own, *(p for p in peaks if p != own)):
        note = " (the step's own precision)" if name == own else ""
        print(f"step {gflops:,.1f} GFLOP/s = {100 * gflops / peaks[name]:.1f}% of this {chip}'s "
              f"{name} matmul peak {peaks[name]:,.1f} GFLOP/s{note}")
    print(f"(step: `{step.name}`, real tokens/s x {fpt / 1e9:.3f} GFLOP/token, i.e. 6 x the "
          f"parameters outside the embeddings; attention's own FLOPs are not counted)")
    out |= {"step_gflops": gflops, "step_precision": own,
            "step_fraction_of_peak": {p: gflops / g for p, g in peaks.items()}}
    return out


# ---------------------------------------------------------------------------------------------
# Main


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    warnings.filterwarnings("ignore")
    device = torch.device(args.device)
    if args.no_cudnn_attention:
        torch.backends.cuda.enable_cudnn_sdp(False)
    cfg = bench_config(args)
    data_dir = args.data_dir or default_data_dir()
    seed_everything(0)
    model, model_dir = build_model(cfg)
    model.to(device).train()
    data = load_task_data(cfg, data_dir, model_dir)
    pad = data.pad_id
    fpt = flops_per_token(model)
    cuda = device.type == "cuda"
    print(f"# {args.model} on {torch.cuda.get_device_name() if cuda else 'cpu'} "
          f"({torch.get_num_threads()} threads), torch {torch.__version__}, "
          f"autocast {autocast_dtype(cfg, device)}, {fpt / 1e9:.3f} GFLOP/token, "
          f"token budget {cfg.data.token_budget}, cuDNN attention {not args.no_cudnn_attention}, "
          f"train examples {sum(len(e) for e in data.train.values())}", flush=True)

    index_sets = make_batches(data.train, cfg, args.batches_per_task)

    def batches(kind: str, multiple: int = 1) -> list[Batch]:
        per_task = {t: [collate(data.train[t], idx, pad, pad_to_multiple=multiple)
                        for idx in index_sets[kind][t]] for t in data.train}
        return to_device(round_robin(per_task), device)

    bucketed, random_b = batches("bucketed"), batches("random")

    def variant(name: str, step: Callable, items: list[Batch], group: str) -> Variant:
        return Variant(name, step, items, [int(b.real_tokens or 0) for b in items],
                       [b.size for b in items], group)

    ctx = minbert_context(model, cfg, device)
    plain = lambda b: training_step(ctx, {b.task: b})  # noqa: E731
    # The same model, optimizer and weights with the padded encoder (model.unpadded: false).
    padded_cfg = dataclasses.replace(model.cfg, unpadded=False)
    unpadded_cfg = dataclasses.replace(model.cfg, unpadded=True)

    def padded_encoder(b: Batch) -> torch.Tensor:
        model.cfg = padded_cfg
        try:
            return training_step(ctx, {b.task: b})
        finally:
            model.cfg = unpadded_cfg

    model.cfg = unpadded_cfg
    variants = [
        variant("minBERT, bucketed (trainer batches)", plain, bucketed, "train"),
        variant("minBERT, random batches", plain, random_b, "train"),
        variant("minBERT padded encoder, bucketed", padded_encoder, bucketed, "train"),
        variant("minBERT padded encoder, random batches", padded_encoder, random_b, "train"),
    ]
    if cuda:  # the public nested-tensor route to the same kernels, for its Python overhead
        jagged = [dataclasses.replace(
            b, packing=b.packing and b.packing.with_attention("jagged"),
            packing_b=b.packing_b and b.packing_b.with_attention("jagged")) for b in bucketed]
        variants.append(variant("minBERT, bucketed, jagged nested-tensor attention", plain,
                                jagged, "train"))
    hf_equiv = None
    if not args.no_hf:
        hf_step, hf = hf_loop(model, cfg, device)
        hf_equiv = equivalence_check(model, hf, bucketed[0])  # before any step: same weights
        variants += [
            variant("transformers, random batches (padded per batch)", hf_step, random_b, "train"),
            variant("transformers, identical bucketed batches", hf_step, bucketed, "train"),
        ]
        if cfg.data.token_budget is not None:
            # Hundreds of small steps per pass: time an evenly spread subset of at most 150.
            small = batches("random32")
            small = small[:: max(1, len(small) // 150)]
            variants.append(variant("transformers, random batches of 32 (seed setting)", hf_step,
                                    small, "train"))
    if args.compile:
        compiled, _ = build_model(cfg)
        compiled.load_state_dict(model.state_dict())
        compiled.to(device).train()
        compile_encoder(compiled.encoder)
        cctx = minbert_context(compiled, cfg, device)
        rounded = batches("bucketed", COMPILE_PAD_MULTIPLE)
        variants.append(variant(f"minBERT compiled, bucketed, T to x{COMPILE_PAD_MULTIPLE}",
                                lambda b: training_step(cctx, {b.task: b}), rounded, "train"))

    # SMART / PCGrad: the same 3-task simultaneous steps, each with its own StepContext.
    import model.step as trainer

    cost_batches = bucketed
    if args.cost_token_budget is not None:  # SMART holds 2 graphs per task: may need less
        cost_cfg = dataclasses.replace(
            cfg, data=dataclasses.replace(cfg.data, token_budget=args.cost_token_budget))
        index_sets = make_batches(data.train, cost_cfg, args.batches_per_task)
        cost_batches = batches("bucketed")
    triples = [dict(zip(TASKS, group, strict=True)) for group in zip(
        *[[b for b in cost_batches if b.task == t] for t in TASKS], strict=False)]
    integrated = hasattr(trainer, "smart_penalty") and hasattr(trainer, "pcgrad_backward")
    cost_variants = [Variant("plain 3-task step", lambda s: training_step(ctx, s), triples,
                             [sum(b.real_tokens for b in s.values()) for s in triples],
                             [sum(b.size for b in s.values()) for s in triples], "cost")]
    if integrated:
        smart_cfg = dataclasses.replace(cfg, smart=dataclasses.replace(cfg.smart, weight=1.0,
                                                                       steps=1))
        pc_cfg = dataclasses.replace(cfg, pcgrad=dataclasses.replace(cfg.pcgrad, enabled=True))
        sctx = minbert_context(model, smart_cfg, device)
        pctx = minbert_context(model, pc_cfg, device)
        for name, c in (("SMART K=1 3-task step", sctx), ("PCGrad 3-task step", pctx)):
            cost_variants.append(dataclasses.replace(cost_variants[0], name=name,
                                                     step=(lambda s, c=c: training_step(c, s)),
                                                     seconds=[]))

    print("# timing training steps ...", flush=True)
    run_rounds(variants, args, device)
    print("# timing SMART / PCGrad ...", flush=True)
    run_rounds(cost_variants, args, device)

    print("# timing evaluation ...", flush=True)
    eval_rate = time_evaluation(model, data, cfg, device, pad)
    pad_rows = padding_table(full_training_lengths(cfg, data_dir, model_dir), cfg)
    report = render(args, variants, cost_variants, integrated, eval_rate, pad_rows, fpt,
                    hf_equiv, cuda)
    report["matmul_peak"] = render_matmul_peak(model, variants[0], cfg, device, fpt, args)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2))
    return report


def time_evaluation(model, data, cfg: TrainConfig, device: torch.device, pad: int) -> float:
    """Dev examples per second: inference mode, large length-bucketed batches, every task."""
    amp = autocast_dtype(cfg, device)

    def once() -> tuple[int, float]:
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        n = 0
        for encoded in data.dev.values():
            predict_task(model, encoded, batch_size=cfg.data.eval_batch_size, device=device,
                         pad_id=pad, autocast_dtype=amp)  # ends with a device -> host copy
            n += len(encoded)
        return n, time.perf_counter() - start

    once()  # warm-up
    runs = [once() for _ in range(2)]
    return sum(n for n, _ in runs) / sum(s for _, s in runs)


def render(args, variants, cost_variants, integrated, eval_rate, pad_rows, fpt, hf_equiv,
           cuda) -> dict[str, Any]:
    gib = 2.0**30
    peak = args.peak_tflops * 1e12
    out: dict[str, Any] = {"args": {k: str(v) for k, v in vars(args).items()}, "train": {},
                           "cost": {}, "padding": dict(pad_rows), "eval_examples_per_s": eval_rate,
                           "gflop_per_token": fpt / 1e9, "equivalence_max_abs_diff": hf_equiv}
    print(f"\n## Training steps ({args.model}, {args.device}, {args.rounds} interleaved rounds, "
          f"{fpt / 1e9:.3f} GFLOP/token)")
    print("| variant | real tok/s | examples/s | ms/step | MFU | peak GiB (resident) | spread "
          "| batches padded / real |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for v in variants:
        if v.error:
            print(f"| {v.name} | {v.error} | | | | | | |")
            out["train"][v.name] = {"error": v.error}
            continue
        rate = v.tokens_per_s()
        mfu = f"{100 * rate * fpt / peak:.1f}%" if cuda else "n/a"
        mem = (f"{v.peak_bytes / gib:.1f} ({v.resident_bytes / gib:.1f})" if cuda else "n/a")
        # The unpadded encoder computes its per-token layers on real tokens only whatever this
        # says; the column shows how much padding the batches carry (and padded attention sees).
        padded = sum(int(b.padded_tokens or 0) for b in v.items if isinstance(b, Batch))
        real = sum(int(b.real_tokens or 0) for b in v.items if isinstance(b, Batch))
        overhead = f"{padded / real:.3f}" if real else "n/a"
        print(f"| {v.name} | {rate:,.0f} | {v.n_examples / v.total_seconds:,.1f} | "
              f"{v.step_ms():.1f} | {mfu} | {mem} | {100 * v.spread():.0f}% | {overhead} |")
        out["train"][v.name] = {"tokens_per_s": rate,
                                "examples_per_s": v.n_examples / v.total_seconds,
                                "ms_per_step": v.step_ms(), "peak_gib": v.peak_bytes / gib,
                                "mfu": rate * fpt / peak if cuda else None}
    by_name = {v.name: v for v in variants if not v.error}

    def ratio(a: str, b: str) -> float | None:
        if a in by_name and b in by_name:
            return by_name[a].tokens_per_s() / by_name[b].tokens_per_s()
        return None

    ours = "minBERT, bucketed (trainer batches)"
    ratios = {
        "minBERT bucketed / transformers random": ratio(
            ours, "transformers, random batches (padded per batch)"),
        "minBERT / transformers, identical bucketed batches": ratio(
            ours, "transformers, identical bucketed batches"),
        "minBERT / transformers, identical random batches": ratio(
            "minBERT, random batches", "transformers, random batches (padded per batch)"),
        "minBERT bucketed / transformers random batches of 32": ratio(
            ours, "transformers, random batches of 32 (seed setting)"),
        "unpadded / padded minBERT encoder, bucketed": ratio(
            ours, "minBERT padded encoder, bucketed"),
        "unpadded / padded minBERT encoder, random batches": ratio(
            "minBERT, random batches", "minBERT padded encoder, random batches"),
        "minBERT padded encoder / transformers, identical bucketed batches": ratio(
            "minBERT padded encoder, bucketed", "transformers, identical bucketed batches"),
    }
    compiled = [v.name for v in variants if v.name.startswith("minBERT compiled")]
    if compiled:
        ratios["compiled / eager minBERT"] = ratio(compiled[0], ours)
    print("\n| ratio (real tokens/s) | value |\n|---|---:|")
    for name, value in ratios.items():
        if value is not None:
            print(f"| {name} | {value:.2f}x |")
    out["ratios"] = ratios
    if hf_equiv is not None:
        print(f"\nequivalence (eval, fp32, batch 0): max |minBERT - transformers| "
              f"= {hf_equiv:.2e}")

    print("\n## Cost of SMART / PCGrad (same 3-task steps)")
    print("| step | ms/step | x plain |\n|---|---:|---:|")
    base = cost_variants[0].step_ms()
    for v in cost_variants:
        if v.error:
            print(f"| {v.name} | {v.error} | |")
            continue
        print(f"| {v.name} | {v.step_ms():.1f} | {v.step_ms() / base:.2f}x |")
        out["cost"][v.name] = {"ms_per_step": v.step_ms(), "ratio": v.step_ms() / base}
    if not integrated:
        print("| SMART K=1 3-task step | n/a | n/a |\n| PCGrad 3-task step | n/a | n/a |")
        print("(SMART / PCGrad are not wired into model.step.training_step yet)")

    print("\n## Padding overhead (padded / real tokens, full real training data)")
    print("| batching | overhead |\n|---|---:|")
    for name, value in pad_rows:
        print(f"| {name} | {value:.3f} |")
    packed_rows = real_tokens = 0
    for b in variants[1].items:  # the random batches: the most padding
        for packing in (b.packing, b.packing_b):
            packed_rows += packing.num_tokens if packing is not None else 0
        real_tokens += int(b.real_tokens or 0)
    print(f"\nThe unpadded encoder (`model.unpadded`, the default) runs its per-token layers on "
          f"{packed_rows / real_tokens:.3f} rows per real token of the timed random batches; only "
          f"attention off CUDA pads (per batch), varlen attention on CUDA does not.")
    out["unpadded_rows_per_real_token"] = packed_rows / real_tokens
    print(f"\n## Evaluation: {eval_rate:,.0f} dev examples/s (inference mode, batches of "
          f"{args.eval_batch_size}, bucketed)")
    return out


if __name__ == "__main__":
    main()
