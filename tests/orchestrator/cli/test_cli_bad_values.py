"""A value an option or argument cannot take is the project's one `Error:` line with exit 2, as
every other bad input, not click's usage block: `--extend 0`, `--out` naming a file where a
directory goes (and a directory where a file goes), `data fetch` into a file, and every other
value click's own types refuse. Nothing is written."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from orchestrator.cli import main

REPO = Path(__file__).resolve().parents[3]


def one_line(args: list[str]) -> str:
    """The single output line of a command that must exit 2."""
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "Usage:" not in result.output, result.output
    return lines[0]


def test_extend_zero(tmp_path: Path) -> None:
    space = str(REPO / "search_spaces" / "quickstart.yaml")
    results = tmp_path / "results"
    line = one_line(["sweep", space, "--extend", "0", "--results-dir", str(results)])
    assert line == "Error: --extend 0: expected N >= 1, the number of configs to add"
    assert not results.exists()


def test_train_out_naming_a_file(tmp_path: Path, data_dir: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("kept\n")
    config = str(REPO / "configs" / "tiny.yaml")
    line = one_line(["train", config, "--out", str(blocker), "--data-dir", str(data_dir)])
    assert line == f"Error: --out {blocker}: {blocker} is a file, not a directory"
    assert blocker.read_text() == "kept\n"


def test_predict_out_naming_a_directory(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    line = one_line(["predict", "--checkpoint", str(tmp_path), "--out", str(out), "-"])
    assert line == f"Error: --out {out}: is a directory; --out names the file to write"
    assert list(out.iterdir()) == []


def test_data_fetch_into_a_file(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("kept\n")
    for dest in (blocker, blocker / "data"):
        line = one_line(["data", "fetch", str(dest), "--url", "http://127.0.0.1:1"])
        assert line == (
            f"Error: {dest}: {blocker} is a file, not a directory; name a directory to fetch "
            "the CS224N files into"
        )
    assert blocker.read_text() == "kept\n"


@pytest.mark.parametrize(
    ("args", "line"),
    [
        (["data", "fetch", "--timeout", "0"],
         "Error: Invalid value for '--timeout': 0.0 is not in the range x>0."),
        (["sweep", "s.yaml", "--num-samples", "0"],
         "Error: Invalid value for '--num-samples': 0 is not in the range x>=1."),
        (["predict", "-", "--format", "tsv"],
         "Error: Invalid value for '--format': 'tsv' is not one of 'csv', 'leaderboard'."),
    ],
)  # fmt: skip
def test_every_value_a_click_type_refuses_is_one_line(args: list[str], line: str) -> None:
    assert one_line(args) == line


def test_a_missing_argument_keeps_the_usage_that_shows_what_to_type() -> None:
    result = CliRunner().invoke(main, ["sweep"])
    assert result.exit_code == 2
    assert result.output.startswith("Usage: ") and "Missing argument 'SPACE.yaml'" in result.output


def test_extend_a_fixed_study_or_a_race_never_run(tmp_path: Path, data_dir: Path) -> None:
    results = tmp_path / "results"
    fixed = str(REPO / "search_spaces" / "ablation_quickstart.yaml")
    line = one_line(["sweep", fixed, "--extend", "1", "--results-dir", str(results)])
    assert line == (
        f"Error: {fixed}: arms: --extend adds trials to a plain sweep, or rounds to a racing "
        "study (seeds: {min, max, step}); this study runs fixed seeds"
    )
    race = str(REPO / "search_spaces" / "ablation_quickstart_race.yaml")
    args = ["sweep", race, "--extend", "1", "--results-dir", str(results)]
    line = one_line([*args, "--data-dir", str(data_dir)])
    root = results / "ablation_quickstart_race"
    assert line == (
        f"Error: {root}: no study 'ablation_quickstart_race' to extend; run it first without "
        "--extend"
    )
    assert not root.exists()
