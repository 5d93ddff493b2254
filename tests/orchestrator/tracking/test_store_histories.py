"""Reading many runs' metric histories at once (the report's read at 1,000 trials) gives what
reading them one run and one metric at a time gives."""

from __future__ import annotations

from pathlib import Path

from mlflow.entities import Metric

from orchestrator.tracking.store import metric_histories, metric_histories_of
from orchestrator.tracking.writer import tracking_client


def test_bulk_histories_equal_one_by_one_reads_with_the_last_value_at_a_step_winning(
    tmp_path: Path,
) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = tracking_client(uri)
    experiment = client.create_experiment("e")
    runs = [client.create_run(experiment).info.run_id for _ in range(7)]
    for i, run in enumerate(runs):
        rows = [Metric("dev/overall", 0.1 * i + step, 1000 + step, step) for step in (1, 2, 3)]
        # Step 2 logged again later (a resumed trial): the later value wins.
        rows.append(Metric("dev/overall", -1.0 * i, 5000, 2))
        if i % 2:
            rows.append(Metric("dev/sst_acc", 0.5, 1000, 1))
        client.log_batch(run, metrics=rows)
    keys = ["dev/overall", "dev/sst_acc", "never/logged"]
    one_by_one = {run: metric_histories(uri, run, keys) for run in runs}
    bulk = metric_histories_of(uri, runs, keys)
    assert bulk == one_by_one
    assert bulk[runs[3]]["dev/overall"] == [(1, 1.3), (2, -3.0), (3, 3.3)]
    assert bulk[runs[0]]["dev/sst_acc"] == [] and bulk[runs[1]]["dev/sst_acc"] == [(1, 0.5)]
