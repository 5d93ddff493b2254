"""`orchestrator train` stopped by Ctrl-C (SIGINT) or `kill` (SIGTERM) exits 130 / 143 after
cleaning up, leaving no half-written file. Real processes, minutes of training."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
TINY = str(REPO / "configs" / "tiny.yaml")
CLI = (sys.executable, "-m", "orchestrator.cli")
LONG_RUN = ("--set", "optim.epochs=500")  # still training when the signal comes


def start_train(tmp_path: Path, data_dir: Path, out: Path) -> tuple[subprocess.Popen, Path]:
    """`orchestrator train` on the tiny config for many epochs, its stderr in a file."""
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env["PYTHONPATH"] = str(REPO)
    stderr = tmp_path / "stderr.txt"
    with stderr.open("w") as err:
        process = subprocess.Popen(
            [*CLI, "train", TINY, "--data-dir", str(data_dir), "--out", str(out), *LONG_RUN],
            cwd=REPO,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=err,
            text=True,
            # A test runner started in the background inherits SIGINT ignored: restore it, as a
            # terminal's foreground job has it.
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )
    return process, stderr


def wait_for_line(process: subprocess.Popen, stderr: Path, prefix: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not any(line.startswith(prefix) for line in stderr.read_text().splitlines()):
        assert process.poll() is None, stderr.read_text()
        assert time.monotonic() < deadline, f"no {prefix!r} line: {stderr.read_text()}"
        time.sleep(0.2)


def half_written(root: Path) -> list[Path]:
    """Temp files and directories our writers use before renaming into place."""
    return [
        path
        for path in root.rglob("*")
        if path.name.endswith((".partial", ".tmp")) or ".partial." in path.name
        or (path.is_dir() and path.name.startswith((".best.", ".last.")))
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("signum", "code", "word"),
    [(signal.SIGINT, 130, "interrupted"), (signal.SIGTERM, 143, "terminated")],
)
def test_train_stopped_mid_run_exits_nonzero_after_cleaning_up(
    data_dir: Path, tmp_path: Path, signum: int, code: int, word: str
) -> None:
    out = tmp_path / "out"
    process, stderr = start_train(tmp_path, data_dir, out)
    try:
        wait_for_line(process, stderr, "epoch 2/500  step ", timeout=240)
        process.send_signal(signum)
        assert process.wait(timeout=120) == code, stderr.read_text()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert stderr.read_text().splitlines()[-1] == word
    assert half_written(out) == []
    # What it had finished is intact: the last epoch's resumable checkpoint, no final outputs.
    last = json.loads((out / "checkpoints" / "last" / "metrics.json").read_text())
    assert last["epoch"] >= 2
    assert not (out / "metrics.json").exists() and not (out / "predictions").exists()
