"""A study's parent-run params carry how its report judges the arms (read back by
`ablation.study_report.study_info`)."""

from __future__ import annotations

from orchestrator.ablation.study_info import study_info
from orchestrator.ablation.verdicts import VerdictRule
from orchestrator.contract import STUDY_CORRECTION_PARAM, STUDY_EQUIVALENCE_PARAM
from orchestrator.space.schema import parse_space
from orchestrator.sweep.parent_run import _sweep_params


def test_correction_and_equivalence_travel_to_the_report_through_the_parent_run():
    arms = {"base": {}, "arms": {"base": {}, "smart": {"smart.weight": 1.0}}}
    params = _sweep_params(parse_space({**arms, "equivalence": 0.005, "correction": "bh"}))
    assert params[STUDY_CORRECTION_PARAM] == "bh" and params[STUDY_EQUIVALENCE_PARAM] == 0.005
    info = study_info({k: str(v) for k, v in params.items()})  # MLflow stores strings
    assert info is not None
    assert info.rule == VerdictRule(correction="bh", equivalence=0.005)
    # Without the keys: Holm and no margin, and no equivalence param at all.
    params = _sweep_params(parse_space(arms))
    assert params[STUDY_CORRECTION_PARAM] == "holm" and STUDY_EQUIVALENCE_PARAM not in params
    info = study_info({k: str(v) for k, v in params.items()})
    assert info is not None and info.rule == VerdictRule()
