"""Ablation studies (arms × seeds) of a tiny random-init BERT through real Ray, Optuna and MLflow.

Without a `space:` the arms run directly on every seed; with one, each arm is tuned first (phase
`tune`) and its best config confirmed on every seed (phase `confirm`). The second study's driver
is killed with SIGKILL once its first arm is tuned and resumed: every run exists once, and the
confirm runs use each arm's best tuned config.
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from tests.integration.test_sweep import TINY, run_cli, runs_by_role, write_space

pytestmark = pytest.mark.integration

SMALL_DATA = {"data.max_examples.sst": 128, "data.max_examples.para": 128}


def study_space(name: str, **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "base": TINY,
        "max_concurrent": 2,
        "resources": {"cpu": 1, "gpu": 0},
        "arms": {
            "plain": dict(SMALL_DATA),
            "cosine": {**SMALL_DATA, "model.pair_encoding": "cosine"},
        },
        "seeds": [0, 3],
        "confirm_epochs": 1,
        **extra,
    }


def params_of(runs: list[Any], phase: str) -> list[dict[str, str]]:
    return [r.data.params for r in runs if r.data.params.get("phase") == phase]


def finished_phases(exp_dir: Path) -> list[str]:
    state_file = exp_dir / "sweep.json"
    if not state_file.is_file():
        return []
    return list(json.loads(state_file.read_text()).get("finished_phases", []))


def kill_once_finished(driver: Any, exp_dir: Path, phase: str) -> None:
    """SIGKILL the study's driver (its whole process group) once `phase` has finished."""
    deadline = time.monotonic() + 240
    while phase not in finished_phases(exp_dir):
        assert driver.poll() is None, driver.stdout.read() if driver.stdout else ""
        assert time.monotonic() < deadline, f"the study never finished {phase}"
        time.sleep(0.1)
    os.killpg(driver.pid, signal.SIGKILL)
    driver.wait()


def test_study_without_tuning_runs_every_arm_on_the_same_seeds(tmp_path: Path) -> None:
    results = tmp_path / "results"
    space_file = write_space(tmp_path / "direct.yaml", study_space("direct-study"))
    driver = run_cli(str(space_file), results=results)
    output, _ = driver.communicate(timeout=300)
    assert driver.returncode == 0, output
    assert "2/2 confirm runs" in output, output

    state = json.loads((results / "direct-study" / "sweep.json").read_text())
    parents, children = runs_by_role(state["tracking_uri"], "direct-study")
    assert len(parents) == 1
    assert json.loads(parents[0].data.params["study.arms"]) == ["plain", "cosine"]
    assert parents[0].data.params["study.baseline"] == "plain"
    confirm = params_of(children, "confirm")
    assert len(children) == len(confirm) == 4  # no tuning phase
    # The seeds really are shared: every arm ran exactly the study's seeds.
    seeds = {
        arm: sorted(p["seed"] for p in confirm if p["arm"] == arm) for arm in ("plain", "cosine")
    }
    assert seeds == {"plain": ["0", "3"], "cosine": ["0", "3"]}
    assert {p["model.pair_encoding"] for p in confirm if p["arm"] == "cosine"} == {"cosine"}
    assert {p["optim.epochs"] for p in confirm} == {"1"}
    assert all(r.data.tags["trial_state"] == "completed" for r in children)
    check_table_and_view(results, "direct-study", children, state["tracking_uri"])


def check_table_and_view(results: Path, name: str, runs: list[Any], uri: str) -> None:
    """The study wrote its ablation table (the numbers of its own MLflow runs) and stored the UI
    view that groups its confirm runs by arm."""
    import pandas as pd
    from mlflow import MlflowClient

    from orchestrator.ablation.arm_table import ablation_table
    from orchestrator.report.sweep_report import ABLATION_VIEW, ui_target

    table = pd.read_parquet(results / name / "ablation.parquet").set_index("arm")
    assert list(table.index) == ["plain", "cosine"]
    assert (results / name / "ablation.tex").read_text().count(r"\\") == 3
    markdown = (results / name / "ablation.md").read_text()
    assert "| plain (baseline) |" in markdown and "| cosine |" in markdown
    confirm = [r for r in runs if r.data.params["phase"] == "confirm"]
    rows = pd.DataFrame(
        {
            "arm": r.data.params["arm"],
            "seed": int(r.data.params["seed"]),
            "wall_s": (r.info.end_time - r.info.start_time) / 1000,
            **{m: r.data.metrics[f"best/{m}"] for m in ("dev/sst_acc", "dev/para_acc")},
            **{m: r.data.metrics[f"best/{m}"] for m in ("dev/sts_corr", "dev/overall")},
        }
        for r in confirm
    )
    expected = ablation_table(rows, "plain", ["plain", "cosine"]).set_index("arm")
    for column in ("dev/overall", "dev/overall ±", "Δ dev/overall", "Δ dev/overall p"):
        assert table[column].to_numpy() == pytest.approx(expected[column].to_numpy(), nan_ok=True)

    ui_target(results, name, 5999)
    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name(name)
    view = json.loads(experiment.tags[f"mlflow.sharedViewState.{ABLATION_VIEW}"])
    assert view["groupBy"]["groupByKeys"] == [{"mode": "param", "groupByData": "arm"}]
    assert "params.phase = 'confirm'" in view["searchFilter"]


def test_study_with_tuning_resumes_after_sigkill_and_confirms_each_arms_best(
    tmp_path: Path,
) -> None:
    from orchestrator.search.optuna_search import ORPHAN_ATTR, study_trials

    results = tmp_path / "results"
    space = study_space(
        "tuned-study",
        num_samples=2,
        sampler="random",
        scheduler="none",
        space={"optim.lr": {"float": [3.0e-4, 3.0e-3], "log": True}},
    )
    space_file = write_space(tmp_path / "tuned.yaml", space)
    exp_dir = results / "tuned-study"
    kill_once_finished(run_cli(str(space_file), results=results), exp_dir, "tune-plain")

    again = run_cli(str(space_file), "--resume", results=results)
    output, _ = again.communicate(timeout=300)
    assert again.returncode == 0, output
    assert finished_phases(exp_dir) == ["tune-plain", "tune-cosine", "confirm"]

    state = json.loads((exp_dir / "sweep.json").read_text())
    parents, children = runs_by_role(state["tracking_uri"], "tuned-study")
    assert len(parents) == 1 and parents[0].data.tags.get("resumed") == "true"
    counted = [r for r in children if r.data.tags["trial_state"] != "orphaned"]
    tune = [r for r in counted if r.data.params["phase"] == "tune"]
    confirm = [r for r in counted if r.data.params["phase"] == "confirm"]
    assert sorted(r.data.params["arm"] for r in tune) == ["cosine", "cosine", "plain", "plain"]
    assert len(confirm) == 4
    assert len({r.data.tags["trial_id"] for r in counted}) == len(counted)  # each run once
    for arm in ("plain", "cosine"):
        tuned = [r for r in tune if r.data.params["arm"] == arm]
        best = max(tuned, key=lambda r: r.data.metrics["best/dev/overall"])
        confirmed = {r.data.params["optim.lr"] for r in confirm if r.data.params["arm"] == arm}
        assert confirmed == {best.data.params["optim.lr"]}
        live = [
            t
            for t in study_trials(state["optuna_storage"], f"tuned-study.tune-{arm}")
            if not t.user_attrs.get(ORPHAN_ATTR)
        ]
        assert len(live) == 2  # phase 1 of this arm: its own Optuna study, asked twice


def test_a_race_killed_between_rounds_resumes_and_extends_with_every_run_once(
    tmp_path: Path,
) -> None:
    """Seeds 2 to 4 in rounds of 1: the driver is SIGKILLed once round 1 has finished, resumed
    to the race's end, then `--extend 1` races the arms still unresolved one seed further.
    The rounds, seeds and the parent run's race tags are checked against `decide` replayed
    independently on the dev/overall values MLflow stored."""
    from orchestrator.ablation.racing import CONTINUE, RacingDesign, decide

    results = tmp_path / "results"
    # No futility stop: these tiny arms differ by noise and would all stop futile at look 1,
    # and the test is of rounds, a kill between them and --extend.
    space = study_space("raced", seeds={"min": 2, "max": 4, "step": 1, "futility": 0})
    space["arms"]["slow"] = {**SMALL_DATA, "optim.lr": 1.0e-5}
    space_file = write_space(tmp_path / "raced.yaml", space)
    exp_dir = results / "raced"
    kill_once_finished(run_cli(str(space_file), results=results), exp_dir, "confirm")

    again = run_cli(str(space_file), "--resume", results=results)
    output, _ = again.communicate(timeout=300)
    assert again.returncode == 0, output
    design = RacingDesign(2, 4, 1, futility=0)
    check_race(exp_dir, design, decide, CONTINUE)

    extend = run_cli(str(space_file), "--extend", "1", results=results)
    output, _ = extend.communicate(timeout=300)
    assert extend.returncode == 0, output
    runs = check_race(exp_dir, design.extended(1), decide, CONTINUE)
    assert "## Race" in (exp_dir / "ablation.md").read_text()
    assert {r.data.params["round"] for r in runs} >= {"1", "2", "3"}


def check_race(exp_dir: Path, design: Any, decide: Any, cont: str) -> list[Any]:
    """Every (arm, seed) ran once, in the round of its seed, seeds 0..n-1 with n a look; the
    baseline ran as many as any arm; each arm's recorded stop is `decide` replayed."""
    state = json.loads((exp_dir / "sweep.json").read_text())
    parents, children = runs_by_role(state["tracking_uri"], "raced")
    runs = [r for r in children if r.data.tags["trial_state"] != "orphaned"]
    assert all(r.data.tags["trial_state"] == "completed" for r in runs)
    seeds: dict[str, list[int]] = {}
    for run in runs:
        seed, number = int(run.data.params["seed"]), int(run.data.params["round"])
        assert number == next(k for k, n in enumerate(design.looks, 1) if seed < n)
        seeds.setdefault(run.data.params["arm"], []).append(seed)
    for arm, ran in seeds.items():
        assert sorted(ran) == list(range(len(ran))), (arm, ran)  # each seed once, no gap
        assert len(ran) in design.looks
    assert len(seeds["plain"]) == max(len(s) for s in seeds.values())
    value = {(r.data.params["arm"], int(r.data.params["seed"])): r.data.metrics["best/dev/overall"]
             for r in runs}  # fmt: skip
    stopped: dict[str, str] = {}
    for look, n in enumerate(design.looks, 1):
        racing = [a for a in ("cosine", "slow") if a not in stopped]
        if not racing:
            break
        diffs = {a: [value[a, s] - value["plain", s] for s in range(n)] for a in racing}
        for arm, how in decide(diffs, look, design, stopped).items():
            tag = json.loads(parents[0].data.tags[f"arm/{arm}/race"])
            if how != cont or look == len(design.looks):
                stopped[arm] = how
                assert tag == {"decision": how, "look": look, "seeds": n}
                assert len(seeds[arm]) == n
    assert set(stopped) == {"cosine", "slow"}  # the race is over: every arm has stopped
    assert cont not in stopped.values()
    return runs
