"""bench/racing.py draws what it says (paired differences of the given SD around the true Δ)
and prints its tables; the racing rule itself is tested in tests/orchestrator/ablation/."""

from __future__ import annotations

import numpy as np
import pytest

from bench.racing import draw_differences, main, race
from orchestrator.ablation.racing import RacingDesign


def test_the_draws_are_paired_differences_of_the_given_sd():
    rng = np.random.default_rng(0)
    diffs = draw_differences(rng, (0.0, 0.02), 0.01, studies=4000, seeds=6)
    assert diffs.shape == (4000, 2, 6)
    assert diffs[:, 1].mean() == pytest.approx(0.02, abs=5e-4)
    mean_sd = diffs.std(axis=-1, ddof=1).mean()
    assert mean_sd == pytest.approx(0.01 * 0.9515, rel=0.02)  # E[s] = c4(6) σ
    # Two arms share the baseline's run: their differences correlate 0.5.
    correlation = np.corrcoef(diffs[:, 0].ravel(), diffs[:, 1].ravel())[0, 1]
    assert correlation == pytest.approx(0.5, abs=0.03)


def test_a_clear_arm_stops_early_and_a_null_arm_runs_to_max_unless_futile():
    diffs = draw_differences(np.random.default_rng(1), (0.0, 0.05), 0.004, 200, 12)
    verdicts, seeds = race(diffs, RacingDesign(futility=0))
    assert (seeds[:, 1] < 12).all() and (verdicts[:, 1] == "better").all()
    assert (seeds[:, 0] == 12).mean() > 0.9
    # With the futility stop the null arm mostly stops early, with no verdict, and the clear
    # arm races as before.
    futile_verdicts, futile_seeds = race(diffs, RacingDesign())
    assert (futile_seeds[:, 0] < 12).mean() > 0.5
    unresolved = (verdicts[:, 0] == "unresolved").mean()
    assert (futile_verdicts[:, 0] == "unresolved").mean() >= unresolved
    assert (futile_seeds[:, 1] == seeds[:, 1]).all()


def test_it_prints_the_summary_and_the_per_arm_tables(capsys):
    main(["--studies", "50", "--paired-sd", "0.01", "--margins", "0", "0.005"])
    out = capsys.readouterr().out
    assert "| paired SD | margin | scenario | false verdicts, racing |" in out
    assert out.count("| 0.01 | – | ") == 3 and out.count("| 0.01 | 0.005 | ") == 3
    assert "| 0.01 | +0.05 | " in out and "margin 0.005: racing" in out
