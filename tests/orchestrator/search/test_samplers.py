"""Every sampler the space schema accepts runs with the installed dependencies: it proposes trials
through the sweep's define-by-run space, and CMA-ES really searches: its proposals close in on a
quadratic's optimum, as Optuna's random fallback's would not."""

from __future__ import annotations

import math
import statistics
from pathlib import Path

import optuna
import pytest
import yaml
from click.testing import CliRunner

from orchestrator.cli import main
from orchestrator.search.optuna_search import DefineByRun, make_sampler
from orchestrator.space.schema import SAMPLERS, parse_space

REPO = Path(__file__).resolve().parents[3]
TINY = str(REPO / "configs" / "tiny.yaml")
FLOATS = {
    "optim.lr": {"float": [1.0e-5, 1.0e-3], "log": True},
    "model.head_dropout": {"float": [0.0, 0.3]},
}


def space_of(sampler: str):
    grid = {"model.pooling": {"choice": ["cls", "mean"]}}
    return parse_space(
        {
            "name": "s",
            "base": TINY,
            "sampler": sampler,
            "space": grid if sampler == "grid" else FLOATS,
        }
    )


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_every_sampler_proposes_trials_in_the_space(sampler: str) -> None:
    space = space_of(sampler)
    study = optuna.create_study(sampler=make_sampler(space), direction="maximize")
    suggest = DefineByRun(space)
    if sampler == "grid":  # asked together, as concurrent trials are: each point once
        points = {suggest(study.ask())["model.pooling"] for _ in range(2)}
        assert points == {"cls", "mean"}
        return
    for _ in range(8):
        trial = study.ask()
        params = suggest(trial)
        assert 1e-5 <= params["optim.lr"] <= 1e-3 and 0.0 <= params["model.head_dropout"] <= 0.3
        # A smooth objective with its optimum inside the box, as an HPO metric would be.
        study.tell(trial, -((params["model.head_dropout"] - 0.1) ** 2))


def distances_to_the_optimum(sampler: str, asks: int) -> list[float]:
    """Each proposal's distance to the optimum (lr 1e-4, dropout 0.1) of a quadratic told back
    as the trial's value, in units of the box (log10 lr, dropout / 0.15)."""
    space = space_of(sampler)
    study = optuna.create_study(sampler=make_sampler(space), direction="maximize")
    suggest = DefineByRun(space)
    distances = []
    for _ in range(asks):
        trial = study.ask()
        params = suggest(trial)
        lr, dropout = params["optim.lr"], params["model.head_dropout"]
        offset = (math.log10(lr) + 4.0, (dropout - 0.1) / 0.15)
        study.tell(trial, -(offset[0] ** 2 + offset[1] ** 2))
        distances.append(math.hypot(*offset))
    return distances


def test_cmaes_proposals_close_in_on_the_optimum() -> None:
    """48 asks, 8 generations: the last 12 proposals lie far closer than the first 12, and than
    random search's last 12 from the same seed (measured medians 0.09, 0.48 and 0.68)."""
    cma = distances_to_the_optimum("cmaes", 48)
    late = statistics.median(cma[-12:])
    random_late = statistics.median(distances_to_the_optimum("random", 48)[-12:])
    assert late < 0.5 * statistics.median(cma[:12]), cma
    assert late < 0.3 * random_late, (late, random_late)


def test_cmaes_space_dry_runs_from_the_cli(tmp_path: Path, data_dir: Path) -> None:
    path = tmp_path / "cma.yaml"
    raw = {"name": "cma", "base": TINY, "sampler": "cmaes", "num_samples": 2, "space": FLOATS}
    path.write_text(yaml.safe_dump(raw))
    result = CliRunner().invoke(
        main, ["sweep", str(path), "--dry-run", "--data-dir", str(data_dir)]
    )
    assert result.exit_code == 0, result.output
    assert f"{path}: valid; 2 trials, sampler cmaes" in result.output
    labels = [line for line in result.output.splitlines() if line.startswith("[")]
    assert len(labels) == 2 and all("optim.lr=" in line for line in labels)
