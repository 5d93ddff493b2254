"""What `orchestrator predict` reads: a CS224N-format CSV of any task, or plain text.

A CSV (tab-separated, a header naming `id`) is read by `model.data.read_task_file`, the reader
`ensemble` and `train` use, and as they read it: a stray quote cannot merge rows, a
file with a label column loses the rows without a label (with a warning naming them; e.g. two
broken rows of quora-dev.csv) and refuses one with a label out of range, so its predictions are
those of the prediction files. A NUL or a line-breaking control character (form feed) in any
input is an error naming its line. Its task comes from the columns: `sentence` is SST;
`sentence1` + `sentence2` are Quora with an `is_duplicate` column, STS with `similarity`, and
need `--task` without either. Plain text holds one sentence per line (SST) or two TAB-separated
sentences per line (Quora, STS: `--task` says which); its ids are the line numbers, and blank
lines are skipped. A first line naming those columns that is no such header (comma-separated, or
without `id`) is an error, not a sentence. Standard input (`-`) may hold either. Every problem
is a DataError of one line naming the file and line.
"""

from __future__ import annotations

import os
import sys
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from model.config import TASKS
from model.data import (
    LABEL_COLUMNS,
    SENTENCE_COLUMNS,
    DataError,
    PairExample,
    SentenceExample,
    read_task_file,
)
from model.tsv_reader import check_text_characters

STDIN = "-"
STDIN_NAME = "<stdin>"
CSV_FORMAT = "csv"
TEXT_FORMAT = "text"
PAIR_TASKS = ("para", "sts")
ID_COLUMN_NAME = "id"
_PAIR_COLUMNS = SENTENCE_COLUMNS["para"]
# The CS224N files' column names: a first line naming one is a header, never a sentence.
KNOWN_COLUMNS = frozenset(
    {ID_COLUMN_NAME, *LABEL_COLUMNS.values(), *(c for cs in SENTENCE_COLUMNS.values() for c in cs)}
)


@dataclass(frozen=True)
class PredictInput:
    """One task's examples read from `source` (a path or <stdin>) in `kind` format, and the
    reader's warnings (e.g. rows predicted from empty text)."""

    task: str
    examples: list[SentenceExample] | list[PairExample]
    source: str
    kind: str
    warnings: list[str] = field(default_factory=list)


def read_predict_input(
    path: str | Path, task: str | None = None, stdin: BinaryIO | None = None
) -> PredictInput:
    """Read `path` (or standard input for `-`) as a CSV or plain text of `task`, which is
    inferred when None and checked against the input otherwise."""
    if task is not None:
        check_task(task, "--task")
    if str(path) == STDIN:
        raw = (stdin or sys.stdin.buffer).read()
        source = STDIN_NAME
    else:
        source = str(path)
        try:
            raw = Path(path).read_bytes()
        except FileNotFoundError:
            raise DataError(f"{source}: input file not found") from None
        except OSError as err:
            raise DataError(f"{source}: cannot read input ({err.strerror or err})") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise DataError(f"{source}: not UTF-8 text (byte {err.start})") from None
    if not text.strip():
        raise DataError(f"{source}: empty input (no sentences to predict)")
    first_line = text.split("\n", 1)[0].rstrip("\r")
    header = [name.strip() for name in first_line.split("\t")]
    is_csv = ID_COLUMN_NAME in header and len(header) > 1
    # A NUL or a form feed would be predicted without a word (the tokenizer drops it), and a
    # form feed splits a line for `splitlines` but not for the CSV reader.
    check_text_characters(text, source, header=is_csv)
    if is_csv:
        return _read_csv(text, source, header, task, None if source == STDIN_NAME else Path(path))
    check_not_a_header(first_line, source)
    return parse_text(text, source, task)


def check_not_a_header(line: str, source: str) -> None:
    """DataError when a first line that is not a readable CS224N header names their columns
    (comma-separated, or without `id`): it would otherwise be predicted as a sentence."""
    for separator in ("\t", ","):
        fields = [name.strip() for name in line.split(separator)]
        if not any(name.lower() in KNOWN_COLUMNS for name in fields):
            continue
        found = ", ".join(repr(name) for name in fields if name)
        if separator == ",":
            raise DataError(
                f"{source}: line 1: a comma-separated header ({found}); CS224N CSVs are "
                "TAB-separated: save the file with TABs between its columns, or give plain text "
                "without a header line"
            )
        raise DataError(
            f"{source}: line 1: a header ({found}) without an '{ID_COLUMN_NAME}' column; a "
            "CS224N CSV names id, sentence (sst) or id, sentence1, sentence2 (para, sts), and "
            "plain text has no header line"
        )


def check_task(task: str, what: str = "task") -> str:
    """`task` if it is one of TASKS, else a DataError naming `what` (e.g. `--task`)."""
    if task not in TASKS:
        raise DataError(f"{what} {task}: unknown task (expected one of {', '.join(TASKS)})")
    return task


def csv_task(header: list[str], source: str, task: str | None) -> str:
    """The task a CSV header fits (checked against `task` when given)."""
    columns = set(header)
    found = ", ".join(repr(c) for c in header if c)
    if task is not None:
        needed = (ID_COLUMN_NAME, *SENTENCE_COLUMNS[task])
        if not columns.issuperset(needed):
            raise DataError(
                f"{source}: line 1: --task {task} needs columns {', '.join(needed)} "
                f"(found {found})"
            )
        return task
    if columns.issuperset(_PAIR_COLUMNS):
        labelled = [t for t in PAIR_TASKS if LABEL_COLUMNS[t] in columns]
        if len(labelled) == 1:
            return labelled[0]
        raise DataError(
            f"{source}: sentence pairs without an '{LABEL_COLUMNS['para']}' or "
            f"'{LABEL_COLUMNS['sts']}' column could be para or sts: pass --task para or --task sts"
        )
    if columns.issuperset(SENTENCE_COLUMNS["sst"]):
        return "sst"
    raise DataError(
        f"{source}: line 1: columns {found} fit no task (sst: id, sentence; para and sts: id, "
        "sentence1, sentence2)"
    )


def _read_csv(
    text: str, source: str, header: list[str], task: str | None, path: Path | None
) -> PredictInput:
    """The CSV's examples through model.data's reader (standard input via a temporary file)."""
    task = csv_task(header, source, task)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if path is not None:
            examples = read_task_file(task, path)
        else:
            examples = _read_stdin_csv(task, text)
    notes = [str(w.message) for w in caught]
    return PredictInput(task, examples, source, CSV_FORMAT, notes)


def _read_stdin_csv(task: str, text: str) -> list[SentenceExample] | list[PairExample]:
    fd, tmp = tempfile.mkstemp(prefix="predict-stdin.", suffix=".csv")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        try:
            return read_task_file(task, Path(tmp))
        except DataError as err:
            raise DataError(str(err).replace(tmp, STDIN_NAME)) from None
    finally:
        Path(tmp).unlink(missing_ok=True)


def parse_text(text: str, source: str, task: str | None) -> PredictInput:
    """Plain text: a sentence per line (sst) or `sentence1<TAB>sentence2` per line (para,
    sts); ids are line numbers, blank lines are skipped."""
    lines = [(n, line) for n, line in enumerate(text.splitlines(), start=1) if line.strip()]
    if task is None:
        tabbed = next((n for n, line in lines if "\t" in line), None)
        if tabbed is not None:
            raise DataError(
                f"{source}: line {tabbed}: TAB-separated sentences could be para or sts: pass "
                "--task para or --task sts (or --task sst for one sentence per line)"
            )
        task = "sst"
    if task == "sst":
        for n, line in lines:
            if "\t" in line:
                raise DataError(
                    f"{source}: line {n}: a TAB in a line of --task sst (one sentence per line)"
                )
        sentences = [SentenceExample(str(n), line.strip(), None) for n, line in lines]
        return PredictInput(task, sentences, source, TEXT_FORMAT)
    pairs = []
    for n, line in lines:
        fields = line.split("\t")
        if len(fields) != 2:
            problem = "no TAB" if len(fields) == 1 else f"{len(fields) - 1} TABs"
            raise DataError(
                f"{source}: line {n}: {problem}; --task {task} needs two sentences per line "
                "separated by one TAB"
            )
        pairs.append(PairExample(str(n), fields[0].strip(), fields[1].strip(), None))
    return PredictInput(task, pairs, source, TEXT_FORMAT)
