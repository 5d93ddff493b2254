"""A sweep on a real multi-node Ray cluster (a head and two workers on loopback, 1 CPU each, token
authentication on) logging to a real `mlflow server --serve-artifacts`; then the same cluster loses
a worker node mid-trial and the sweep still finishes with every trial counted once.

Nodes are told apart by their loopback address, which Ray Tune records per result as `node_ip`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.integration.cluster_harness import LoopbackRayCluster, MlflowServer, stop_tree

pytestmark = pytest.mark.cluster

REPO = Path(__file__).resolve().parents[2]
TINY = str(REPO / "configs" / "tiny.yaml")
WORKER_IPS = ("127.0.0.2", "127.0.0.3")


@dataclass
class Cluster:
    ray: LoopbackRayCluster
    mlflow: MlflowServer
    root: Path

    def env(self) -> dict[str, str]:
        """The driver's environment: the cluster's token and the tracking server, nothing else."""
        env = dict(self.ray.env)
        env.update(MLFLOW_TRACKING_URI=self.mlflow.url, PYTHONPATH=str(REPO))
        return env


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    root = tmp_path_factory.mktemp("cluster")
    mlflow = MlflowServer.launch(root, repo=REPO)  # starts while the Ray nodes come up
    ray_cluster = LoopbackRayCluster.create(root)
    try:
        ray_cluster.start_nodes(WORKER_IPS)
        mlflow.wait_ready()
        yield Cluster(ray=ray_cluster, mlflow=mlflow, root=root)
    finally:
        mlflow.stop()
        ray_cluster.stop()


def write_space(cluster: Cluster, name: str, epochs: int) -> Path:
    # Three trials for three 1-CPU nodes, all started at once; no early stopping, so every trial
    # trains all its epochs and each node has work while the test watches.
    space = {
        "name": name,
        "base": TINY,
        "num_samples": 3,
        "max_concurrent": 3,
        "resources": {"cpu": 1, "gpu": 0},
        "sampler": "random",
        "seed": 0,
        "scheduler": {"name": "none"},
        "space": {"optim.lr": {"float": [1.0e-3, 3.0e-3], "log": True}, "optim.epochs": epochs},
    }
    path = cluster.root / f"{name}.yaml"
    path.write_text(yaml.safe_dump(space, sort_keys=False))
    return path


def start_sweep(cluster: Cluster, space: Path, data_dir: Path) -> subprocess.Popen:
    command = [
        sys.executable, "-m", "orchestrator.cli", "sweep", str(space),
        "--address", cluster.ray.address,
        "--results-dir", str(cluster.root / "results"),
        "--data-dir", str(data_dir),
    ]  # fmt: skip
    return subprocess.Popen(
        command,
        cwd=REPO,
        env=cluster.env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        text=True,
        start_new_session=True,
    )


def finish(process: subprocess.Popen, timeout: float) -> str:
    try:
        output, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        stop_tree(process)
        output = process.stdout.read() if process.stdout else ""
        pytest.fail(f"sweep still running after {timeout:.0f} s:\n{output[-4000:]}")
    assert process.returncode == 0, output[-4000:]
    return output


def ray_rows(exp_dir: Path) -> dict[str, list[dict[str, Any]]]:
    """Every result Ray Tune recorded, per trial id, in order (`<trial_id>/result.json`)."""
    rows: dict[str, list[dict[str, Any]]] = {}
    for path in sorted(exp_dir.glob("*/result.json")):
        lines = [line for line in path.read_text().splitlines() if line.strip()]
        rows[path.parent.name] = [json.loads(line) for line in lines]
    return rows


def ray_trials(exp_dir: Path) -> dict[str, Any]:
    """Ray Tune's own record of the experiment's trials, by trial id."""
    from ray.tune import ExperimentAnalysis

    return {t.trial_id: t for t in ExperimentAnalysis(str(exp_dir)).trials}


def mlflow_children(cluster: Cluster, experiment: str) -> tuple[Any, list[Any]]:
    from mlflow import MlflowClient
    from mlflow.entities import ViewType

    client = MlflowClient(tracking_uri=cluster.mlflow.url)
    exp = client.get_experiment_by_name(experiment)
    assert exp is not None, f"no MLflow experiment {experiment} on {cluster.mlflow.url}"
    runs = client.search_runs([exp.experiment_id], run_view_type=ViewType.ALL, max_results=100)
    parents = [r for r in runs if r.data.tags.get("role") == "sweep"]
    assert len(parents) == 1
    return parents[0], [r for r in runs if r.data.tags.get("role") == "trial"]


def check_mlflow_has_every_trial(
    cluster: Cluster, experiment: str, trial_ids: set[str], epochs: int
) -> dict[str, Any]:
    """One FINISHED child run per trial with each epoch's metrics logged once, and its config
    artifact stored by the server (proxied: the driver wrote no file there itself)."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=cluster.mlflow.url)
    parent, children = mlflow_children(cluster, experiment)
    assert parent.info.status == "FINISHED"
    by_trial = {r.data.tags["trial_id"]: r for r in children}
    assert len(children) == len(by_trial) == 3
    assert set(by_trial) == trial_ids
    for trial_id, run in by_trial.items():
        assert run.info.status == "FINISHED", (trial_id, run.data.tags)
        assert run.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert run.data.tags["trial_state"] == "completed"
        for key in ("dev/overall", "dev/sst_acc", "train/loss", "epoch"):
            steps = [m.step for m in client.get_metric_history(run.info.run_id, key)]
            assert steps == list(range(1, epochs + 1)), (trial_id, key, steps)
        assert 0.0 < run.data.metrics["best/dev/overall"] <= 1.0
        assert run.info.artifact_uri.startswith("mlflow-artifacts:/")
        assert "config.yaml" in [a.path for a in client.list_artifacts(run.info.run_id)]
        stored = list(
            cluster.mlflow.artifacts_dir.rglob(f"{run.info.run_id}/artifacts/config.yaml")
        )
        assert len(stored) == 1
        assert yaml.safe_load(stored[0].read_text())["optim"]["epochs"] == epochs
    return by_trial


def test_storage_probe_asks_every_node(cluster: Cluster, data_dir: Path) -> None:
    code = """
import json, sys
import ray
from orchestrator.cluster import ClusterError, check_cluster_paths
from orchestrator.sweep.ray_tune import alive_nodes, run_on_nodes
ray.init(address=sys.argv[1], logging_level="ERROR")
nodes = alive_nodes()
report = check_cluster_paths(
    sys.argv[2], nodes, run_on_nodes, data_dir=sys.argv[3], data_files=["ids-sst-dev.csv"]
)
seen = sorted((a.ip, a.sees_storage, list(a.missing_data)) for a in report.answers)
try:
    check_cluster_paths(
        sys.argv[2], nodes, run_on_nodes, data_dir=sys.argv[3], data_files=["no-such-file.csv"]
    )
    error = None
except ClusterError as err:
    error = str(err)
print(json.dumps({"seen": seen, "error": error}))
"""
    results = cluster.root / "probe-results"
    out = subprocess.run(
        [sys.executable, "-c", code, cluster.ray.address, str(results), str(data_dir)],
        cwd=REPO,
        env=cluster.env(),
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    reply = json.loads(out.stdout.strip().splitlines()[-1])
    ips = sorted([cluster.ray.head_ip, *WORKER_IPS])
    # Every node, the head included, read back the token written to the storage path.
    assert reply["seen"] == [[ip, True, []] for ip in ips]
    assert reply["error"].startswith(f"{data_dir}: missing on node(s) ")
    assert all(ip in reply["error"] for ip in ips) and "(no-such-file.csv)" in reply["error"]
    assert not any(p.name.startswith(".orchestrator-storage-probe-") for p in results.iterdir())


def test_sweep_runs_trials_on_several_nodes_and_logs_to_the_server(
    cluster: Cluster, data_dir: Path
) -> None:
    epochs = 2
    space = write_space(cluster, "spread", epochs)
    output = finish(start_sweep(cluster, space, data_dir), timeout=300)
    assert "sweep spread: 3 trials (3 completed, 0 pruned, 0 failed)" in output
    assert f"mlflow:     {cluster.mlflow.url} (experiment spread)" in output

    exp_dir = cluster.root / "results" / "spread"
    rows = ray_rows(exp_dir)
    assert len(rows) == 3
    nodes_per_trial = {
        trial: {r["node_ip"] for r in trial_rows} for trial, trial_rows in rows.items()
    }
    assert all(len(ips) == 1 for ips in nodes_per_trial.values())
    used = set().union(*nodes_per_trial.values())
    assert len(used) > 1 and used <= {cluster.ray.head_ip, *WORKER_IPS}
    for trial_rows in rows.values():
        assert [int(r["epoch"]) for r in trial_rows] == list(range(1, epochs + 1))
    check_mlflow_has_every_trial(cluster, "spread", set(rows), epochs)

    # The cluster's token reached every process by environment and no log holds it.
    token = cluster.ray.env["RAY_AUTH_TOKEN"].encode()
    logs = [*cluster.ray.log_files(), cluster.mlflow.log]
    assert len(logs) > 10
    assert token not in output.encode()
    assert not [str(p) for p in logs if token in p.read_bytes()]


def test_sweep_survives_a_worker_node_killed_mid_trial(cluster: Cluster, data_dir: Path) -> None:
    epochs = 10
    space = write_space(cluster, "faulty", epochs)
    exp_dir = cluster.root / "results" / "faulty"
    process = start_sweep(cluster, space, data_dir)
    workers = {node.ip: node for node in cluster.ray.nodes if node.ip in WORKER_IPS}
    victim = victim_trial = None
    last_epoch_on_victim = 0
    deadline = time.monotonic() + 240
    try:
        # Kill a worker node once a trial on it has saved a checkpoint and still has epochs to go.
        while victim is None and time.monotonic() < deadline and process.poll() is None:
            for trial_id, trial_rows in ray_rows(exp_dir).items():
                last = trial_rows[-1] if trial_rows else {}
                if last.get("node_ip") in workers and 2 <= int(last["epoch"]) <= epochs - 3:
                    victim, victim_trial = workers[last["node_ip"]], trial_id
                    cluster.ray.kill_node(victim)
                    last_epoch_on_victim = int(last["epoch"])
                    break
            time.sleep(0.2)
    except BaseException:
        stop_tree(process)
        raise
    if victim is None:
        stop_tree(process)
        pytest.fail("no trial reached epoch 2 on a worker node within 240 s")
    output = finish(process, timeout=300)
    assert "sweep faulty: 3 trials (3 completed, 0 pruned, 0 failed)" in output
    assert cluster.ray.alive_node_ips() == sorted(
        ip for ip in (cluster.ray.head_ip, *WORKER_IPS) if ip != victim.ip
    )

    # Ray: three trials. The victim's trial failed once and went on from its last checkpoint on a
    # surviving node: a restart from scratch would begin again at epoch 1. Tune registers a
    # checkpoint only after the result that carries it, so the epoch in flight when the node died
    # may be trained and recorded again; at most that one row is superseded.
    rows = ray_rows(exp_dir)
    assert len(rows) == 3
    for trial_id, trial_rows in rows.items():
        if trial_id != victim_trial:
            assert [int(r["epoch"]) for r in trial_rows] == list(range(1, epochs + 1))
    victim_rows = rows[victim_trial]
    on_victim = [int(r["epoch"]) for r in victim_rows if r["node_ip"] == victim.ip]
    after = [int(r["epoch"]) for r in victim_rows if r["node_ip"] != victim.ip]
    assert on_victim == list(range(1, len(on_victim) + 1))
    assert len(on_victim) >= last_epoch_on_victim
    assert victim_rows[: len(on_victim)] == [r for r in victim_rows if r["node_ip"] == victim.ip]
    assert 2 <= after[0] <= len(on_victim) + 1, (on_victim, after)
    assert after == list(range(after[0], epochs + 1))
    assert len(on_victim) - (after[0] - 1) <= 1, (on_victim, after)
    assert {r["node_ip"] for r in victim_rows[len(on_victim) :]} <= {
        cluster.ray.head_ip,
        *WORKER_IPS,
    } - {victim.ip}
    trials = ray_trials(exp_dir)
    assert set(trials) == set(rows)
    assert all(t.status == "TERMINATED" for t in trials.values())
    assert trials[victim_trial].run_metadata.num_failures == 1

    # MLflow: one run per trial; the retried one says so, and holds each epoch once.
    by_trial = check_mlflow_has_every_trial(cluster, "faulty", set(rows), epochs)
    assert by_trial[victim_trial].data.tags.get("retries") == "1"
    untouched = set(rows) - {victim_trial}
    assert all("retries" not in by_trial[t].data.tags for t in untouched if t in by_trial)
    assert os.path.isdir(exp_dir / victim_trial / "train" / "checkpoints" / "best")
