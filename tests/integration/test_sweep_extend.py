"""Real Ray Tune + Optuna + MLflow: a finished sweep extended (`--extend`) and a new sweep
warm-started from it, on the tiny random-init BERT and 2 CPUs.

A 3-trial TPE sweep extended by 2 ends with 5 trials, each once, in the Optuna study, in MLflow
(two parent runs, the extension's linked to the first) and in the report, and `ensemble` finds
every trial's checkpoint; the extension's first trial is what its TPE sampler proposes given the
first 3 trials (replayed offline), not what it would propose on an empty study. A sweep that
warm-starts from it runs its best configs first and holds its trials, told.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
TINY = str(REPO / "configs" / "tiny.yaml")
RAW: dict[str, Any] = {
    "name": "extend-it",
    "base": TINY,
    "num_samples": 3,
    "max_concurrent": 1,  # one at a time: each trial is asked with every earlier one finished
    "sampler": "tpe",
    "seed": 0,
    "scheduler": {"name": "asha", "grace_period": 1, "reduction_factor": 2},
    "space": {
        "optim.lr": {"float": [1.0e-4, 1.0e-2], "log": True},
        "model.head_dropout": {"float": [0.0, 0.3]},
    },
}


@dataclass
class Extended:
    results: Path
    data_dir: Path
    first: Any  # SweepOutcome of the first 3 trials
    lines: list[str]  # what `sweep --extend 2` printed


@pytest.fixture(scope="module")
def extended(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> Iterator[Extended]:
    import ray

    from orchestrator.cli.sweep import plain_sweep_lines
    from orchestrator.space.schema import load_space
    from orchestrator.sweep.plain import run_plain_sweep
    from orchestrator.sweep.ray_tune import init_ray

    saved = os.environ.pop("MLFLOW_TRACKING_URI", None)
    init_ray(None, num_cpus=2)
    tmp = tmp_path_factory.mktemp("extend")
    (tmp / "space.yaml").write_text(yaml.safe_dump(RAW, sort_keys=False))
    space, results = load_space(tmp / "space.yaml"), tmp / "results"
    first = run_plain_sweep(space, data_dir=data_dir, results_dir=results, live_table=False)
    lines = plain_sweep_lines(space, 2, data_dir, results, None, False)
    yield Extended(results, data_dir, first, lines)
    ray.shutdown()
    if saved is not None:
        os.environ["MLFLOW_TRACKING_URI"] = saved


def test_an_extended_sweep_holds_every_trial_once(extended: Extended) -> None:
    from orchestrator.ensemble.request import EnsembleRequest
    from orchestrator.ensemble.select import ranked_candidates
    from orchestrator.report.sweep_report import write_report
    from orchestrator.search.optuna_search import study_trials
    from orchestrator.tracking.store import find_sweep
    from orchestrator.tracking.writer import tracking_uri

    root = extended.results / "extend-it"
    assert len(extended.first.trials) == 3
    assert extended.lines[:2] == [
        "extended sweep extend-it by 2 trials",
        extended.lines[1],
    ] and extended.lines[1].startswith("sweep extend-it: 5 trials (")
    first_ids = {t.trial_id for t in extended.first.trials}
    ext_ids = {p.name for p in (root / "extend-1").iterdir() if (p / "train").is_dir()}
    assert len(ext_ids) == 2 and not ext_ids & first_ids

    # Optuna: one study of 5 trials, numbered on; the extension's are 3 and 4.
    study = study_trials(f"sqlite:///{root / 'optuna.db'}", "extend-it")
    by_ray = {t.user_attrs["ray_trial_id"]: t.number for t in study}
    assert sorted(by_ray) == sorted(first_ids | ext_ids) and len(study) == 5
    assert sorted(by_ray[i] for i in ext_ids) == [3, 4]
    assert all(t.state.is_finished() for t in study)

    # MLflow: the extension's parent run is linked to the first; every trial once.
    from mlflow import MlflowClient

    uri = tracking_uri(extended.results)
    _, stored = find_sweep(extended.results, "extend-it")
    assert stored.parent.run_id == extended.first.parent_run_id
    assert [run.tags["extends_run_id"] for run in stored.extensions] == [stored.parent.run_id]
    assert stored.extensions[0].status == "FINISHED"
    assert sorted(run.trial_id for run in stored.trials) == sorted(by_ray)
    client = MlflowClient(tracking_uri=uri)
    for run in stored.trials:
        parent = run.tags["mlflow.parentRunId"]
        in_extension = run.trial_id in ext_ids
        assert parent == (stored.extensions[0].run_id if in_extension else stored.parent.run_id)
        assert (run.tags.get("extension") == "extend-1") == in_extension
    assert client.get_run(stored.extensions[0].run_id).info.run_name == "extend-it (extend 1)"

    # The report and the ensemble see the 5 trials and every checkpoint.
    written = write_report("extend-it", results_dir=extended.results, log_to_mlflow=False)
    assert written.trials == 5
    request = EnsembleRequest(sweep="extend-it", top=1, results_dir=extended.results)
    ranking = ranked_candidates(stored, request)
    finished = [t for t in stored.trials if t.state in ("completed", "pruned")]
    assert len(ranking.candidates) == len(finished) >= 4
    checkpoints = [c.checkpoint for c in ranking.candidates]
    assert all(c is not None and (c / "model.safetensors").is_file() for c in checkpoints)


def test_the_extensions_sampler_saw_the_first_trials(extended: Extended) -> None:
    """Replay TPE offline: given trials 0-2 the extension's sampler proposes trial 3's params;
    on an empty study it would not."""
    import optuna

    from orchestrator.contract import trial_params
    from orchestrator.search.optuna_search import DefineByRun, make_sampler, study_trials
    from orchestrator.space.schema import load_space

    space = load_space(extended.results.parent / "space.yaml")
    ext_space = space.replace(num_samples=2, seed=space.seed + 1)  # as sweep_extend makes it
    trials = sorted(
        study_trials(f"sqlite:///{extended.results / 'extend-it' / 'optuna.db'}", "extend-it"),
        key=lambda t: t.number,
    )

    def proposal(history: list[Any]) -> dict[str, Any]:
        study = optuna.create_study(direction="maximize", sampler=make_sampler(ext_space))
        for frozen in history:
            study.add_trial(frozen)
        return trial_params(DefineByRun(ext_space)(study.ask()))

    replayed = proposal(trials[:3])
    assert replayed == pytest.approx(trials[3].params)
    assert proposal([]) != pytest.approx(trials[3].params)


def test_a_warm_started_sweep_runs_the_best_configs_first(extended: Extended) -> None:
    from orchestrator.search.optuna_search import study_trials
    from orchestrator.space.schema import load_space
    from orchestrator.sweep.plain import run_plain_sweep
    from orchestrator.tracking.store import find_sweep

    earlier = study_trials(
        f"sqlite:///{extended.results / 'extend-it' / 'optuna.db'}", "extend-it"
    )
    complete = sorted(
        (t for t in earlier if t.state.name == "COMPLETE"), key=lambda t: -float(t.value or 0.0)
    )
    assert len(complete) >= 2, [t.state for t in earlier]
    raw = {**RAW, "name": "warm-it", "num_samples": 2, "scheduler": "none",
           "warm_start": {"sweep": "extend-it", "top": 2}}  # fmt: skip
    path = extended.results.parent / "warm.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    outcome = run_plain_sweep(
        load_space(path),
        data_dir=extended.data_dir,
        results_dir=extended.results,
        live_table=False,
    )
    ran = [t.params for t in outcome.trials]
    assert ran == [pytest.approx(t.params) for t in complete[:2]]

    study = study_trials(outcome.optuna_storage, "warm-it")
    told = [t for t in study if "warm_start_number" in t.user_attrs]
    finished_before = [t for t in earlier if t.state.name in ("COMPLETE", "PRUNED")]
    assert sorted(t.user_attrs["warm_start_number"] for t in told) == sorted(
        t.number for t in finished_before
    )
    for frozen in told:
        source = next(t for t in earlier if t.number == frozen.user_attrs["warm_start_number"])
        assert (frozen.state, frozen.params, frozen.value) == (
            source.state, source.params, source.value
        )  # fmt: skip
    assert len(study) == len(told) + 2
    _, stored = find_sweep(extended.results, "warm-it")
    assert stored.parent.tags["warm_start"] == "extend-it"
    assert stored.parent.tags["warm_start.told"] == str(len(told))
