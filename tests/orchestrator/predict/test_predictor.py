"""`orchestrator predict` and the Predictor: on the dev and test CSVs it reproduces the prediction
files `orchestrator ensemble` wrote (top-K vote, greedy mean with repeated members), byte for byte
in the leaderboard format and to the last printed digit in its CSV; `predict_frame` serves mixed
tasks; the throughput bench times predictions equal to the eval path's. Bad models and inputs:
test_predict_errors.py. The members are `predict_store`'s untrained tiny checkpoints.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from model.evaluate import prediction_filename
from orchestrator.ensemble.combine import combine_tasks
from orchestrator.ensemble.manifest import write_ensemble_manifest
from orchestrator.ensemble.member_predictions import SplitInputs, predict_member
from orchestrator.ensemble.request import Candidate, EnsembleRequest
from orchestrator.predict.outputs import PROGRESS_LINE_BATCHES, PredictProgress
from orchestrator.predict.predictor import (
    PROBABILITY_COLUMNS,
    PredictError,
    load_predictor,
    output_columns,
)
from tests.orchestrator.predict_store import (
    FILES,
    build_ensemble,
    invoke,
    make_predict_store,
    trial_checkpoint,
)
from tests.orchestrator.sweep_store import tiny_config

BENCH = Path(__file__).resolve().parents[3] / "bench" / "predict_throughput.py"


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> Path:
    return make_predict_store(tmp_path_factory.mktemp("predict"), data_dir)


@pytest.fixture(autouse=True)
def _local_store(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)


@pytest.mark.parametrize(
    "args",
    [("--top", "3", "--method", "vote"), ("--top", "3", "--select", "greedy", "--method", "mean")],
)
def test_predict_reproduces_the_ensembles_files_byte_for_byte(
    store: Path, tmp_path: Path, args: tuple[str, ...]
) -> None:
    ensemble = build_ensemble(store, *args)
    for (task, split), (name, task_flag) in FILES.items():
        out = tmp_path / prediction_filename(task, split)
        extra = ("--task", task_flag) if task_flag else ()
        code, stdout, stderr = invoke(
            "predict",
            "--ensemble",
            str(ensemble),
            str(store / "data" / name),
            "--format",
            "leaderboard",
            "--out",
            str(out),
            *extra,
        )
        assert code == 0, stdout + stderr
        expected = (ensemble / prediction_filename(task, split)).read_bytes()
        assert out.read_bytes() == expected, (task, split)


def test_the_manifest_records_what_the_ensemble_chose(store: Path) -> None:
    ensemble = build_ensemble(store, "--top", "4", "--select", "greedy")
    summary = json.loads((ensemble / "metrics.json").read_text())
    predictor = load_predictor(ensemble)
    assert predictor.manifest is not None
    weights = {m["trial_id"]: m["weight"] for m in summary["members"]}
    assert {m.checkpoint.parent.name: m.weight for m in predictor.members} == weights
    assert dict(predictor.manifest.dev) == summary["ensemble"]["dev"]
    assert (predictor.manifest.select, predictor.manifest.metric) == ("greedy", "dev/overall")


@pytest.mark.parametrize("method", ["vote", "mean"])
def test_weights_count_a_member_once_per_vote(store: Path, tmp_path: Path, method: str) -> None:
    """A member chosen twice (greedy selection's repeats) weighs twice, as `ensemble` combines."""
    checkpoints = [trial_checkpoint(store, i) for i in (0, 1)]
    candidates = [
        Candidate(f"run{i}", f"t{i}", f"t{i}", "completed", 0.5, checkpoint)
        for i, checkpoint in enumerate(checkpoints)
    ]
    selected = [candidates[0], candidates[1], candidates[0]]
    request = EnsembleRequest(top=3, method=method, select="greedy")
    write_ensemble_manifest(tmp_path, "fake", request, "dev/overall", selected, {})
    inputs = SplitInputs(tiny_config(), store / "data", ("dev",), [])
    cpu = torch.device("cpu")
    by_member = [predict_member(c, inputs, ("dev",), cpu)["dev"] for c in checkpoints]
    weighted = combine_tasks([by_member[0], by_member[1], by_member[0]], method)
    unweighted = combine_tasks(by_member, method)
    predictor = load_predictor(tmp_path)
    assert [m.weight for m in predictor.members] == [2, 1]
    differs = False
    for task, expected in weighted.items():
        got = predictor.predict_examples(task, inputs.examples["dev"][task])
        np.testing.assert_array_equal(got.values, expected.values)
        differs |= not np.array_equal(got.values, unweighted[task].values)
    assert differs  # the weights changed some prediction: the test can tell them apart


def test_predict_csv_matches_the_leaderboard_files_to_the_last_digit(store: Path) -> None:
    ensemble = build_ensemble(store, "--top", "3")
    for task, name in (
        ("sst", "ids-sst-dev.csv"),
        ("para", "quora-dev.csv"),
        ("sts", "sts-dev.csv"),
    ):
        code, stdout, stderr = invoke(
            "predict", "--ensemble", str(ensemble), str(store / "data" / name)
        )
        assert code == 0, stdout + stderr
        rows = list(csv.DictReader(io.StringIO(stdout)))
        assert list(rows[0]) == ["id", "prediction", *PROBABILITY_COLUMNS[task]]
        lines = (ensemble / prediction_filename(task, "dev")).read_text().splitlines()[1:]
        written = [tuple(part.strip() for part in line.split(",")) for line in lines]
        if task == "sts":
            assert [(r["id"], r["prediction"]) for r in rows] == written
        else:  # the leaderboard writes Quora's labels as 0.0 / 1.0
            assert [(r["id"], int(r["prediction"])) for r in rows] == [
                (i, int(float(v))) for i, v in written
            ]
            probabilities = np.array(
                [[float(r[c]) for c in PROBABILITY_COLUMNS[task]] for r in rows]
            )
            np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-6)


def test_a_checkpoint_predicts_as_the_ensemble_members_do(store: Path) -> None:
    checkpoint = trial_checkpoint(store, 1)
    inputs = SplitInputs(tiny_config(), store / "data", ("dev",), [])
    reference = predict_member(checkpoint, inputs, ("dev",), torch.device("cpu"))["dev"]
    predictor = load_predictor(checkpoint)
    assert not predictor.is_ensemble and predictor.tasks == ("sst", "para", "sts")
    for task, expected in reference.items():
        got = predictor.predict_examples(task, inputs.examples["dev"][task])
        assert got.ids == expected.ids
        np.testing.assert_array_equal(got.values, expected.values)
        if expected.probabilities is not None:
            np.testing.assert_array_equal(got.probabilities, expected.probabilities)


def test_predict_frame_serves_mixed_tasks_in_input_order(store: Path) -> None:
    predictor = load_predictor(build_ensemble(store, "--top", "2"))
    frame = pd.DataFrame(
        {
            "task": ["sts", "sst", "para", "sst"],
            "sentence1": ["A man plays.", "A fine film.", "How old?", "Dull."],
            "sentence2": ["A man sings.", None, "What age?", None],
        }
    )
    out = predictor.predict_frame(frame)
    assert list(out.columns) == ["id", "task", "prediction", *PROBABILITY_COLUMNS["sst"]]
    assert out["id"].tolist() == ["1", "2", "3", "4"] and out["task"].tolist() == list(
        frame["task"]
    )
    for task in ("sst", "para", "sts"):
        rows = frame[frame["task"] == task]
        alone = predictor.predict_frame(rows.drop(columns="task"), task=task)
        assert list(alone.columns) == list(output_columns(task))
        mixed = out[out["task"] == task]
        np.testing.assert_array_equal(
            mixed["prediction"].to_numpy(float), alone["prediction"].to_numpy(float)
        )
        for column in PROBABILITY_COLUMNS[task]:
            np.testing.assert_array_equal(mixed[column].to_numpy(), alone[column].to_numpy())
    assert out.loc[out["task"] == "sts", "prob_0"].isna().all()


@pytest.mark.parametrize(
    ("frame", "task", "message"),
    [
        (
            pd.DataFrame({"task": ["sst", "nli"], "sentence1": ["a", "b"]}),
            None,
            "row 2: unknown task 'nli'",
        ),
        (pd.DataFrame({"sentence1": ["a"]}), None, "the input has no 'task' column"),
        (
            pd.DataFrame({"task": ["para"], "sentence1": ["a"], "sentence2": [None]}),
            None,
            "row 1: para needs a text 'sentence2'",
        ),
        (
            pd.DataFrame({"id": ["a", "a"], "task": ["sst"] * 2, "sentence1": ["x", "y"]}),
            None,
            "row 2: duplicate id 'a'",
        ),
    ],
)
def test_predict_frame_errors_name_the_row(
    store: Path, frame: pd.DataFrame, task: str | None, message: str
) -> None:
    predictor = load_predictor(trial_checkpoint(store, 0))
    with pytest.raises(PredictError, match=message):
        predictor.predict_frame(frame, task=task)


def test_plain_text_on_standard_input(store: Path) -> None:
    checkpoint = trial_checkpoint(store, 0)
    code, stdout, _ = invoke(
        "predict",
        "--checkpoint",
        str(checkpoint),
        "-",
        "--task",
        "sts",
        stdin="A cat sits.\tA cat is sitting.\n\nA dog.\tA car.\n",
    )
    assert code == 0
    rows = list(csv.DictReader(io.StringIO(stdout)))
    assert [r["id"] for r in rows] == ["1", "3"] and list(rows[0]) == ["id", "prediction"]
    predictor = load_predictor(checkpoint)
    frame = pd.DataFrame(
        {"sentence1": ["A cat sits.", "A dog."], "sentence2": ["A cat is sitting.", "A car."]}
    )
    expected = predictor.predict_frame(frame, task="sts")["prediction"]
    assert [r["prediction"] for r in rows] == [str(np.float32(v)) for v in expected]


def test_output_file_and_progress_lines(store: Path, tmp_path: Path) -> None:
    checkpoint = trial_checkpoint(store, 0)
    out = tmp_path / "sub" / "preds.csv"
    code, stdout, stderr = invoke(
        "predict",
        "--checkpoint",
        str(checkpoint),
        "--out",
        str(out),
        str(store / "data" / "ids-sst-dev.csv"),
    )
    assert code == 0 and stdout == ""
    assert stderr.strip() == f"sst: 40 predictions in {out}"
    assert len(out.read_text().splitlines()) == 41
    assert [p.name for p in out.parent.iterdir()] == ["preds.csv"]  # no temp file left
    lines: list[str] = []
    progress = PredictProgress(1000, terminal=False, echo=lines.append)
    for _ in range(2 * PROGRESS_LINE_BATCHES + 3):
        progress(4)
    progress.close()
    assert lines == [
        "predicted 200/1000 rows (50 batches)",
        "predicted 400/1000 rows (100 batches)",
    ]


def test_the_throughput_bench_times_predictions_equal_to_the_eval_paths(
    store: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import importlib.util

    spec = importlib.util.spec_from_file_location("predict_throughput", BENCH)
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    checkpoints = [str(trial_checkpoint(store, i)) for i in range(3)]
    figures = bench.main(["--checkpoints", *checkpoints, "--data-dir", str(store / "data"),
                          "--rows", "5", "--rounds", "1"])  # fmt: skip
    lines = capsys.readouterr().out.splitlines()
    assert (
        lines[0]
        == f"predictions: `{bench.SINGLE}` equals the eval path on every row of every task"
    )
    assert "rows: sst 5, para 5, sts 5" in lines
    variants = [bench.EVAL_PATH, bench.SINGLE, "predict, 3-member ensemble"]
    assert list(figures) == [*variants, "load_s"]
    for name in variants:  # rows/s of every task, as the table prints them
        assert set(figures[name]) == {"sst", "para", "sts"}
        assert all(0 < rate < float("inf") for rate in figures[name].values()), figures[name]
        row = next(line for line in lines if line.startswith(f"| {name} |"))
        printed = [cell.split(" (")[0] for cell in row.strip("| ").split(" | ")[1:]]
        assert printed == [f"{figures[name][t]:.0f}" for t in ("sst", "para", "sts")]
    assert figures["load_s"]["single"] > 0 and figures["load_s"]["ensemble"] > 0
    # The check can fail: another checkpoint's predictions are not the eval path's.
    inputs = SplitInputs(tiny_config(), store / "data", ("dev",), [])
    cpu = torch.device("cpu")
    ours = predict_member(trial_checkpoint(store, 0), inputs, ("dev",), cpu)["dev"]
    other = predict_member(trial_checkpoint(store, 1), inputs, ("dev",), cpu)["dev"]
    with pytest.raises(SystemExit, match="predicts otherwise than the"):
        bench.check_same_predictions(ours, other)
