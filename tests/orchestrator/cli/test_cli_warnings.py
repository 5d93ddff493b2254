"""The CLI as a user sees it outside a terminal: a warning is one `warning: ...` line, and
`train` prints a line per epoch where no progress bar shows."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from orchestrator.cli import main

REPO = Path(__file__).resolve().parents[3]
TINY = str(REPO / "configs" / "tiny.yaml")


def data_without(data_dir: Path, tmp_path: Path, missing: str) -> Path:
    """A copy of the data directory (as links) without the file `missing`."""
    copy = tmp_path / "data"
    copy.mkdir()
    for entry in data_dir.iterdir():
        if entry.name != missing:
            (copy / entry.name).symlink_to(entry.resolve())
    return copy


def test_a_real_warning_prints_as_one_line(data_dir: Path, tmp_path: Path) -> None:
    data = data_without(data_dir, tmp_path, "sts-test-student.csv")
    out = tmp_path / "out"
    result = CliRunner().invoke(
        main,
        ["train", TINY, "--data-dir", str(data), "--set", "optim.epochs=1", "--out", str(out)],
    )
    assert result.exit_code == 0, result.output
    expected = f"warning: {data / 'sts-test-student.csv'}: not found, no sts test predictions"
    assert expected in result.stderr.splitlines(), result.stderr
    assert "UserWarning" not in result.stderr and ".py:" not in result.stderr, result.stderr
    warned = [line for line in result.stderr.splitlines() if "sts-test-student" in line]
    assert warned == [expected]  # one line: no source line under it
    # Not shown on a terminal, so the run printed its epoch line instead of a bar.
    assert any(line.startswith("epoch 1/1  step ") for line in result.stderr.splitlines())
