"""The k-curve as a PNG (matplotlib, Agg backend): one panel per dev metric, each method's
ensemble of the best k members against k, each member alone at its rank. Drawn when the ensemble
is written, so the plot travels with its MLflow run; `report` copies it beside the sweep's."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only; never a display
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.ticker import MaxNLocator

from orchestrator.ensemble.k_curve import METRIC_LABELS, SINGLE, curve_methods


def plot_k_curve(curve: Mapping[str, Any], path: Path, *, title: str = "") -> Path:
    """An ensemble's k-curve (`k_curve.k_curve`), one panel per dev metric: each method's
    ensemble of the best k members against k, each member alone as a grey cross at its rank."""
    single = curve[SINGLE]
    ranks = np.arange(1, len(single) + 1)
    panels_wide = len(METRIC_LABELS)
    fig, panels = plt.subplots(1, panels_wide, figsize=(3.2 * panels_wide, 3.6), squeeze=False)
    for ax, (metric, label) in zip(panels[0], METRIC_LABELS.items(), strict=True):
        ax.scatter(ranks, [s[metric] for s in single], marker="x", color="grey", zorder=2,
                   label="member alone (at its rank)")  # fmt: skip
        for method in curve_methods(curve):
            values = [point[metric] for point in curve[method]]
            ax.plot(ranks, values, marker="o", label=method, zorder=3)
        ax.set(xlabel="k (best-ranked members)", title=label)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # k is a whole number
    panels[0][0].legend(fontsize=7, loc="best")
    ranked_by = curve.get("ranked_by", "")
    fig.suptitle(title or f"ensemble of the best k members (ranked by {ranked_by}), dev",
                 fontsize=9)  # fmt: skip
    # Written beside the target and renamed, so a crash never leaves half a PNG behind.
    partial = path.with_name(f".{path.stem}.partial{path.suffix}")
    _save_figure(fig, partial)
    os.replace(partial, path)
    return path


def _save_figure(fig: Any, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
