"""The Python API (`import orchestrator`): the README's notebook snippet runs as written, and each
function returns what the command behind it computes, from real MLflow stores of fake sweeps."""

from __future__ import annotations

import contextlib
import io
import pickle
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

import orchestrator
from model.evaluate import OVERALL
from orchestrator.ablation.arm_table import ablation_table
from orchestrator.ablation.study_report import runs_frame
from orchestrator.contract import best_key
from orchestrator.space.schema import SpaceError, load_space
from orchestrator.tracking.store import read_sweep
from orchestrator.tracking.writer import tracking_uri
from tests.orchestrator.sweep_store import FakeStudyRun, FakeTrial, fake_study, fake_sweep

REPO = Path(__file__).resolve().parents[2]
VALUES = {"t0": 0.61, "t1": 0.72, "t2": 0.55}


def readme_python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", (REPO / "README.md").read_text(), re.S)


@pytest.fixture
def quickstart_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A store with a three-trial sweep named quickstart under ./results, the working dir."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    trials = [FakeTrial(t, v, params={"optim.lr": 1e-4 * (i + 1)}) for i, (t, v) in
              enumerate(VALUES.items())]  # fmt: skip
    fake_sweep(tracking_uri(Path("results")), "quickstart", trials, searched=("optim.lr",))
    return tmp_path / "results"


def test_the_readme_notebook_snippet_runs_and_shows_every_trial(quickstart_store: Path) -> None:
    (snippet,) = [block for block in readme_python_blocks() if "import orchestrator" in block]
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(compile(snippet, "README.md", "exec"), {})
    rows = printed.getvalue().splitlines()[1:]  # under the frame's header
    shown = {row.split()[1]: float(row.split()[-1]) for row in rows}
    assert shown == VALUES


def test_load_trials_is_the_reports_trial_table(quickstart_store: Path) -> None:
    trials = orchestrator.load_trials("quickstart", results_dir=quickstart_store)
    assert dict(zip(trials["trial_id"], trials[best_key(OVERALL)], strict=True)) == VALUES
    assert sorted(trials["optim.lr"]) == pytest.approx([1e-4, 2e-4, 3e-4])
    assert set(trials["state"]) == {"completed"}


def test_load_ablation_table_equals_the_table_of_the_studys_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    runs = [
        FakeStudyRun(arm, seed, (0.40 + 0.01 * seed + bump, 0.70, 0.50 + bump))
        for arm, bump in (("base", 0.0), ("smart", 0.03))
        for seed in (0, 1, 2)
    ]
    uri = tracking_uri(tmp_path)
    fake_study(uri, "abl", runs, arms=["base", "smart"], seeds=[0, 1, 2])
    got = orchestrator.load_ablation_table("abl", results_dir=tmp_path)
    stored = read_sweep(uri, "abl")
    assert stored is not None
    expected = ablation_table(runs_frame(stored.trials), "base", ["base", "smart"])
    # The report's table: those columns, then the corrected tests and verdicts (verdicts.py).
    pd.testing.assert_frame_equal(got[list(expected.columns)], expected)
    # smart gains exactly 0.03 on every seed: no spread, no t statistic, so no verdict.
    assert list(got["verdict"]) == ["", "unresolved"]
    assert list(got["arm"]) == ["base", "smart"]
    fake_sweep(uri, "plain", [FakeTrial("t0", 0.5)])
    with pytest.raises(ValueError, match="not an ablation study"):
        orchestrator.load_ablation_table("plain", results_dir=tmp_path)


def test_a_space_as_a_dict_is_the_same_space_as_its_yaml(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO / "search_spaces")
    from_yaml = load_space("quickstart.yaml")
    import yaml

    raw = yaml.safe_load(Path("quickstart.yaml").read_text())
    from_dict = orchestrator.load_search_space(raw, name="quickstart")
    assert from_dict.replace(source=from_yaml.source) == from_yaml
    with pytest.raises(SpaceError, match=r"<dict>: nope: unknown key"):
        orchestrator.load_search_space({**raw, "nope": 1})


def test_run_study_refuses_a_space_without_arms_before_anything_starts(tmp_path: Path) -> None:
    with pytest.raises(SpaceError, match="not a study"):
        orchestrator.run_study(REPO / "search_spaces" / "quickstart.yaml", results_dir=tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_the_package_names_only_its_api_and_imports_it_lazily() -> None:
    assert set(orchestrator.__all__) == {
        "build_ensemble", "load_ablation_table", "load_predictor", "load_search_space",
        "load_trials", "run_study", "run_sweep",
    }  # fmt: skip
    for name in orchestrator.__all__:
        assert getattr(orchestrator, name).__doc__, name
    with pytest.raises(AttributeError, match="no_such_function"):
        orchestrator.no_such_function  # noqa: B018
    frameworks = ("torch", "ray", "mlflow", "optuna")
    code = f"import sys, orchestrator; print([m for m in {frameworks!r} if m in sys.modules])"
    loaded = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert loaded.stdout.strip() == "[]", loaded.stderr


def test_a_model_pickled_under_the_old_module_name_loads_as_the_new_class() -> None:
    """Models registered before the packages move name `orchestrator.tracking.pyfunc_model`."""
    from orchestrator.registry.pyfunc_model import PredictorModel

    old_reference = b"corchestrator.tracking.pyfunc_model\nPredictorModel\n."
    assert pickle.loads(old_reference) is PredictorModel
    import orchestrator.registry.pyfunc_model as module

    assert module.__spec__ is not None and module.__spec__.name == module.__name__


def test_objects_pickled_by_the_flat_layout_load_as_the_packages_classes() -> None:
    """A sweep's Ray state pickled before the packages move (the space, a study, the listeners,
    the searcher's classes), as `--resume` of such a sweep reads it: made by commit 5600415's
    code with `pickle.dumps` (tests/orchestrator/data/premove_objects.pkl)."""
    from orchestrator.search.optuna_search import Repeat
    from orchestrator.sweep.listeners import LiveTrialTable, MlflowRelay

    old = pickle.loads((Path(__file__).parent / "data" / "premove_objects.pkl").read_bytes())
    for name in ("quickstart", "ablation_quickstart"):
        key = "space" if name == "quickstart" else "study"
        fresh = load_space(REPO / "search_spaces" / f"{name}.yaml")
        assert old[key].replace(source=fresh.source) == fresh
    assert isinstance(old["relay"], MlflowRelay) and old["relay"].space.name == "quickstart"
    assert isinstance(old["table"], LiveTrialTable)
    assert old["repeat_cls"] is Repeat
    with pytest.raises(AttributeError, match="no_such_class"):
        orchestrator.space.no_such_class  # type: ignore[attr-defined]  # noqa: B018


def test_run_sweep_refuses_what_the_cli_refuses_before_anything_starts(tmp_path: Path) -> None:
    study = REPO / "search_spaces" / "ablation_quickstart.yaml"
    with pytest.raises(SpaceError, match="arms: extend adds trials to a plain sweep"):
        orchestrator.run_sweep(study, results_dir=tmp_path, extend=2)
    with pytest.raises(ValueError, match="resume=True alone finishes an extension"):
        orchestrator.run_sweep(REPO / "search_spaces" / "quickstart.yaml", results_dir=tmp_path,
                               extend=2, resume=True)  # fmt: skip
    assert list(tmp_path.iterdir()) == []
