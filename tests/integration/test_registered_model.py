"""The ensemble as a registered MLflow model, end to end on CPU with real MLflow: `orchestrator
ensemble --register` on a sweep of three tiny checkpoints, then the registered version loaded with
`mlflow.pyfunc.load_model`, downloaded for `predict --model`, and served by a real `mlflow models
serve` process on loopback; each must predict what the Predictor (`orchestrator predict`) does.
"""

from __future__ import annotations

import json
import math
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from click.testing import CliRunner

from model.data import read_task_file
from orchestrator.cli import main
from orchestrator.contract import MEMBERS_TAG, METHOD_TAG, MODEL_KIND_TAG, SWEEP_TAG
from orchestrator.ensemble.manifest import read_manifest
from orchestrator.predict.predictor import load_predictor
from tests.orchestrator.sweep_store import (
    FakeTrial,
    fake_sweep,
    make_tiny_data_dir,
    save_untrained_checkpoint,
    tiny_config,
)

pytestmark = pytest.mark.integration

NAME = "tiny-ensemble"
DEV_FILES = {"sst": "ids-sst-dev.csv", "para": "quora-dev.csv", "sts": "sts-dev.csv"}


@pytest.fixture(scope="module")
def registered(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> dict[str, Any]:
    """A sweep of three untrained tiny checkpoints (different seeds), ensembled with
    `--register`; the store's URI, the ensemble directory and the command's output."""
    root = tmp_path_factory.mktemp("registered")
    data = make_tiny_data_dir(data_dir, root / "data", rows=12)
    results = root / "results"
    trials = []
    for i, value in enumerate([0.5, 0.7, 0.6]):
        checkpoint = save_untrained_checkpoint(results / "fake" / f"t{i}" / "best", tiny_config(i))
        trials.append(FakeTrial(f"t{i}", value, checkpoint=checkpoint, params={"seed": i}))
    uri = f"sqlite:///{results}/mlflow.db"
    fake_sweep(uri, "fake", trials, searched=("seed",))
    saved = os.environ.pop("MLFLOW_TRACKING_URI", None)
    try:
        result = CliRunner().invoke(main, [
            "ensemble", "--top", "3", "--results-dir", str(results), "--data-dir", str(data),
            "--splits", "dev", "--register", NAME,
        ])  # fmt: skip
    finally:
        if saved is not None:
            os.environ["MLFLOW_TRACKING_URI"] = saved
    assert result.exit_code == 0, result.output + repr(result.exception)
    return {
        "uri": uri,
        "ensemble": results / "fake" / "ensemble",
        "lines": result.output.splitlines(),
        "frame": dev_frame(data),
        "data": data,
        "results": results,
    }


def dev_frame(data: Path) -> pd.DataFrame:
    """The tiny dev files' rows of all three tasks, interleaved, as predict_frame's input."""
    rows = []
    for task, name in DEV_FILES.items():
        for example in read_task_file(task, data / name):
            pair = task != "sst"
            rows.append({
                "id": example.id,
                "task": task,
                "sentence1": example.sentence1 if pair else example.sentence,  # type: ignore[union-attr]
                "sentence2": example.sentence2 if pair else None,  # type: ignore[union-attr]
            })  # fmt: skip
    frame = pd.DataFrame(rows)
    return frame.iloc[[*range(0, len(frame), 2), *range(1, len(frame), 2)]].reset_index(drop=True)


@pytest.fixture(scope="module")
def expected(registered: dict[str, Any]) -> pd.DataFrame:
    """What `orchestrator predict --ensemble` predicts on the rows: the Predictor's frame."""
    return load_predictor(registered["ensemble"]).predict_frame(registered["frame"])


def test_ensemble_register_prints_the_version_and_tags_it(registered: dict[str, Any]) -> None:
    from mlflow import MlflowClient

    assert f"registered:  models:/{NAME}/1" in registered["lines"]
    version = MlflowClient(tracking_uri=registered["uri"]).get_model_version(NAME, "1")
    manifest = read_manifest(registered["ensemble"])
    summary = json.loads((registered["ensemble"] / "metrics.json").read_text())
    assert version.tags[MODEL_KIND_TAG] == "ensemble"
    assert version.tags[SWEEP_TAG] == "fake"
    assert version.tags[METHOD_TAG] == "mean"  # the CLI default
    assert version.tags[MEMBERS_TAG].split(",") == [m.run_id for m in manifest.members]
    assert len(manifest.members) == 3
    for key, value in summary["ensemble"]["dev"].items():
        assert float(version.tags[key]) == pytest.approx(value, abs=1e-6)
    # The version's run is the ensemble's own run (it holds the prediction files too).
    assert f"mlflow run:  {version.run_id}" in registered["lines"]


def test_pyfunc_model_predicts_what_the_predictor_does(
    registered: dict[str, Any], expected: pd.DataFrame, monkeypatch: pytest.MonkeyPatch
) -> None:
    import mlflow.pyfunc

    monkeypatch.setenv("MLFLOW_TRACKING_URI", registered["uri"])
    loaded = mlflow.pyfunc.load_model(f"models:/{NAME}/1")
    got = loaded.predict(registered["frame"])
    assert list(got["id"]) == list(registered["frame"]["id"])
    assert set(got["task"]) == {"sst", "para", "sts"}
    pd.testing.assert_frame_equal(got, expected)
    # The input example and signature came along: the model states what it takes.
    inputs = loaded.metadata.get_input_schema().input_names()
    assert inputs == ["task", "sentence1", "sentence2", "id"]


def test_downloaded_model_is_self_contained(
    registered: dict[str, Any], expected: pd.DataFrame, tmp_path: Path
) -> None:
    from orchestrator.registry.models import download_model

    predictor_dir = download_model(registered["uri"], f"models:/{NAME}/1", tmp_path / "dl")
    raw = json.loads((predictor_dir / "manifest.json").read_text())
    # Members point at copies inside the model, not at the sweep's checkpoints.
    assert all(not Path(m["checkpoint"]).is_absolute() for m in raw["members"])
    for member in read_manifest(predictor_dir).members:
        assert member.checkpoint.resolve().is_relative_to(predictor_dir.resolve())
    got = load_predictor(predictor_dir).predict_frame(registered["frame"])
    pd.testing.assert_frame_equal(got, expected)


def test_download_of_a_missing_version_is_a_one_line_error(
    registered: dict[str, Any], tmp_path: Path
) -> None:
    from orchestrator.registry.models import ModelRegistryError, download_model

    missing_version = rf"models:/{NAME}/7: model '{NAME}' has no version 7 \(versions: 1\)"
    with pytest.raises(ModelRegistryError, match=missing_version):
        download_model(registered["uri"], f"models:/{NAME}/7", tmp_path)
    missing_name = rf"models:/nope/1: no registered model 'nope' in .* \(registered: {NAME}\)"
    with pytest.raises(ModelRegistryError, match=missing_name):
        download_model(registered["uri"], "models:/nope/1", tmp_path)


def test_predict_model_prints_what_predict_ensemble_does(
    registered: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    data, results = registered["data"], registered["results"]

    def predict(*model: str) -> tuple[int, str]:
        done = CliRunner().invoke(main, ["predict", *model, str(data / "sts-dev.csv"),
                                         "--results-dir", str(results)])  # fmt: skip
        return done.exit_code, done.stdout if done.exit_code == 0 else done.output

    code, from_ensemble = predict("--ensemble", str(registered["ensemble"]))
    assert code == 0, from_ensemble
    code, from_registry = predict("--model", f"models:/{NAME}/1")
    assert code == 0, from_registry
    assert from_registry == from_ensemble and len(from_registry.splitlines()) == 13
    code, output = predict("--model", f"models:/{NAME}/2")
    assert code == 2
    assert output.strip().splitlines() == [
        f"Error: models:/{NAME}/2: model '{NAME}' has no version 2 (versions: 1)"
    ]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def served(registered: dict[str, Any], tmp_path: Path) -> Iterator[str]:
    """`mlflow models serve -m models:/NAME/1 --env-manager local` as a real process group on
    a free loopback port; yields its URL, stopped by its pid's process group afterwards."""
    port = _free_port()
    bin_dir = str(Path(sys.executable).parent)  # uvicorn, started by `mlflow models serve`
    env = {**os.environ, "MLFLOW_TRACKING_URI": registered["uri"],
           "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}  # fmt: skip
    command = [sys.executable, "-m", "mlflow", "models", "serve", "-m", f"models:/{NAME}/1"]
    command += ["--env-manager", "local", "--host", "127.0.0.1", "--port", str(port)]
    log = open(tmp_path / "serve.log", "wb")  # closed in the finally
    process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT,
                               start_new_session=True)  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_until_up(url, process, tmp_path / "serve.log")
        yield url
    finally:
        for sig, wait in ((signal.SIGTERM, 20), (signal.SIGKILL, 10)):
            if process.poll() is not None:
                break
            os.killpg(process.pid, sig)
            try:
                process.wait(timeout=wait)
            except subprocess.TimeoutExpired:
                continue
        log.close()


def _wait_until_up(url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if process.poll() is not None:
            tail = log.read_text()[-2000:]
            pytest.fail(f"mlflow models serve exited {process.returncode}: {tail}")
        try:
            with urllib.request.urlopen(f"{url}/ping", timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            time.sleep(0.5)
    pytest.fail(f"mlflow models serve not up after 180 s: {log.read_text()[-2000:]}")


def _invoke(url: str, frame: pd.DataFrame) -> pd.DataFrame:
    split = frame.to_dict(orient="split", index=False)
    body = json.dumps({"dataframe_split": split}).encode()
    request = urllib.request.Request(
        f"{url}/invocations", data=body, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=120) as response:
        answer = json.loads(response.read())  # NaN (a task without probabilities) parses
    return pd.DataFrame(answer["predictions"])


def test_served_model_answers_invocations_with_the_predictors_predictions(
    registered: dict[str, Any], expected: pd.DataFrame, served: str
) -> None:
    got = _invoke(served, registered["frame"])
    assert list(got.columns) == list(expected.columns)
    assert list(got["id"]) == list(expected["id"]) and list(got["task"]) == list(expected["task"])
    for column in expected.columns[2:]:
        for mine, theirs in zip(got[column], expected[column], strict=True):
            if isinstance(theirs, float) and math.isnan(theirs):
                assert mine is None or math.isnan(mine), column
            else:
                assert float(mine) == pytest.approx(float(theirs), rel=1e-6, abs=1e-7), column
    # A single task without ids: row numbers as ids, as `predict_frame` numbers them.
    one = registered["frame"].loc[registered["frame"]["task"] == "sts", ["task", "sentence1",
                                                                        "sentence2"]]  # fmt: skip
    got_one = _invoke(served, one.reset_index(drop=True))
    assert list(got_one["id"]) == [str(i + 1) for i in range(len(one))]


def test_served_model_answers_a_row_it_cannot_predict_with_400_and_the_projects_message(
    registered: dict[str, Any], served: str
) -> None:
    """Before: MLflow's generic "Encountered an unexpected error while evaluating the model"
    with the project's message only inside the stack trace."""
    frame = registered["frame"].head(2).copy()
    frame.loc[1, "task"] = "nli"
    body = json.dumps({"dataframe_split": frame.to_dict(orient="split", index=False)}).encode()
    request = urllib.request.Request(
        f"{served}/invocations", data=body, headers={"Content-Type": "application/json"}
    )
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(request, timeout=120)
    assert caught.value.code == 400
    answer = json.loads(caught.value.read())
    assert answer["error_code"] == "INVALID_PARAMETER_VALUE"
    assert answer["message"].endswith(
        "Error: row 2: unknown task 'nli' (expected one of sst, para, sts)"
    )
    assert "unexpected error" not in answer["message"]
