"""Real Ray Tune + Optuna + MLflow under `retention: {keep_best: 2}`: a 4-trial sweep of the tiny
BERT keeps the weights of its 2 best trials only, and no trial keeps any optimizer state; the
others keep metrics, config and a note, and are tagged in MLflow. `ensemble`, `predict` with the
ensemble and `--extend` work on it, and the extension settles the best 2 of all 6 trials (and the
built ensemble's members, which `predict --ensemble` still reads).
(`--resume` under retention: the resume tests of test_sweep.py run with keep_best: 2.)"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from model.checkpoint import WEIGHTS_DROPPED_FILE, WEIGHTS_FILE

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
RAW: dict[str, Any] = {
    "name": "keep-it",
    "base": str(REPO / "configs" / "tiny.yaml"),
    "num_samples": 4,
    "max_concurrent": 2,
    "sampler": "random",
    "seed": 3,
    "scheduler": "none",
    "retention": {"keep_best": 2},
    "space": {"optim.lr": {"float": [1.0e-4, 1.0e-2], "log": True}, "optim.epochs": 1},
}


def weights_by_trial(outcome: Any) -> dict[str, bool]:
    return {t.trial_id: (Path(t.best_checkpoint) / WEIGHTS_FILE).is_file() for t in outcome.trials}


def best_two(outcome: Any) -> set[str]:
    ranked = sorted(outcome.trials, key=lambda t: -t.best_value)
    return {t.trial_id for t in ranked[:2]}


def assert_only_the_best_two_keep_weights(outcome: Any, sweep_dir: Path) -> None:
    kept = {trial for trial, has in weights_by_trial(outcome).items() if has}
    assert kept == best_two(outcome)
    for trial in outcome.trials:
        root = sweep_dir / trial.trial_id
        # No optimizer state left anywhere: Ray's copies and the trainer's `last` are gone.
        assert not list(root.rglob("optimizer.pt")) and not list(root.glob("checkpoint_*"))
        note = Path(trial.best_checkpoint) / WEIGHTS_DROPPED_FILE
        assert note.is_file() == (trial.trial_id not in kept)


def test_a_sweep_keeps_its_best_two_and_ensemble_predict_and_extend_work(
    tmp_path: Path, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import orchestrator
    from orchestrator.cli import main
    from orchestrator.tracking.store import find_sweep

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    results = tmp_path / "results"
    space_file = tmp_path / "keep.yaml"
    space_file.write_text(yaml.safe_dump(RAW))
    first = orchestrator.run_sweep(space_file, data_dir=data_dir, results_dir=results, num_cpus=2)
    assert len(first.trials) == 4 and {t.state for t in first.trials} == {"completed"}
    assert_only_the_best_two_keep_weights(first, results / "keep-it")
    _, stored = find_sweep(results, "keep-it")
    dropped = {r.trial_id for r in stored.trials if r.tags.get("weights") == "dropped"}
    assert dropped == {t.trial_id for t in first.trials} - best_two(first)
    assert stored.parent.tags["retention"] == "keep_best: 2; 2 of 4 trials' weights dropped"

    report = CliRunner().invoke(main, ["report", "keep-it", "--results-dir", str(results)])
    assert report.exit_code == 0, report.output
    assert "note: retention keep_best: 2; 2 of 4 trials' weights dropped" in report.output

    built = orchestrator.build_ensemble("keep-it", top=2, results_dir=results, splits=("dev",))
    assert {m.candidate.trial_id for m in built.members} == best_two(first)
    rows = (data_dir / "ids-sst-dev.csv").read_text().splitlines()[:6]  # a header and 5 rows
    (tmp_path / "sst.csv").write_text("\n".join(rows) + "\n")
    predicted = CliRunner().invoke(main, ["predict", str(tmp_path / "sst.csv"), "--ensemble",
                                          str(built.out_dir)])  # fmt: skip
    assert predicted.exit_code == 0, predicted.output
    lines = [x for x in predicted.output.splitlines() if x.strip()]
    assert len(lines) == 6 and lines[0].startswith("id,prediction")

    extended = orchestrator.run_sweep(space_file, data_dir=data_dir, results_dir=results,
                                      extend=2, num_cpus=2)  # fmt: skip
    assert len(extended.trials) == 6
    # The best 2 of all 6 keep their weights, and so do the built ensemble's members.
    members = {m.candidate.trial_id for m in built.members}
    kept = {trial for trial, has in weights_by_trial(extended).items() if has}
    assert kept == best_two(extended) | members
    _, stored = find_sweep(results, "keep-it")
    assert sum(r.tags.get("weights") == "dropped" for r in stored.trials) == 6 - len(kept)
    again = CliRunner().invoke(main, ["predict", str(tmp_path / "sst.csv"), "--ensemble",
                                      str(built.out_dir)])  # fmt: skip
    assert again.exit_code == 0 and again.output == predicted.output
