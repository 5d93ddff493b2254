"""`trials.parquet`: one row per trial run of a sweep, with its params parsed back from MLflow's
strings, its best and per-epoch dev metrics (and selection-split ones, when its runs report them:
sweeps and tuning phases may rank on `selection/overall`), its state, wall time and device.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

from model.evaluate import DEV_METRICS, SELECTION_METRICS
from orchestrator.contract import WEIGHTS_TAG, best_key
from orchestrator.tracking.store import StoredRun

RUN_COLUMNS = ("run_id", "run_name", "trial_id", "state", "status")


def parse_param(text: str | None) -> Any:
    """An MLflow param string back to a value: null -> None, true/false, int, float, else text."""
    if text is None or text in ("null", "None"):
        return None
    if text in ("True", "False", "true", "false"):
        return text.lower() == "true"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def _uniform(values: list[Any]) -> list[Any]:
    """One parquet type per column: numbers stay numbers (with None); any text makes all text."""
    present = [v for v in values if v is not None]
    if all(isinstance(v, bool) for v in present):
        return values
    if all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        return values
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in present):
        return [None if v is None else float(v) for v in values]
    return [None if v is None else str(v) for v in values]


def _wall_s(start_ms: int | None, end_ms: int | None) -> float | None:
    return None if start_ms is None or end_ms is None else (end_ms - start_ms) / 1000


def _trial_row(
    run: StoredRun, history: Mapping[str, Sequence[tuple[int, float]]], gpu_per_trial: float
) -> dict[str, Any]:
    """One trial's row of trials.parquet."""
    epochs = max((step for h in history.values() for step, _ in h), default=0)
    row: dict[str, Any] = {
        "run_id": run.run_id,
        "run_name": run.run_name,
        "trial_id": run.trial_id,
        "state": run.state or run.status.lower(),
        "status": run.status,
        "epochs": epochs,
        "pruned_at_epoch": epochs if run.state == "pruned" else None,
        "wall_s": _wall_s(run.start_ms, run.end_ms),
        # The param `device` says what was asked (auto); this says where the trial ran.
        "device_used": run.tags.get("device") or ("cuda" if gpu_per_trial > 0 else "cpu"),
        # Whether the sweep's retention setting deleted its weights (sweep/retention.py).
        "weights": run.tags.get(WEIGHTS_TAG, "kept"),
    }
    row.update({key: parse_param(value) for key, value in sorted(run.params.items())})
    for metric in (*DEV_METRICS, *SELECTION_METRICS):
        value = run.metrics.get(best_key(metric))
        if value is None and history.get(metric):
            value = max(v for _, v in history[metric])
        # Dev columns always; selection ones only where the split was on (else no column).
        if value is not None or metric in DEV_METRICS:
            row[best_key(metric)] = value
    for metric, points in history.items():
        row.update({f"{metric}@{step}": value for step, value in points})
    return row


def trials_frame(
    trials: Sequence[StoredRun],
    histories: Mapping[str, Mapping[str, Sequence[tuple[int, float]]]],
    *,
    gpu_per_trial: float = 0.0,
) -> pd.DataFrame:
    """One row per trial run: identity, state, every param (dotted keys), best metrics
    (`best/dev/overall`, ..., `best/selection/overall`, ... when reported), per-epoch metrics
    (`dev/overall@1`, ...), pruned-at epoch, wall time and device."""
    rows = [_trial_row(run, histories.get(run.run_id, {}), gpu_per_trial) for run in trials]
    columns: dict[str, None] = {}
    for row in rows:
        columns.update(dict.fromkeys(row))
    data = {c: _uniform([row.get(c) for row in rows]) for c in columns}
    return pd.DataFrame(data, columns=list(columns))
