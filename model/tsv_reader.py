"""Reading a CS224N file: tab-separated, one row per line, standard CSV quoting.

pandas (like the csv module) lets a quoted field run over line ends. A stray `"` that opens a
field nobody closes then merges every line up to the next `"` into one row without a word; the
merged field holds the tabs of the rows it swallowed, which no sentence of a CS224N file holds.
`read_table` refuses such a file, naming the row and saying how many rows came from how many
lines. A quoted sentence with a line break but no tab is one row, and read as one (the files this
project was built on have none; the full quora-train.csv could not be checked here).

It also refuses the characters that make a row's number depend on the reader: NUL (a binary or
corrupt file) and the ones some readers take for a line end and others do not (Python's
`str.splitlines` splits on a form feed, pandas on a lone carriage return). Other control
characters pass: the course's own files carry a few (DC2 for an apostrophe in sts-train.csv, DEL
in two quora-dev.csv rows), and the tokenizer drops them.
"""

from __future__ import annotations

import io
import re
from pathlib import Path

import pandas as pd

# Characters a row may not hold (see the module docstring); `\r` only where no `\n` follows.
_FORBIDDEN = re.compile("[\x00\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029]|\r(?!\n)")


class DataError(ValueError):
    """A data file is missing or malformed; the message names the file (and row / column)."""


_NAMES = {
    "\x00": "a NUL byte",
    "\x0b": "a vertical tab",
    "\x0c": "a form feed",
    "\x1c": "a file separator",
    "\x1d": "a group separator",
    "\x1e": "a record separator",
    "\x85": "a next-line character",
    "\u2028": "a line separator",
    "\u2029": "a paragraph separator",
    "\r": "a carriage return without a line feed",
}


def read_table(path: Path) -> pd.DataFrame:
    """Every row of the CS224N file at `path` as text (empty fields ""), one row per line;
    DataError naming the file and row when quoting merges lines or a character is refused."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: data file not found")
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = err.object[: err.start].count(b"\n") + 1
        raise DataError(f"{path}: line {line}: not UTF-8 text (byte {err.start})") from None
    except OSError as err:
        raise DataError(f"{path}: cannot read ({err.strerror or err})") from None
    check_text_characters(text, str(path), header=True)
    try:
        # dtype=str + keep_default_na=False: labels stay text ("" for empty) and are parsed later.
        frame = pd.read_csv(io.StringIO(text), sep="\t", dtype=str, keep_default_na=False)
    except pd.errors.EmptyDataError as err:
        raise DataError(f"{path}: cannot parse as tab-separated CSV: {err}") from err
    except pd.errors.ParserError as err:
        message = " ".join(str(err).split())
        if "EOF inside string" in message:
            message += " (a '\"' opens a field that no later '\"' closes)"
        raise DataError(f"{path}: cannot parse as tab-separated CSV: {message}") from err
    _check_one_row_per_line(path, text, frame)
    return frame


def check_text_characters(text: str, source: str, *, header: bool = True) -> None:
    """DataError naming `source` and the row (and column, for a file with a `header` line) of
    the first NUL or line-breaking control character in `text`."""
    found = _FORBIDDEN.search(text)
    if found is None:
        return
    line = text.count("\n", 0, found.start()) + 1
    char = found.group()[0]
    where, column = f"line {line}", ""
    if header:
        where = _row_of_line(text, line)
        names = text.split("\n", 1)[0].rstrip("\r").split("\t")
        index = text[text.rfind("\n", 0, found.start()) + 1 : found.start()].count("\t")
        column = f" in column '{names[index]}'" if line > 1 and index < len(names) else ""
    raise DataError(
        f"{source}: {where}: {_NAMES[char]} (U+{ord(char):04X}){column}; the text must be plain "
        "text, one row per line (a corrupt file, or text pasted from a binary or paged "
        "document?)"
    )


def _check_one_row_per_line(path: Path, text: str, frame: pd.DataFrame) -> None:
    """DataError when a quoted field of `frame` runs over a line end and holds a tab: the
    columns of the rows it merged."""
    merged = pd.Series(False, index=frame.index)
    for column in frame.columns:
        values = frame[column]
        merged |= values.str.contains("\n", regex=False) & values.str.contains("\t", regex=False)
    if not merged.any():
        return
    row = int(merged.to_numpy().argmax())
    lines = _data_lines(text)
    # Earlier rows may hold a quoted line break of their own: count their lines too.
    earlier = sum(str(v).count("\n") for v in frame.iloc[:row].to_numpy().ravel())
    first = lines[min(row + earlier, len(lines) - 1)]
    spanned = sum(str(value).count("\n") for value in frame.iloc[row])
    raise DataError(
        f"{path}: row {row + 1} (line {first}): a '\"' opens a quoted field that runs "
        f"over {spanned} line end(s), merging lines {first}-{first + spanned} into "
        f"one row ({len(frame)} rows read from {len(lines)} lines); CS224N files hold one row "
        "per line: close the quote, or double a quote inside a quoted field"
    )


def _data_lines(text: str) -> list[int]:
    """The line numbers of the non-blank lines after the header (the rows, one a line)."""
    lines = text.split("\n")
    return [n for n, line in enumerate(lines[1:], start=2) if line.rstrip("\r")]


def _row_of_line(text: str, line: int) -> str:
    """`row 3 (line 4)` for a data line, `line 1 (the header)` for the first."""
    if line == 1:
        return "line 1 (the header)"
    before = sum(1 for n in _data_lines(text) if n < line)
    return f"row {before + 1} (line {line})"
