"""Test helpers for the ensemble and report: a tiny CS224N data directory, untrained tiny
checkpoints, and an MLflow store laid out as `orchestrator sweep` writes it (through tracking.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from model.checkpoint import save_checkpoint
from model.config import TrainConfig, build_config, config_to_dict, flatten, merge, unflatten
from model.train import build_model, seed_everything
from tests.tiny_model import TINY_ARCHITECTURE

TINY_MODEL: dict[str, Any] = {
    "model": {**TINY_ARCHITECTURE, "max_length": 32},
    "device": "cpu",
    "precision": "fp32",
}
DATA_FILES = (
    "ids-sst-train.csv",
    "ids-sst-dev.csv",
    "ids-sst-test-student.csv",
    "partial/quora-train-head5000.csv",
    "quora-dev.csv",
    "sts-train.csv",
    "sts-dev.csv",
    "sts-test-student.csv",
)


def make_tiny_data_dir(
    source: Path, target: Path, rows: int = 40, quora_test: bool = True
) -> Path:
    """The first `rows` rows of every CS224N file (one record per line in these files), plus
    a stand-in `quora-test-student.csv` (later quora-dev pairs without labels) if asked."""
    for name in DATA_FILES:
        lines = (source / name).read_text(encoding="utf-8").splitlines(keepends=True)
        (target / name).parent.mkdir(parents=True, exist_ok=True)
        (target / name).write_text("".join(lines[: rows + 1]), encoding="utf-8")
    if quora_test:
        lines = (source / "quora-dev.csv").read_text(encoding="utf-8").splitlines()
        rows_out = [lines[0], *lines[1000 : 1000 + rows]]
        dropped = ["\t".join(line.split("\t")[:-1]) + "\n" for line in rows_out]
        (target / "quora-test-student.csv").write_text("".join(dropped), encoding="utf-8")
    return target


def tiny_config(seed: int = 0, **sections: Any) -> TrainConfig:
    return build_config(TrainConfig, merge(merge(TINY_MODEL, {"seed": seed}), sections))


def save_untrained_checkpoint(target: Path, cfg: TrainConfig) -> Path:
    """A random tiny model saved as a best checkpoint (no training: milliseconds)."""
    seed_everything(cfg.seed)
    model, model_dir = build_model(cfg)
    return save_checkpoint(target, model, cfg, model_dir, {"dev/overall": 0.0})


@dataclass(frozen=True)
class FakeTrial:
    trial_id: str
    value: float  # best/dev/overall
    state: str = "completed"
    checkpoint: Path | None = None
    params: dict[str, Any] | None = None
    history: Sequence[float] = ()  # dev/overall per epoch


def fake_sweep(
    uri: str,
    name: str,
    trials: Sequence[FakeTrial],
    *,
    searched: Sequence[str] = (),
    base: TrainConfig | None = None,
) -> dict[str, str]:
    """Log a sweep the way the sweep driver does; returns trial_id -> run id."""
    from orchestrator.tracking import SweepTracker

    base = base or tiny_config()
    tracker = SweepTracker(uri, name)
    base_params = {
        f"base.{k}": v for k, v in flatten(config_to_dict(base)).items() if k in searched
    }
    tracker.start_sweep(
        run_name=f"{name} (sweep)",
        params={
            "sweep.metric": "dev/overall",
            "sweep.searched": " ".join(searched),
            **base_params,
        },
        tags={},
    )
    runs = {}
    for trial in trials:
        cfg = build_config(TrainConfig, merge(config_to_dict(base), unflatten(trial.params or {})))
        run_id = tracker.start_trial(trial.trial_id, run_name=trial.trial_id, config=cfg, tags={})
        for epoch, value in enumerate(trial.history, start=1):
            tracker.log_epoch(run_id, {"dev/overall": value, "epoch": float(epoch)}, step=epoch)
        status = "FAILED" if trial.state == "failed" else "FINISHED"
        tags = {"trial_state": trial.state}
        if trial.checkpoint is not None:
            tags["best_checkpoint"] = str(trial.checkpoint)
        metrics = {"best/dev/overall": trial.value}
        tracker.finish_run(run_id, status, metrics=metrics, tags=tags)  # type: ignore[arg-type]
        runs[trial.trial_id] = run_id
    tracker.finish_run(tracker.parent_run_id, "FINISHED")  # type: ignore[arg-type]
    return runs
