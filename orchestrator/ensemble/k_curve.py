"""The ensemble's k-curve: the dev metrics of the ensemble of the best k members, k = 1..K, by
vote (mode of labels, median of STS scores) and by mean, beside each member alone.

It shows whether adding members helps and where it stops helping. Arithmetic on predictions
(no I/O but `read_k_curve`): `run.py` stores the curve in the ensemble's metrics.json,
`k_curve_plot.py` draws it, and `report` reads it back and renders it with `k_curve_markdown`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from model.evaluate import DEV_METRICS, METRIC_NAMES, OVERALL, TaskPredictions, dev_metrics
from orchestrator.contract import K_CURVE_KEY
from orchestrator.ensemble.combine import ensemble_dev_metrics
from orchestrator.ensemble.request import METHODS, EnsembleError

# How the k-curve's tables and plots name the four dev metrics, in display order.
METRIC_LABELS: dict[str, str] = {
    METRIC_NAMES["sst"]: "SST acc",
    METRIC_NAMES["para"]: "Quora acc",
    METRIC_NAMES["sts"]: "STS r",
    OVERALL: "overall",
}
SINGLE = "single"  # the curve's entry holding each member alone, in rank order


def k_curve(
    members: Sequence[Mapping[str, TaskPredictions]],
    labels: Mapping[str, np.ndarray],
    *,
    trial_ids: Sequence[str],
    ranked_by: str,
    methods: Sequence[str] = METHODS,
) -> dict[str, Any]:
    """The k-curve of `members` (each task -> dev predictions, best-ranked first): for each
    method, the dev metrics of the first k members' ensemble for k = 1..len(members), and each
    member's own dev metrics (`single`), as JSON-ready lists."""
    if not members or len(members) != len(trial_ids):
        raise ValueError(f"k_curve: {len(members)} members for {len(trial_ids)} trial ids")
    curve: dict[str, Any] = {
        "ranked_by": ranked_by,
        SINGLE: [
            {"rank": rank, "trial_id": trial, **dev_metrics(member, labels)}
            for rank, (trial, member) in enumerate(zip(trial_ids, members, strict=True), 1)
        ],
    }
    for method in methods:
        curve[method] = [
            {"k": k, **ensemble_dev_metrics(members[:k], labels, method)}
            for k in range(1, len(members) + 1)
        ]
    return curve


def curve_methods(curve: Mapping[str, Any]) -> list[str]:
    """The combining methods a stored curve holds, in METHODS order."""
    return [method for method in METHODS if method in curve]


def best_k(curve: Mapping[str, Any], method: str, metric: str = OVERALL) -> int:
    """The k whose `method` ensemble scores best on `metric` (the smallest such k on ties)."""
    values = [point[metric] for point in curve[method]]
    return int(np.argmax(values)) + 1  # argmax returns the first maximum: the fewest members


def k_curve_line(curve: Mapping[str, Any], metric: str = OVERALL) -> str:
    """One line for `orchestrator ensemble`: each method's `metric` for k = 1..K and its best k."""
    parts = []
    for method in curve_methods(curve):
        values = " ".join(f"{point[metric]:.4f}" for point in curve[method])
        parts.append(f"{method} {values} (best k={best_k(curve, method, metric)})")
    return f"k-curve of {metric}, k=1..{len(curve[SINGLE])}: " + "; ".join(parts)


def k_curve_markdown(curve: Mapping[str, Any], *, sweep: str, examples: str = "") -> str:
    """The k-curve as a markdown table: one row per k, the trial added at that rank and its own
    overall, then each method's four dev metrics; the best overall per method in bold."""
    methods = curve_methods(curve)
    best = {method: best_k(curve, method) for method in methods}
    header = ["k", "added trial", "its overall"] + [
        f"{method}: {METRIC_LABELS[m]}" for method in methods for m in METRIC_LABELS
    ]
    rows = []
    for index, single in enumerate(curve[SINGLE]):
        cells = [str(index + 1), f"`{single['trial_id']}`", f"{single[OVERALL]:.4f}"]
        for method in methods:
            point = curve[method][index]
            for metric in METRIC_LABELS:
                text = f"{point[metric]:.4f}"
                bold = metric == OVERALL and best[method] == index + 1
                cells.append(f"**{text}**" if bold else text)
        rows.append(cells)
    lines = [
        f"# Ensemble k-curve of `{sweep}`",
        "",
        f"Dev metrics of the ensemble of the best k members (ranked by {curve['ranked_by']}), "
        "for k = 1..K: vote = mode of labels, median of STS scores; mean = mean of "
        "probabilities and scores. Bold: each method's best overall"
        + (f". Scored on {examples}." if examples else "."),
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
        *("| " + " | ".join(cells) + " |" for cells in rows),
        "",
        "Best k: " + ", ".join(f"{m} {best[m]}" for m in methods) + ".",
        "",
    ]
    return "\n".join(lines)


def check_curve(curve: Any) -> str | None:
    """Why a stored k-curve cannot be shown (a one-line reason), or None when it can."""
    if not isinstance(curve, Mapping):
        return "k_curve is not an object"
    single = curve.get(SINGLE)
    if not isinstance(single, list) or not single or "ranked_by" not in curve:
        return "k_curve has no members"
    methods = curve_methods(curve)
    if not methods:
        return f"k_curve names no method ({', '.join(METHODS)})"
    for method in methods:
        points = curve[method]
        if not isinstance(points, list) or len(points) != len(single):
            return f"k_curve.{method} does not have one point per member"
        for point in [*points, *single]:
            if not isinstance(point, Mapping) or not all(
                isinstance(point.get(m), (int, float)) for m in DEV_METRICS
            ):
                return f"k_curve.{method}: a point lacks a dev metric"
    return None


def read_k_curve(metrics_file: Path) -> tuple[dict[str, Any], str] | None:
    """The k-curve an ensemble's metrics.json holds and what dev examples it was scored on; None
    when there is no file or it predates k-curves; EnsembleError (one line) if it is unreadable."""
    if not metrics_file.is_file():
        return None
    try:
        summary = json.loads(metrics_file.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise EnsembleError(
            f"{metrics_file}: not readable JSON ({err}); run `orchestrator ensemble` again"
        ) from err
    curve = summary.get(K_CURVE_KEY) if isinstance(summary, dict) else None
    if curve is None:
        return None
    reason = check_curve(curve)
    if reason is not None:
        raise EnsembleError(f"{metrics_file}: {reason}; run `orchestrator ensemble` again")
    return curve, str(summary.get("dev_examples", ""))
