"""`orchestrator predict`'s input: CS224N CSVs of each task (task from the columns), plain text of
one or two sentences per line, standard input, and a one-line error for every bad input."""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import pytest

from model.data import DataError, PairExample, SentenceExample, read_task_file
from orchestrator.predict.inputs import CSV_FORMAT, TEXT_FORMAT, csv_task, read_predict_input


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


SST_CSV = "\tid\tsentence\tsentiment\n0\ta1\t It is good . \t3\n1\ta2\tBad .\t0\n"
PARA_CSV = "\tid\tsentence1\tsentence2\tis_duplicate\n0\tq1\tHow?\tWhy?\t1.0\n"
STS_CSV = "\tid\tsentence1\tsentence2\tsimilarity\n0\ts1\tA cat.\tA dog.\t2.4\n"
PAIRS_TEST_CSV = "\tid\tsentence1\tsentence2\n0\tp1\tA cat.\tA dog.\n"
SST_TEST_CSV = "0\t\tid\tsentence\n0\t\tt1\tFine .\n"


@pytest.mark.parametrize(
    ("text", "task", "first"),
    [
        (SST_CSV, "sst", SentenceExample("a1", "It is good .", 3)),
        (SST_TEST_CSV, "sst", SentenceExample("t1", "Fine .", None)),
        (PARA_CSV, "para", PairExample("q1", "How?", "Why?", 1.0)),
        (STS_CSV, "sts", PairExample("s1", "A cat.", "A dog.", 2.4)),
    ],
)
def test_csv_task_is_inferred_from_its_columns(
    tmp_path: Path, text: str, task: str, first: SentenceExample | PairExample
) -> None:
    read = read_predict_input(write(tmp_path, "in.csv", text))
    assert (read.task, read.kind, read.examples[0]) == (task, CSV_FORMAT, first)


@pytest.mark.parametrize(("task", "name"), [("sts", "sts-dev.csv"), ("para", "quora-dev.csv")])
def test_csv_rows_are_the_rows_the_ensemble_predicts(data_dir: Path, task: str, name: str) -> None:
    """A labelled file loses the rows evaluation skips (quora-dev.csv: two broken rows)."""
    path = data_dir / name
    read = read_predict_input(path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reference = read_task_file(task, path, labelled=True)
    assert read.task == task and read.examples == reference
    if task == "para":
        assert len(read.warnings) == 1 and "skipped 2 rows" in read.warnings[0]


def test_a_labelled_row_without_a_usable_label_is_skipped_with_a_warning(tmp_path: Path) -> None:
    read = read_predict_input(write(tmp_path, "in.csv", SST_CSV + "2\ta3\tNo label .\t\n"))
    assert [e.id for e in read.examples] == ["a1", "a2"]
    assert read.warnings == [
        f"{tmp_path / 'in.csv'}: skipped 1 rows with a missing 'sentiment' label (ids a3)"
    ]
    with pytest.raises(DataError, match=r"in7\.csv: row 3: 'sentiment' label '7' \(id a3\)"):
        read_predict_input(write(tmp_path, "in7.csv", SST_CSV + "2\ta3\tToo high .\t7\n"))


def test_an_sst_csv_whose_second_row_opens_a_quote_is_an_error_not_fewer_rows(
    tmp_path: Path,
) -> None:
    """Before: the quote swallowed rows 3-4 into row 2, and 3 predictions came out of 5 rows."""
    rows = ["0\tt1\tFine .", '1\tt2\t"Unclosed .', "2\tt3\tFlat .", '3\tt4\tA "so" film .',
            "4\tt5\tGood ."]  # fmt: skip
    path = write(tmp_path, "test.csv", "\tid\tsentence\n" + "\n".join(rows) + "\n")
    with pytest.raises(DataError) as err:
        read_predict_input(path)
    assert str(err.value).startswith(
        f"{path}: row 2 (line 3): a '\"' opens a quoted field that runs over 2 line end(s), "
        "merging lines 3-5 into one row (3 rows read from 5 lines); "
    )
    with pytest.raises(DataError, match=r"^<stdin>: row 2 \(line 3\): a '\"' opens"):
        read_predict_input("-", stdin=io.BytesIO(path.read_bytes()))


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ("a fine film\nflat\x00 and dull\n", "line 2: a NUL byte (U+0000)"),
        ("a fine film\x0cflat and dull\n", "line 1: a form feed (U+000C)"),
        ("fine\tfilm\nflat\tdull\x0c\n", "line 2: a form feed (U+000C)"),
        ("\tid\tsentence\n0\tt1\tFine\x00 .\n", "row 1 (line 2): a NUL byte (U+0000) in column "
         "'sentence'"),
    ],
)  # fmt: skip
def test_a_nul_or_form_feed_in_an_input_is_an_error_naming_its_line(
    tmp_path: Path, text: str, where: str
) -> None:
    """Before: predicted without a word (the tokenizer drops both; a form feed also split one
    line of text into two sentences)."""
    path = write(tmp_path, "in.txt", text)
    with pytest.raises(DataError) as err:
        read_predict_input(path, "para" if "\tdull" in text else None)
    assert str(err.value).startswith(f"{path}: {where}; the text must be plain text")


def test_pairs_without_a_label_column_need_task(tmp_path: Path) -> None:
    path = write(tmp_path, "pairs.csv", PAIRS_TEST_CSV)
    with pytest.raises(DataError, match="could be para or sts: pass --task para or --task sts"):
        read_predict_input(path)
    assert read_predict_input(path, "sts").task == "sts"
    assert read_predict_input(path, "para").examples == [
        PairExample("p1", "A cat.", "A dog.", None)
    ]


def test_task_must_fit_the_csv_columns(tmp_path: Path) -> None:
    path = write(tmp_path, "sst.csv", SST_CSV)
    with pytest.raises(DataError) as err:
        read_predict_input(path, "para")
    assert str(err.value) == (
        f"{path}: line 1: --task para needs columns id, sentence1, sentence2 "
        "(found 'id', 'sentence', 'sentiment')"
    )


def test_columns_fitting_no_task(tmp_path: Path) -> None:
    path = write(tmp_path, "odd.csv", "id\ttext\n1\thello\n")
    with pytest.raises(DataError) as err:
        read_predict_input(path)
    assert str(err.value) == (
        f"{path}: line 1: columns 'id', 'text' fit no task (sst: id, sentence; para and sts: "
        "id, sentence1, sentence2)"
    )


COMMA_HEADER = "a comma-separated header ({}); CS224N CSVs are TAB-separated"
NO_ID_HEADER = "a header ({}) without an 'id' column"


@pytest.mark.parametrize(
    ("text", "task", "message"),
    [
        ("id,sentence\n1,A fine film .\n", None, COMMA_HEADER.format("'id', 'sentence'")),
        (
            ",id,sentence1,sentence2,similarity\n0,s1,A cat.,A dog.,2.4\n",
            None,
            COMMA_HEADER.format("'id', 'sentence1', 'sentence2', 'similarity'"),
        ),
        (
            "sentence1\tsentence2\nA cat.\tA dog.\n",
            "sts",
            NO_ID_HEADER.format("'sentence1', 'sentence2'"),
        ),
        ("sentence\nA fine film .\n", None, NO_ID_HEADER.format("'sentence'")),
        ("Sentence\tSentiment\nFine .\t3\n", None, NO_ID_HEADER.format("'Sentence', 'Sentiment'")),
    ],
)
def test_a_header_we_cannot_read_is_an_error_not_a_sentence(
    tmp_path: Path, text: str, task: str | None, message: str
) -> None:
    path = write(tmp_path, "in.csv", text)
    with pytest.raises(DataError) as err:
        read_predict_input(path, task)
    assert str(err.value).startswith(f"{path}: line 1: {message}")
    assert len(str(err.value).splitlines()) == 1


def test_sentences_that_merely_mention_column_names_are_text(tmp_path: Path) -> None:
    text = "The id of this sentence, sadly, is lost .\nsentences, ids and similarity\n"
    read = read_predict_input(write(tmp_path, "s.txt", text))
    assert (read.task, len(read.examples)) == ("sst", 2)


def test_csv_problems_name_the_file_and_row(tmp_path: Path) -> None:
    path = write(tmp_path, "dup.csv", "id\tsentence\nx\tone\nx\ttwo\n")
    with pytest.raises(DataError, match=r"dup.csv: row 2: duplicate id 'x' \(first at row 1\)"):
        read_predict_input(path)
    header_only = write(tmp_path, "header.csv", "id\tsentence\n")
    with pytest.raises(DataError, match=r"header.csv: no usable examples \(no rows\)"):
        read_predict_input(header_only)


def test_plain_text_sentences_are_sst_with_line_numbers_as_ids(tmp_path: Path) -> None:
    read = read_predict_input(write(tmp_path, "s.txt", " A fine film .\n\n  \nDull.\r\n"))
    assert (read.task, read.kind) == ("sst", TEXT_FORMAT)
    assert read.examples == [
        SentenceExample("1", "A fine film .", None),
        SentenceExample("4", "Dull.", None),
    ]


def test_plain_text_pairs_need_task_and_one_tab_per_line(tmp_path: Path) -> None:
    path = write(tmp_path, "p.txt", "How old are you?\tWhat is your age?\nA\tB\n")
    with pytest.raises(DataError) as err:
        read_predict_input(path)
    assert str(err.value).startswith(
        f"{path}: line 1: TAB-separated sentences could be para or sts: pass --task para"
    )
    read = read_predict_input(path, "para")
    assert read.examples == [
        PairExample("1", "How old are you?", "What is your age?", None),
        PairExample("2", "A", "B", None),
    ]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("a\tb\nno tab here\n", "line 2: no TAB; --task sts needs two sentences per line"),
        ("a\tb\tc\n", "line 1: 2 TABs; --task sts needs two sentences per line"),
    ],
)
def test_a_pair_line_without_exactly_one_tab_is_an_error(
    tmp_path: Path, text: str, message: str
) -> None:
    path = write(tmp_path, "p.txt", text)
    with pytest.raises(DataError) as err:
        read_predict_input(path, "sts")
    assert str(err.value).startswith(f"{path}: {message}")


def test_a_tab_in_an_sst_line_is_an_error(tmp_path: Path) -> None:
    path = write(tmp_path, "s.txt", "fine\na\tb\n")
    with pytest.raises(DataError, match=r"line 2: a TAB in a line of --task sst"):
        read_predict_input(path, "sst")


@pytest.mark.parametrize("text", ["", "\n\n  \n"])
def test_empty_input(tmp_path: Path, text: str) -> None:
    path = write(tmp_path, "empty.txt", text)
    with pytest.raises(DataError) as err:
        read_predict_input(path)
    assert str(err.value) == f"{path}: empty input (no sentences to predict)"


def test_unknown_task_missing_file_and_bad_encoding(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="--task nli: unknown task"):
        read_predict_input(write(tmp_path, "s.txt", "fine\n"), "nli")
    with pytest.raises(DataError, match=r"nope\.txt: input file not found"):
        read_predict_input(tmp_path / "nope.txt")
    bad = tmp_path / "latin1.txt"
    bad.write_bytes("caf\xe9\n".encode("latin-1"))
    with pytest.raises(DataError, match=r"latin1.txt: not UTF-8 text \(byte 3\)"):
        read_predict_input(bad)


def test_standard_input_holds_text_or_csv() -> None:
    read = read_predict_input("-", stdin=io.BytesIO(b"one\ntwo\n"))
    assert read.source == "<stdin>" and [e.id for e in read.examples] == ["1", "2"]
    read = read_predict_input("-", stdin=io.BytesIO(STS_CSV.encode()))
    assert read.task == "sts" and read.examples[0].id == "s1"
    with pytest.raises(DataError) as err:  # the temporary file's name never shows
        read_predict_input("-", stdin=io.BytesIO(b"id\tsentence\nx\ta\nx\tb\n"))
    assert str(err.value) == "<stdin>: row 2: duplicate id 'x' (first at row 1)"


def test_csv_task_prefers_the_label_column() -> None:
    assert csv_task(["", "id", "sentence1", "sentence2", "similarity"], "f", None) == "sts"
    assert csv_task(["id", "sentence1", "sentence2", "is_duplicate"], "f", None) == "para"
