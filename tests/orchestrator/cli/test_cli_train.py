"""`orchestrator train` / `data check`: bad input exits 2 naming the culprit, writes nothing."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from model.data_dir import PARA_TRAIN_AUTO, quora_train_source, resolve_para_train
from orchestrator.cli import main

REPO = Path(__file__).resolve().parents[3]


def run(*args: str):
    return CliRunner().invoke(main, list(args))


def write_yaml(path: Path, payload) -> Path:
    path.write_text(yaml.safe_dump(payload))
    return path


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        ("model: [unclosed", "malformed YAML"),
        ("optim:\n  lrr: 0.1\n", "optim.lrr"),
        ("optim:\n  epochs: three\n", "optim.epochs"),
        ("- just\n- a list\n", "mapping"),
    ],
)
def test_bad_config_exits_2_naming_culprit(tmp_path, data_dir, content, needle):
    config = tmp_path / "bad.yaml"
    config.write_text(content)
    out = tmp_path / "out"
    result = run("train", str(config), "--data-dir", str(data_dir), "--out", str(out))
    assert result.exit_code == 2, result.output
    assert needle in result.output and "bad.yaml" in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert not out.exists()


def test_bad_override_names_key(tmp_path, data_dir, tiny_config_dict):
    config = write_yaml(tmp_path / "tiny.yaml", tiny_config_dict)
    result = run("train", str(config), "--set", "optim.lr=fast", "--data-dir", str(data_dir))
    assert result.exit_code == 2 and "optim.lr" in result.output


def train_on_edited_data(tmp_path, data_dir, config_dict, edit):
    """`orchestrator train` on a copy of the data dir that `edit(copy)` changed; (result, out)."""
    copy = tmp_path / "data"
    shutil.copytree(data_dir, copy)
    edit(copy)
    config = write_yaml(tmp_path / "tiny.yaml", config_dict)
    out = tmp_path / "out"
    return run("train", str(config), "--data-dir", str(copy), "--out", str(out)), out


def test_missing_data_file_names_it(tmp_path, data_dir, tiny_config_dict):
    def remove(copy):
        (copy / "sts-train.csv").unlink()

    result, out = train_on_edited_data(tmp_path, data_dir, tiny_config_dict, remove)
    assert result.exit_code == 2, result.output
    assert "sts-train.csv" in result.output
    assert not out.exists()


@pytest.mark.parametrize("name", ["ids-sst-dev.csv", "ids-sst-train.csv"])
def test_csv_missing_label_column_names_it(tmp_path, data_dir, tiny_config_dict, name):
    def rename_label(copy):
        lines = (copy / name).read_text().splitlines()
        header = lines[0].replace("sentiment", "label")
        (copy / name).write_text("\n".join([header, *lines[1:]]) + "\n")

    result, out = train_on_edited_data(tmp_path, data_dir, tiny_config_dict, rename_label)
    assert result.exit_code == 2, result.output
    assert name in result.output and "'sentiment'" in result.output
    assert not out.exists()


def test_header_only_training_file_is_a_one_line_error(tmp_path, data_dir, tiny_config_dict):
    def keep_header_only(copy):
        header = (copy / "sts-train.csv").read_text().splitlines()[0]
        (copy / "sts-train.csv").write_text(header + "\n")

    result, out = train_on_edited_data(tmp_path, data_dir, tiny_config_dict, keep_header_only)
    assert result.exit_code == 2, result.output
    assert "sts-train.csv: no usable examples (no rows)" in result.output
    assert not out.exists()


@pytest.mark.parametrize(
    ("name", "label", "expected"),
    [("ids-sst-train.csv", "7", "an integer from 0 to 4"),
     ("sts-train.csv", "9.5", "a number from 0 to 5")],
)  # fmt: skip
def test_a_training_label_out_of_range_exits_2_naming_file_and_row(
    tmp_path, data_dir, tiny_config_dict, name, label, expected
):
    """Before: trained without those rows, with a `skipped rows` warning, exit 0."""

    def set_second_label(copy):
        lines = (copy / name).read_text().split("\n")
        fields = lines[2].split("\t")
        lines[2] = "\t".join([*fields[:-1], label])
        (copy / name).write_text("\n".join(lines))

    result, out = train_on_edited_data(tmp_path, data_dir, tiny_config_dict, set_second_label)
    assert result.exit_code == 2, result.output
    errors = [line for line in result.output.splitlines() if not line.startswith("warning: ")]
    assert len(errors) == 1 and errors[0].startswith(f"Error: {tmp_path / 'data' / name}: row 2: ")
    assert f"label '{label}' (id " in errors[0]
    assert f"is not {expected}; 1 such row(s)" in errors[0]
    assert not out.exists()


@pytest.mark.parametrize("flag", ["--out", "data.cache_dir"])
def test_an_output_path_under_a_file_fails_before_training(tmp_path, data_dir, tiny_config_dict,
                                                          flag):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    config = write_yaml(tmp_path / "tiny.yaml", tiny_config_dict)
    out = tmp_path / "out"
    if flag == "--out":
        args = ["--out", str(blocker / "run")]
    else:
        args = ["--out", str(out), "--set", f"data.cache_dir={blocker / 'cache'}"]
    result = run("train", str(config), "--data-dir", str(data_dir), *args)
    assert result.exit_code == 2, result.output
    assert f"{flag} " in result.output and "is a file, not a directory" in result.output
    assert not out.exists()


def test_missing_data_dir(tmp_path, tiny_config_dict):
    config = write_yaml(tmp_path / "tiny.yaml", tiny_config_dict)
    result = run("train", str(config), "--data-dir", str(tmp_path / "nowhere"))
    assert result.exit_code == 2 and "nowhere" in result.output


def test_train_tiny_writes_metrics_checkpoint_and_predictions(
    tmp_path, data_dir, tiny_config_dict
):
    config = write_yaml(tmp_path / "tiny.yaml", tiny_config_dict)
    out = tmp_path / "out"
    stale = out / "predictions" / "para-test-output.csv"  # an earlier run's, absent from this one
    stale.parent.mkdir(parents=True)
    stale.write_text("id \t Predicted_Is_Paraphrase \n")
    result = run("train", str(config), "--data-dir", str(data_dir), "--out", str(out))
    assert result.exit_code == 0, result.output
    # The Quora note gives the pairs really trained on (data.max_examples.para: 64) and the file.
    source = quora_train_source(resolve_para_train(PARA_TRAIN_AUTO, data_dir))
    assert f"note: Quora trained on 64 pairs drawn from {source}." in result.stdout.splitlines()
    metrics = json.loads((out / "metrics.json").read_text())
    for key in ("dev/sst_acc", "dev/para_acc", "dev/sts_corr", "dev/overall"):
        assert 0.0 <= metrics[key] <= 1.0 or key == "dev/sts_corr"
    expected = (
        metrics["dev/sst_acc"] + metrics["dev/para_acc"] + (metrics["dev/sts_corr"] + 1) / 2
    ) / 3
    assert metrics["dev/overall"] == pytest.approx(expected)
    best = out / "checkpoints" / "best"
    assert {"model.safetensors", "config.json", "metrics.json"} <= {p.name for p in best.iterdir()}
    predictions = {p.name for p in (out / "predictions").iterdir()}
    assert {"sst-dev-output.csv", "para-dev-output.csv", "sts-dev-output.csv"} <= predictions
    assert "sst-test-output.csv" in predictions and "sts-test-output.csv" in predictions
    if (data_dir / "quora-test-student.csv").is_file():
        assert len(stale.read_text().splitlines()) > 1  # rewritten by this run
    else:
        assert "para-test-output.csv" not in predictions  # not predicted now: the stale one went
    assert not (out / "predictions.partial").exists()


def test_data_check_on_shared_data(data_dir):
    result = run("data", "check", str(data_dir), "--json")
    assert result.exit_code == 0, result.output
    checks = {c["name"]: c for c in json.loads(result.output)}
    assert checks["ids-sst-dev.csv"]["rows"] == 1101
    assert checks["ids-sst-dev.csv"]["sha256_ok"] is True


def test_data_check_names_missing_file(tmp_path, data_dir):
    copy = tmp_path / "data"
    shutil.copytree(data_dir, copy)
    (copy / "sts-dev.csv").unlink()
    result = run("data", "check", str(copy))
    assert result.exit_code == 2
    assert "sts-dev.csv" in result.output.splitlines()[-1]


def test_data_check_names_a_test_files_missing_column(tmp_path, data_dir):
    copy = tmp_path / "data"
    shutil.copytree(data_dir, copy)
    path = copy / "sts-test-student.csv"
    lines = path.read_text().splitlines()
    path.write_text("\n".join([lines[0].replace("\tid\t", "\tkey\t"), *lines[1:]]) + "\n")
    result = run("data", "check", str(copy), "--json")
    assert result.exit_code == 2
    checks = {c["name"]: c for c in json.loads(result.stdout)}
    assert "missing column 'id'" in checks["sts-test-student.csv"]["problem"]


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        ({"num_attention_heads": 0}, "num_attention_heads must be a positive integer, got 0"),
        ({"max_position_embeddings": 16}, "max_position_embeddings 16 is below model.max_length"),
    ],
)
def test_broken_model_dir_exits_2_naming_config_field(
    tmp_path, data_dir, tiny_config_dict, change, needle
):
    from model.weights import resolve_model_dir

    model_dir = tmp_path / "model"
    shutil.copytree(resolve_model_dir("minilm"), model_dir)
    raw = json.loads((model_dir / "config.json").read_text())
    (model_dir / "config.json").write_text(json.dumps({**raw, **change}))
    config = write_yaml(tmp_path / "tiny.yaml", tiny_config_dict)
    out = tmp_path / "out"
    result = run("train", str(config), "--data-dir", str(data_dir), "--out", str(out),
                 "--set", f"model.name={model_dir}")  # fmt: skip
    assert result.exit_code == 2, result.output
    assert result.output.startswith(f"Error: {model_dir / 'config.json'}: {needle}")
    assert len(result.output.strip().splitlines()) == 1
    assert not out.exists()


def test_diverging_loss_exits_2_naming_what_to_change(tmp_path, data_dir, tiny_config_dict):
    """A learning rate of 1e30 blows the tiny model's weights up within a few steps: the real
    trainer's non-finite loss check must stop it with a one-line error, exit 2."""
    diverging = {
        **tiny_config_dict,
        "optim": {**tiny_config_dict["optim"], "lr": 1e30},
        "device": "cpu",
        "precision": "fp32",
        "log_every": 1,  # read the loss back at every step
    }
    config = write_yaml(tmp_path / "tiny.yaml", diverging)
    out = tmp_path / "o"
    result = run("train", str(config), "--data-dir", str(data_dir), "--out", str(out))
    assert result.exit_code == 2, result.output
    # The data's warnings (one line each) and the run's device and precision line come first;
    # the error is one line.
    lines = result.output.strip().splitlines()
    [line] = [s for s in lines if not s.startswith(("warning: ", "device cpu, precision fp32"))]
    assert re.fullmatch(
        r"Error: training loss is (nan|inf|-inf) at epoch 1, step \d+; lower optim\.lr, "
        r"set optim\.grad_clip or use precision: fp32",
        line,
    ), line
    assert not (out / "metrics.json").exists()  # it stopped before the first evaluation


def test_a_bad_override_is_blamed_on_set_not_on_the_file(tmp_path, data_dir, tiny_config_dict):
    config = write_yaml(tmp_path / "tiny.yaml", tiny_config_dict)
    result = run("train", str(config), "--set", "optim.lrr=1", "--data-dir", str(data_dir))
    assert result.exit_code == 2
    assert result.output.startswith("Error: --set: unknown config key 'optim.lrr'")


def test_config_yaml_reads_1e_minus_5_and_rejects_repeats_and_non_utf8(tmp_path):
    from model.config import ConfigError
    from orchestrator.config import load_train_config

    good = tmp_path / "good.yaml"
    good.write_text("optim:\n  lr: 1e-5\n")
    assert load_train_config(good).optim.lr == 1e-5
    repeated = tmp_path / "repeated.yaml"
    repeated.write_text("optim:\n  lr: 1.0e-5\n  lr: 3.0e-5\n")
    with pytest.raises(ConfigError, match=r"repeated.yaml: line 3 malformed YAML \(duplicate key"):
        load_train_config(repeated)
    binary = tmp_path / "binary.yaml"
    binary.write_bytes(b"\xff\xfe\x00bad")
    result = run("train", str(binary), "--out", str(tmp_path / "out"))
    assert result.exit_code == 2 and "binary.yaml: not UTF-8 text" in result.output
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "text", ["1e-5", "3.0e-5", ".5e-3", "2E3", "1e400", "[0.8, 0.9]", "true", "null", "fast", "7"]
)
def test_a_set_value_reads_as_the_same_value_in_a_config_file(tmp_path, text):
    from orchestrator.config import parse_override, read_yaml

    config = tmp_path / "one.yaml"
    config.write_text(f"value: {text}\n")
    assert parse_override(f"value={text}") == ("value", read_yaml(config)["value"])


def test_a_set_mapping_with_a_repeated_key_is_rejected_like_a_file():
    from model.config import ConfigError
    from orchestrator.config import parse_override

    with pytest.raises(ConfigError, match="value is not valid YAML"):
        parse_override("data.max_examples={sst: 1, sst: 2}")


def test_device_cuda_without_cuda_is_a_one_line_error(tmp_path, data_dir, tiny_config_dict):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    config = write_yaml(tmp_path / "tiny.yaml", tiny_config_dict)
    out = tmp_path / "out"
    result = run("train", str(config), "--set", "device=cuda", "--data-dir", str(data_dir),
                 "--out", str(out))
    assert result.exit_code == 2
    assert "'device' is cuda, but torch sees no CUDA device" in result.output
    assert not out.exists()
