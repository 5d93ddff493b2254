"""`orchestrator predict` on bad models and bad inputs: a tampered, missing or half-written
ensemble, a broken checkpoint, an unknown registry model or device, and inputs no task fits are
each one line, exit 2, and leave no output file (an existing one untouched)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from tests.model.damaged_weights import flip_exponent_bit
from tests.orchestrator.predict_store import (
    build_ensemble,
    copied_ensemble,
    invoke,
    make_predict_store,
    one_line_error,
    trial_checkpoint,
)
from tests.orchestrator.sweep_store import save_untrained_checkpoint, tiny_config


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> Path:
    return make_predict_store(tmp_path_factory.mktemp("predict-errors"), data_dir)


@pytest.fixture(autouse=True)
def _local_store(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)


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
    broken = shutil.copytree(trial_checkpoint(store, 0), tmp_path / "broken")
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
        assert line == "Error: --device is cuda, but torch sees no CUDA device here"


@pytest.mark.parametrize(
    ("text", "args", "needle"),
    [
        ("", (), "empty input (no sentences to predict)"),
        ("a\tb\nno tab\n", ("--task", "para"), "line 2: no TAB; --task para needs two"),
        ("id\ttext\n1\thello\n", (), "line 1: columns 'id', 'text' fit no task"),
        ("a fine film\n", ("--task", "nli"), "--task nli: unknown task"),
        ("a\tb\n", (), "line 1: TAB-separated sentences could be para or sts"),
        ("id,sentence\n1,A fine film .\n", (), "line 1: a comma-separated header ('id', "),
        (
            "sentence1\tsentence2\nA cat.\tA dog.\n",
            ("--task", "sts"),
            "line 1: a header ('sentence1', 'sentence2') without an 'id' column",
        ),
        (
            '\tid\tsentence\n0\tt1\tFine .\n1\tt2\t"Open .\n2\tt3\tFlat .\n3\tt4\tA "so" film .\n',
            (),
            "row 2 (line 3): a '\"' opens a quoted field that runs over 2 line end(s)",
        ),
        ("a fine film\x0c\nflat\n", (), "line 1: a form feed (U+000C); the text must be plain"),
        ("a fine film\nflat\x00\n", (), "line 2: a NUL byte (U+0000); the text must be plain"),
    ],
)
def test_bad_inputs_leave_an_existing_output_alone(
    store: Path, tmp_path: Path, text: str, args: tuple[str, ...], needle: str
) -> None:
    path = tmp_path / "in.txt"
    path.write_text(text)
    out = tmp_path / "out.csv"
    out.write_text("earlier predictions\n")
    checkpoint = trial_checkpoint(store, 0)
    line = one_line_error(
        *invoke("predict", "--checkpoint", str(checkpoint), str(path), "--out", str(out), *args)
    )
    assert needle in line and (str(path) in line or "--task" in line)
    assert out.read_text() == "earlier predictions\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.txt", "out.csv"]


def test_an_ensemble_rewrite_that_fails_midway_leaves_no_manifest(
    store: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """New prediction files beside the old manifest would pass its check: the manifest goes
    first and comes back last, so `predict` refuses the half-written directory."""
    import orchestrator.ensemble.run as ensemble_run

    ensemble = build_ensemble(store, "--top", "2")
    assert (ensemble / "manifest.json").is_file()

    def fails(*args: object, **kwargs: object) -> None:
        raise OSError("No space left on device")

    monkeypatch.setattr(ensemble_run, "k_curve", fails)  # after the predictions, before metrics
    code, _, _ = invoke("ensemble", "--results-dir", str(store / "results"), "--data-dir",
                        str(store / "data"), "--top", "3")  # fmt: skip
    assert code != 0
    assert (ensemble / "sts-dev-output.csv").is_file()
    assert not (ensemble / "manifest.json").exists()
    line = one_line_error(*invoke("predict", "--ensemble", str(ensemble), "-", stdin="good\n"))
    assert line == (
        f"Error: --ensemble {ensemble}: no manifest.json there (run `orchestrator ensemble` to "
        "write one)"
    )
    monkeypatch.undo()
    assert (build_ensemble(store, "--top", "2") / "manifest.json").is_file()


def test_a_checkpoint_with_a_flipped_bit_is_one_line_and_writes_nothing(tmp_path: Path) -> None:
    """Its config.json's sha256 of the weights catches what would predict garbage (every SST
    `prob_0` 0.0) with exit 0."""
    checkpoint = save_untrained_checkpoint(tmp_path / "best", tiny_config(seed=0))
    flip_exponent_bit(checkpoint)
    out = tmp_path / "out.csv"
    line = one_line_error(
        *invoke("predict", "--checkpoint", str(checkpoint), "--out", str(out), "-",
                stdin="a fine film\nflat and dull\n")
    )  # fmt: skip
    assert line.startswith(f"Error: {checkpoint / 'model.safetensors'}: sha256 ")
    assert "differs from the" in line and "recorded in config.json at save" in line
    assert not out.exists()
