"""The MLflow UI: a stored runs-table view (filter, order, columns, grouping), its URL, and the
command that serves the UI for `orchestrator ui`."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Mapping
from typing import Any, Literal

from orchestrator.tracking.writer import artifact_location, tracking_client, with_retries

SHARED_VIEW_TAG = "mlflow.sharedViewState."  # experiment tag the UI reads for ?viewStateShareKey=


def view_column(kind: Literal["attributes", "params", "metrics", "tags"], name: str) -> str:
    """A runs-table column as the MLflow UI names it, e.g. params.`optim.lr`."""
    return f"{kind}.`{name}`"


def group_by_param(param: str, values: Iterable[str]) -> dict[str, Any]:
    """The UI state that groups the runs table by a param's value, one aggregated row (the mean
    of each metric) per value, collapsed: `groupBy` and `groupsExpanded` as the UI bundle of
    mlflow 3 reads them (group ids are `param.<name>.<value>`)."""
    return {
        "groupBy": {
            "aggregateFunction": "average",
            "groupByKeys": [{"mode": "param", "groupByData": param}],
        },
        "groupsExpanded": {f"param.{param}.{value}": False for value in values},
    }


def set_runs_view(
    uri: str,
    experiment_id: str,
    key: str,
    *,
    search_filter: str,
    order_by_metric: str,
    columns: Iterable[str],
    grouping: Mapping[str, Any] | None = None,
) -> None:
    """Store a runs-table view (filter, order, visible columns, optionally `group_by_param`'s
    grouping) as the experiment tag the MLflow UI loads for `?viewStateShareKey=<key>`, so the
    table opens showing params and metrics."""
    state = {
        "searchFilter": search_filter,
        "orderByKey": view_column("metrics", order_by_metric),
        "orderByAsc": False,
        "selectedColumns": list(columns),
        **(grouping or {}),
    }
    client = tracking_client(uri)
    with_retries(
        lambda: client.set_experiment_tag(experiment_id, SHARED_VIEW_TAG + key, json.dumps(state))
    )


def runs_url(base_url: str, experiment_id: str, *, view_key: str | None = None) -> str:
    """The MLflow UI page that lists an experiment's runs as a table (in a stored view)."""
    url = f"{base_url.rstrip('/')}/#/experiments/{experiment_id}/runs"
    return f"{url}?viewStateShareKey={view_key}" if view_key else url


def ui_command(uri: str, *, host: str = "127.0.0.1", port: int = 5000) -> list[str]:
    """argv of an MLflow UI server (`mlflow server`) on `host:port` against the store `uri`."""
    command = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", uri]
    command += ["--host", host, "--port", str(port), "--workers", "1"]
    location = artifact_location(uri)
    if location is not None:
        # Experiments keep their own artifact location; this only serves new ones beside the store.
        command += ["--default-artifact-root", location]
    return command
