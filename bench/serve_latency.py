"""Latency of `mlflow models serve` on a registered checkpoint: 1 row and 100 rows per request.

One run: a checkpoint (the quickstart model built untrained from the packaged all-MiniLM-L6-v2
weights, or --checkpoint DIR) registered as `orchestrator register` does, into a temporary
SQLite store; `mlflow models serve -m models:/NAME/1 --env-manager local` on 127.0.0.1 in its own
process group; the largest request's answer checked against `orchestrator predict`'s (the
Predictor's) on the same rows; then a bounded loop of POSTs to /invocations, one at a time, the
request sizes in turn (1, 100, 1, 100, ...) so drift hits every size alike: at most --requests
of each, and no more than --time-limit seconds in all. It prints p50 / p95 / mean / max latency
(send to last byte read, JSON `dataframe_split` in and out) and stops the server, also on an
error, Ctrl-C or SIGTERM. Only 127.0.0.1 is contacted.

    python bench/serve_latency.py                                  # quickstart model, fp32
    python bench/serve_latency.py --requests 200 --time-limit 300 --server-threads 2
    python bench/serve_latency.py --checkpoint results/quickstart/TRIAL/train/checkpoints/best
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from bench.quickstart_model import quickstart_checkpoint  # noqa: E402
from model.config import TASKS  # noqa: E402
from model.data import Examples, PairExample, read_task_file  # noqa: E402
from model.data_dir import default_data_dir  # noqa: E402
from orchestrator.predict.predictor import (  # noqa: E402
    ID_COLUMN,
    PREDICTION_COLUMN,
    SENTENCE1_COLUMN,
    SENTENCE2_COLUMN,
    TASK_COLUMN,
    load_predictor,
)

DEV_FILES = {"sst": "ids-sst-dev.csv", "para": "quora-dev.csv", "sts": "sts-dev.csv"}
HOST = "127.0.0.1"
MODEL_NAME = "serve-latency-bench"
MIXED = "mixed"
# A served prediction went through JSON (float64 text) and back: equal to ~1e-7.
ANSWER_TOLERANCE = 1e-5


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--checkpoint", type=Path, default=None,
                   help="a trial's best checkpoint (default: the quickstart model, untrained)")
    p.add_argument("--precision", choices=["fp32", "bf16"], default="fp32",
                   help="precision of the default checkpoint (bf16 autocasts on CPU)")
    p.add_argument("--data-dir", type=Path, default=None)
    p.add_argument("--task", choices=[*TASKS, MIXED], default=MIXED,
                   help="rows of one task's dev file, or of all three in turn")
    p.add_argument("--sizes", type=int, nargs="+", default=[1, 100], help="rows per request")
    p.add_argument("--requests", type=int, default=50, help="timed requests per size, at most")
    p.add_argument("--time-limit", type=float, default=120.0,
                   help="seconds for all timed requests together; the loop stops there")
    p.add_argument("--warmup", type=int, default=3, help="untimed requests per size first")
    p.add_argument("--port", type=int, default=None, help="default: a free loopback port")
    p.add_argument("--workers", type=int, default=1, help="mlflow models serve --workers")
    p.add_argument("--server-threads", type=int, default=None,
                   help="the server's torch threads (OMP_NUM_THREADS; default: torch's own)")
    p.add_argument("--startup-timeout", type=float, default=180.0)
    args = p.parse_args(argv)  # fmt: skip
    if args.checkpoint is not None and not args.checkpoint.is_dir():
        p.error(f"--checkpoint {args.checkpoint}: no such directory")
    if min(args.sizes) < 1 or args.requests < 1 or args.warmup < 0 or args.time_limit <= 0:
        p.error("--sizes and --requests must be at least 1, --warmup at least 0, "
                "--time-limit positive")  # fmt: skip
    if args.workers < 1 or (args.server_threads is not None and args.server_threads < 1):
        p.error("--workers and --server-threads must be at least 1")
    return args


# ---------------------------------------------------------------------------------------------
# Figures


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0 <= q <= 100), interpolating linearly between the two closest ranks:
    numpy.percentile's default definition, written out so a reader sees which one p95 is."""
    if not values:
        raise ValueError("percentile of no values")
    if not 0.0 <= q <= 100.0:
        raise ValueError(f"percentile {q} is outside [0, 100]")
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100.0
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def latency_summary(seconds: Sequence[float]) -> dict[str, float]:
    """Count, p50, p95, mean and max of request latencies, in milliseconds."""
    ms = [1e3 * s for s in seconds]
    return {
        "requests": float(len(ms)),
        "p50_ms": percentile(ms, 50),
        "p95_ms": percentile(ms, 95),
        "mean_ms": sum(ms) / len(ms),
        "max_ms": max(ms),
    }


# ---------------------------------------------------------------------------------------------
# Requests


def request_frame(rows: Mapping[str, Examples], size: int, task: str) -> pd.DataFrame:
    """`size` rows as /invocations takes them (predict_frame's columns): `task`'s dev rows in
    file order, or with `mixed` one of each task in turn (sst, para, sts, sst, ...)."""
    order = TASKS if task == MIXED else (task,)
    records = []
    for i in range(size):
        name = order[i % len(order)]
        k = i // len(order)
        if k >= len(rows[name]):
            have = len(rows[name])
            raise SystemExit(f"--sizes {size}: the {name} dev file has only {have} rows")
        example = rows[name][k]
        pair = isinstance(example, PairExample)
        records.append({
            ID_COLUMN: f"{name}-{example.id}",
            TASK_COLUMN: name,
            SENTENCE1_COLUMN: example.sentence1 if pair else example.sentence,  # type: ignore[union-attr]
            SENTENCE2_COLUMN: example.sentence2 if pair else None,  # type: ignore[union-attr]
        })  # fmt: skip
    return pd.DataFrame(records)


def request_body(frame: pd.DataFrame) -> bytes:
    return json.dumps({"dataframe_split": frame.to_dict(orient="split", index=False)}).encode()


def post(url: str, body: bytes, timeout: float = 120.0) -> tuple[float, bytes]:
    """Seconds from sending `body` to /invocations to reading the whole answer, and the answer."""
    request = urllib.request.Request(
        f"{url}/invocations", data=body, headers={"Content-Type": "application/json"}
    )
    start = time.perf_counter()
    with urllib.request.urlopen(request, timeout=timeout) as response:
        answer = response.read()
    return time.perf_counter() - start, answer


def check_answer(answer: bytes, frame: pd.DataFrame, expected: pd.DataFrame) -> None:
    """SystemExit unless the served predictions are the Predictor's on the same rows: the bench
    times the model answering, not an error page or another model."""
    got = pd.DataFrame(json.loads(answer)["predictions"])
    if list(got.get(ID_COLUMN, [])) != list(frame[ID_COLUMN]):
        raise SystemExit("the served model answered other rows than it was sent")
    served = got[PREDICTION_COLUMN].to_numpy(dtype=np.float64)
    local = expected[PREDICTION_COLUMN].to_numpy(dtype=np.float64)
    if not np.allclose(served, local, rtol=ANSWER_TOLERANCE, atol=ANSWER_TOLERANCE):
        raise SystemExit("the served model predicts otherwise than `orchestrator predict`")


def timed_requests(
    url: str, bodies: Mapping[int, bytes], requests: int, time_limit: float
) -> dict[int, list[float]]:
    """Latencies by request size, one request at a time, sizes in turn; at most `requests` of
    each, and none started after `time_limit` seconds."""
    latencies: dict[int, list[float]] = {size: [] for size in bodies}
    deadline = time.monotonic() + time_limit
    for _ in range(requests):
        for size, body in bodies.items():
            if time.monotonic() >= deadline:
                return latencies
            latencies[size].append(post(url, body)[0])
    return latencies


# ---------------------------------------------------------------------------------------------
# The server


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


@contextmanager
def served(
    tracking_uri: str, model_uri: str, args: argparse.Namespace, log: Path
) -> Iterator[tuple[str, float, int]]:
    """`mlflow models serve` on 127.0.0.1 in its own process group (so that it and its uvicorn
    workers stop together); yields its URL, start-up seconds and process group id, and stops it
    on the way out."""
    port = args.port or free_port()
    bin_dir = str(Path(sys.executable).parent)  # uvicorn, started by `mlflow models serve`
    env = {**os.environ, "MLFLOW_TRACKING_URI": tracking_uri,
           "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}  # fmt: skip
    if args.server_threads:
        env["OMP_NUM_THREADS"] = str(args.server_threads)
    command = [sys.executable, "-m", "mlflow", "models", "serve", "-m", model_uri,
               "--env-manager", "local", "-h", HOST, "-p", str(port),
               "-w", str(args.workers)]  # fmt: skip
    url = f"http://{HOST}:{port}"
    with open(log, "wb") as out:
        start = time.perf_counter()
        process = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT,
                                   start_new_session=True)  # fmt: skip
        try:
            wait_until_up(url, process, log, args.startup_timeout)
            yield url, time.perf_counter() - start, process.pid
        finally:
            stop(process)


def wait_until_up(url: str, process: subprocess.Popen[bytes], log: Path, timeout: float) -> None:
    """Poll /ping until it answers 200; SystemExit with the log's tail if the server dies or
    does not come up in `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            tail = log.read_text(errors="replace").strip().splitlines()[-1:]
            raise SystemExit(f"mlflow models serve exited {process.returncode}: {' '.join(tail)}")
        try:
            with urllib.request.urlopen(f"{url}/ping", timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            time.sleep(0.5)
    raise SystemExit(f"mlflow models serve not up after {timeout:.0f} s (log: {log})")


def stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM the server's process group, SIGKILL what is left of it after 20 s; returns once
    none of the group is left (its uvicorn workers may outlive the `mlflow` process)."""
    for sig, wait in ((signal.SIGTERM, 20.0), (signal.SIGKILL, 10.0)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            process.poll()  # reaps the leader: a zombie would still count as the group
            try:
                os.killpg(process.pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.1)


# ---------------------------------------------------------------------------------------------
# Main


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Register, serve, check, time, stop; prints the table and returns its figures."""
    args = parse_args(argv)
    data_dir = args.data_dir or default_data_dir()
    rows = {t: read_task_file(t, data_dir / DEV_FILES[t]) for t in TASKS}
    frames = {size: request_frame(rows, size, args.task) for size in sorted(set(args.sizes))}
    with tempfile.TemporaryDirectory(prefix="serve-bench-") as tmp:
        checkpoint = args.checkpoint or quickstart_checkpoint(
            Path(tmp) / "checkpoint", args.precision
        )
        tracking_uri, model_uri = register(checkpoint, Path(tmp))
        largest = frames[max(frames)]
        expected = load_predictor(checkpoint).predict_frame(largest)
        bodies = {size: request_body(frame) for size, frame in frames.items()}
        log = Path(tmp) / "serve.log"
        with served(tracking_uri, model_uri, args, log) as (url, startup, group):
            check_answer(post(url, bodies[max(bodies)])[1], largest, expected)
            for _ in range(args.warmup):
                for body in bodies.values():
                    post(url, body)
            latencies = timed_requests(url, bodies, args.requests, args.time_limit)
    figures = print_table(args, checkpoint, model_uri, startup, latencies)
    print(f"# server stopped (process group {group})")
    return figures


def register(checkpoint: Path, directory: Path) -> tuple[str, str]:
    """`checkpoint` registered as `orchestrator register` does, in a SQLite store under
    `directory`; the store's URI and the version's models:/ URI."""
    from orchestrator.registry.checkpoint import register_checkpoint

    tracking_uri = f"sqlite:///{(directory / 'mlflow.db').resolve()}"
    registered = register_checkpoint(tracking_uri, checkpoint, MODEL_NAME)
    return tracking_uri, registered.uri


def print_table(
    args: argparse.Namespace,
    checkpoint: Path,
    model_uri: str,
    startup: float,
    latencies: Mapping[int, list[float]],
) -> dict[str, Any]:
    source = checkpoint if args.checkpoint else f"quickstart model, {args.precision}, untrained"
    threads = args.server_threads or "torch default"
    print(f"# mlflow models serve -m {model_uri} ({source}) on {HOST}, {args.workers} worker(s), "
          f"server threads: {threads}; up in {startup:.1f} s")
    print(f"# rows: {args.task} dev rows; one request at a time, sizes in turn, after "
          f"{args.warmup} warm-up request(s) each; at most {args.requests} per size and "
          f"{args.time_limit:g} s in all")  # fmt: skip
    print("| request | requests | p50 ms | p95 ms | mean ms | max ms | rows/s at p50 |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    figures: dict[str, Any] = {}
    for size, seconds in latencies.items():
        if not seconds:
            print(f"| {size} row(s) | 0 (time limit) | | | | | |")
            continue
        s = latency_summary(seconds)
        figures[str(size)] = s
        print(f"| {size} row(s) | {len(seconds)} | {s['p50_ms']:.1f} | {s['p95_ms']:.1f} | "
              f"{s['mean_ms']:.1f} | {s['max_ms']:.1f} | {1e3 * size / s['p50_ms']:,.0f} |")
    return figures


if __name__ == "__main__":
    # SIGTERM as SystemExit, so the `finally` that stops the server runs (Ctrl-C already does).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        main()
    except KeyboardInterrupt:
        print("interrupted: the server is stopped", file=sys.stderr)
        sys.exit(130)
