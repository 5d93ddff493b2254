"""The Ray Tune function trainable: a trial is Ray's config dict -> TrainConfig -> `fit`.

Every epoch goes back to Tune with `tune.report(metrics, checkpoint=...)`; a retried or resumed
trial continues from `tune.get_checkpoint()`. A trial whose loss becomes NaN/inf ends with a last
result carrying the trainer's message (`NONFINITE_LOSS`), which the driver records as FAILED. The
trainable never talks to MLflow: the driver logs what it reports (see `sweep/listeners.py`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext, redirect_stderr
from pathlib import Path
from typing import Any

import torch
from ray import tune

from model.checkpoint import METRICS_FILE
from model.config import TrainConfig
from model.device import limit_cuda_memory, resolve_device, resolved_precision
from model.evaluate import SELECTION_METRICS
from model.train import EpochResult, NonFiniteLossError, fit
from model.warning_format import show_warnings_as_lines
from orchestrator.config import apply_params
from orchestrator.contract import (
    BEST_CHECKPOINT,
    EPOCH_KEY,
    EPOCHS_LEFT,
    METRICS,
    NONFINITE_LOSS,
    PRECISION_KEY,
    SweepLayout,
    best_key,
    pack_result,
    trial_params,
)


def train_trial(
    config: dict[str, Any],
    *,
    base: TrainConfig,
    data_dir: str,
    experiment_dir: str,
    threads: int = 1,
    gpu_share: float = 0.0,
    scheduled: tuple[str, ...] = (),
) -> None:
    """Train one trial of a sweep and report every epoch to Tune (see module docstring), the
    `scheduled` keys as numbers, the other metrics packed (`contract.pack_result`)."""
    show_warnings_as_lines()  # in the trial's stderr.log, one line each
    if 0.0 < gpu_share < 1.0:
        # Trials packed onto one GPU (resources.gpu: 0.25) each keep to their share of its
        # memory, so one trial's peak cannot push its neighbours out of memory.
        limit_cuda_memory(gpu_share)
    cfg = apply_params(base, trial_params(config))
    trial = SweepLayout(Path(experiment_dir)).trial(tune.get_context().get_trial_id())
    # Ray gives each trial `threads` CPUs; more torch threads than that would fight other trials.
    torch.set_num_threads(max(1, threads))
    done_epochs = 0
    precision, _ = resolved_precision(cfg, resolve_device(cfg))

    def report(epoch: EpochResult) -> None:
        nonlocal done_epochs
        done_epochs = epoch.epoch
        metrics: dict[str, Any] = dict(epoch.metrics)
        metrics[EPOCHS_LEFT] = cfg.optim.epochs - epoch.epoch
        metrics.update(_best_metrics(epoch.best_checkpoint_dir))
        metrics[BEST_CHECKPOINT] = str(epoch.best_checkpoint_dir)
        metrics[PRECISION_KEY] = precision
        checkpoint = tune.Checkpoint.from_directory(str(epoch.checkpoint_dir))
        tune.report(pack_result(metrics, scheduled), checkpoint=checkpoint)

    checkpoint = tune.get_checkpoint()
    resuming = checkpoint.as_directory() if checkpoint else nullcontext(None)
    with _stderr_to(trial.stderr), resuming as resume_dir:
        if resume_dir is not None:
            done_epochs = int(_best_metrics(Path(resume_dir)).get(best_key(EPOCH_KEY), 0))
        try:
            fit(
                cfg,
                data_dir=Path(data_dir),
                out_dir=trial.train.out_dir,
                on_epoch=report,
                resume_from=Path(resume_dir) if resume_dir else None,
                progress=False,
                # The ensemble predicts from checkpoints itself; skipping the prediction files
                # saves a full pass over every dev and test set per trial.
                prediction_splits=(),
            )
        except NonFiniteLossError as err:
            # A last result that says why, instead of an exception: Ray would retry the trial
            # (FailureConfig) only to diverge again. The driver marks it FAILED everywhere.
            failed = _diverged_result(err, epoch=done_epochs + 1, selection=cfg.data.selection)
            tune.report(pack_result(failed, scheduled))


@contextmanager
def _stderr_to(path: Path) -> Iterator[None]:
    """The trial's stderr (its warnings and fit's line per epoch) appended to `path`, in the
    sweep's results rather than Ray's session logs under /tmp; a retried trial appends."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", buffering=1) as log, redirect_stderr(log):
        yield


def _diverged_result(err: NonFiniteLossError, *, epoch: int, selection: float) -> dict[str, Any]:
    """The last result of a trial whose loss became NaN/inf during `epoch`: NaN for every metric
    it reports (selection/* only when the trial holds a selection split out)."""
    names = [m for m in METRICS if selection > 0 or m not in SELECTION_METRICS]
    failed: dict[str, Any] = dict.fromkeys(names, math.nan)
    failed.update({EPOCH_KEY: float(epoch), EPOCHS_LEFT: 0})
    failed[NONFINITE_LOSS] = f"NonFiniteLossError: {err}"
    return failed


def _best_metrics(best_dir: Path) -> dict[str, float]:
    """The best epoch's metrics, read back from its checkpoint (survives resumes)."""
    path = best_dir / METRICS_FILE
    if not path.is_file():
        return {}
    metrics = json.loads(path.read_text())
    return {best_key(k): float(v) for k, v in metrics.items() if isinstance(v, (int, float))}
