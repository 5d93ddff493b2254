"""What a sweep's driver costs per trial as the sweep grows: TPE sweeps of 10, 100 and 1,000
trials whose training is nearly free (configs/tiny.yaml cut to 3 steps and 16 dev rows a task),
so the figures are the orchestration, not the model. 2 trials at a time, locally or on a loopback
Ray cluster (`--cluster`: a head and 2 workers, 1 CPU each, the driver joining by address).

Each sweep runs in a fresh process (its own CPU and peak-memory counters) that times, per trial:
the driver's CPU (user + system, Ray's in-process core worker included), the wall time of the
driver's bookkeeping (Tune's callbacks into the sweep's listeners, the searcher, Ray's snapshots
of the experiment), of it Optuna's ask + report + tell, the MLflow writes, and Ray's
experiment-state snapshots (time, count, size); and the per-trial wall time over the first and
the last quarter of the trials, by when they ended. Timing wraps the methods; nothing is faked.

    python bench/sweep_scale.py --trials 10 100 1000 --plot bench/sweep_scale.png
    python bench/sweep_scale.py --trials 10 100 --cluster --no-local --json cluster.json
    python bench/sweep_scale.py --rows local.json cluster.json --plot bench/sweep_scale.png
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

# A trial that trains 3 steps and evaluates 16 rows a task: ~the cost of starting its worker.
NEARLY_FREE = {
    "optim.epochs": 1,
    "data.max_examples": {"sst": 16, "para": 16, "sts": 16},
    "data.dev_max_examples": {"sst": 16, "para": 16, "sts": 16},
}
COLUMNS = (
    ("trials", "{:>6}"),
    ("where", "{:>7}"),
    ("wall_s", "{:>8.0f}"),
    ("driver_cpu_per_trial", "{:>9.3f}"),
    ("bookkeeping_per_trial", "{:>9.3f}"),
    ("optuna_per_trial", "{:>8.3f}"),
    ("mlflow_per_trial", "{:>8.3f}"),
    ("snapshot_per_trial", "{:>8.3f}"),
    ("snapshots", "{:>6}"),
    ("snapshot_mb", "{:>7.2f}"),
    ("first_quarter_s", "{:>7.3f}"),
    ("last_quarter_s", "{:>7.3f}"),
    ("peak_rss_mb", "{:>7.0f}"),
    ("disk_mb_per_trial", "{:>7.2f}"),
)
HEADERS = (
    "N", "where", "wall s", "drv CPU", "bookkeep", "optuna", "mlflow", "snapshot", "snaps",
    "state MB", "Q1 s/t", "Q4 s/t", "RSS MB", "MB/trial",
)


class Timers:
    """Seconds and calls spent in wrapped methods, by bucket (re-entrant calls counted once)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)
        self._depth: dict[str, int] = defaultdict(int)

    def wrap(self, owner: Any, name: str, bucket: str, after: Callable[[], None] | None = None):
        original = getattr(owner, name)

        @functools.wraps(original)
        def timed(*args: Any, **kwargs: Any) -> Any:
            self._depth[bucket] += 1
            start = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                self._depth[bucket] -= 1
                if self._depth[bucket] == 0:
                    self.seconds[bucket] += time.perf_counter() - start
                    self.calls[bucket] += 1
                    if after is not None:
                        after()

        setattr(owner, name, timed)


def instrument(
    timers: Timers, experiment_dir: Path, started: list[float], ended: list[float]
) -> dict[str, float]:
    """Wrap the driver's bookkeeping entry points; returns the snapshot size record."""
    from ray.tune.execution.tune_controller import TuneController

    from orchestrator.search.optuna_search import SweepStudy
    from orchestrator.sweep.ray_tune import StudySearcher, TrialEvents
    from orchestrator.tracking.writer import SweepTracker

    for name in ("ask", "report", "tell"):
        timers.wrap(SweepStudy, name, "optuna")
    for name in ("start_trial", "log_epoch", "finish_run", "set_tags"):
        timers.wrap(SweepTracker, name, "mlflow")
    for name in ("suggest", "on_trial_result", "on_trial_complete", "save"):
        timers.wrap(StudySearcher, name, "bookkeeping")
    for name in ("on_trial_result", "on_trial_error", "on_step_end"):
        timers.wrap(TrialEvents, name, "bookkeeping")
    timers.wrap(TrialEvents, "on_trial_start", "bookkeeping",
                after=lambda: started.append(time.monotonic()))
    timers.wrap(TrialEvents, "on_trial_complete", "bookkeeping",
                after=lambda: ended.append(time.monotonic()))
    sizes = {"max_bytes": 0.0}

    def measure_state() -> None:
        for path in experiment_dir.glob("experiment_state-*.json"):
            sizes["max_bytes"] = max(sizes["max_bytes"], path.stat().st_size)

    timers.wrap(TuneController, "save_to_dir", "snapshot", after=measure_state)
    return sizes


def run_one(trials: int, results: Path, address: str | None) -> dict[str, Any]:
    """One sweep of `trials` nearly free trials in this process; its figures."""
    import orchestrator

    space = {
        "name": f"scale{trials}",
        "base": str(REPO / "configs" / "tiny.yaml"),
        "metric": "dev/overall",
        "mode": "max",
        "num_samples": trials,
        "max_concurrent": 2,
        "resources": {"cpu": 1, "gpu": 0},
        "sampler": "tpe",
        "seed": 0,
        "scheduler": {"name": "none"},
        "space": {
            "optim.lr": {"float": [1e-4, 1e-2], "log": True},
            "model.head_dropout": {"float": [0.0, 0.3]},
            "optim.weight_decay": {"float": [0.0, 0.1]},
            **NEARLY_FREE,
        },
    }
    (results / f"{space['name']}.yaml").parent.mkdir(parents=True, exist_ok=True)
    (results / f"{space['name']}.yaml").write_text(yaml.safe_dump(space))  # read_scale --extend
    timers, started, ended = Timers(), [], []
    sizes = instrument(timers, results / space["name"], started, ended)
    data_dir = os.environ.get("ORCHESTRATOR_DATA_DIR", str(REPO / "data"))
    cpu0 = _cpu_seconds()
    wall0 = time.monotonic()
    outcome = orchestrator.run_sweep(
        space, data_dir=data_dir, results_dir=results, address=address,
        num_cpus=None if address else 2,
    )
    wall = time.monotonic() - wall0
    cpu = _cpu_seconds() - cpu0
    finished = sum(1 for t in outcome.trials if t.state in ("completed", "pruned"))
    first, last = _quarter_walls(sorted(ended), min(started, default=wall0))
    return {
        "trials": trials,
        "where": "cluster" if address else "local",
        "finished": finished,
        "wall_s": wall,
        "driver_cpu_per_trial": cpu / trials,
        "bookkeeping_per_trial": timers.seconds["bookkeeping"] / trials,
        "optuna_per_trial": timers.seconds["optuna"] / trials,
        "mlflow_per_trial": timers.seconds["mlflow"] / trials,
        "snapshot_per_trial": timers.seconds["snapshot"] / trials,
        "snapshots": timers.calls["snapshot"],
        "snapshot_mb": sizes["max_bytes"] / 1e6,
        "first_quarter_s": first,
        "last_quarter_s": last,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "disk_mb_per_trial": _disk_bytes(results) / 1e6 / trials,
    }


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _quarter_walls(ended: list[float], start: float) -> tuple[float, float]:
    """Per-trial wall seconds over the first and the last quarter of the trials to end."""
    quarter = max(1, len(ended) // 4)
    if len(ended) < 4:
        return float("nan"), float("nan")
    first = (ended[quarter - 1] - start) / quarter
    last = (ended[-1] - ended[-quarter - 1]) / quarter
    return first, last


def _disk_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file() and not p.is_symlink())


def run_child(trials: int, results: Path, address: str | None, env: dict[str, str]) -> dict:
    command = [sys.executable, __file__, "--one", str(trials), "--results-dir", str(results)]
    if address:
        command += ["--address", address]
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        sys.stderr.write(done.stderr[-4000:])
        raise SystemExit(f"sweep of {trials} trials failed (exit {done.returncode})")
    return json.loads(lines[-1])


def start_cluster(root: Path) -> Any:
    """A head and two workers on loopback, 1 CPU each (tests' harness: stopped by pid)."""
    from tests.integration.cluster_harness import LoopbackRayCluster

    root.mkdir(parents=True, exist_ok=True)
    cluster = LoopbackRayCluster.create(root)
    cluster.start_nodes(("127.0.0.2", "127.0.0.3"))
    return cluster


def print_table(rows: list[dict[str, Any]]) -> None:
    widths = [len(f.format(rows[0][k])) if rows else 6 for k, f in COLUMNS]
    print(" ".join(h.rjust(w) for h, w in zip(HEADERS, widths, strict=True)))
    for row in rows:
        print(" ".join(fmt.format(row[key]) for key, fmt in COLUMNS))


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = ("driver_cpu_per_trial", "bookkeeping_per_trial", "optuna_per_trial",
            "mlflow_per_trial", "snapshot_per_trial")
    fig, ax = plt.subplots(figsize=(7, 4.5))
    colors = dict(zip(keys, plt.rcParams["axes.prop_cycle"].by_key()["color"], strict=False))
    for where in sorted({r["where"] for r in rows}, reverse=True):  # local first
        mine = sorted((r for r in rows if r["where"] == where), key=lambda r: r["trials"])
        for key in keys:  # a colour per figure, a line style per place
            values = [max(r[key], 1e-5) for r in mine]
            style = "-" if where == "local" else "--"
            ax.plot([r["trials"] for r in mine], values, style, marker="o", color=colors[key],
                    label=f"{key.removesuffix('_per_trial')} ({where})")
    ax.set(xscale="log", yscale="log", xlabel="trials in the sweep",
           ylabel="seconds per trial", title="Sweep driver cost per trial")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--trials", type=int, nargs="+", default=[10, 100, 1000])
    p.add_argument("--cluster", action="store_true", help="also on a loopback 3-node cluster")
    p.add_argument("--no-local", action="store_true", help="with --cluster: only there")
    p.add_argument("--plot", type=Path, default=None, help="a log-log PNG of the figures")
    p.add_argument("--json", type=Path, default=None, help="write every row here")
    p.add_argument("--keep", type=Path, default=None,
                   help="keep the sweeps here (for bench/read_scale.py), not in a temp dir")
    p.add_argument("--rows", type=Path, nargs="+", default=None,
                   help="print and plot rows earlier runs wrote with --json (no sweep runs)")
    p.add_argument("--one", type=int, default=None, help=argparse.SUPPRESS)
    p.add_argument("--results-dir", type=Path, default=None, help=argparse.SUPPRESS)
    p.add_argument("--address", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.one is not None:
        print(json.dumps(run_one(args.one, args.results_dir, args.address)))
        return 0
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "PYTHONPATH": str(REPO)}
    if args.rows:
        rows = [row for path in args.rows for row in json.loads(path.read_text())]
        print_table(rows)
        if args.plot:
            plot(rows, args.plot)
        return 0
    rows = []
    with tempfile.TemporaryDirectory(prefix="sweep-scale-") as scratch:
        tmp = str(args.keep or scratch)
        for trials in [] if args.no_local else args.trials:
            rows.append(run_child(trials, Path(tmp) / f"local{trials}", None, env))
            print(json.dumps(rows[-1]), flush=True)
        if args.cluster:
            cluster = start_cluster(Path(tmp) / "cluster")
            try:
                for trials in args.trials:
                    results = Path(tmp) / f"cluster{trials}"
                    joined = {**env, **cluster.env}
                    rows.append(run_child(trials, results, cluster.address, joined))
                    print(json.dumps(rows[-1]), flush=True)
            finally:
                cluster.stop()
    print()
    print_table(rows)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    if args.plot:
        plot(rows, args.plot)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
