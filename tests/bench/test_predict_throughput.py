"""bench/predict_throughput.py --sbert compares like with like: both sides get the same texts
(the ones our predict path tokenizes) and a mismatch in their token ids is found and named.
The real comparison (sentence-transformers on the packaged MiniLM): tests/integration/
test_bench_predict.py.
"""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from bench.predict_throughput import SBERT_TASKS, sbert_texts, token_mismatch
from bench.quickstart_model import quickstart_config
from model.data import Examples, PairExample, SentenceExample, encode_task

SENTENCES: Examples = [
    SentenceExample("s1", "A gripping, funny film.", 4),
    SentenceExample("s2", "Dull.", 0),
]
PAIRS: Examples = [
    PairExample("p1", "A man plays a guitar.", "Someone plays music.", 3.8),
    PairExample("p2", "A cat sleeps.", "The stock market fell.", 0.2),
]
ROWS = {"sst": SENTENCES, "sts": PAIRS}


class RecordingTokenizer:
    """Records the text lists it is asked to tokenize; every text becomes one token."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    def encode(self, texts: Sequence[str]) -> tuple[list[list[int]], list[list[int]]]:
        self.calls.append(list(texts))
        return [[101] for _ in texts], [[0] for _ in texts]

    def encode_pairs(
        self, first: Sequence[str], second: Sequence[str]
    ) -> tuple[list[list[int]], list[list[int]]]:
        raise AssertionError("cross-encoded pairs: encode has no like-for-like counterpart")


@pytest.mark.parametrize("task", SBERT_TASKS)
def test_both_sides_get_the_texts_our_predict_path_tokenizes(task: str) -> None:
    pair_encoding = quickstart_config().model.pair_encoding
    assert pair_encoding != "cross"  # the quickstart's pairs are two sentences, as in encode
    tokenizer = RecordingTokenizer()
    encode_task(task, ROWS[task], tokenizer, pair_encoding)
    assert tuple(tokenizer.calls) == sbert_texts(task, ROWS[task])
    assert len(sbert_texts(task, ROWS[task])) == (1 if task == "sst" else 2)


def test_the_quickstart_model_truncates_where_the_comparison_says() -> None:
    cfg = quickstart_config("bf16")
    assert (cfg.model.max_length, cfg.model.pooling, cfg.precision) == (64, "mean", "bf16")
    assert quickstart_config().precision == "fp32"


def test_token_mismatch_names_the_first_row_that_differs() -> None:
    ours = ([[101, 7, 102], [101, 8, 9, 102]], [[101, 5, 102], [101, 6, 102]])
    assert token_mismatch(ours, ([[101, 7, 102], [101, 8, 9, 102]], ours[1])) is None
    truncated = ([[101, 7, 102], [101, 8, 102]], ours[1])  # a shorter max length
    assert token_mismatch(ours, truncated) == "row 1, sentence 1"
    assert token_mismatch(ours, (ours[0], [[101, 5, 102], [101, 4, 102]])) == "row 1, sentence 2"
    cross = ([[101, 7, 102, 5, 102], [101, 8, 9, 102, 6, 102]],)  # pairs joined into one
    assert token_mismatch(ours, cross) == "2 sequence(s) per row against 1"
    assert token_mismatch(ours, (ours[0][:1], ours[1])) == "2 rows against 1"
