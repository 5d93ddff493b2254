"""bench/serve_latency.py end to end on CPU: the quickstart model registered in a temporary
store, served by a real `mlflow models serve` on loopback, a few requests of each size, the
table printed and the server stopped. No timing is asserted.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def test_serve_latency_bench_serves_times_and_stops(data_dir: Path) -> None:
    args = ["--data-dir", str(data_dir), "--sizes", "1", "7", "--requests", "3",
            "--warmup", "1", "--time-limit", "60", "--server-threads", "1"]  # fmt: skip
    run = subprocess.run([sys.executable, str(ROOT / "bench" / "serve_latency.py"), *args],
                         capture_output=True, text=True, timeout=600, cwd=ROOT)  # fmt: skip
    assert run.returncode == 0, run.stderr[-2000:]
    lines = run.stdout.splitlines()
    served = "# mlflow models serve -m models:/serve-latency-bench/1 (quickstart model, fp32"
    assert lines[0].startswith(served)
    for size in (1, 7):
        row = next(line for line in lines if line.startswith(f"| {size} row(s) |"))
        cells = row.strip("| ").split(" | ")
        assert cells[1] == "3", row
        p50, p95, _, worst = (float(c) for c in cells[2:6])
        assert 0 < p50 <= p95 <= worst, row
    # The server ran in its own process group: nothing of it is left.
    assert lines[-1].startswith("# server stopped (process group ")
    group = int(lines[-1].rstrip(")").rsplit(" ", 1)[1])
    with pytest.raises(ProcessLookupError):
        os.killpg(group, 0)
