"""Reading a large sweep back: how long `orchestrator report`, the ensemble's ranking, the
notebook API, the MLflow UI's saved view and `--extend 10` take on a sweep that
`bench/sweep_scale.py --keep DIR` left (e.g. its 1,000-trial sweep). Each read runs in a fresh
process, so it pays its own imports, as a user's command does.

    python bench/sweep_scale.py --trials 1000 --keep /tmp/scale
    python bench/read_scale.py --results-dir /tmp/scale/local1000 --sweep scale1000
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

UI_LOADS = 3  # page loads timed, each in a fresh browser profile (nothing cached)
CHROMIUM_FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
    "--disable-background-networking", "--disable-component-update", "--no-first-run",
    "--window-size=2400,1000",
)  # fmt: skip


def timed(command: list[str], env: dict[str, str]) -> float:
    """Wall seconds of a command (which must succeed)."""
    start = time.perf_counter()
    subprocess.run(command, env=env, check=True, capture_output=True, text=True)
    return time.perf_counter() - start


def in_process(code: str, env: dict[str, str]) -> dict:
    """Run `code` in a fresh Python; it prints one JSON line of figures."""
    done = subprocess.run([sys.executable, "-c", code], env=env, check=True,
                          capture_output=True, text=True)  # fmt: skip
    return json.loads(done.stdout.strip().splitlines()[-1])


def ensemble_figures(results: Path, sweep: str, env: dict[str, str], top: int) -> dict:
    """The ensemble's ranking (reading the sweep and ranking its trials) and the whole
    `ensemble --top K --dev sweep --splits dev` (which also predicts with its K members)."""
    code = f"""
import json, time
from pathlib import Path
from orchestrator.ensemble import run as ensemble_run
from orchestrator.ensemble.request import EnsembleRequest
spent = {{"rank": 0.0}}
find, rank = ensemble_run.find_sweep, ensemble_run.ranked_candidates
def timed(f):
    def call(*a, **k):
        t = time.perf_counter(); out = f(*a, **k); spent["rank"] += time.perf_counter() - t
        return out
    return call
ensemble_run.find_sweep, ensemble_run.ranked_candidates = timed(find), timed(rank)
start = time.perf_counter()
request = EnsembleRequest(sweep={sweep!r}, top={top}, results_dir=Path({str(results)!r}),
                          splits=("dev",), dev_subset=True)  # as `--dev sweep`
ensemble_run.run_ensemble(request, log_to_mlflow=False)
print(json.dumps({{"ensemble_rank_s": spent["rank"], "ensemble_s": time.perf_counter() - start}}))
"""
    return in_process(code, env)


def api_figures(results: Path, sweep: str, env: dict[str, str]) -> dict:
    code = f"""
import json, time
start = time.perf_counter()
import orchestrator
frame = orchestrator.load_trials({sweep!r}, results_dir={str(results)!r})
print(json.dumps({{"api_load_trials_s": time.perf_counter() - start, "rows": len(frame)}}))
"""
    return in_process(code, env)


def ui_first_rows_s(results: Path, sweep: str, env: dict[str, str], names: list[str]) -> float:
    """Seconds from starting headless Chromium on the saved view to its DOM holding trial rows
    (any of the run `names`): Chromium's --virtual-time-budget lets the page load until it is
    idle, network included, then it dumps the DOM. An upper bound on time to first rows, as it
    counts the browser's start and every request; the median of `UI_LOADS` (NaN: no rows)."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        return float("nan")
    log = results / "bench-ui.log"
    port = _free_port()
    with log.open("w") as handle:
        server = subprocess.Popen(
            [sys.executable, "-m", "orchestrator.cli", "ui", "--results-dir", str(results),
             "--sweep", sweep, "--port", str(port)],
            env=env, stdout=handle, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    try:
        url = _wait_for_ui(port, log)
        loads = []
        for _ in range(UI_LOADS):
            with tempfile.TemporaryDirectory() as profile:
                start = time.perf_counter()
                dom = _dump(chromium, url, profile)
                loads.append(time.perf_counter() - start)
            if not any(name in dom for name in names):
                return float("nan")
        return sorted(loads)[len(loads) // 2]
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)


def _dump(chromium: str, url: str, profile: str) -> str:
    command = [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}",
               "--virtual-time-budget=20000", "--dump-dom", url]  # fmt: skip
    return subprocess.run(command, capture_output=True, text=True, timeout=120).stdout


def _wait_for_ui(port: int, log: Path) -> str:
    deadline = time.monotonic() + 150
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5).read()
            lines = [x for x in log.read_text().splitlines() if x.startswith("MLflow UI: ")]
            return lines[-1].split("MLflow UI: ", 1)[1]
        except (OSError, IndexError):
            time.sleep(1)
    raise SystemExit(f"the MLflow UI did not start: {log.read_text()[-2000:]}")


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--results-dir", type=Path, required=True)
    p.add_argument("--sweep", required=True)
    p.add_argument("--space", type=Path, default=None,
                   help="its space YAML (sweep_scale.py --keep writes it): time --extend 10")
    p.add_argument("--top", type=int, default=5, help="the ensemble's members (default 5)")
    args = p.parse_args(argv)
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "PYTHONPATH": str(REPO)}
    env.pop("MLFLOW_TRACKING_URI", None)
    cli = [sys.executable, "-m", "orchestrator.cli"]
    results, sweep = args.results_dir.resolve(), args.sweep
    figures: dict = {"report_s": timed([*cli, "report", sweep, "--results-dir", str(results)],
                                       env)}  # fmt: skip
    figures.update(api_figures(results, sweep, env))
    figures.update(ensemble_figures(results, sweep, env, args.top))
    import pandas as pd

    names = pd.read_parquet(results / sweep / "trials.parquet")["run_name"]
    figures["ui_first_rows_s"] = ui_first_rows_s(results, sweep, env, [str(n) for n in names])
    if args.space is not None:
        figures["extend_10_s"] = timed([*cli, "sweep", str(args.space), "--extend", "10",
                                        "--results-dir", str(results)], env)  # fmt: skip
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
