"""A short pass of the fault-injection harness (`bench/chaos.py`) in CI: one history of each
cheap scenario, faults at moments drawn from a fixed seed, and no invariant broken.

The invariants are read from Ray's experiment state, the MLflow and Optuna stores and the files
on disk (bench/chaos_checks.py); a breach fails the test with its line."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import chaos

pytestmark = pytest.mark.chaos


@pytest.mark.parametrize("scenario", ["sweep", "trial", "writes", "storage"])
def test_a_short_chaos_pass_loses_and_duplicates_nothing(
    scenario: str, data_dir: Path, tmp_path: Path
) -> None:
    missing = chaos.NEEDS.get(scenario, lambda: None)()
    if missing:
        pytest.skip(f"{scenario}: {missing}")
    tallies = chaos.main(["--histories", "1", "--seed", "3", "--scenarios", scenario,
                          "--keep", str(tmp_path)])  # fmt: skip
    tally = tallies[scenario]
    assert tally.histories == 1
    assert tally.findings.lines == []
    assert tally.faults >= 1, "no fault landed: the pass tested nothing"
