"""End to end on CPU: `orchestrator train` (configs/tiny.yaml, really trained) in its own process,
then `orchestrator predict --checkpoint` as a real process on the dev and test CSVs reproduces the
prediction files `train` wrote, byte for byte; and plain text on standard input through a pipe."""

from __future__ import annotations

import csv
import io
import os
import subprocess
import sys
from pathlib import Path

import pytest

from model.evaluate import prediction_filename
from tests.orchestrator.predict_store import FILES
from tests.orchestrator.sweep_store import make_tiny_data_dir

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


def run(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env["PYTHONPATH"] = str(REPO)
    command = [sys.executable, "-m", "orchestrator.cli", *args]
    return subprocess.run(
        command, cwd=REPO, env=env, input=stdin, capture_output=True, text=True, timeout=600
    )


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> dict[str, Path]:
    """A tiny model trained for 2 epochs on 40 rows per task (dev: the whole 40-row files)."""
    root = tmp_path_factory.mktemp("predict_e2e")
    data = make_tiny_data_dir(data_dir, root / "data", rows=40)
    out = root / "train"
    done = run(
        "train", str(REPO / "configs" / "tiny.yaml"), "--data-dir", str(data), "--out", str(out)
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return {"data": data, "out": out, "checkpoint": out / "checkpoints" / "best"}


@pytest.mark.parametrize(("task", "split"), list(FILES))
def test_predict_reproduces_the_files_train_wrote(
    trained: dict[str, Path], tmp_path: Path, task: str, split: str
) -> None:
    name, task_flag = FILES[(task, split)]
    out = tmp_path / prediction_filename(task, split)
    extra = ("--task", task_flag) if task_flag else ()
    done = run(
        "predict",
        "--checkpoint",
        str(trained["checkpoint"]),
        str(trained["data"] / name),
        "--format",
        "leaderboard",
        "--out",
        str(out),
        *extra,
    )
    assert done.returncode == 0, done.stderr
    written = trained["out"] / "predictions" / prediction_filename(task, split)
    assert out.read_bytes() == written.read_bytes()


def test_plain_text_through_a_pipe(trained: dict[str, Path]) -> None:
    done = run(
        "predict",
        "--checkpoint",
        str(trained["checkpoint"]),
        "-",
        stdin="a gripping , funny film .\n\nflat and dull .\n",
    )
    assert done.returncode == 0, done.stderr
    rows = list(csv.DictReader(io.StringIO(done.stdout)))
    assert [r["id"] for r in rows] == ["1", "3"]
    assert all(r["prediction"] in {"0", "1", "2", "3", "4"} for r in rows)
    for row in rows:
        total = sum(float(row[f"prob_{c}"]) for c in range(5))
        assert total == pytest.approx(1.0, abs=1e-5)
    bad = run(
        "predict",
        "--checkpoint",
        str(trained["checkpoint"]),
        "-",
        "--task",
        "para",
        stdin="one\ttwo\nno tab here\n",
    )
    assert bad.returncode == 2 and bad.stdout == ""
    assert bad.stderr.strip() == (
        "Error: <stdin>: line 2: no TAB; --task para needs two sentences per line separated by "
        "one TAB"
    )
