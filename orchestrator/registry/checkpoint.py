"""`orchestrator register`: one trial's checkpoint as a new version of a registered model.

The model is logged on a run of its own (role `model`): in the experiment of the sweep whose
trial tagged this checkpoint as its best (the version then names that trial's run as its
member), else in the `registered checkpoints` experiment.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mlflow import MlflowClient

from model.checkpoint import CONFIG_FILE
from orchestrator.contract import BEST_CHECKPOINT, MEMBERS_TAG, MODEL_ROLE, ROLE_TAG, SWEEP_TAG
from orchestrator.registry.models import (
    ModelRegistryError,
    RegisteredModel,
    check_model_name,
    register_model,
)
from orchestrator.tracking.writer import artifact_location, tracking_client, with_retries

CHECKPOINTS_EXPERIMENT = "registered checkpoints"


def register_checkpoint(uri: str, checkpoint: Path, name: str) -> RegisteredModel:
    """Log `checkpoint` as a pyfunc model on a new run and register it as a version of `name`."""
    check_model_name(name)
    checkpoint = Path(checkpoint).resolve()
    if not (checkpoint / CONFIG_FILE).is_file():
        raise ModelRegistryError(f"--checkpoint {checkpoint}: not a checkpoint (no {CONFIG_FILE})")
    client = tracking_client(uri)
    trial = trial_of_checkpoint(client, checkpoint)
    tags = {ROLE_TAG: MODEL_ROLE, BEST_CHECKPOINT: str(checkpoint)}
    if trial is not None:
        experiment_id = trial.info.experiment_id
        tags |= {SWEEP_TAG: trial.data.tags.get(SWEEP_TAG, ""), MEMBERS_TAG: trial.info.run_id}
    else:
        experiment_id = _checkpoints_experiment(client, uri)
    run = with_retries(
        lambda: client.create_run(experiment_id, run_name=f"register {name}", tags=tags)
    )
    run_id: str = run.info.run_id
    try:
        version_tags = {k: tags[k] for k in (SWEEP_TAG, MEMBERS_TAG) if k in tags}
        registered = register_model(uri, run_id, checkpoint, name, tags=version_tags)
    except BaseException:
        with_retries(lambda: client.set_terminated(run_id, status="FAILED"))
        raise
    with_retries(lambda: client.set_terminated(run_id, status="FINISHED"))
    return registered


def trial_of_checkpoint(client: MlflowClient, checkpoint: Path) -> Any | None:
    """The newest trial run whose best checkpoint is `checkpoint`, if the store has one."""
    ids = [e.experiment_id for e in with_retries(lambda: client.search_experiments())]
    if not ids:
        return None
    quoted = str(checkpoint).replace("'", "\\'")
    runs = with_retries(
        lambda: client.search_runs(
            ids,
            filter_string=f"tags.{BEST_CHECKPOINT} = '{quoted}'",
            order_by=["attributes.start_time DESC"],
            max_results=50,
        )
    )
    trials = [r for r in runs if r.data.tags.get(ROLE_TAG) != MODEL_ROLE]
    return trials[0] if trials else None


def _checkpoints_experiment(client: MlflowClient, uri: str) -> str:
    found = with_retries(lambda: client.get_experiment_by_name(CHECKPOINTS_EXPERIMENT))
    if found is not None:
        return str(found.experiment_id)
    return str(
        with_retries(
            lambda: client.create_experiment(
                CHECKPOINTS_EXPERIMENT, artifact_location=artifact_location(uri)
            )
        )
    )
