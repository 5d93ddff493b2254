"""What a study's MLflow parent run says of it (`study.*` params): its arms in file order, the
baseline, the seeds, how the report judges the arms, and a race's seeds. Read by the report."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field

from model.config import ConfigError
from model.evaluate import OVERALL
from orchestrator.ablation.verdicts import VerdictRule, table_metric
from orchestrator.contract import (
    STUDY_ARMS_PARAM,
    STUDY_BASELINE_PARAM,
    STUDY_CORRECTION_PARAM,
    STUDY_EQUIVALENCE_PARAM,
    STUDY_RACE_PARAM,
    STUDY_SEEDS_PARAM,
    SWEEP_METRIC_PARAM,
)


@dataclass(frozen=True)
class StudyInfo:
    """What the study's parent run says: its arms in file order, the baseline, the seeds, and
    how the report judges the arms (its metric, correction and equivalence margin)."""

    arms: tuple[str, ...]
    baseline: str
    seeds: tuple[int, ...]
    rule: VerdictRule = field(default_factory=VerdictRule)  # on the study's metric, on dev
    race: Mapping[str, float] | None = None  # a racing study's seeds: {"min", "max", "step"}


def study_info(parent_params: Mapping[str, str]) -> StudyInfo | None:
    """The study of a sweep's parent run, or None for a plain HPO sweep (no `study.arms`)."""
    raw = parent_params.get(STUDY_ARMS_PARAM)
    if raw is None:
        return None
    try:
        arms = tuple(str(a) for a in json.loads(raw))
        seeds = tuple(int(s) for s in json.loads(parent_params.get(STUDY_SEEDS_PARAM) or "[]"))
        margin = parent_params.get(STUDY_EQUIVALENCE_PARAM)
        race = json.loads(parent_params.get(STUDY_RACE_PARAM) or "null")
        rule = VerdictRule(
            correction=parent_params.get(STUDY_CORRECTION_PARAM) or "holm",
            equivalence=float(margin) if margin else None,
            metric=table_metric(parent_params.get(SWEEP_METRIC_PARAM) or OVERALL),
        )
    except (ValueError, TypeError, ConfigError) as err:
        raise ConfigError(f"the study's parent run has unreadable params: {err}") from None
    baseline = parent_params.get(STUDY_BASELINE_PARAM) or (arms[0] if arms else "")
    return StudyInfo(arms, baseline, seeds, rule, race)
