"""Test helpers for `--extend` and `warm_start:`: a small search space over configs/tiny.yaml and
an earlier sweep as its driver leaves it (`sweep.json` with its search record, and its Optuna
study with trials told through `SweepStudy`), without Ray."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from orchestrator.contract import EPOCHS_LEFT, SweepLayout
from orchestrator.search.history import sweep_record
from orchestrator.search.optuna_search import SweepStudy
from orchestrator.space.schema import SearchSpace, parse_space

REPO = Path(__file__).resolve().parents[2]
TINY = str(REPO / "configs" / "tiny.yaml")
RAW: dict[str, Any] = {
    "name": "early",
    "base": TINY,
    "num_samples": 4,
    "sampler": "random",
    "space": {
        "optim.lr": {"float": [1e-4, 1e-2], "log": True},
        "model.head_dropout": {"choice": [0.0, 0.1, 0.2]},
    },
}
# (params, dev/overall, epochs left) of each earlier trial.
EARLIER = [
    ({"optim.lr": 1e-3, "model.head_dropout": 0.1}, 0.50, 0),
    ({"optim.lr": 5e-3, "model.head_dropout": 0.0}, 0.80, 0),  # best, outside the new range
    ({"optim.lr": 2e-3, "model.head_dropout": 0.2}, 0.70, 0),
    ({"optim.lr": 3e-4, "model.head_dropout": 0.0}, 0.60, 0),
    ({"optim.lr": 2e-4, "model.head_dropout": 0.1}, 0.40, 1),  # pruned by ASHA
]


def tiny_base(**sections: dict[str, Any]) -> dict[str, Any]:
    """configs/tiny.yaml as a mapping, with `sections` merged over it."""
    raw = yaml.safe_load(Path(TINY).read_text())
    for name, values in sections.items():
        raw[name] = {**raw.get(name, {}), **values}
    return dict(raw)


def space_of(**changes: Any) -> SearchSpace:
    return parse_space({**RAW, **changes}, source="s.yaml")


def edited(key: str, spec: Any, **changes: Any) -> SearchSpace:
    return space_of(space={**RAW["space"], key: spec}, **changes)


def run_earlier_sweep(
    results: Path,
    trials: list[tuple[dict[str, Any], float, int]],
    space: SearchSpace | None = None,
    extra_metrics: list[dict[str, float]] | None = None,
) -> Path:
    """An earlier sweep of `space` (default `space_of()`) with `trials` told, each last result
    holding `extra_metrics[i]` as best-epoch metrics too; its MLflow store does not exist."""
    space = space or space_of()
    layout = SweepLayout.of(results, space.name)
    layout.root.mkdir(parents=True)
    study = SweepStudy(space, layout.optuna_url)
    for i, (params, value, left) in enumerate(trials):
        study.study.enqueue_trial(params)
        study.ask(f"t{i}")
        study.report(f"t{i}", value - 0.1, 1)
        best = {f"best/{k}": v for k, v in (extra_metrics[i] if extra_metrics else {}).items()}
        last = {"dev/overall": value, "best/dev/overall": value, EPOCHS_LEFT: left, **best}
        study.tell(f"t{i}", last, step=2 - left)
    state = {"name": space.name, "optuna_storage": layout.optuna_url, "parent_run_id": "p",
             "tracking_uri": f"sqlite:///{results / 'mlflow.db'}",
             "search": sweep_record(space)}  # fmt: skip
    layout.state_file.write_text(json.dumps(state))
    return layout.root
