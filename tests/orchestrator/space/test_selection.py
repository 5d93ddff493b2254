"""`metric: selection/...` in a space: only on a base config that holds a selection split out."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from model.evaluate import SELECTION_METRICS, SELECTION_OVERALL
from orchestrator.contract import METRICS
from orchestrator.space.schema import SpaceError, load_space

REPO = Path(__file__).resolve().parents[3]
TINY = yaml.safe_load((REPO / "configs" / "tiny.yaml").read_text())


def write_space(tmp_path: Path, metric: str, selection: float) -> Path:
    base = {**TINY, "data": {**TINY["data"], "selection": selection}}
    space = {"optim.lr": {"float": [1e-4, 1e-3], "log": True}}
    raw = {"name": "sel", "base": base, "metric": metric, "space": space}
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def test_selection_metrics_are_reported_metrics() -> None:
    assert set(SELECTION_METRICS) <= set(METRICS)
    assert SELECTION_OVERALL == "selection/overall"


@pytest.mark.parametrize("metric", SELECTION_METRICS)
def test_a_selection_metric_needs_data_selection_in_the_base(tmp_path: Path, metric: str) -> None:
    path = write_space(tmp_path, metric, selection=0.0)
    with pytest.raises(SpaceError) as caught:
        load_space(path)
    text = str(caught.value)
    assert text.startswith(f"{path}: metric: {metric} needs a selection split"), text
    assert "data.selection" in text and "\n" not in text


def test_a_selection_metric_on_a_base_with_the_split_is_maximised(tmp_path: Path) -> None:
    space = load_space(write_space(tmp_path, SELECTION_OVERALL, selection=0.1))
    assert (space.metric, space.mode, space.base.data.selection) == (SELECTION_OVERALL, "max", 0.1)
