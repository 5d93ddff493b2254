"""End to end on CPU: a real 4-trial sweep of tiny models (Ray, Optuna, MLflow) on a small copy of
the CS224N files, then `ensemble --top 3`, `report`, and the real MLflow UI server checked over its
REST API and, when Debian's `chromium` is installed, rendered in headless Chromium.

The small data copy carries a stand-in `quora-test-student.csv` (that file is missing from the
real data), so all six prediction files can be checked; a second data copy without it checks that
para-test is skipped with a note.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from model.config import TASKS
from model.data import read_task_file
from model.evaluate import dev_metrics, prediction_filename, read_predictions
from orchestrator.cli import main
from tests.orchestrator.sweep_store import make_tiny_data_dir

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
SWEEP = "ens"
TRIALS = 4
FILES = {"sst": "ids-sst", "para": "quora", "sts": "sts"}
SPACE = f"""
name: {SWEEP}
base: {REPO / "configs" / "tiny.yaml"}
num_samples: {TRIALS}
max_concurrent: 2
sampler: random
seed: 7
scheduler: none
resources: {{cpu: 1}}
space:
  optim.lr: {{float: [1.0e-3, 1.0e-2], log: true}}
  model.head_dropout: {{choice: [0.0, 0.1]}}
"""


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env.update(PYTHONPATH=str(REPO), RAY_USAGE_STATS_ENABLED="0", PYTHONUNBUFFERED="1")
    return env


@pytest.fixture(scope="module")
def sweep_dir(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> dict[str, Path]:
    """results/ holding a finished 4-trial sweep, and the small data copies it trained on."""
    root = tmp_path_factory.mktemp("ensemble_report")
    data = make_tiny_data_dir(data_dir, root / "data", rows=60)
    no_quora_test = make_tiny_data_dir(data_dir, root / "data_no_quora_test", rows=60,
                                       quora_test=False)  # fmt: skip
    space = root / "space.yaml"
    space.write_text(SPACE)
    results = root / "results"
    command = [sys.executable, "-m", "orchestrator.cli", "sweep", str(space)]
    command += ["--results-dir", str(results), "--data-dir", str(data)]
    done = subprocess.run(command, cwd=REPO, env=_env(), capture_output=True, text=True,
                          timeout=400)  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return {"root": root, "results": results, "data": data, "no_quora_test": no_quora_test}


def _invoke(*args: str) -> list[str]:
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    result = CliRunner().invoke(main, list(args))
    assert result.exit_code == 0, result.output + repr(result.exception)
    return result.output.splitlines()


@pytest.fixture(scope="module")
def ensembled(sweep_dir: dict[str, Path]) -> dict[str, Any]:
    results, data = sweep_dir["results"], sweep_dir["data"]
    lines = _invoke(
        "ensemble", "--top", "3", "--results-dir", str(results), "--data-dir", str(data)
    )
    out = results / SWEEP / "ensemble"
    return {"out": out, "lines": lines, "summary": json.loads((out / "metrics.json").read_text())}


@pytest.fixture(scope="module")
def reported(sweep_dir: dict[str, Path], ensembled: dict[str, Any]) -> list[str]:
    return _invoke("report", SWEEP, "--results-dir", str(sweep_dir["results"]))


def test_ensemble_top3_writes_six_prediction_files_and_metrics(
    sweep_dir: dict[str, Path], ensembled: dict[str, Any]
) -> None:
    out, summary, data = ensembled["out"], ensembled["summary"], sweep_dir["data"]
    predictions: dict[str, Any] = {}
    for task in TASKS:
        for split in ("dev", "test"):
            name = (
                f"{FILES[task]}-{split}.csv"
                if split == "dev"
                else f"{FILES[task]}-test-student.csv"
            )
            parsed_task, ids, values = read_predictions(out / prediction_filename(task, split))
            expected = read_task_file(task, data / name, labelled=split == "dev")
            assert parsed_task == task
            assert ids == [row.id for row in expected]
            assert len(values) == len(ids) and np.isfinite(values).all()
            if split == "dev":
                labels = np.asarray([row.label for row in expected], dtype=np.float64)
                predictions[task] = (values, labels)

    assert len(summary["members"]) == 3 and all(m["weight"] == 1 for m in summary["members"])
    values = [m["sweep_value"] for m in summary["members"]]
    assert values == sorted(values, reverse=True)  # the three best trials, best first
    for member in summary["members"]:
        assert set(member["dev"]) == {"dev/sst_acc", "dev/para_acc", "dev/sts_corr", "dev/overall"}

    # The ensemble's dev scores are those of the files it wrote (STS scores are written as the
    # shortest text of their float32 value, so a correlation may move in the 6th digit).
    from model.evaluate import TaskPredictions

    rescored = dev_metrics(
        {t: TaskPredictions(t, [], v) for t, (v, _) in predictions.items()},
        {t: labels for t, (_, labels) in predictions.items()},
    )
    for key, value in rescored.items():
        assert summary["ensemble"]["dev"][key] == pytest.approx(value, abs=1e-4)
    best = max(summary["members"], key=lambda m: m["dev"]["dev/overall"])
    assert summary["best_member"]["run_id"] == best["run_id"]
    for key, gained in summary["gain_over_best_member"].items():
        assert gained == pytest.approx(summary["ensemble"]["dev"][key] - best["dev"][key])
    assert any(line.startswith("dev/overall") and "vs best member" in line
               for line in ensembled["lines"])  # fmt: skip


def test_ensemble_skips_para_test_without_quora_test_file(sweep_dir: dict[str, Path]) -> None:
    results = sweep_dir["root"] / "results_copy"
    shutil.copytree(sweep_dir["results"], results)
    data = sweep_dir["no_quora_test"]
    lines = _invoke("ensemble", "--top", "2", "--select", "greedy", "--method", "mean",
                    "--results-dir", str(results), "--data-dir", str(data))  # fmt: skip
    out = results / SWEEP / "ensemble"
    written = sorted(p.name for p in out.glob("*-output.csv"))
    assert "para-test-output.csv" not in written and len(written) == 5
    assert any("quora-test-student.csv not found" in line for line in lines)
    summary = json.loads((out / "metrics.json").read_text())
    # Greedy selection is reported beside plain top-K; its first pick is the best member on dev,
    # so its dev score is at least that member's.
    assert summary["select"] == "greedy" and len(summary["library"]) == TRIALS
    assert set(summary["top"]) == {"members", "dev"}
    assert sum(m["weight"] for m in summary["members"]) <= 2
    best_single = max(entry["dev/overall"] for entry in summary["library"])
    assert summary["ensemble"]["dev"]["dev/overall"] >= best_single - 1e-12


def test_report_writes_parquet_markdown_and_plots(
    sweep_dir: dict[str, Path], reported: list[str]
) -> None:
    out = sweep_dir["results"] / SWEEP
    frame = pd.read_parquet(out / "trials.parquet")
    assert len(frame) == TRIALS and frame["trial_id"].is_unique
    assert set(frame["state"]) == {"completed"}
    for column in ("optim.lr", "model.head_dropout", "best/dev/overall", "dev/overall@1",
                   "dev/overall@2", "wall_s", "device_used", "pruned_at_epoch"):  # fmt: skip
        assert column in frame.columns, column
    assert frame["optim.lr"].between(1e-3, 1e-2).all()
    best = frame[["dev/overall@1", "dev/overall@2"]].max(axis=1)
    np.testing.assert_allclose(frame["best/dev/overall"], best)

    ablation = (out / "ablation.md").read_text()
    assert "## `optim.lr` (base: 0.001)" in ablation
    assert "## `model.head_dropout` (base: 0.1)" in ablation
    importance = (out / "importance.md").read_text()
    assert "| `optim.lr` |" in importance or "could not compute" in importance
    for name in ("optimization_history", "parallel_coordinates", "axis_effects"):
        assert (out / "plots" / f"{name}.png").stat().st_size > 5000


# ---------------------------------------------------------------------------------------------
# The MLflow UI server


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=30) as response:
        return json.loads(response.read())


def _post(url: str, payload: dict[str, Any]) -> Any:
    request = urllib.request.Request(
        url, json.dumps(payload).encode(), {"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


@contextlib.contextmanager
def _serve_ui(results: Path, sweep: str, log: Path) -> Iterator[dict[str, str]]:
    """`orchestrator ui` (the real `mlflow server`) on a free loopback port, for the block."""
    port = _free_port()
    command = [sys.executable, "-m", "orchestrator.cli", "ui", "--results-dir", str(results),
               "--sweep", sweep, "--port", str(port)]  # fmt: skip
    with log.open("w") as handle:
        server = subprocess.Popen(command, cwd=REPO, env=_env(), stdout=handle,
                                  stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 150
        while True:
            try:
                urllib.request.urlopen(f"{base}/health", timeout=5).read()
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"MLflow UI did not start: {log.read_text()[-2000:]}")
                time.sleep(1)
        url = next(line.split("MLflow UI: ", 1)[1] for line in log.read_text().splitlines()
                   if line.startswith("MLflow UI: "))  # fmt: skip
        yield {"base": base, "url": url}
    finally:
        os.killpg(server.pid, signal.SIGTERM)  # the server and the workers it started
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)


@pytest.fixture(scope="module")
def ui_server(sweep_dir: dict[str, Path], reported: list[str]) -> Iterator[dict[str, str]]:
    with _serve_ui(sweep_dir["results"], SWEEP, sweep_dir["root"] / "ui.log") as server:
        yield server


def test_mlflow_ui_serves_the_trials_over_its_rest_api(
    ui_server: dict[str, str], ensembled: dict[str, Any]
) -> None:
    api = f"{ui_server['base']}/api/2.0/mlflow"
    name = urllib.parse.quote(SWEEP)
    experiment = _get(f"{api}/experiments/get-by-name?experiment_name={name}")["experiment"]
    tags = {t["key"]: t["value"] for t in experiment.get("tags", [])}
    assert tags["mlflow.experimentKind"] == "custom_model_development"
    runs_page = f"{ui_server['base']}/#/experiments/{experiment['experiment_id']}/runs"
    assert ui_server["url"] == f"{runs_page}?viewStateShareKey=ablation"
    # The view that URL opens: trial runs, best metric first, swept params and metrics as columns.
    view = json.loads(tags["mlflow.sharedViewState.ablation"])
    assert view["searchFilter"] == "tags.role = 'trial'"
    assert view["orderByKey"] == "metrics.`best/dev/overall`" and view["orderByAsc"] is False
    assert {"params.`optim.lr`", "params.`model.head_dropout`", "metrics.`best/dev/overall`"} <= (
        set(view["selectedColumns"])
    )

    def search(filter_string: str) -> list[dict[str, Any]]:
        payload = {"experiment_ids": [experiment["experiment_id"]], "filter": filter_string}
        return _post(f"{api}/runs/search", payload).get("runs", [])

    trials = search("tags.role = 'trial'")
    assert len(trials) == TRIALS
    for run in trials:
        params = {p["key"]: p["value"] for p in run["data"]["params"]}
        metrics = {m["key"]: m["value"] for m in run["data"]["metrics"]}
        assert run["info"]["status"] == "FINISHED"
        # Run names carry the swept values, and the params hold them (flattened dotted keys).
        named = dict(part.split("=") for part in run["info"]["run_name"].split())
        assert set(named) == {"optim.lr", "model.head_dropout"}
        for key, value in named.items():
            assert float(params[key]) == pytest.approx(float(value), rel=1e-2)
        assert {"best/dev/overall", "dev/overall", "dev/sst_acc"} <= set(metrics)
        history = _get(
            f"{api}/metrics/get-history?run_id={run['info']['run_id']}&metric_key=dev/overall"
        )["metrics"]
        assert sorted(m["step"] for m in history) == [1, 2]
        assert max(m["value"] for m in history) == pytest.approx(metrics["best/dev/overall"])

    ensembles = search("tags.role = 'ensemble'")
    assert ensembles, "the ensemble logged no run"
    members = {m["run_id"] for m in ensembled["summary"]["members"]}
    tagged = [
        {t["key"]: t["value"] for t in run["data"]["tags"]}["ensemble.members"]
        for run in ensembles
    ]
    assert any(set(value.split(",")) == members for value in tagged)
    assert members <= {run["info"]["run_id"] for run in trials}

    parent = search("tags.role = 'sweep'")[0]["info"]["run_id"]
    listed = _get(f"{api}/artifacts/list?run_id={parent}&path=report")["files"]
    assert {"report/ablation.md", "report/importance.md", "report/trials.parquet"} <= {
        f["path"] for f in listed
    }
    query = urllib.parse.urlencode({"path": "report/ablation.md", "run_uuid": parent})
    with urllib.request.urlopen(f"{ui_server['base']}/get-artifact?{query}", timeout=30) as r:
        assert r.read().decode().startswith(f"# Ablation: sweep `{SWEEP}`")


def _render(url: str, expected: list[str], screenshot: Path, profile: Path) -> str:
    """The DOM of `url` in headless Chromium (retried until it shows every `expected` text), and
    a screenshot of the page; skips the test where Debian's chromium is not installed."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("Debian's chromium is not installed (apt-get install -y chromium)")
    base = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
            f"--user-data-dir={profile}", "--window-size=2400,1000",
            "--virtual-time-budget=20000"]  # fmt: skip
    dom = ""
    for _ in range(3):  # a loaded machine may need longer than one budget to render the table
        done = subprocess.run([*base, "--dump-dom", url], capture_output=True, text=True,
                              timeout=120)  # fmt: skip
        dom = done.stdout
        if all(text in dom for text in expected):
            break
    subprocess.run([*base, f"--screenshot={screenshot}", url], capture_output=True, timeout=120)
    print(f"screenshot of the runs page: {screenshot}")
    return dom


def test_runs_page_renders_the_trial_rows_in_chromium(
    ui_server: dict[str, str], sweep_dir: dict[str, Path], tmp_path: Path
) -> None:
    trial_names = pd.read_parquet(sweep_dir["results"] / SWEEP / "trials.parquet")["run_name"]
    screenshot = tmp_path / "mlflow_runs.png"
    dom = _render(ui_server["url"], list(trial_names), screenshot, tmp_path / "profile")
    missing = [name for name in trial_names if name not in dom]
    assert not missing, f"trial rows not rendered: {missing} (screenshot: {screenshot})"
    text = re.sub(r"<[^>]+>", "", dom)
    assert f"{TRIALS} matching runs" in text
    # The stored view shows the sweep as an ablation table: metric and param columns.
    assert "best/dev/overall" in text and "optim.lr" in text
    assert screenshot.is_file() and screenshot.stat().st_size > 10_000


# ---------------------------------------------------------------------------------------------
# An ablation study's runs page: one aggregated row per arm

STUDY = "abl"
STUDY_ARMS = ("baseline", "smart", "cross")
STUDY_SEEDS = (0, 1, 2)
STUDY_SCREENSHOT = Path("/tmp/study_ui.png")  # kept for a person to look at


@pytest.fixture(scope="module")
def study_results(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A reported 3-arm × 3-seed study, logged as the study driver does (one confirm run of
    `cross` failed), and a tuning run that the grouped view must leave out."""
    from tests.orchestrator.sweep_store import FakeStudyRun, fake_study

    results = tmp_path_factory.mktemp("study_ui") / "results"
    runs = [FakeStudyRun("baseline", 0, (0.3, 0.6, 0.1), phase="tune")]
    for i, arm in enumerate(STUDY_ARMS):
        for seed in STUDY_SEEDS:
            state = "failed" if (arm, seed) == ("cross", 2) else "completed"
            scores = (0.40 + 0.02 * i + 0.01 * seed, 0.70 + 0.01 * i, 0.30 + 0.02 * seed)
            runs.append(FakeStudyRun(arm, seed, scores, state=state, history=[0.5, 0.55 + i / 50]))
    fake_study(f"sqlite:///{results}/mlflow.db", STUDY, runs, arms=STUDY_ARMS, seeds=STUDY_SEEDS)
    _invoke("report", STUDY, "--results-dir", str(results))
    return results


def test_a_studys_runs_page_shows_one_averaged_row_per_arm_in_chromium(
    study_results: Path, tmp_path: Path
) -> None:
    groups = [f"Group: {arm}" for arm in STUDY_ARMS]
    screenshot = tmp_path / "study_ui.png"
    with _serve_ui(study_results, STUDY, tmp_path / "ui.log") as server:
        assert server["url"].endswith("?viewStateShareKey=ablation")
        dom = _render(server["url"], groups, screenshot, tmp_path / "profile")
    if screenshot.is_file():
        shutil.copy(screenshot, STUDY_SCREENSHOT)
    text = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", dom))
    # One collapsed row per arm, with its count of completed confirm runs; no run row shows.
    for arm, runs in (("baseline", 3), ("smart", 3), ("cross", 2)):
        assert f"Group: {arm} {runs}" in text, f"no row for {arm} (screenshot: {screenshot})"
    assert "seed=" not in text  # the fake runs' names: `smart seed=1`
    assert "8 matching runs" in text and "Group by: arm" in text
    # The arms' rows come best first: the view orders by the mean best/dev/overall.
    order = [text.index(group) for group in ("Group: cross", "Group: smart", "Group: baseline")]
    assert order == sorted(order)
    assert screenshot.stat().st_size > 10_000
