"""Metrics against references, batched prediction order, and the leaderboard file format."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from model.batching import Batch
from model.data import DataError, PairExample, SentenceExample, encode_task
from model.evaluate import (
    SELECTION_METRICS,
    SST_BALANCED_ACC,
    SST_MACRO_F1,
    TaskPredictions,
    classification_details,
    confusion_key,
    dev_metrics,
    on_split,
    overall_score,
    per_class_key,
    predict_task,
    prediction_filename,
    read_predictions,
    split_metrics,
    sst_detail_metrics,
    task_metric,
    write_predictions,
)
from tests.model.test_data import PAD, FakeTokenizer

# ---------------------------------------------------------------------------------------------
# Metrics


def test_overall_score_is_the_leaderboard_formula():
    assert overall_score(0.5, 0.8, 0.6) == pytest.approx((0.5 + 0.8 + 0.8) / 3)
    assert overall_score(1.0, 1.0, 1.0) == pytest.approx(1.0)
    assert overall_score(0.0, 0.0, -1.0) == pytest.approx(0.0)


def test_task_metric_accuracy_and_pearson_match_hand_values():
    assert task_metric("sst", np.array([0, 1, 2, 3, 4]), np.array([0, 1, 1, 3, 0])) == 0.6
    # para predictions are 0/1 ints, labels the reader's floats.
    assert task_metric("para", np.array([1, 0, 1, 1]), np.array([1.0, 0.0, 0.0, 1.0])) == 0.75
    x = np.array([1.0, 2.0, 3.0, 4.0, 5.0])
    y = np.array([2.0, 1.0, 4.0, 3.0, 5.0])
    # Pearson r by its definition: cov / (std_x std_y) = 8 / 10.
    assert task_metric("sts", x, y) == pytest.approx(0.8)
    assert task_metric("sts", x.astype(np.float32), -y) == pytest.approx(-0.8)


def test_pearson_of_a_constant_prediction_is_zero_not_nan():
    assert task_metric("sts", np.full(4, 2.5), np.array([0.0, 1.0, 4.0, 5.0])) == 0.0


def test_task_metric_rejects_misaligned_inputs():
    with pytest.raises(ValueError, match="sst"):
        task_metric("sst", np.zeros(3), np.zeros(4))


def _predictions(task: str, values) -> TaskPredictions:
    values = np.asarray(values)
    return TaskPredictions(task, [f"{task}{i}" for i in range(len(values))], values, None)


def test_dev_metrics_has_exactly_the_shared_keys():
    preds = {
        "sst": _predictions("sst", [0, 1, 2, 2]),
        "para": _predictions("para", [1, 0]),
        "sts": _predictions("sts", [1.0, 2.0, 3.0]),
    }
    labels = {"sst": np.array([0, 1, 2, 3]), "para": np.array([1.0, 1.0]),
              "sts": np.array([3.0, 2.0, 1.0])}  # fmt: skip
    metrics = dev_metrics(preds, labels)
    assert list(metrics) == ["dev/sst_acc", "dev/para_acc", "dev/sts_corr", "dev/overall"]
    assert metrics["dev/sst_acc"] == 0.75 and metrics["dev/para_acc"] == 0.5
    assert metrics["dev/sts_corr"] == pytest.approx(-1.0)
    assert metrics["dev/overall"] == pytest.approx((0.75 + 0.5 + 0.0) / 3)
    with pytest.raises(ValueError, match="para"):
        dev_metrics({k: v for k, v in preds.items() if k != "para"}, labels)


def test_classification_details_match_hand_counts():
    labels = np.array([0, 0, 1, 1, 1, 2])
    preds = np.array([0, 1, 1, 1, 0, 0])
    details = classification_details(labels, preds, num_classes=4)
    assert details["confusion_matrix"] == [
        [1, 1, 0, 0], [1, 2, 0, 0], [1, 0, 0, 0], [0, 0, 0, 0],
    ]  # fmt: skip
    assert details["accuracy"] == pytest.approx(3 / 6)
    per = details["per_class"]
    assert [p["support"] for p in per] == [2, 3, 1, 0]
    assert per[0]["precision"] == pytest.approx(1 / 3) and per[0]["recall"] == pytest.approx(0.5)
    assert per[1]["precision"] == pytest.approx(2 / 3) and per[1]["recall"] == pytest.approx(2 / 3)
    assert per[1]["f1"] == pytest.approx(2 / 3)
    assert per[2]["f1"] == 0.0
    # Balanced accuracy: mean recall over the classes that occur (0.5, 2/3, 0).
    assert details["balanced_accuracy"] == pytest.approx((0.5 + 2 / 3 + 0.0) / 3)
    assert details["macro_f1"] == pytest.approx((0.4 + 2 / 3 + 0 + 0) / 4)


def test_sst_detail_metrics_match_sklearn_on_fixed_arrays():
    from sklearn import metrics as skm

    # Class 4 never occurs and class 3 is never predicted: zero_division and absent classes.
    labels = np.array([0, 0, 1, 1, 1, 2, 2, 3, 3, 0, 1, 2])
    preds = np.array([0, 1, 1, 1, 0, 2, 1, 2, 0, 0, 1, 2])
    details = sst_detail_metrics(labels, preds)
    classes = list(range(5))
    precision, recall, f1, _ = skm.precision_recall_fscore_support(
        labels, preds, labels=classes, zero_division=0
    )
    confusion = skm.confusion_matrix(labels, preds, labels=classes)
    expected = {
        SST_BALANCED_ACC: skm.balanced_accuracy_score(labels, preds),
        SST_MACRO_F1: skm.f1_score(
            labels, preds, labels=classes, average="macro", zero_division=0
        ),
    }
    for c in classes:
        expected[per_class_key("precision", c)] = precision[c]
        expected[per_class_key("recall", c)] = recall[c]
        expected[per_class_key("f1", c)] = f1[c]
        for p in classes:
            expected[confusion_key(c, p)] = confusion[c, p]
    assert set(details) == set(expected) and len(details) == 2 + 3 * 5 + 5 * 5
    for name, value in expected.items():
        assert isinstance(details[name], float), name
        assert details[name] == pytest.approx(float(value)), name
    assert per_class_key("f1", 3) == "dev/sst_f1/3"
    assert confusion_key(2, 1) == "dev/sst_confusion/2/1"
    assert details[confusion_key(2, 1)] == 1.0 and details[confusion_key(0, 0)] == 2.0


def test_split_metrics_are_dev_metrics_under_the_split_names():
    preds = {
        "sst": _predictions("sst", [0, 1, 2, 2]),
        "para": _predictions("para", [1, 0]),
        "sts": _predictions("sts", [1.0, 2.0, 3.0]),
    }
    labels = {"sst": np.array([0, 1, 2, 3]), "para": np.array([1.0, 1.0]),
              "sts": np.array([1.0, 2.5, 2.0])}  # fmt: skip
    dev = dev_metrics(preds, labels)
    selection = split_metrics(preds, labels, "selection")
    assert set(selection) == set(SELECTION_METRICS)
    assert selection == {on_split(name, "selection"): value for name, value in dev.items()}
    assert selection["selection/sst_acc"] == 0.75


# ---------------------------------------------------------------------------------------------
# Prediction


class SumModel(nn.Module):
    """Outputs a known function of each example's real token ids, so order errors show up."""

    def __init__(self) -> None:
        super().__init__()
        self.seen_training: list[bool] = []
        self.batch_sizes: list[int] = []

    @staticmethod
    def token_sum(batch: Batch) -> torch.Tensor:
        total = (batch.input_ids * batch.attention_mask).sum(-1)  # [B]
        if batch.input_ids_b is not None:
            total = total + (batch.input_ids_b * batch.attention_mask_b).sum(-1)
        return total.float()

    def forward(self, batch: Batch) -> torch.Tensor:
        self.seen_training.append(self.training)
        self.batch_sizes.append(batch.size)
        total = self.token_sum(batch)
        if batch.task == "sst":
            return torch.nn.functional.one_hot(total.long() % 5, 5).float() * 3.0  # [B, 5]
        if batch.task == "para":
            return (total.long() % 2).float() * 4.0 - 2.0  # [B]
        return total / 1000.0  # [B]


def _expected_sums(enc) -> np.ndarray:
    sums = np.array([int(x.sum()) for x in enc.input_ids])
    if enc.input_ids_b is not None:
        sums += np.array([int(x.sum()) for x in enc.input_ids_b])
    return sums


SENTENCES = [" ".join(f"w{j}" for j in range(i % 17 + 1)) + f" s{i}" for i in range(101)]


@pytest.mark.parametrize("batch_size", [1, 7, 500])
def test_predict_task_returns_values_in_example_order(batch_size):
    model = SumModel().train()
    examples = [SentenceExample(f"id{i}", s, i % 5) for i, s in enumerate(SENTENCES)]
    enc = encode_task("sst", examples, FakeTokenizer(), "cross")
    preds = predict_task(model, enc, batch_size=batch_size, device="cpu", pad_id=PAD)
    assert preds.task == "sst" and preds.ids == enc.ids
    assert preds.values.dtype == np.int64
    np.testing.assert_array_equal(preds.values, _expected_sums(enc) % 5)
    assert preds.probabilities.shape == (101, 5)
    np.testing.assert_allclose(preds.probabilities.sum(1), 1.0, rtol=1e-6)
    top = np.exp(3.0) / (np.exp(3.0) + 4)
    np.testing.assert_allclose(preds.probabilities.max(1), top, rtol=1e-6)
    assert model.seen_training and not any(model.seen_training)  # eval mode while predicting
    assert model.training  # and restored afterwards
    assert max(model.batch_sizes) == min(batch_size, 101)


@pytest.mark.parametrize("pair_encoding", ["cross", "sbert"])
def test_predict_task_para_and_sts_values(pair_encoding):
    pairs = [PairExample(f"p{i}", s, SENTENCES[-i - 1], 0.0) for i, s in enumerate(SENTENCES)]
    para = encode_task("para", pairs, FakeTokenizer(), pair_encoding)
    preds = predict_task(SumModel(), para, batch_size=16, device="cpu", pad_id=PAD)
    parity = _expected_sums(para) % 2
    np.testing.assert_array_equal(preds.values, parity)
    assert preds.values.dtype == np.int64
    sigmoid = 1 / (1 + np.exp(-np.where(parity == 1, 2.0, -2.0)))
    np.testing.assert_allclose(preds.probabilities, sigmoid, rtol=1e-6)

    sts = encode_task("sts", pairs, FakeTokenizer(), pair_encoding)
    scores = predict_task(SumModel(), sts, batch_size=16, device="cpu", pad_id=PAD)
    assert scores.probabilities is None and scores.values.dtype == np.float32
    np.testing.assert_allclose(scores.values, _expected_sums(sts) / 1000.0, rtol=1e-6)


def test_predict_task_under_bf16_autocast_on_cpu():
    class Linear(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.proj = nn.Linear(1, 5)

        def forward(self, batch: Batch) -> torch.Tensor:
            return self.proj(batch.attention_mask.sum(-1, keepdim=True).float())

    model = Linear()
    examples = [SentenceExample(f"id{i}", s, 0) for i, s in enumerate(SENTENCES)]
    enc = encode_task("sst", examples, FakeTokenizer(), "cross")
    preds = predict_task(
        model, enc, batch_size=32, device="cpu", pad_id=PAD, autocast_dtype=torch.bfloat16
    )
    lengths = torch.tensor(enc.lengths, dtype=torch.float32)[:, None]
    with torch.no_grad():
        reference = torch.softmax(model.proj(lengths), -1).numpy()
    assert preds.probabilities.dtype == np.float32
    np.testing.assert_allclose(preds.probabilities, reference, atol=2e-2)


# ---------------------------------------------------------------------------------------------
# Prediction files


def test_prediction_filenames_follow_the_handout():
    names = [prediction_filename(t, s) for t in ("sst", "para", "sts") for s in ("dev", "test")]
    assert names == [
        "sst-dev-output.csv", "sst-test-output.csv", "para-dev-output.csv",
        "para-test-output.csv", "sts-dev-output.csv", "sts-test-output.csv",
    ]  # fmt: skip
    with pytest.raises(ValueError, match="train"):
        prediction_filename("sst", "train")


def test_prediction_files_have_the_handout_bytes(tmp_path):
    write_predictions(tmp_path / "sst.csv", TaskPredictions("sst", ["a", "b"], np.array([3, 0])))
    assert (tmp_path / "sst.csv").read_bytes() == (b"id \t Predicted_Sentiment \na , 3 \nb , 0 \n")
    write_predictions(tmp_path / "para.csv", TaskPredictions("para", ["x"], np.array([1])))
    assert (tmp_path / "para.csv").read_text() == "id \t Predicted_Is_Paraphrase \nx , 1.0 \n"
    sts = TaskPredictions("sts", ["q", "r"], np.array([2.5, 0.1], dtype=np.float32))
    write_predictions(tmp_path / "out" / "sts.csv", sts)
    assert (tmp_path / "out" / "sts.csv").read_text() == (
        "id \t Predicted_Similiary \nq , 2.5 \nr , 0.1 \n"
    )
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["out", "para.csv", "sst.csv", "sts.csv"]


@pytest.mark.parametrize("task", ["sst", "para", "sts"])
def test_prediction_files_round_trip(tmp_path, task):
    rng = np.random.default_rng(0)
    ids = [f"{i:025x}" for i in rng.integers(0, 2**40, size=50)]
    values = {
        "sst": rng.integers(0, 5, size=50),
        "para": rng.integers(0, 2, size=50),
        "sts": rng.uniform(0, 5, size=50).astype(np.float32),
    }[task]
    path = tmp_path / prediction_filename(task, "dev")
    write_predictions(path, TaskPredictions(task, ids, values))
    read_task, read_ids, read_values = read_predictions(path)
    assert read_task == task and read_ids == ids
    if task == "sts":
        np.testing.assert_array_equal(read_values.astype(np.float32), values)
    else:
        assert read_values.dtype == np.int64
        np.testing.assert_array_equal(read_values, values)


def test_read_predictions_rejects_bad_files(tmp_path):
    with pytest.raises(DataError, match="not found"):
        read_predictions(tmp_path / "nothing.csv")
    bad_header = tmp_path / "h.csv"
    bad_header.write_text("id \t Predicted_Something \na , 1 \n")
    with pytest.raises(DataError, match=r"h\.csv: line 1"):
        read_predictions(bad_header)
    bad_row = tmp_path / "r.csv"
    bad_row.write_text("id \t Predicted_Sentiment \na , 1 \nb ; 2 \n")
    with pytest.raises(DataError, match=r"r\.csv: line 3"):
        read_predictions(bad_row)


def test_write_predictions_rejects_mismatched_lengths(tmp_path):
    with pytest.raises(ValueError, match="2 ids but 1"):
        write_predictions(tmp_path / "x.csv", TaskPredictions("sst", ["a", "b"], np.array([1])))
    assert not list(tmp_path.iterdir())
