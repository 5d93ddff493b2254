"""The tracking server on a real PostgreSQL: `orchestrator tracking-server --backend-store-uri
postgresql://...` with served artifacts, a 3-node loopback Ray cluster (head and two workers, 1 CPU
each, token authentication on), and every command a user runs against it, as subprocesses with the
cluster's environment: a sweep and an ablation study train on the cluster, then `report`,
`ensemble --register` and `predict --model` read them back through the server.

What each command says is checked against the server (MlflowClient) and the server against the
database itself (psycopg2 on its tables): the runs are rows in PostgreSQL, not in a SQLite file.
"""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml

from model.data import read_task_file
from model.evaluate import prediction_filename, read_predictions
from orchestrator.contract import MEMBERS_TAG, SWEEP_TAG
from tests.integration.cluster_harness import LoopbackRayCluster, MlflowServer
from tests.integration.postgres_server import PostgresServer, PostgresUnavailable
from tests.orchestrator.sweep_store import make_tiny_data_dir

pytestmark = pytest.mark.cluster

REPO = Path(__file__).resolve().parents[2]
TINY = str(REPO / "configs" / "tiny.yaml")
WORKER_IPS = ("127.0.0.2", "127.0.0.3")
DATABASE = "mlflow"
SWEEP, STUDY, MODEL = "pg-sweep", "pg-study", "pg-ensemble"
METRIC = "best/dev/overall"
# Each run's role (the `role` tag) as the database holds it: runs, experiments and tags are
# MLflow's own tables.
ROLES_SQL = """
SELECT r.run_uuid, r.status, t.value FROM runs r
JOIN experiments e ON e.experiment_id = r.experiment_id
JOIN tags t ON t.run_uuid = r.run_uuid AND t.key = 'role'
WHERE e.name = %s AND r.lifecycle_stage = 'active'
"""


@dataclass
class PostgresCluster:
    postgres: PostgresServer
    mlflow: MlflowServer
    ray: LoopbackRayCluster
    root: Path
    data: Path

    @property
    def results(self) -> Path:
        return self.root / "results"

    def env(self) -> dict[str, str]:
        """A driver's environment: the cluster's token and the tracking server, nothing else."""
        env = dict(self.ray.env)
        env.update(MLFLOW_TRACKING_URI=self.mlflow.url, PYTHONPATH=str(REPO))
        return env

    def cli(self, *args: str, timeout: float = 240) -> str:
        """`orchestrator ARGS` as a user runs it; its standard output (it must succeed)."""
        done = subprocess.run(
            [sys.executable, "-m", "orchestrator.cli", *args],
            cwd=REPO, env=self.env(), capture_output=True, text=True, timeout=timeout,
            stdin=subprocess.DEVNULL,
        )  # fmt: skip
        assert done.returncode == 0, f"{args}: {done.stdout[-3000:]}\n{done.stderr[-3000:]}"
        return done.stdout

    def client(self) -> Any:
        from mlflow import MlflowClient

        return MlflowClient(tracking_uri=self.mlflow.url)

    def runs(self, experiment: str) -> list[Any]:
        """Every run of an experiment, as the server returns them."""
        from mlflow.entities import ViewType

        client = self.client()
        found = client.get_experiment_by_name(experiment)
        assert found is not None, f"no experiment {experiment} on {self.mlflow.url}"
        return list(
            client.search_runs([found.experiment_id], run_view_type=ViewType.ALL, max_results=500)
        )

    def rows_in_postgres(self, experiment: str) -> dict[str, tuple[str, str]]:
        """run id -> (status, role) of the experiment's runs, read from the database itself."""
        rows = self.postgres.query(DATABASE, ROLES_SQL, (experiment,))
        return {run_id: (status, role) for run_id, status, role in rows}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> Iterator[PostgresCluster]:
    root = tmp_path_factory.mktemp("pg-cluster")
    try:
        postgres = PostgresServer.start(root)
    except PostgresUnavailable as err:
        pytest.skip(str(err))
    try:
        store = postgres.create_database(DATABASE)  # a bare postgresql://, as users write it
        mlflow = MlflowServer.launch(root, repo=REPO, backend_store_uri=store)
        ray = LoopbackRayCluster.create(root)  # its nodes come up while the server migrates
        try:
            ray.start_nodes(WORKER_IPS)
            mlflow.wait_ready()
            data = make_tiny_data_dir(data_dir, root / "data", rows=60)
            yield PostgresCluster(postgres, mlflow, ray, root, data)
        finally:
            mlflow.stop()
            ray.stop()
    finally:
        postgres.stop()


def write_yaml(cluster: PostgresCluster, name: str, raw: dict[str, Any]) -> str:
    path = cluster.root / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return str(path)


def run_on_cluster(cluster: PostgresCluster, space: str) -> str:
    return cluster.cli(
        "sweep", space, "--address", cluster.ray.address,
        "--results-dir", str(cluster.results), "--data-dir", str(cluster.data),
    )  # fmt: skip


@pytest.fixture(scope="module")
def swept(cluster: PostgresCluster) -> str:
    """Three 1-epoch trials of the tiny model, one per node, all at once; the driver's output."""
    space = {
        "name": SWEEP, "base": TINY, "num_samples": 3, "max_concurrent": 3,
        "resources": {"cpu": 1, "gpu": 0}, "sampler": "random", "seed": 0,
        "scheduler": {"name": "none"},
        "space": {"optim.lr": {"float": [1.0e-3, 1.0e-2], "log": True}, "optim.epochs": 1},
    }  # fmt: skip
    return run_on_cluster(cluster, write_yaml(cluster, SWEEP, space))


@pytest.fixture(scope="module")
def studied(cluster: PostgresCluster) -> str:
    """Two arms on seeds 0 and 1, no tuning phase: four 1-epoch confirm runs."""
    study = {
        "name": STUDY, "base": TINY, "max_concurrent": 3, "resources": {"cpu": 1, "gpu": 0},
        "arms": {"plain": {}, "cosine": {"model.pair_encoding": "cosine"}},
        "seeds": [0, 1], "confirm_epochs": 1,
    }  # fmt: skip
    return run_on_cluster(cluster, write_yaml(cluster, STUDY, study))


@pytest.fixture(scope="module")
def ensembled(cluster: PostgresCluster, swept: str) -> list[str]:
    """`ensemble --top 2 --register` of the sweep, logged and uploaded through the server."""
    output = cluster.cli(
        "ensemble", "--top", "2", "--sweep", SWEEP, "--register", MODEL, "--splits", "dev",
        "--results-dir", str(cluster.results), "--data-dir", str(cluster.data),
    )  # fmt: skip
    return output.splitlines()


def trials_by_id(runs: list[Any]) -> dict[str, Any]:
    return {r.data.tags["trial_id"]: r for r in runs if r.data.tags.get("role") == "trial"}


def test_sweep_trains_on_the_cluster_and_its_runs_are_rows_in_postgres(
    cluster: PostgresCluster, swept: str
) -> None:
    assert f"sweep {SWEEP}: 3 trials (3 completed, 0 pruned, 0 failed)" in swept
    assert f"mlflow:     {cluster.mlflow.url} (experiment {SWEEP})" in swept
    runs = cluster.runs(SWEEP)
    served = {r.info.run_id: (r.info.status, r.data.tags["role"]) for r in runs}
    assert sorted(role for _, role in served.values()) == ["sweep", "trial", "trial", "trial"]
    assert set(served.values()) == {("FINISHED", "sweep"), ("FINISHED", "trial")}
    # The server answered from PostgreSQL: the database holds exactly these runs.
    assert cluster.rows_in_postgres(SWEEP) == served
    metric_rows = cluster.postgres.query(
        DATABASE, "SELECT run_uuid, value FROM latest_metrics WHERE key = %s", (METRIC,)
    )
    in_database = dict(metric_rows)
    for run in trials_by_id(runs).values():
        assert in_database[run.info.run_id] == pytest.approx(run.data.metrics[METRIC])
        assert 0.0 < run.data.metrics[METRIC] <= 1.0
        # Artifacts went up through the server (proxied), into its artifacts root.
        assert run.info.artifact_uri.startswith("mlflow-artifacts:/")
        stored = list(
            cluster.mlflow.artifacts_dir.rglob(f"{run.info.run_id}/artifacts/config.yaml")
        )
        assert len(stored) == 1, stored
        assert yaml.safe_load(stored[0].read_text())["optim"]["epochs"] == 1
    # Ray Tune recorded where each trial ran: on the cluster's nodes.
    results = list((cluster.results / SWEEP).glob("*/result.json"))
    ips = {json.loads(line)["node_ip"] for p in results for line in p.read_text().splitlines()}
    assert len(results) == 3 and ips <= {cluster.ray.head_ip, *WORKER_IPS}


def test_report_counts_the_trials_and_best_value_the_server_holds(
    cluster: PostgresCluster, swept: str
) -> None:
    output = cluster.cli("report", SWEEP, "--results-dir", str(cluster.results))
    assert f"sweep {SWEEP}: 3 trials" in output.splitlines()
    frame = pd.read_parquet(cluster.results / SWEEP / "trials.parquet").set_index("trial_id")
    runs = cluster.runs(SWEEP)
    trials = trials_by_id(runs)
    assert set(frame.index) == set(trials)
    for trial_id, run in trials.items():
        assert frame.loc[trial_id, METRIC] == pytest.approx(run.data.metrics[METRIC])
    parent = next(r for r in runs if r.data.tags["role"] == "sweep")
    assert frame[METRIC].idxmax() == parent.data.tags["best_trial_id"]
    best = max(r.data.metrics[METRIC] for r in trials.values())
    assert frame[METRIC].max() == pytest.approx(best)
    # The report went onto the parent run through the server, and into its artifacts root.
    logged = [a.path for a in cluster.client().list_artifacts(parent.info.run_id, "report")]
    assert "report/ablation.md" in logged
    assert list(cluster.mlflow.artifacts_dir.rglob(f"{parent.info.run_id}/artifacts/report/*.md"))


def test_study_confirms_each_arm_on_every_seed_into_postgres(
    cluster: PostgresCluster, studied: str
) -> None:
    runs = cluster.runs(STUDY)
    confirm = [r for r in runs if r.data.tags.get("role") == "trial"]
    seeds = sorted((r.data.params["arm"], r.data.params["seed"]) for r in confirm)
    assert seeds == [("cosine", "0"), ("cosine", "1"), ("plain", "0"), ("plain", "1")]
    assert {r.data.params["phase"] for r in confirm} == {"confirm"}
    assert all(r.data.tags["trial_state"] == "completed" for r in confirm)
    served = {r.info.run_id: (r.info.status, r.data.tags["role"]) for r in runs}
    assert cluster.rows_in_postgres(STUDY) == served
    assert sorted(role for _, role in served.values()) == ["sweep", *["trial"] * 4]
    table = pd.read_parquet(cluster.results / STUDY / "ablation.parquet").set_index("arm")
    assert list(table.index) == ["plain", "cosine"]
    plain = [r.data.metrics[METRIC] for r in confirm if r.data.params["arm"] == "plain"]
    assert table.loc["plain", "dev/overall"] == pytest.approx(sum(plain) / len(plain))


def test_ensemble_registers_a_version_whose_files_the_server_stored(
    cluster: PostgresCluster, ensembled: list[str]
) -> None:
    assert f"registered:  models:/{MODEL}/1" in ensembled
    version = cluster.client().get_model_version(MODEL, "1")
    assert version.tags[SWEEP_TAG] == SWEEP
    trials = sorted(trials_by_id(cluster.runs(SWEEP)).values(),
                    key=lambda r: r.data.metrics[METRIC], reverse=True)  # fmt: skip
    assert version.tags[MEMBERS_TAG].split(",") == [r.info.run_id for r in trials[:2]]
    assert f"mlflow run:  {version.run_id}" in ensembled
    # The model's files were uploaded through the server: they are under its artifacts root.
    stored = list(cluster.mlflow.artifacts_dir.rglob(f"{version.run_id}/artifacts/**/MLmodel"))
    assert len(stored) == 1, f"no MLmodel of run {version.run_id} under the artifacts root"
    model_dir = stored[0].parent
    assert list(model_dir.rglob("manifest.json")) and list(model_dir.rglob("*.safetensors"))
    registry = cluster.postgres.query(
        DATABASE, "SELECT version, run_id FROM model_versions WHERE name = %s", (MODEL,)
    )
    assert registry == [(1, version.run_id)]


def test_predict_with_the_registered_model_predicts_what_the_ensemble_did(
    cluster: PostgresCluster, ensembled: list[str]
) -> None:
    lines = (cluster.data / "ids-sst-dev.csv").read_text().splitlines(keepends=True)
    rows = cluster.root / "sst-rows.csv"
    rows.write_text("".join(lines[:6]))  # the header and five reviews
    registered = cluster.cli("predict", "--model", f"models:/{MODEL}/1", str(rows),
                             "--results-dir", str(cluster.results))  # fmt: skip
    ensemble_dir = cluster.results / SWEEP / "ensemble"
    assert registered == cluster.cli("predict", "--ensemble", str(ensemble_dir), str(rows))

    predicted = list(csv.DictReader(io.StringIO(registered)))
    assert [row["id"] for row in predicted] == [r.id for r in read_task_file("sst", rows)]
    assert len(predicted) == 5
    _, dev_ids, dev_labels = read_predictions(ensemble_dir / prediction_filename("sst", "dev"))
    ensemble_said = dict(zip(dev_ids, dev_labels, strict=True))
    for row in predicted:
        probabilities = [float(row[f"prob_{k}"]) for k in range(5)]
        assert all(0.0 <= p <= 1.0 for p in probabilities)
        assert sum(probabilities) == pytest.approx(1.0, abs=1e-5)
        label = int(row["prediction"])
        assert label == max(range(5), key=probabilities.__getitem__)
        assert label == int(ensemble_said[row["id"]])  # the ensemble's dev prediction of the row


# Several drivers at once on one cluster and one tracking server, each sweep with its Optuna
# study in its own `optuna.db` (SQLite, written by its driver alone): the storage docs/cluster.md
# recommends for many concurrent sweeps.
CONCURRENT = ("pg-many-0", "pg-many-1", "pg-many-2")


def test_sweeps_started_together_on_the_cluster_each_keep_a_whole_study(
    cluster: PostgresCluster,
) -> None:
    from optuna.trial import TrialState

    from orchestrator.search.optuna_search import RAY_TRIAL_ATTR, study_trials

    drivers = {}
    for index, name in enumerate(CONCURRENT):
        space = {
            "name": name, "base": TINY, "num_samples": 2, "max_concurrent": 1,
            "resources": {"cpu": 1, "gpu": 0}, "sampler": "tpe", "seed": index,
            "scheduler": {"name": "none"},
            "space": {"optim.lr": {"float": [1.0e-3, 1.0e-2], "log": True}, "optim.epochs": 1},
        }  # fmt: skip
        command = [
            sys.executable, "-m", "orchestrator.cli", "sweep", write_yaml(cluster, name, space),
            "--address", cluster.ray.address, "--results-dir", str(cluster.results),
            "--data-dir", str(cluster.data),
        ]  # fmt: skip
        drivers[name] = subprocess.Popen(
            command, cwd=REPO, env=cluster.env(), stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True, stdin=subprocess.DEVNULL,
        )  # fmt: skip
    outputs = {name: driver.communicate(timeout=300)[0] for name, driver in drivers.items()}
    for name, driver in drivers.items():
        assert driver.returncode == 0, outputs[name][-3000:]
        assert f"sweep {name}: 2 trials (2 completed, 0 pruned, 0 failed)" in outputs[name]
        ray_ids = {p.parent.name for p in (cluster.results / name).glob("*/result.json")}
        storage = f"sqlite:///{cluster.results / name / 'optuna.db'}"
        told = study_trials(storage, name)
        # Each Ray trial asked and told once, in its own sweep's study, none failed or left.
        assert [t.state for t in told] == [TrialState.COMPLETE] * 2
        assert {t.user_attrs[RAY_TRIAL_ATTR] for t in told} == ray_ids and len(ray_ids) == 2
        trials = trials_by_id(cluster.runs(name))
        assert set(trials) == ray_ids
        for trial in told:
            run = trials[trial.user_attrs[RAY_TRIAL_ATTR]]
            assert run.data.metrics["dev/overall"] == pytest.approx(trial.value)
