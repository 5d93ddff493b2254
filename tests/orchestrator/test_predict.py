"""`orchestrator predict` and the Predictor: on the dev and test CSVs it reproduces the prediction
files `orchestrator ensemble` wrote (top-K vote, greedy mean with repeated members), byte for byte
in the leaderboard format and to the last printed digit in its CSV; `predict_frame` serves mixed
tasks; bad models and bad inputs are one line, exit 2, and leave no output file.

The members are untrained tiny checkpoints of different architectures (cross- and bi-encoded
pairs, different eval batch sizes, so several length buckets), on the first 40 rows of each file.
"""

from __future__ import annotations

import csv
import io
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
from click.testing import CliRunner

from model.evaluate import prediction_filename
from orchestrator.cli import main
from orchestrator.ensemble import Candidate, EnsembleRequest, combine_tasks
from orchestrator.ensemble_manifest import write_ensemble_manifest
from orchestrator.ensemble_members import SplitInputs, predict_member
from orchestrator.predict_output import PROGRESS_LINE_BATCHES, PredictProgress
from orchestrator.predictor import (
    PROBABILITY_COLUMNS,
    PredictError,
    load_predictor,
    output_columns,
)
from tests.orchestrator.sweep_store import (
    FakeTrial,
    fake_sweep,
    make_tiny_data_dir,
    save_untrained_checkpoint,
    tiny_config,
)

BENCH = Path(__file__).resolve().parents[2] / "bench" / "predict_throughput.py"
MEMBER_CONFIGS: list[dict[str, dict[str, Any]]] = [
    {"data": {"eval_batch_size": 16}},
    {"data": {"eval_batch_size": 7}, "model": {"pair_encoding": "sbert", "pooling": "mean"}},
    {"data": {"eval_batch_size": 16}, "model": {"pair_encoding": "bi_concat"}},
    {"data": {"eval_batch_size": 32}},
]
# (task, file stem, --task needed): test files of pairs carry no label column to tell the task.
FILES = {
    ("sst", "dev"): ("ids-sst-dev.csv", None),
    ("para", "dev"): ("quora-dev.csv", None),
    ("sts", "dev"): ("sts-dev.csv", None),
    ("sst", "test"): ("ids-sst-test-student.csv", None),
    ("para", "test"): ("quora-test-student.csv", "para"),
    ("sts", "test"): ("sts-test-student.csv", "sts"),
}


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> Path:
    """A tiny data directory and results/ with sweep `fake`: 4 finished tiny trials."""
    root = tmp_path_factory.mktemp("predict")
    make_tiny_data_dir(data_dir, root / "data", rows=40)
    results = root / "results"
    trials = []
    for i, (value, sections) in enumerate(zip([0.5, 0.7, 0.6, 0.4], MEMBER_CONFIGS, strict=True)):
        checkpoint = save_untrained_checkpoint(
            results / "fake" / f"t{i}" / "best", tiny_config(seed=i, **sections)
        )
        trials.append(FakeTrial(f"t{i}", value, checkpoint=checkpoint, params={"seed": i}))
    fake_sweep(f"sqlite:///{results}/mlflow.db", "fake", trials, searched=("seed",))
    return root


def invoke(*args: str, stdin: str | None = None) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args), input=stdin)
    return result.exit_code, result.stdout, result.stderr


def build_ensemble(store: Path, *args: str) -> Path:
    code, out, err = invoke(
        "ensemble",
        "--results-dir",
        str(store / "results"),
        "--data-dir",
        str(store / "data"),
        *args,
    )
    assert code == 0, out + err
    return store / "results" / "fake" / "ensemble"


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
    checkpoints = [store / "results" / "fake" / f"t{i}" / "best" for i in (0, 1)]
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
    checkpoint = store / "results" / "fake" / "t1" / "best"
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
    predictor = load_predictor(store / "results" / "fake" / "t0" / "best")
    with pytest.raises(PredictError, match=message):
        predictor.predict_frame(frame, task=task)


def test_plain_text_on_standard_input(store: Path) -> None:
    checkpoint = store / "results" / "fake" / "t0" / "best"
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


# ---------------------------------------------------------------------------------------------
# Bad models and bad inputs: one line, exit 2, no output file


def one_line_error(code: int, stdout: str, stderr: str) -> str:
    assert code == 2, stdout + stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), stderr
    return lines[0]


def copied_ensemble(store: Path, tmp_path: Path) -> Path:
    """An ensemble of copied members (tests may break them); its manifest points at the copies."""
    from orchestrator.ensemble_manifest import read_manifest, write_manifest

    manifest = read_manifest(build_ensemble(store, "--top", "2"))
    copies = []
    for i, member in enumerate(manifest.members):
        copies.append(shutil.copytree(member.checkpoint, tmp_path / f"member{i}"))
    write_manifest(tmp_path / "ens", manifest.relocated(copies))
    return tmp_path / "ens"


def test_a_tampered_member_is_one_line_and_writes_nothing(store: Path, tmp_path: Path) -> None:
    ensemble = copied_ensemble(store, tmp_path)
    weights = tmp_path / "member1" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-8] + b"\x00" * 8)
    out = tmp_path / "out.csv"
    line = one_line_error(
        *invoke(
            "predict",
            "--ensemble",
            str(ensemble),
            "--out",
            str(out),
            str(store / "data" / "sts-dev.csv"),
        )
    )
    assert "member 2 (trial t2, run " in line and f"{weights} changed since" in line
    assert not out.exists()
    weights.unlink()
    line = one_line_error(
        *invoke(
            "predict",
            "--ensemble",
            str(ensemble),
            "--out",
            str(out),
            str(store / "data" / "sts-dev.csv"),
        )
    )
    assert f"{weights} is missing" in line and not out.exists()


def test_an_edited_manifest_is_one_line(store: Path, tmp_path: Path) -> None:
    ensemble = copied_ensemble(store, tmp_path)
    manifest = ensemble / "manifest.json"
    raw = json.loads(manifest.read_text())
    raw["members"][0]["weight"] += 1  # a hand-edited vote count
    manifest.write_text(json.dumps(raw))
    line = one_line_error(*invoke("predict", "--ensemble", str(ensemble), "-", stdin="good\n"))
    assert line == (
        f"Error: {manifest}: the manifest was edited after `orchestrator ensemble` wrote it "
        "(its digest does not match its content)"
    )


def test_bad_models(store: Path, tmp_path: Path) -> None:
    sentences = tmp_path / "s.txt"
    sentences.write_text("a fine film\n")
    line = one_line_error(*invoke("predict", "--ensemble", str(tmp_path), str(sentences)))
    assert (
        line == f"Error: --ensemble {tmp_path}: no manifest.json there (run `orchestrator "
        "ensemble` to write one)"
    )
    line = one_line_error(*invoke("predict", "--checkpoint", str(tmp_path), str(sentences)))
    assert line == (
        f"Error: {tmp_path}: neither a checkpoint (no config.json) nor an ensemble "
        "(no manifest.json)"
    )
    broken = shutil.copytree(store / "results" / "fake" / "t0" / "best", tmp_path / "broken")
    (broken / "model.safetensors").write_bytes(b"not weights")
    line = one_line_error(*invoke("predict", "--checkpoint", str(broken), str(sentences)))
    assert str(broken / "model.safetensors") in line
    line = one_line_error(
        *invoke("predict", "--model", "models:/nope/1", "--results-dir", str(tmp_path), "-",
                stdin="good\n")
    )  # fmt: skip
    assert line == f"Error: models:/nope/1: no MLflow store at sqlite:///{tmp_path}/mlflow.db"
    line = one_line_error(*invoke("predict", str(sentences)))
    assert "give one model: --checkpoint DIR, --ensemble DIR or --model" in line
    if not torch.cuda.is_available():
        line = one_line_error(
            *invoke("predict", "--checkpoint", str(broken), str(sentences), "--device", "cuda")
        )
        assert line == "Error: --device cuda: torch sees no CUDA device here"


@pytest.mark.parametrize(
    ("text", "args", "needle"),
    [
        ("", (), "empty input (no sentences to predict)"),
        ("a\tb\nno tab\n", ("--task", "para"), "line 2: no TAB; --task para needs two"),
        ("id\ttext\n1\thello\n", (), "line 1: columns 'id', 'text' fit no task"),
        ("a fine film\n", ("--task", "nli"), "--task nli: unknown task"),
        ("a\tb\n", (), "line 1: TAB-separated sentences could be para or sts"),
    ],
)
def test_bad_inputs_leave_an_existing_output_alone(
    store: Path, tmp_path: Path, text: str, args: tuple[str, ...], needle: str
) -> None:
    path = tmp_path / "in.txt"
    path.write_text(text)
    out = tmp_path / "out.csv"
    out.write_text("earlier predictions\n")
    checkpoint = store / "results" / "fake" / "t0" / "best"
    line = one_line_error(
        *invoke("predict", "--checkpoint", str(checkpoint), str(path), "--out", str(out), *args)
    )
    assert needle in line and (str(path) in line or "--task" in line)
    assert out.read_text() == "earlier predictions\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.txt", "out.csv"]


def test_output_file_and_progress_lines(store: Path, tmp_path: Path) -> None:
    checkpoint = store / "results" / "fake" / "t0" / "best"
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


def test_the_throughput_bench_runs_on_tiny_checkpoints(
    store: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import importlib.util

    spec = importlib.util.spec_from_file_location("predict_throughput", BENCH)
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    checkpoints = [str(store / "results" / "fake" / f"t{i}" / "best") for i in range(3)]
    bench.main(["--checkpoints", *checkpoints, "--data-dir", str(store / "data"),
                "--rows", "5", "--rounds", "1"])  # fmt: skip
    lines = capsys.readouterr().out.splitlines()
    assert lines[1] == "rows: sst 5, para 5, sts 5"
    rows = [line for line in lines if line.startswith("| ") and "x)" in line]
    assert [row.split(" | ")[0] for row in rows] == [
        "| eval path (predict_task, pre-tokenized)",
        "| predict, 1 checkpoint",
        "| predict, 3-member ensemble",
    ]
    assert rows[0].count("(1.00x)") == 3  # the eval path is the reference
