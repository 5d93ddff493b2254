"""Reading CS224N files one row per line: a stray quote cannot merge rows, a NUL or a
line-breaking control character is an error naming the row, and the real files read exactly as
pandas' plain reader read them before."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from model.data import read_task_file
from model.data_dir import KNOWN_FILES, PARTIAL_QUORA_TRAIN
from model.tsv_reader import DataError, check_text_characters, read_table

SST = "\tid\tsentence\tsentiment\n"


def write(tmp_path: Path, text: str, name: str = "sst.csv") -> Path:
    path = tmp_path / name
    path.write_bytes(text.encode("utf-8"))
    return path


def test_a_stray_quote_that_would_swallow_rows_is_an_error_naming_the_row(tmp_path: Path) -> None:
    rows = [
        "0\ta\tA fine film .\t3",
        '1\tb\t"An unclosed start .\t2',  # the `"` opens a field ...
        "2\tc\tFlat .\t1",
        "3\td\tDull .\t0",
        '4\te\tSo "good" .\t4',  # ... that this line's first `"` closes
        "5\tf\tFine .\t3",
    ]
    path = write(tmp_path, SST + "\n".join(rows) + "\n")
    # The reader before this one: 3 rows from 6 lines, exit 0.
    assert len(pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)) == 3
    with pytest.raises(DataError) as caught:
        read_task_file("sst", path)
    assert str(caught.value) == (
        f"{path}: row 2 (line 3): a '\"' opens a quoted field that runs over 3 line end(s), "
        "merging lines 3-6 into one row (3 rows read from 6 lines); CS224N files hold one row "
        "per line: close the quote, or double a quote inside a quoted field"
    )


def test_a_quoted_sentence_with_a_line_break_is_one_row(tmp_path: Path) -> None:
    """No tab inside the quotes: a sentence that holds a line break, not swallowed rows."""
    path = write(tmp_path, SST + '0\ta\t"Two\nlines ."\t3\n1\tb\tFlat .\t1\n')
    frame = read_table(path)
    assert list(frame["sentence"]) == ["Two\nlines .", "Flat ."]
    assert list(frame["sentiment"]) == ["3", "1"]


def test_a_merged_row_after_a_two_line_sentence_names_its_own_line(tmp_path: Path) -> None:
    rows = ['0\ta\t"Two\nlines ."\t3', '1\tb\t"Unclosed .\t2', "2\tc\tFlat .\t1", '3\td\t"x" .\t0']
    path = write(tmp_path, SST + "\n".join(rows) + "\n")
    with pytest.raises(DataError, match=r"row 2 \(line 4\): .* merging lines 4-6 into one row"):
        read_table(path)


def test_a_quote_that_nothing_closes_is_an_error_naming_it(tmp_path: Path) -> None:
    path = write(tmp_path, SST + '0\ta\tFine .\t3\n1\tb\t"Unclosed .\t2\n2\tc\tFlat .\t1\n')
    with pytest.raises(DataError) as caught:
        read_table(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: cannot parse as tab-separated CSV: ")
    assert "EOF inside string starting at row 2" in message
    assert message.endswith("(a '\"' opens a field that no later '\"' closes)")


@pytest.mark.parametrize(
    ("char", "name"),
    [
        ("\x00", "a NUL byte (U+0000)"),
        ("\x0c", "a form feed (U+000C)"),
        ("\x0b", "a vertical tab (U+000B)"),
        ("\r", "a carriage return without a line feed (U+000D)"),
        ("\u2028", "a line separator (U+2028)"),
    ],
)
def test_a_nul_or_line_breaking_character_is_an_error_naming_row_and_column(
    tmp_path: Path, char: str, name: str
) -> None:
    path = write(tmp_path, SST + "0\ta\tFine .\t3\n\n1\tb\tFlat" + char + " .\t1\n")
    with pytest.raises(DataError) as caught:
        read_task_file("sst", path)
    assert str(caught.value) == (
        f"{path}: row 2 (line 4): {name} in column 'sentence'; the text must be plain text, one "
        "row per line (a corrupt file, or text pasted from a binary or paged document?)"
    )
    header = write(tmp_path, "\tid\tsen" + char + "tence\n0\ta\tx\n", "header.csv")
    with pytest.raises(DataError, match=r"header\.csv: line 1 \(the header\): "):
        read_table(header)
    with pytest.raises(DataError, match=r"^<stdin>: line 2: "):  # plain text: lines, no columns
        check_text_characters("fine\nfl" + char + "at\n", "<stdin>", header=False)


def test_crlf_a_bom_and_the_control_characters_of_the_real_files_read_as_before(
    tmp_path: Path,
) -> None:
    """DC2 (sts-train.csv) and DEL (quora-dev.csv) are in the course's own files: they pass."""
    text = SST + "0\ta\tTreasury\x12s plan .\t3\n1\tb\tguilt\x7f?\t1\n"
    plain = read_table(write(tmp_path, text))
    crlf = read_table(write(tmp_path, "\ufeff" + text.replace("\n", "\r\n"), "crlf.csv"))
    assert list(plain["sentence"]) == ["Treasury\x12s plan .", "guilt\x7f?"]
    assert plain.equals(crlf)
    assert list(crlf.columns) == ["Unnamed: 0", "id", "sentence", "sentiment"]


def test_a_file_that_is_not_utf8_names_its_line(tmp_path: Path) -> None:
    path = tmp_path / "latin1.csv"
    path.write_bytes(SST.encode() + "0\ta\tcaf\xe9 .\t3\n".encode("latin-1"))
    with pytest.raises(DataError, match=r"latin1\.csv: line 2: not UTF-8 text \(byte 30\)$"):
        read_table(path)


def test_the_real_files_read_exactly_as_the_plain_pandas_reader_read_them(data_dir: Path) -> None:
    """Same rows (the manifest's counts, one a line), columns and values, quoted fields with
    their doubled quotes included."""
    names = [k.name for k in KNOWN_FILES if (data_dir / k.name).is_file()]
    assert "quora-dev.csv" in names and PARTIAL_QUORA_TRAIN in names
    rows = {k.name: k.rows for k in KNOWN_FILES}
    for name in names:
        path = data_dir / name
        before = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
        after = read_table(path)
        lines = path.read_bytes().rstrip(b"\n").count(b"\n")  # lines after the header
        assert len(after) == rows[name] == lines, name
        pd.testing.assert_frame_equal(after, before, obj=name)
    quora = read_table(data_dir / "quora-dev.csv")
    assert quora["sentence1"].iloc[1].startswith('"Which is correct grammar')
    assert "\x7f" in quora["sentence1"].iloc[13289]
    sts = read_table(data_dir / "sts-train.csv")
    assert sts["sentence1"].iloc[3001].startswith("Treasury\x12s long-range plan")
