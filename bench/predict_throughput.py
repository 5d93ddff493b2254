"""Prediction throughput: `orchestrator predict`'s path against the evaluation path, same rows.

One run, the same dev rows of each task for every variant, timed in interleaved rounds (a noisy
machine slows every variant alike), best round reported:
  * eval path: `model.evaluate.predict_task` of one checkpoint on rows tokenized beforehand, as
    `train` and `ensemble` evaluate (their token cache pays for tokenizing);
  * predict, 1 checkpoint: `Predictor.predict_examples`, tokenizing included (what `predict
    --checkpoint` does after reading its input);
  * predict, K-member ensemble: the same through a manifest (each member tokenizes and runs; a
    shared tokenizer is tokenized once), combined by `ensemble`'s default method;
in sentences/s for SST and pairs/s for Quora and STS; plus each predictor's load time (weights,
tokenizer and, for the ensemble, every member file's sha256). Before timing, the single
checkpoint's predict path must predict exactly what its eval path does on every row.

With --sbert, a second table in its own interleaved rounds (ours, theirs, ours, theirs, ...):
sentence-transformers' `SentenceTransformer.encode` on the same all-MiniLM-L6-v2 files (the
packaged weights) against our predict path of the quickstart model built from those weights
(configs/quickstart.yaml: mean pooling, cosine_mix pairs, max length 64; heads untrained), same
sentences, same torch threads, same max length (their max_seq_length) and batch size:
  * SST sentences/s: ours = the SST head's predict (encoder + a linear head), theirs = encode
    (embeddings only);
  * STS pairs/s: ours = the STS task's predict (both sentences encoded, cosine_mix head), theirs =
    encode of both sentence lists, then their cosine similarity;
ours in fp32 and bf16 (`precision: bf16`, autocast on CPU), theirs in fp32 and, as an extra row,
under torch.autocast bf16; best and median round, and the ratio ours / theirs of rows/s. Before
timing, both sides must tokenize every sentence to the same ids and embed a few alike.

    python bench/predict_throughput.py --checkpoints A/best B/best C/best --rows 400
    python bench/predict_throughput.py --checkpoints ... --device cuda --rows 4000
    python bench/predict_throughput.py --sbert --rows 1000 --rounds 5 --threads 2
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from bench.quickstart_model import quickstart_checkpoint  # noqa: E402
from model.batching import collate  # noqa: E402
from model.checkpoint import load_checkpoint_model  # noqa: E402
from model.config import TASKS  # noqa: E402
from model.data import Examples, encode_task, read_task_file  # noqa: E402
from model.data_dir import default_data_dir  # noqa: E402
from model.device import autocast_dtype  # noqa: E402
from model.evaluate import TaskPredictions, predict_task  # noqa: E402
from model.weights import resolve_model_dir  # noqa: E402
from orchestrator.ensemble.manifest import write_ensemble_manifest  # noqa: E402
from orchestrator.ensemble.request import Candidate, EnsembleRequest  # noqa: E402
from orchestrator.predict.predictor import LoadedMember, Predictor, load_predictor  # noqa: E402

DEV_FILES = {"sst": "ids-sst-dev.csv", "para": "quora-dev.csv", "sts": "sts-dev.csv"}
UNITS = {"sst": "sentences/s", "para": "pairs/s", "sts": "pairs/s"}
EVAL_PATH = "eval path (predict_task, pre-tokenized)"
SINGLE = "predict, 1 checkpoint"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument(
        "--checkpoints",
        type=Path,
        nargs="+",
        default=None,
        help="the first is the single model; all are the ensemble",
    )
    p.add_argument(
        "--sbert",
        action="store_true",
        help="also time sentence-transformers' encode against our predict, same MiniLM weights",
    )
    p.add_argument("--data-dir", type=Path, default=None)
    p.add_argument("--rows", type=int, default=400, help="first N dev rows of each task")
    p.add_argument("--rounds", type=int, default=3, help="interleaved timed rounds")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    args = p.parse_args(argv)
    if not args.checkpoints and not args.sbert:
        p.error("nothing to time: give --checkpoints, --sbert or both")
    if args.rows < 1 or args.rounds < 1:
        p.error("--rows and --rounds must be at least 1")
    return args


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - start


def ensemble_dir(checkpoints: list[Path], directory: Path) -> Path:
    """An ensemble directory whose manifest names `checkpoints` (top-K, one vote each)."""
    members = [Candidate(f"bench{i}", f"m{i}", f"m{i}", "completed", 0.0, c)
               for i, c in enumerate(checkpoints)]  # fmt: skip
    request = EnsembleRequest(top=len(checkpoints))
    write_ensemble_manifest(directory, "bench", request, "dev/overall", members, {})
    return directory


def eval_path(
    checkpoint: Path, device: torch.device, rows: Mapping[str, Examples]
) -> dict[str, Callable[[], TaskPredictions]]:
    """Per task, a closure running predict_task on the pre-tokenized rows."""
    model, tokenizer, cfg = load_checkpoint_model(checkpoint)
    model.to(device).eval()
    amp = autocast_dtype(cfg, device)
    encoded = {t: encode_task(t, rows[t], tokenizer, cfg.model.encoding_for(t)) for t in TASKS}

    def run(task: str) -> Callable[[], TaskPredictions]:
        return lambda: predict_task(
            model, encoded[task], batch_size=cfg.data.eval_batch_size, device=device,
            pad_id=tokenizer.pad_id, autocast_dtype=amp,
        )  # fmt: skip

    return {task: run(task) for task in TASKS}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the bench, print its tables; returns rows/s by variant and task, and load seconds
    (with --sbert, under "sbert": the comparison's figures)."""
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    data_dir = args.data_dir or default_data_dir()
    rows: dict[str, Examples] = {
        t: read_task_file(t, data_dir / DEV_FILES[t])[: args.rows] for t in TASKS
    }
    figures: dict[str, Any] = {}
    if args.checkpoints:
        figures |= time_checkpoints(args, device, rows)
    if args.sbert:
        figures["sbert"] = versus_sbert(args, device, rows)
    return figures


def time_checkpoints(
    args: argparse.Namespace, device: torch.device, rows: Mapping[str, Examples]
) -> dict[str, dict[str, float]]:
    """The eval path, the single checkpoint's and the ensemble's predict path, interleaved."""
    with tempfile.TemporaryDirectory(prefix="predict-bench-") as tmp:
        load_s = {}
        start = time.perf_counter()
        single = load_predictor(args.checkpoints[0], device=args.device)
        load_s["single"] = time.perf_counter() - start
        start = time.perf_counter()
        ensemble = load_predictor(ensemble_dir(args.checkpoints, Path(tmp)), device=args.device)
        load_s["ensemble"] = time.perf_counter() - start
        evaluate = eval_path(args.checkpoints[0], device, rows)

        def run(predictor: Predictor, task: str) -> Callable[[], TaskPredictions]:
            return lambda: predictor.predict_examples(task, rows[task])

        variants = {
            EVAL_PATH: evaluate,
            SINGLE: {t: run(single, t) for t in TASKS},
            f"predict, {len(ensemble.members)}-member ensemble": {
                t: run(ensemble, t) for t in TASKS
            },
        }
        # Warm-up (first-call allocations, lazy imports) that also checks the two paths of one
        # checkpoint agree: the bench times the same work, not a faster wrong answer.
        outputs = {name: {task: fns[task]() for task in TASKS} for name, fns in variants.items()}
        check_same_predictions(outputs[EVAL_PATH], outputs[SINGLE])
        best: dict[str, dict[str, float]] = {name: {} for name in variants}
        for _ in range(args.rounds):
            for name, fns in variants.items():
                for task in TASKS:
                    seconds = timed(fns[task])
                    best[name][task] = min(best[name].get(task, float("inf")), seconds)
    print_table(args, rows, best, load_s)
    rates = {name: {t: len(rows[t]) / s[t] for t in TASKS} for name, s in best.items()}
    return {**rates, "load_s": load_s}


def check_same_predictions(
    reference: Mapping[str, TaskPredictions], predicted: Mapping[str, TaskPredictions]
) -> None:
    """SystemExit naming the first task whose predictions differ between the two paths."""
    for task in TASKS:
        want, got = reference[task], predicted[task]
        same = want.ids == got.ids and np.array_equal(want.values, got.values)
        if want.probabilities is not None:
            same = same and np.array_equal(want.probabilities, np.asarray(got.probabilities))
        if not same:
            raise SystemExit(f"{task}: `{SINGLE}` predicts otherwise than the `{EVAL_PATH}`")
    print(f"predictions: `{SINGLE}` equals the eval path on every row of every task")


def print_table(
    args: argparse.Namespace,
    rows: Mapping[str, Examples],
    best: dict[str, dict[str, float]],
    load_s: dict[str, float],
) -> None:
    threads = torch.get_num_threads()
    print(f"device {args.device} ({threads} threads), {args.rounds} rounds, best round; "
          f"checkpoint {args.checkpoints[0]}")  # fmt: skip
    print("rows: " + ", ".join(f"{t} {len(rows[t])}" for t in TASKS))
    header = ["variant", *(f"{t} {UNITS[t]}" for t in TASKS)]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    base = next(iter(best.values()))
    for name, seconds in best.items():
        cells = [f"{len(rows[t]) / seconds[t]:.0f} ({base[t] / seconds[t]:.2f}x)" for t in TASKS]
        print(f"| {name} | " + " | ".join(cells) + " |")
    print(f"load: 1 checkpoint {load_s['single']:.2f} s; ensemble of {len(args.checkpoints)} "
          f"{load_s['ensemble']:.2f} s (sha256 of every member file included)")  # fmt: skip


# ---------------------------------------------------------------------------------------------
# --sbert: sentence-transformers' encode against our predict, same weights and same sentences

SBERT_TASKS = ("sst", "sts")
OURS_FP32 = "ours, fp32"
THEIRS_FP32 = "sentence-transformers encode, fp32"
OURS_BF16 = "ours, bf16 autocast (precision: bf16)"
THEIRS_BF16 = "sentence-transformers encode, bf16 autocast (extra)"
# Ratios of rows/s, ours over theirs (above 1, ours is faster), by the label they print with.
SBERT_RATIOS = {
    "ours fp32 / theirs fp32": (OURS_FP32, THEIRS_FP32),
    "ours bf16 / theirs fp32": (OURS_BF16, THEIRS_FP32),
    "ours bf16 / theirs bf16": (OURS_BF16, THEIRS_BF16),
}
EMBEDDING_CHECK_ROWS = 16
# Token ids of a task's rows, one list per sentence of a row (SST and cross pairs: one).
TokenIds = tuple[Sequence[Sequence[int]], ...]
# fp32 on both sides, same kernels up to summation order: unit vectors agree to ~1e-6.
EMBEDDING_TOLERANCE = 1e-4


def sbert_texts(task: str, examples: Examples) -> tuple[list[str], ...]:
    """The texts both sides get for `examples`: SST's sentences, or a pair task's first and
    second sentences (the two lists our bi-encoder tokenizes; see encode_task)."""
    if task == "sst":
        return ([e.sentence for e in examples],)  # type: ignore[union-attr]
    return (
        [e.sentence1 for e in examples],  # type: ignore[union-attr]
        [e.sentence2 for e in examples],  # type: ignore[union-attr]
    )


def load_sbert(max_length: int, device: torch.device) -> Any:
    """SentenceTransformer on the packaged all-MiniLM-L6-v2 directory (the files our `minilm`
    loads), truncating at `max_length` tokens as our tokenizer does."""
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError:
        raise SystemExit(
            "--sbert needs sentence-transformers (the dev extra): pip install -e '.[dev]'"
        ) from None
    theirs = SentenceTransformer(str(resolve_model_dir("minilm")), device=str(device))
    theirs.max_seq_length = max_length
    return theirs


def our_token_ids(member: LoadedMember, task: str, examples: Examples) -> TokenIds:
    """The token ids our predict path feeds the encoder (encode_task's), one list per sentence
    of a row: one for SST and bi-encoded pairs' two, one (joined) for cross-encoded pairs."""
    encoded = encode_task(task, examples, member.tokenizer, member.cfg.model.encoding_for(task))
    if encoded.input_ids_b is None:
        return (encoded.input_ids,)
    return (encoded.input_ids, encoded.input_ids_b)


def their_token_ids(theirs: Any, task: str, examples: Examples) -> TokenIds:
    """The token ids their encode feeds their model: its own preprocessing, padding dropped."""
    sides = []
    for texts in sbert_texts(task, examples):
        features = theirs.preprocess(texts)
        pairs = zip(features["input_ids"], features["attention_mask"], strict=True)
        sides.append([ids[mask.bool()].tolist() for ids, mask in pairs])
    return tuple(sides)


def token_mismatch(ours: TokenIds, theirs: TokenIds) -> str | None:
    """Where two sides' token ids first differ (`row 3, sentence 2`), None where nowhere."""
    if len(ours) != len(theirs):
        return f"{len(ours)} sequence(s) per row against {len(theirs)}"
    for side, (mine, other) in enumerate(zip(ours, theirs, strict=True), start=1):
        if len(mine) != len(other):
            return f"{len(mine)} rows against {len(other)}"
        for row, (a, b) in enumerate(zip(mine, other, strict=True)):
            if list(a) != list(b):
                return f"row {row}, sentence {side}"
    return None


def check_same_inputs(
    ours: Predictor, theirs: Any, rows: Mapping[str, Examples], device: torch.device
) -> None:
    """SystemExit unless both sides feed their encoders the same token ids for every row (same
    texts, same truncation, pairs as two sentences) and embed the first SST sentences alike
    (same weights, same pooling)."""
    member = ours.members[0]
    for task in SBERT_TASKS:
        where = token_mismatch(
            our_token_ids(member, task, rows[task]), their_token_ids(theirs, task, rows[task])
        )
        if where is not None:
            raise SystemExit(
                f"{task}: sentence-transformers tokenizes otherwise than ours at {where} (max "
                f"length {theirs.max_seq_length} vs {member.tokenizer.max_length}, pair "
                f"encoding {member.cfg.model.encoding_for(task)})"
            )
    examples = rows["sst"][:EMBEDDING_CHECK_ROWS]
    diff = embedding_difference(member, theirs, examples, device)
    if not diff <= EMBEDDING_TOLERANCE:
        raise SystemExit(
            f"sst: our sentence vectors differ from sentence-transformers' by {diff:.1e} "
            f"(> {EMBEDDING_TOLERANCE:g}): not the same model"
        )
    tasks = " and ".join(SBERT_TASKS)
    print(f"inputs: both sides feed their encoders the same token ids for every {tasks} row "
          f"(max length {member.tokenizer.max_length}); the first {len(examples)} SST "
          f"embeddings agree within {diff:.1e}")  # fmt: skip


def embedding_difference(
    member: LoadedMember, theirs: Any, examples: Examples, device: torch.device
) -> float:
    """max |ours - theirs| of unit sentence vectors in fp32: our encoder's pooled vectors,
    normalized as their Normalize module does, against their encode."""
    encoded = encode_task("sst", examples, member.tokenizer, "cross")  # single sentences
    batch = collate(encoded, np.arange(len(encoded)), member.tokenizer.pad_id).to(device)
    with torch.inference_mode():
        (vectors,) = member.model.sentence_vectors(batch, member.model.embed_inputs(batch))
    reference = theirs.encode(
        sbert_texts("sst", examples)[0], convert_to_tensor=True, show_progress_bar=False
    )
    ours = F.normalize(vectors.float(), dim=-1)
    return float((ours - reference.float().to(ours.device)).abs().max())


def sbert_variants(
    ours: Mapping[str, Predictor],
    theirs: Any,
    rows: Mapping[str, Examples],
    batch_size: int,
    device: torch.device,
) -> dict[str, dict[str, Callable[[], object]]]:
    """Per variant and task, a closure doing one side's whole job on the rows, tokenizing
    included: ours predicts, theirs encodes (and, for pairs, takes the cosine)."""
    texts = {t: sbert_texts(t, rows[t]) for t in SBERT_TASKS}

    def predict(predictor: Predictor, task: str) -> Callable[[], object]:
        return lambda: predictor.predict_examples(task, rows[task])

    def encode(task: str, bf16: bool) -> Callable[[], object]:
        def run() -> object:
            options = {"batch_size": batch_size, "convert_to_tensor": True}
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                vectors = [
                    theirs.encode(t, show_progress_bar=False, **options) for t in texts[task]
                ]
            if len(vectors) == 1:
                return vectors[0].float().cpu().numpy()
            u, v = (x.float() for x in vectors)
            return F.cosine_similarity(u, v, dim=-1).cpu().numpy()

        return run

    return {
        OURS_FP32: {t: predict(ours["fp32"], t) for t in SBERT_TASKS},
        THEIRS_FP32: {t: encode(t, False) for t in SBERT_TASKS},
        OURS_BF16: {t: predict(ours["bf16"], t) for t in SBERT_TASKS},
        THEIRS_BF16: {t: encode(t, True) for t in SBERT_TASKS},
    }


def warm_up(variants: dict[str, dict[str, Callable[[], object]]]) -> None:
    """One untimed call of each (first-call allocations, oneDNN picking its bf16 kernels); the
    extra row is left out, with a note, if their encode fails under autocast."""
    for name in list(variants):
        try:
            for fn in variants[name].values():
                fn()
        except Exception as err:
            if name != THEIRS_BF16:
                raise
            print(f"# {name}: {type(err).__name__}: {str(err).splitlines()[0][:80]}; left out")
            del variants[name]


def interleaved(
    variants: Mapping[str, Mapping[str, Callable[[], object]]], rounds: int
) -> dict[str, dict[str, list[float]]]:
    """Seconds of every call: each round runs each task once per variant, ours and theirs in
    turn, so a noisy neighbour slows both sides alike."""
    seconds: dict[str, dict[str, list[float]]] = {
        name: {t: [] for t in SBERT_TASKS} for name in variants
    }
    for _ in range(rounds):
        for task in SBERT_TASKS:
            for name, fns in variants.items():
                seconds[name][task].append(timed(fns[task]))
    return seconds


def versus_sbert(
    args: argparse.Namespace, device: torch.device, rows: Mapping[str, Examples]
) -> dict[str, Any]:
    """Build the quickstart model from the packaged weights in fp32 and bf16, load theirs, check
    both get the same inputs, time them interleaved and print the table."""
    with tempfile.TemporaryDirectory(prefix="sbert-bench-") as tmp:
        ours = {
            precision: load_predictor(
                quickstart_checkpoint(Path(tmp) / precision, precision), device=args.device
            )
            for precision in ("fp32", "bf16")
        }
        cfg = ours["fp32"].members[0].cfg
        theirs = load_sbert(cfg.model.max_length, device)
        check_same_inputs(ours["fp32"], theirs, rows, device)
        variants = sbert_variants(ours, theirs, rows, cfg.data.eval_batch_size, device)
        warm_up(variants)
        seconds = interleaved(variants, args.rounds)
    return print_sbert_table(args, rows, seconds, cfg.model.max_length, cfg.data.eval_batch_size)


def print_sbert_table(
    args: argparse.Namespace,
    rows: Mapping[str, Examples],
    seconds: Mapping[str, Mapping[str, list[float]]],
    max_length: int,
    batch_size: int,
) -> dict[str, Any]:
    """The comparison table (best and median round in rows/s, then ours / theirs); returns the
    figures printed."""
    import sentence_transformers

    n = {t: len(rows[t]) for t in SBERT_TASKS}
    rates = {
        name: {t: {"best": n[t] / min(s), "median": n[t] / float(np.median(s))}
               for t, s in per_task.items()}
        for name, per_task in seconds.items()
    }  # fmt: skip
    print(f"\n## ours vs sentence-transformers {sentence_transformers.__version__} "
          f"(all-MiniLM-L6-v2, same weights): {args.device} ({torch.get_num_threads()} threads), "
          f"max length {max_length}, batches of {batch_size}, {args.rounds} interleaved rounds")
    print(f"rows: sst {n['sst']} sentences, sts {n['sts']} pairs (dev files)")
    print("| variant | SST sentences/s best | median | STS pairs/s best | median |")
    print("|---|---:|---:|---:|---:|")
    for name, per_task in rates.items():
        cells = [f"{per_task[t][k]:.0f}" for t in SBERT_TASKS for k in ("best", "median")]
        print(f"| {name} | " + " | ".join(cells) + " |")
    ratios = {label: {t: {k: rates[a][t][k] / rates[b][t][k] for k in ("best", "median")}
                      for t in SBERT_TASKS}
              for label, (a, b) in SBERT_RATIOS.items() if a in rates and b in rates}  # fmt: skip
    for name, per_task in ratios.items():
        cells = [f"{per_task[t][k]:.2f}x" for t in SBERT_TASKS for k in ("best", "median")]
        print(f"| ratio {name} | " + " | ".join(cells) + " |")
    print("ratio = ours rows/s / theirs rows/s (above 1: ours is faster). Both tokenize. Theirs "
          "computes embeddings only (mean pooling, normalize; STS: plus the cosine of the two); "
          "ours adds a tiny head (SST: a linear layer and softmax; STS: cosine_mix, the cosine "
          "plus an MLP on [u; v; |u-v|]).")  # fmt: skip
    return {"rows_per_s": rates, "ratios": ratios}


if __name__ == "__main__":
    main()
