"""Real Ray Tune + Optuna + MLflow sweeps of a tiny random-init BERT on 2 CPUs.

One sweep with ASHA checks what MLflow and the Optuna study hold afterwards (one parent, one
child per trial, PRUNED trials with their last value, a NaN trial FAILED with its reason). A second
sweep's driver is killed with SIGKILL mid-way and resumed with `--resume`: every trial ends up
counted once, also when Ray deleted the checkpoint its last snapshot names (issue 25).
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from model.config import TrainConfig
from model.data_dir import PARA_TRAIN_AUTO, quora_train_source, resolve_para_train
from model.device import resolved_precision
from orchestrator.contract import PRECISION_KEY

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
TINY = str(REPO / "configs" / "tiny.yaml")
CPU = torch.device("cpu")


def write_space(path: Path, raw: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def runs_by_role(tracking_uri: str, experiment: str) -> tuple[list[Any], list[Any]]:
    from mlflow import MlflowClient
    from mlflow.entities import ViewType

    client = MlflowClient(tracking_uri=tracking_uri)
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id], run_view_type=ViewType.ALL, max_results=1000)
    parents = [r for r in runs if r.data.tags.get("role") == "sweep"]
    children = [r for r in runs if r.data.tags.get("role") == "trial"]
    return parents, children


def metric_steps(tracking_uri: str, run_id: str, key: str = "dev/overall") -> list[int]:
    from mlflow import MlflowClient

    return [
        m.step for m in MlflowClient(tracking_uri=tracking_uri).get_metric_history(run_id, key)
    ]


def test_asha_sweep_logs_to_mlflow_and_records_pruned_trials(
    ray_2cpu: None, tmp_path: Path, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from optuna.trial import TrialState

    from orchestrator.search.optuna_search import sample_configs, study_trials
    from orchestrator.space.schema import load_space, parse_space
    from orchestrator.sweep.plain import run_plain_sweep

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    # lr 1e-9 leaves the model at its initial dev score (~0.40) while 3e-3 beats it after one
    # epoch (~0.44); lr 1e6 drives the loss to NaN. Trials run one at a time, so ASHA must stop
    # every slow trial that reaches the first rung after a fast one. The seed is picked so the
    # random sampler draws a fast trial first and then a slow one and a NaN one.
    raw = {
        "name": "asha-it",
        "base": TINY,
        "num_samples": 4,
        "max_concurrent": 1,
        "sampler": "random",
        "scheduler": {"name": "asha", "grace_period": 1, "reduction_factor": 2},
        "space": {
            "optim.lr": {"choice": [3.0e-3, 1.0e-9, 1.0e6]},
            "model.head_dropout": {"float": [0.0, 0.3]},
            "optim.epochs": 3,
        },
    }
    for seed in range(100):
        draws = [c["optim.lr"] for c in sample_configs(parse_space({**raw, "seed": seed}), 4)]
        if draws[0] == 3e-3 and 1e-9 in draws and 1e6 in draws:
            break
    space = load_space(write_space(tmp_path / "asha.yaml", {**raw, "seed": seed}))
    outcome = run_plain_sweep(
        space, data_dir=data_dir, results_dir=tmp_path / "results", live_table=False
    )
    assert [t.params["optim.lr"] for t in outcome.trials] == draws

    trials = {t.trial_id: t for t in outcome.trials}
    assert len(trials) == 4
    lrs = {t.trial_id: t.params["optim.lr"] for t in outcome.trials}
    for trial in outcome.trials:
        if lrs[trial.trial_id] == 1e6:
            assert trial.state == "failed" and "loss is nan" in (trial.error or "")
        else:
            assert trial.state in ("completed", "pruned")
            assert Path(trial.best_checkpoint or "", "model.safetensors").is_file()
            # Resume state of a finished trial is dropped (Ray keeps its own copy).
            assert not Path(trial.best_checkpoint or "").with_name("last").exists()
    pruned = [t for t in outcome.trials if t.state == "pruned"]
    assert pruned and all(t.epochs < 3 and t.params["optim.lr"] == 1e-9 for t in pruned)
    assert len(pruned) == draws.count(1e-9)
    assert outcome.best is not None and outcome.best.params["optim.lr"] == 3e-3

    # MLflow: one parent, one child per trial with per-epoch metrics, the right status and tags.
    parents, children = runs_by_role(outcome.tracking_uri, "asha-it")
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert parents[0].data.tags["best_trial_id"] == outcome.best.trial_id
    # Called without the CLI, the sweep still resolves data.para_train: auto to the file read.
    quora = resolve_para_train(PARA_TRAIN_AUTO, data_dir)
    assert parents[0].data.params["base.data.para_train"] == quora
    assert f"note: Quora trained on pairs drawn from {quora_train_source(quora)}" in (
        outcome.summary()
    )
    assert sorted(r.data.tags["trial_id"] for r in children) == sorted(trials)
    for run in children:
        trial = trials[run.data.tags["trial_id"]]
        assert run.data.tags["mlflow.parentRunId"] == parents[0].info.run_id
        assert run.data.tags["trial_state"] == trial.state
        assert run.info.run_name == trial.run_name and run.info.run_name.startswith("optim.lr=")
        assert float(run.data.params["optim.lr"]) == lrs[trial.trial_id]
        assert run.data.params["data.para_train"] == quora
        for tag in ("git_sha", "config_hash", "data_sha256", "sampler"):
            assert run.data.tags[tag]
        if trial.state == "failed":
            assert run.info.status == "FAILED"
            assert "NonFiniteLossError: training loss is nan" in run.data.tags["failed_reason"]
            continue
        assert run.info.status == "FINISHED"
        assert metric_steps(outcome.tracking_uri, run.info.run_id) == list(
            range(1, trial.epochs + 1)
        )
        assert run.data.metrics["best/dev/overall"] == pytest.approx(trial.best_value)
        assert run.data.tags["best_checkpoint"] == trial.best_checkpoint
        # What the trial's `precision` resolved to on its machine, as its training chose it.
        assert run.data.params["precision"] == "auto"
        assert run.data.tags[PRECISION_KEY] == resolved_precision(TrainConfig(), CPU)[0]
        if trial.state == "pruned":
            assert "asha stopped it after epoch" in run.data.tags["pruned_reason"]

    # Optuna: ASHA-stopped trials are PRUNED with their last value, not COMPLETE.
    study = {
        t.user_attrs["ray_trial_id"]: t for t in study_trials(outcome.optuna_storage, "asha-it")
    }
    assert sorted(study) == sorted(trials)
    for trial_id, trial in trials.items():
        frozen = study[trial_id]
        expected = {"completed": TrialState.COMPLETE, "pruned": TrialState.PRUNED}
        assert frozen.state == expected.get(trial.state, TrialState.FAIL)
        if trial.state == "pruned":
            last_step = max(frozen.intermediate_values)
            assert frozen.value == pytest.approx(frozen.intermediate_values[last_step])
            assert last_step == trial.epochs


def run_cli(*args: str, results: Path) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "RAY_ADDRESS")}
    env["PYTHONPATH"] = str(REPO)
    return subprocess.Popen(
        [sys.executable, "-m", "orchestrator.cli", "sweep", *args, "--results-dir", str(results)],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # its own process group: SIGKILL takes Ray's local cluster too
    )


def reported_epochs(exp_dir: Path) -> int:
    return sum(
        len(path.read_text().splitlines())
        for path in exp_dir.glob("*/result.json")
        if path.is_file()
    )


# ~1 s epochs: time to die mid-trial; no scheduler, so every trial runs all epochs (a clean count)
RESUME_EPOCHS = 8
RESUME_SPACE: dict[str, Any] = {
    "name": "resume-it",
    "base": TINY,
    "num_samples": 4,
    "max_concurrent": 2,
    "sampler": "tpe",
    "seed": 0,
    "scheduler": "none",
    "retention": {"keep_best": 2},  # --resume under retention: only the best 2 keep weights
    "space": {
        "optim.lr": {"float": [1.0e-3, 1.0e-2], "log": True},
        # Enough epochs that one of Ray's saves (every 2 s, copied to the results directory in
        # the background) names a running trial's checkpoint before the sweep ends.
        "optim.epochs": RESUME_EPOCHS,
        "data.max_examples.sst": 256,
        "data.max_examples.para": 256,
    },
}


def test_sweep_killed_with_sigkill_resumes_and_counts_every_trial_once(
    tmp_path: Path, data_dir: Path
) -> None:
    results = tmp_path / "results"
    space_file = write_space(tmp_path / "resume.yaml", RESUME_SPACE)
    exp_dir = results / "resume-it"
    driver = run_cli(str(space_file), results=results)
    deadline = time.monotonic() + 120
    # Some trials have checkpoints, none of them all its epochs, and Ray's last save (every 2 s)
    # names one: what --resume continues from.
    while reported_epochs(exp_dir) < 3 or not checkpoints_named_by_snapshot(exp_dir):
        assert driver.poll() is None, driver.stdout.read() if driver.stdout else ""
        assert time.monotonic() < deadline, "sweep made no progress"
        time.sleep(0.2)
    os.killpg(driver.pid, signal.SIGKILL)
    driver.wait()
    assert_resumes_counting_every_trial_once(space_file, results)


def test_sweep_killed_after_ray_deleted_the_checkpoint_its_snapshot_names_resumes(
    tmp_path: Path, data_dir: Path
) -> None:
    """Issue 25's resume window, made to happen: the driver is killed once its snapshot names a
    checkpoint of an unfinished trial, and that checkpoint is then moved to the next index, as
    Ray leaves it when it registers a newer one and deletes the old before its next snapshot."""
    results = tmp_path / "results"
    space_file = write_space(tmp_path / "resume.yaml", RESUME_SPACE)
    exp_dir = results / "resume-it"
    driver = run_cli(str(space_file), results=results)
    deadline = time.monotonic() + 120
    while not any(path.is_dir() for path in checkpoints_named_by_snapshot(exp_dir)):
        assert driver.poll() is None, driver.stdout.read() if driver.stdout else ""
        assert time.monotonic() < deadline, "no snapshot named a checkpoint of a running trial"
        time.sleep(0.2)
    os.killpg(driver.pid, signal.SIGKILL)
    driver.wait()
    wait_until_gone(driver.pid)  # a dying trial worker could still write a checkpoint
    named = checkpoints_named_by_snapshot(exp_dir)  # the last snapshot, which --resume reads
    for checkpoint in (path for path in named if path.is_dir()):
        shift_checkpoints_from(checkpoint)
    assert named and not any(path.exists() for path in named)
    assert_resumes_counting_every_trial_once(space_file, results)


def wait_until_gone(group: int, timeout_s: float = 60.0) -> None:
    """Until no process of the process group `group` (the driver's, with Ray's) is left."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            os.killpg(group, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    raise AssertionError(f"processes of group {group} still alive after SIGKILL")


def shift_checkpoints_from(named: Path) -> None:
    """Ray's checkpoints of a trial from `named` on, each renamed to the next index (newest
    first): `named` is gone and the checkpoint of its epoch is the oldest newer one, as when Ray
    registered it (after recording its result) and deleted `named`."""
    from orchestrator.sweep.lost_checkpoint import ray_checkpoint_index

    found = [(ray_checkpoint_index(p), p) for p in named.parent.glob("checkpoint_*")]
    for i, path in sorted((i, p) for i, p in found if i >= ray_checkpoint_index(named))[::-1]:
        path.rename(path.with_name(f"checkpoint_{i + 1:06d}"))


def checkpoints_named_by_snapshot(exp_dir: Path) -> list[Path]:
    """The checkpoints that the saved experiment state names for unfinished trials."""
    from ray.tune import ExperimentAnalysis

    # Quiet: it warns on every poll about trials that have no result file yet.
    logging.getLogger("ray.tune.analysis.experiment_analysis").setLevel(logging.ERROR)
    try:
        trials = ExperimentAnalysis(str(exp_dir)).trials
    except Exception:  # no state saved yet, or read while Ray writes it
        return []
    return [
        exp_dir / t.trial_id / Path(t.checkpoint.path).name
        for t in trials
        if t.status not in ("TERMINATED", "ERROR") and t.checkpoint is not None
    ]


def assert_resumes_counting_every_trial_once(space_file: Path, results: Path) -> None:
    from optuna.trial import TrialState
    from ray.tune import ExperimentAnalysis

    from orchestrator.search.optuna_search import ORPHAN_ATTR, study_trials

    exp_dir = results / "resume-it"
    again = run_cli(str(space_file), "--resume", results=results)
    output, _ = again.communicate(timeout=240)
    assert again.returncode == 0, output
    assert "4 trials (4 completed, 0 pruned, 0 failed)" in output, output

    analysis = ExperimentAnalysis(str(exp_dir))
    ray_ids = sorted(t.trial_id for t in analysis.trials)
    assert len(ray_ids) == 4 and all(t.status == "TERMINATED" for t in analysis.trials)
    # At least one trial continued from a checkpoint instead of starting over.
    assert any(
        t.last_result["iterations_since_restore"] < t.last_result["training_iteration"]
        for t in analysis.trials
    ), [t.last_result for t in analysis.trials]

    state = yaml.safe_load((exp_dir / "sweep.json").read_text())
    parents, children = runs_by_role(state["tracking_uri"], "resume-it")
    assert len(parents) == 1 and parents[0].data.tags.get("resumed") == "true"
    counted = [r for r in children if r.data.tags["trial_state"] != "orphaned"]
    assert sorted(r.data.tags["trial_id"] for r in counted) == ray_ids
    for run in counted:
        assert run.info.status == "FINISHED" and run.data.tags["trial_state"] == "completed"
        # Resumed trials continue after their last checkpoint: each epoch logged exactly once.
        assert metric_steps(state["tracking_uri"], run.info.run_id) == list(
            range(1, RESUME_EPOCHS + 1)
        )

    # Retention held across the kill: the best 2 trials' weights, no optimizer state left.
    best = sorted(counted, key=lambda r: -r.data.metrics["best/dev/overall"])[:2]
    weights = {p.parts[-5] for p in exp_dir.glob("*/train/checkpoints/best/model.safetensors")}
    assert weights == {r.data.tags["trial_id"] for r in best}
    assert not list(exp_dir.rglob("optimizer.pt")) and not list(exp_dir.glob("*/checkpoint_*"))

    study = study_trials(state["optuna_storage"], "resume-it")
    live = [t for t in study if not t.user_attrs.get(ORPHAN_ATTR)]
    assert sorted(t.user_attrs["ray_trial_id"] for t in live) == ray_ids
    assert all(t.state == TrialState.COMPLETE for t in live)
    assert all(t.state == TrialState.FAIL for t in study if t.user_attrs.get(ORPHAN_ATTR))
