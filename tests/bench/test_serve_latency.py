"""bench/serve_latency.py's figures and requests: its percentile is numpy.percentile's default,
and the rows it sends are the dev rows it says, in the columns the served model takes. The real
server: tests/integration/test_bench_serve.py.
"""

from __future__ import annotations

import numpy as np
import pytest

from bench.serve_latency import (
    MIXED,
    latency_summary,
    parse_args,
    percentile,
    request_body,
    request_frame,
)
from model.data import PairExample, SentenceExample

ROWS = {
    "sst": [SentenceExample(f"s{i}", f"sentence {i}", 2) for i in range(3)],
    "para": [PairExample(f"p{i}", f"q{i}", f"r{i}", 1.0) for i in range(3)],
    "sts": [PairExample(f"t{i}", f"a{i}", f"b{i}", 2.5) for i in range(3)],
}


@pytest.mark.parametrize("n", [1, 2, 3, 7, 50, 101])
def test_percentile_is_numpys_default(n: int) -> None:
    values = list(np.random.default_rng(n).lognormal(size=n))
    for q in (0, 1, 25, 50, 90, 95, 99, 100):
        assert percentile(values, q) == pytest.approx(float(np.percentile(values, q)), rel=1e-12)
    assert percentile([3.0, 1.0, 2.0], 50) == 2.0  # unsorted input


def test_percentile_of_nothing_or_out_of_range_is_a_one_line_error() -> None:
    with pytest.raises(ValueError, match=r"^percentile of no values$"):
        percentile([], 50)
    with pytest.raises(ValueError, match=r"^percentile 101 is outside \[0, 100\]$"):
        percentile([1.0], 101)


def test_latency_summary_in_milliseconds() -> None:
    seconds = [0.010, 0.020, 0.030, 0.040, 0.100]
    summary = latency_summary(seconds)
    assert summary["requests"] == 5
    assert summary["p50_ms"] == pytest.approx(30.0)
    assert summary["p95_ms"] == pytest.approx(float(np.percentile(seconds, 95)) * 1e3)
    assert summary["mean_ms"] == pytest.approx(40.0) and summary["max_ms"] == pytest.approx(100)


def test_request_frames_take_the_tasks_in_turn_or_one_task() -> None:
    mixed = request_frame(ROWS, 5, MIXED)
    assert list(mixed["task"]) == ["sst", "para", "sts", "sst", "para"]
    assert list(mixed["id"]) == ["sst-s0", "para-p0", "sts-t0", "sst-s1", "para-p1"]
    assert list(mixed["sentence1"]) == ["sentence 0", "q0", "a0", "sentence 1", "q1"]
    assert mixed["sentence2"].isna().tolist() == [True, False, False, True, False]  # SST: none
    assert list(mixed["sentence2"][1:3]) == ["r0", "b0"]
    sts = request_frame(ROWS, 2, "sts")
    assert list(sts["sentence2"]) == ["b0", "b1"]
    assert b'"dataframe_split"' in request_body(sts)
    with pytest.raises(SystemExit, match=r"^--sizes 4: the sts dev file has only 3 rows$"):
        request_frame(ROWS, 4, "sts")


def test_bad_arguments_are_one_line_errors(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        parse_args(["--checkpoint", "/no/such/checkpoint"])
    assert capsys.readouterr().err.strip().splitlines()[-1].endswith(
        "--checkpoint /no/such/checkpoint: no such directory"
    )
    with pytest.raises(SystemExit):
        parse_args(["--sizes", "0"])
    assert "--sizes and --requests must be at least 1" in capsys.readouterr().err
