"""The registered model's parts without serving it: what a shipped copy of an ensemble or a
checkpoint holds, the version's tags, the pinned requirements, and the one-line errors for a bad
model name or a `models:/` URI the registry does not hold (real SQLite stores)."""

from __future__ import annotations

import json
import tempfile
from importlib import metadata
from pathlib import Path

import pytest
from click.testing import CliRunner

from model.checkpoint import OPTIMIZER_FILE
from orchestrator.cli import main
from orchestrator.contract import MEMBERS_TAG, METHOD_TAG, MODEL_KIND_TAG, RANKED_BY_TAG
from orchestrator.ensemble.manifest import (
    ManifestError,
    manifest_for_selection,
    read_manifest,
    write_manifest,
)
from orchestrator.ensemble.request import Candidate
from orchestrator.file_digest import file_sha256
from orchestrator.registry.models import (
    MEMBERS_DIR,
    ModelRegistryError,
    check_model_name,
    parse_model_uri,
    pinned_requirements,
    registry_tags,
    resolve_version,
    stage_predictor,
)
from tests.orchestrator.sweep_store import save_untrained_checkpoint, tiny_config


@pytest.fixture(scope="module")
def ensemble_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An ensemble directory whose manifest lists two tiny checkpoints, the first one twice
    (greedy selection's weight 2) and with resume state beside its weights."""
    root = tmp_path_factory.mktemp("shipped")
    checkpoints = [
        save_untrained_checkpoint(root / f"t{i}" / "best", tiny_config(seed=i)) for i in (0, 1)
    ]
    (checkpoints[0] / OPTIMIZER_FILE).write_bytes(b"optimizer state")
    selected = [
        Candidate(f"run{i}", f"trial {i}", f"t{i}", "completed", 0.5, checkpoints[i])
        for i in (0, 0, 1)
    ]
    dev = {"dev/overall": 0.61234567, "dev/sst_acc": 0.25}
    manifest = manifest_for_selection(
        sweep="fake", method="mean", select="greedy", metric="selection/overall",
        selected=selected, dev=dev,
    )  # fmt: skip
    write_manifest(root / "ensemble", manifest)
    return root / "ensemble"


def test_staged_ensemble_holds_its_members_and_a_manifest_pointing_at_them(
    ensemble_dir: Path, tmp_path: Path
) -> None:
    original = read_manifest(ensemble_dir)
    staged = stage_predictor(ensemble_dir, tmp_path / "predictor")
    raw = json.loads((staged / "manifest.json").read_text())
    assert [m["checkpoint"] for m in raw["members"]] == [
        f"{MEMBERS_DIR}/1-t0",
        f"{MEMBERS_DIR}/2-t1",
    ]
    shipped = read_manifest(staged)  # verifies every copied file's sha256
    assert [m.weight for m in shipped.members] == [2, 1]
    assert (shipped.method, shipped.select, shipped.sweep) == ("mean", "greedy", "fake")
    for before, after in zip(original.members, shipped.members, strict=True):
        assert after.checkpoint == staged / MEMBERS_DIR / after.checkpoint.name
        assert file_sha256(after.checkpoint / "model.safetensors") == file_sha256(
            before.checkpoint / "model.safetensors"
        )
        assert (after.checkpoint / "vocab.txt").is_file() or (
            after.checkpoint / "tokenizer.json"
        ).is_file()
    # Resume state is not shipped: not copied, and not listed.
    assert not (shipped.members[0].checkpoint / OPTIMIZER_FILE).exists()
    assert OPTIMIZER_FILE in original.members[0].files
    assert OPTIMIZER_FILE not in shipped.members[0].files


def test_registry_tags_of_an_ensemble(ensemble_dir: Path) -> None:
    tags = registry_tags(ensemble_dir)
    assert tags[MODEL_KIND_TAG] == "ensemble"
    assert tags[MEMBERS_TAG] == "run0,run1"
    assert tags[METHOD_TAG] == "mean" and tags[RANKED_BY_TAG] == "selection/overall"
    assert tags["dev/overall"] == "0.612346" and tags["dev/sst_acc"] == "0.250000"


def test_a_tampered_member_is_not_shipped(ensemble_dir: Path, tmp_path: Path) -> None:
    member = read_manifest(ensemble_dir).members[1].checkpoint
    metrics = member / "metrics.json"
    saved = metrics.read_bytes()
    metrics.write_bytes(saved + b" ")
    try:
        with pytest.raises(ManifestError, match=r"member 2 \(trial t1.*metrics.json changed"):
            stage_predictor(ensemble_dir, tmp_path / "predictor")
    finally:
        metrics.write_bytes(saved)


def test_staged_checkpoint_without_resume_state(ensemble_dir: Path, tmp_path: Path) -> None:
    checkpoint = read_manifest(ensemble_dir).members[0].checkpoint
    staged = stage_predictor(checkpoint, tmp_path / "predictor")
    assert sorted(p.name for p in staged.iterdir()) == sorted(
        p.name for p in checkpoint.iterdir() if p.name != OPTIMIZER_FILE
    )
    assert registry_tags(staged) == {MODEL_KIND_TAG: "checkpoint", "dev/overall": "0.000000"}
    with pytest.raises(ModelRegistryError, match="neither a checkpoint"):
        stage_predictor(tmp_path, tmp_path / "again")


def test_a_checkpoint_whose_weights_retention_dropped_is_not_registered(
    ensemble_dir: Path, tmp_path: Path
) -> None:
    import shutil

    from model.checkpoint import drop_weights

    checkpoint = tmp_path / "dropped"
    shutil.copytree(read_manifest(ensemble_dir).members[0].checkpoint, checkpoint)
    drop_weights(checkpoint, "retention keep_best: 2: not among the sweep's 2 best trials")
    with pytest.raises(ModelRegistryError, match=r"no model.safetensors to register \(retention"):
        stage_predictor(checkpoint, tmp_path / "predictor")
    assert not (tmp_path / "predictor").exists()


@pytest.mark.parametrize("name", ["minbert-quickstart", "smart top3", "m1"])
def test_model_names_that_register(name: str) -> None:
    assert check_model_name(name) == name


@pytest.mark.parametrize("name", ["", " lead", "a/b", "a@b", "models:x"])
def test_model_names_that_cannot_be_found_again_are_refused(name: str) -> None:
    with pytest.raises(ModelRegistryError, match="a model name is non-empty"):
        check_model_name(name)


def test_parse_model_uri() -> None:
    assert parse_model_uri("models:/minbert/12") == ("minbert", "12", None)
    assert parse_model_uri("models:/minbert@champion") == ("minbert", None, "champion")
    for bad in ("runs:/abc/model", "models:/minbert", "models:/minbert/latest", "minbert/1"):
        with pytest.raises(ModelRegistryError, match="expected models:/NAME/VERSION"):
            parse_model_uri(bad)


def test_requirements_pin_this_environment_without_local_labels() -> None:
    pins = dict(line.split("==") for line in pinned_requirements())
    assert pins["torch"] == metadata.version("torch").split("+")[0]
    assert pins["mlflow"] == metadata.version("mlflow")
    assert all("+" not in version for version in pins.values())


def test_missing_models_and_versions_are_one_line_errors(tmp_path: Path) -> None:
    from mlflow import MlflowClient

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    with pytest.raises(ModelRegistryError, match=r"models:/m/1: no MLflow store at sqlite:"):
        resolve_version(uri, "models:/m/1")
    client = MlflowClient(tracking_uri=uri)
    client.search_experiments()  # creates the store
    with pytest.raises(ModelRegistryError, match=r"no registered model 'm' in .* \(it has none\)"):
        resolve_version(uri, "models:/m/1")
    client.create_registered_model("m")
    with pytest.raises(ModelRegistryError, match=r"model 'm' has no version 1 \(versions: none\)"):
        resolve_version(uri, "models:/m/1")
    with pytest.raises(ModelRegistryError, match=r"model 'm' has no alias 'prod'"):
        resolve_version(uri, "models:/m@prod")
    with pytest.raises(ModelRegistryError, match=r"no registered model 'x' .*\(registered: m\)"):
        resolve_version(uri, "models:/x/1")


def test_ensemble_register_with_a_bad_name_fails_before_any_work(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["ensemble", "--top", "1", "--register", "a/b",
                                       "--results-dir", str(tmp_path / "none")])  # fmt: skip
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "--register 'a/b': a model name is non-empty" in lines[0]


def test_register_a_checkpoint_alone_and_as_a_sweeps_trial(
    ensemble_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import pandas as pd
    from mlflow import MlflowClient

    from orchestrator.predict.predictor import load_predictor
    from orchestrator.registry.models import download_model
    from tests.orchestrator.sweep_store import FakeTrial, fake_sweep

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    checkpoint = read_manifest(ensemble_dir).members[1].checkpoint
    results = tmp_path / "results"

    def register(name: str) -> list[str]:
        done = CliRunner().invoke(main, ["register", name, "--checkpoint", str(checkpoint),
                                         "--results-dir", str(results)])  # fmt: skip
        assert done.exit_code == 0, done.output
        return done.stdout.splitlines()

    assert register("one")[0] == "registered:  models:/one/1"
    uri = f"sqlite:///{results.resolve()}/mlflow.db"
    client = MlflowClient(tracking_uri=uri)
    alone = client.get_model_version("one", "1")
    assert alone.tags[MODEL_KIND_TAG] == "checkpoint" and "sweep" not in alone.tags
    assert client.get_experiment(client.get_run(alone.run_id).info.experiment_id).name == (
        "registered checkpoints"
    )
    # The same checkpoint, now the best of a sweep's trial: the version names that trial's run.
    runs = fake_sweep(uri, "fake", [FakeTrial("t1", 0.7, checkpoint=checkpoint)])
    assert register("one")[0] == "registered:  models:/one/2"
    tags = client.get_model_version("one", "2").tags
    assert tags["sweep"] == "fake" and tags[MEMBERS_TAG] == runs["t1"]

    frame = pd.DataFrame({"task": ["sst", "sts"], "sentence1": ["a fine film", "a dog runs"],
                          "sentence2": [None, "a dog is running"]})  # fmt: skip
    shipped = load_predictor(download_model(uri, "models:/one/2", tmp_path / "dl"))
    expected = load_predictor(checkpoint).predict_frame(frame)
    pd.testing.assert_frame_equal(shipped.predict_frame(frame), expected)

    # `predict --model` downloads the version, predicts with it, and leaves no copy behind.
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    done = CliRunner().invoke(main, ["predict", "--model", "models:/one/2", "--results-dir",
                                     str(results), "-"], input="a fine film\n")  # fmt: skip
    assert done.exit_code == 0, done.output
    assert done.stdout.splitlines()[1].split(",")[:2] == ["1", str(int(expected["prediction"][0]))]
    assert list(scratch.iterdir()) == []
