"""The SST details of a study's best arm for `ablation.md` and the confusion plot: per-class
precision / recall / F1 and balanced accuracy as means over its seeds, and the confusion counts
summed over them. Input is `study_report.runs_frame`, which reads these metrics (named by
`model.evaluate`) from each confirm run's best epoch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from model.evaluate import (
    SST_BALANCED_ACC,
    SST_CLASSES,
    SST_MACRO_F1,
    SST_PER_CLASS_STATS,
    confusion_key,
    per_class_key,
)
from orchestrator.ablation.arm_table import t_interval

PER_CLASS_KEYS = [per_class_key(s, c) for c in range(SST_CLASSES) for s in SST_PER_CLASS_STATS]
CONFUSION_KEYS = [confusion_key(t, p) for t in range(SST_CLASSES) for p in range(SST_CLASSES)]
DETAIL_KEYS = (SST_BALANCED_ACC, SST_MACRO_F1, *PER_CLASS_KEYS, *CONFUSION_KEYS)


@dataclass(frozen=True)
class SstDetails:
    """The best arm's SST details: per-class means over seeds, and the summed confusion."""

    arm: str
    seeds: int
    balanced_acc: tuple[float, float]  # mean, 95% CI half-width
    macro_f1: tuple[float, float]
    per_class: pd.DataFrame  # class, precision, recall, f1 (means over seeds)
    confusion: np.ndarray  # [true class, predicted class] counts summed over seeds


def sst_details(done: pd.DataFrame, arm: str) -> SstDetails | None:
    """The SST details of an arm's completed confirm runs; None when none logged them."""
    group = done[(done["arm"] == arm) & done[SST_BALANCED_ACC].notna()]
    if group.empty:
        return None
    per_class = pd.DataFrame(
        [
            {
                "class": c,
                **{s: float(group[per_class_key(s, c)].mean()) for s in SST_PER_CLASS_STATS},
            }
            for c in range(SST_CLASSES)
        ]
    )
    confusion = np.array(
        [
            [group[confusion_key(t, p)].sum() for p in range(SST_CLASSES)]
            for t in range(SST_CLASSES)
        ]
    )
    balanced, macro = (
        t_interval(list(group[SST_BALANCED_ACC])),
        t_interval(list(group[SST_MACRO_F1])),
    )
    return SstDetails(
        arm,
        len(group),
        (balanced.mean, balanced.half_width),
        (macro.mean, macro.half_width),
        per_class,
        confusion.astype(np.int64),
    )


def sst_markdown(sst: SstDetails | None) -> list[str]:
    """The best arm's SST section: balanced accuracy, macro F1, per-class P / R / F1 and the
    confusion counts (summed over seeds)."""
    if sst is None:
        return ["## SST details", "", "No completed confirm run logged SST details.", ""]

    def pm(value: tuple[float, float]) -> str:
        mean, half = value
        return f"{mean:.4f}" + (f" ± {half:.4f}" if math.isfinite(half) else "")

    lines = [
        f"## SST details of the best arm, `{sst.arm}` (mean over {sst.seeds} seeds)",
        "",
        f"Balanced accuracy {pm(sst.balanced_acc)}; macro F1 {pm(sst.macro_f1)}.",
        "",
        "| class | precision | recall | F1 |",
        "|---|---|---|---|",
    ]
    lines += [
        f"| {int(r['class'])} | {r['precision']:.4f} | {r['recall']:.4f} | {r['f1']:.4f} |"
        for _, r in sst.per_class.iterrows()
    ]
    head = "| true \\ predicted | " + " | ".join(str(c) for c in range(SST_CLASSES)) + " |"
    lines += ["", "Confusion counts summed over seeds (`plots/sst_confusion.png`):", "", head]
    lines.append("|" + "---|" * (SST_CLASSES + 1))
    lines += [
        f"| {t} | " + " | ".join(str(int(n)) for n in row) + " |"
        for t, row in enumerate(sst.confusion)
    ]
    return [*lines, ""]
