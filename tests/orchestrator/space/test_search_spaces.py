"""Every shipped search space loads, validates, and samples configs the trainer accepts."""

from __future__ import annotations

from pathlib import Path

import pytest

from model.config import config_field_types
from orchestrator.config import apply_params
from orchestrator.search.optuna_search import sample_configs
from orchestrator.space.schema import load_space

REPO = Path(__file__).resolve().parents[3]
SPACES = sorted((REPO / "search_spaces").glob("*.yaml"))
EXPECTED = {"quickstart", "smart", "encoding", "schedule", "pcgrad", "regularization"}
STUDIES = {
    "seeds",
    "ablation_quickstart",
    "seed_systems",
    "seed_systems_minilm",
    "seed_systems_cpu",
}


def test_the_expected_spaces_ship() -> None:
    assert {path.stem for path in SPACES} >= EXPECTED | STUDIES


@pytest.mark.parametrize("path", SPACES, ids=[p.stem for p in SPACES])
def test_space_validates_and_samples_valid_configs(path: Path) -> None:
    space = load_space(path)
    assert space.name == path.stem
    # A study may run its arms without searching anything; a sweep must search something.
    assert space.params or space.study is not None
    assert all(p.key in config_field_types() for p in space.params)
    for params in sample_configs(space, 8):
        cfg = apply_params(space.base, params)
        for key, value in params.items():
            section, _, leaf = key.rpartition(".")
            node = cfg
            for part in section.split(".") if section else []:
                node = getattr(node, part)
            actual = getattr(node, leaf)
            expected = tuple(value) if isinstance(value, (list, tuple)) else value
            assert actual == expected, key


def test_quickstart_fits_two_cpu_cores() -> None:
    space = load_space(REPO / "search_spaces" / "quickstart.yaml")
    assert space.resources.gpu == 0 and space.resources.cpu * (space.max_concurrent or 1) <= 2
    assert 4 <= space.total_trials <= 8
    assert space.scheduler.name == "asha" and space.scheduler.max_epochs >= 2
    fixed = {p.key: p.value for p in space.params if p.kind == "fixed"}
    for task in ("sst", "para", "sts"):
        assert fixed[f"data.max_examples.{task}"] <= 1000  # subsampled training sets
        assert fixed[f"data.dev_max_examples.{task}"] <= 1000  # fixed dev subsets


@pytest.mark.parametrize("name", sorted(EXPECTED - {"quickstart"}))
def test_ablation_spaces_ask_for_a_gpu(name: str) -> None:
    assert 0 < load_space(REPO / "search_spaces" / f"{name}.yaml").resources.gpu <= 1


@pytest.mark.parametrize("name", sorted(STUDIES))
def test_shipped_studies_rank_on_the_selection_split_and_build_every_arm(name: str) -> None:
    space = load_space(REPO / "search_spaces" / f"{name}.yaml")
    assert space.study is not None and space.study.baseline == "baseline"
    assert len(space.study.seeds) == 3
    assert space.metric == "selection/overall" and space.base.data.selection > 0
    for arm in space.study.arms:
        cfg = apply_params(space.base, arm.params)
        assert cfg != space.base or arm.name == "baseline"


def test_ablation_quickstart_fits_two_cpu_cores() -> None:
    space = load_space(REPO / "search_spaces" / "ablation_quickstart.yaml")
    assert space.study is not None and 3 <= len(space.study.arms) <= 4
    assert space.resources.gpu == 0 and space.resources.cpu * (space.max_concurrent or 1) <= 2
    assert space.study.confirm_epochs <= 2 and not space.searched
    for task in ("sst", "para", "sts"):
        assert getattr(space.base.data.max_examples, task) <= 1000
        assert getattr(space.base.data.dev_max_examples, task) <= 1000
