"""The ensemble (or one trial's checkpoint) as a registered MLflow model, and back.

`register_model` copies what the predictor needs (each member's weights, tokenizer and config,
and a manifest pointing at the copies) into a pyfunc model, with this project's code, a
signature and an input example; logs it on a run; and registers it as a new version of a named
model, tagged with its sweep, members, method and dev metrics. A colleague's machine with only the
registry (and the pinned packages) loads it with `mlflow.pyfunc.load_model("models:/NAME/1")`.
`download_model` fetches a version for `orchestrator predict --model`.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, replace
from importlib import metadata
from pathlib import Path
from typing import Any

import mlflow.pyfunc
from mlflow.artifacts import download_artifacts
from mlflow.exceptions import MlflowException
from mlflow.models import ModelSignature
from mlflow.protos.databricks_pb2 import RESOURCE_ALREADY_EXISTS, ErrorCode
from mlflow.types import ColSpec, Schema, TensorSpec

import model as model_package
from model.checkpoint import (
    CONFIG_FILE,
    METRICS_FILE,
    OPTIMIZER_FILE,
    TOKENIZER_FILES,
    TRAINER_STATE_FILE,
    WEIGHTS_FILE,
    weights_dropped,
)
from model.config import ConfigError
from orchestrator.contract import (
    ENSEMBLE_MANIFEST_FILE,
    MEMBERS_TAG,
    METHOD_TAG,
    MODEL_ARTIFACT_PATH,
    MODEL_KIND_TAG,
    RANKED_BY_TAG,
    SELECT_TAG,
    SWEEP_TAG,
)
from orchestrator.ensemble.manifest import EnsembleManifest, read_manifest, write_manifest
from orchestrator.predict.predictor import (
    ID_COLUMN,
    PREDICTION_COLUMN,
    SENTENCE1_COLUMN,
    SENTENCE2_COLUMN,
    TASK_COLUMN,
)
from orchestrator.registry.pyfunc_model import (
    DEVICE_KEY,
    INPUT_EXAMPLE,
    PREDICTOR_ARTIFACT,
    PredictorModel,
    output_column_names,
)
from orchestrator.tracking.store import store_exists
from orchestrator.tracking.writer import tracking_client, with_retries

MEMBERS_DIR = "members"  # in the model's predictor copy: one directory per ensemble member
# Resume state: a checkpoint needs neither to predict, and the optimizer doubles its size.
NOT_SHIPPED = (OPTIMIZER_FILE, TRAINER_STATE_FILE)
# What the predictor imports, pinned to this environment's versions in requirements.txt.
RUNTIME_PACKAGES = (
    "mlflow", "torch", "tokenizers", "safetensors", "numpy", "pandas", "scipy", "scikit-learn",
    "pyyaml", "rich",
)  # fmt: skip
# A name `models:/NAME/VERSION` can spell: no slash, no alias sign, no surrounding space.
_NAME = re.compile(r"^[^/@:\s](?:[^/@:]*[^/@:\s])?$")
_MODEL_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:/(?P<version>\d+)|@(?P<alias>[\w-]+))$")


class ModelRegistryError(ConfigError):
    """A registered model name or `models:/` URI that is malformed or does not exist; one line."""


@dataclass(frozen=True)
class RegisteredModel:
    """A registered model version and the run whose artifacts hold it."""

    name: str
    version: str
    run_id: str
    tags: Mapping[str, str]

    @property
    def uri(self) -> str:
        return f"models:/{self.name}/{self.version}"


def check_model_name(name: str) -> str:
    """`name` if a registered model can be called that (and found again as models:/NAME/N)."""
    if not _NAME.match(name):
        raise ModelRegistryError(
            f"--register {name!r}: a model name is non-empty, without '/', '@' or ':' "
            "(e.g. --register minbert-quickstart)"
        )
    return name


def register_model(
    uri: str, run_id: str, source: Path, name: str, *, tags: Mapping[str, str] | None = None
) -> RegisteredModel:
    """Log `source` (an ensemble directory with its manifest, or a checkpoint) as the pyfunc
    model of run `run_id` and register it as a new version of `name`; returns that version."""
    check_model_name(name)
    client = tracking_client(uri)
    with tempfile.TemporaryDirectory(prefix="orchestrator-model-") as tmp:
        predictor_dir = stage_predictor(Path(source), Path(tmp) / PREDICTOR_ARTIFACT)
        version_tags = {**registry_tags(predictor_dir), **(tags or {})}
        model_dir = save_pyfunc_model(predictor_dir, Path(tmp) / MODEL_ARTIFACT_PATH)
        with_retries(lambda: client.log_artifacts(run_id, str(model_dir), MODEL_ARTIFACT_PATH))
    artifact_uri = with_retries(lambda: client.get_run(run_id)).info.artifact_uri
    try:
        with_retries(lambda: client.create_registered_model(name))
    except MlflowException as err:
        if err.error_code != ErrorCode.Name(RESOURCE_ALREADY_EXISTS):
            raise
    version = with_retries(
        lambda: client.create_model_version(
            name, f"{artifact_uri}/{MODEL_ARTIFACT_PATH}", run_id=run_id, tags=version_tags
        )
    )
    return RegisteredModel(name, str(version.version), run_id, version_tags)


def stage_predictor(source: Path, target: Path) -> Path:
    """Copy what `load_predictor` needs from `source` into `target`: an ensemble's members (each
    verified against the manifest first) under `members/` with the manifest rewritten to point
    at the copies, or a checkpoint's files; resume state left out."""
    if (source / ENSEMBLE_MANIFEST_FILE).is_file():
        manifest = read_manifest(source)  # a tampered member never reaches the registry
        copies, members = [], []
        for index, member in enumerate(manifest.members):
            relative = Path(MEMBERS_DIR) / f"{index + 1}-{member.trial_id}"
            files = {k: v for k, v in member.files.items() if Path(k).name not in NOT_SHIPPED}
            for name in files:
                (target / relative / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(member.checkpoint / name, target / relative / name)
            _bring_tokenizer(member.checkpoint, target / relative)
            copies.append(relative)
            members.append(files)
        write_manifest(target, _with_files(manifest.relocated(copies), members))
        return target
    if not (source / CONFIG_FILE).is_file():
        raise ModelRegistryError(
            f"{source}: neither a checkpoint (no {CONFIG_FILE}) nor an ensemble "
            f"(no {ENSEMBLE_MANIFEST_FILE})"
        )
    dropped = weights_dropped(source)
    if dropped is not None:  # a sweep's retention setting deleted them (sweep/retention.py)
        raise ModelRegistryError(f"{source}: no {WEIGHTS_FILE} to register ({dropped})")
    shutil.copytree(source, target, ignore=shutil.ignore_patterns(*NOT_SHIPPED, ".*"))
    _bring_tokenizer(source, target)
    return target


def _with_files(manifest: EnsembleManifest, files: list[dict[str, str]]) -> EnsembleManifest:
    members = tuple(replace(m, files=f) for m, f in zip(manifest.members, files, strict=True))
    return replace(manifest, members=members)


def _bring_tokenizer(checkpoint: Path, copy: Path) -> None:
    """A checkpoint without tokenizer files names a model directory holding them: copy those
    in, so the shipped member does not depend on a path of this machine."""
    if any((copy / name).is_file() for name in TOKENIZER_FILES):
        return
    ref = json.loads((checkpoint / CONFIG_FILE).read_text(encoding="utf-8")).get("tokenizer")
    found = [Path(ref) / n for n in TOKENIZER_FILES if ref and (Path(ref) / n).is_file()]
    if not found:
        raise ModelRegistryError(f"{checkpoint}: no tokenizer files to ship with the model")
    for path in found:
        shutil.copy2(path, copy / path.name)


def registry_tags(predictor_dir: Path) -> dict[str, str]:
    """A version's tags: for an ensemble its sweep, members (run ids), method, selection,
    ranking metric and dev metrics; for a checkpoint its dev metrics."""
    if not (predictor_dir / ENSEMBLE_MANIFEST_FILE).is_file():
        metrics = json.loads((predictor_dir / METRICS_FILE).read_text(encoding="utf-8"))
        dev = {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float))}
        return {MODEL_KIND_TAG: "checkpoint", **{k: f"{v:.6f}" for k, v in dev.items()}}
    manifest = read_manifest(predictor_dir, verify=False)
    return {
        MODEL_KIND_TAG: "ensemble",
        SWEEP_TAG: manifest.sweep,
        MEMBERS_TAG: ",".join(m.run_id for m in manifest.members),
        METHOD_TAG: manifest.method,
        SELECT_TAG: manifest.select,
        RANKED_BY_TAG: manifest.metric,
        **{k: f"{v:.6f}" for k, v in manifest.dev.items()},
    }


def save_pyfunc_model(predictor_dir: Path, target: Path) -> Path:
    """Save the pyfunc model serving `predictor_dir` into `target` (code, artifacts, signature,
    input example, pinned requirements); returns `target`."""
    # MLflow warns that a pickled model may run code when loaded: ours pickles only a reference
    # to PredictorModel, whose code ships in the model's code/ directory.
    pyfunc_logger = logging.getLogger("mlflow.pyfunc")
    level = pyfunc_logger.level
    pyfunc_logger.setLevel(logging.ERROR)
    try:
        with quiet_transfers():
            mlflow.pyfunc.save_model(
                str(target),
                python_model=PredictorModel(),
                artifacts={PREDICTOR_ARTIFACT: str(predictor_dir)},
                code_paths=[str(Path(p).parent) for p in _package_files()],
                signature=model_signature(),
                input_example=INPUT_EXAMPLE,
                pip_requirements=pinned_requirements(),
                model_config={DEVICE_KEY: "cpu"},
            )
    finally:
        pyfunc_logger.setLevel(level)
    return target


@contextmanager
def quiet_transfers() -> Iterator[None]:
    """No MLflow progress bars on stderr while copying artifacts (a command's stderr is ours)."""
    key = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"
    saved = os.environ.get(key)
    os.environ[key] = "false"
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = saved


def _package_files() -> list[str]:
    # The orchestrator package's own __init__, found by path: importing the package from here
    # would import its facade, the layer above this one.
    return [str(model_package.__file__), str(Path(__file__).resolve().parents[1] / "__init__.py")]


def model_signature() -> ModelSignature:
    """Inputs: `task`, `sentence1`, optional `sentence2` (pair tasks) and `id`; outputs: `id`,
    `task`, `prediction` (class or STS score) and the class probabilities of the tasks present."""
    inputs = Schema(
        [
            ColSpec("string", TASK_COLUMN),
            ColSpec("string", SENTENCE1_COLUMN),
            ColSpec("string", SENTENCE2_COLUMN, required=False),
            ColSpec("string", ID_COLUMN, required=False),
        ]
    )
    outputs: list[ColSpec | TensorSpec] = [
        ColSpec("string", ID_COLUMN),
        ColSpec("string", TASK_COLUMN),
        ColSpec("double", PREDICTION_COLUMN),
    ]
    outputs += [ColSpec("double", c, required=False) for c in output_column_names()[3:]]
    return ModelSignature(inputs=inputs, outputs=Schema(outputs))


def pinned_requirements() -> list[str]:
    """RUNTIME_PACKAGES at this environment's versions (a local build label like +cpu dropped,
    as package indexes do not carry it)."""
    return [f"{name}=={metadata.version(name).split('+')[0]}" for name in RUNTIME_PACKAGES]


def parse_model_uri(model_uri: str) -> tuple[str, str | None, str | None]:
    """(name, version, alias) of `models:/NAME/VERSION` or `models:/NAME@ALIAS`."""
    match = _MODEL_URI.match(model_uri.strip())
    if not match:
        raise ModelRegistryError(
            f"--model {model_uri}: expected models:/NAME/VERSION (e.g. models:/minbert/1)"
        )
    return match["name"], match["version"], match["alias"]


def download_model(tracking_uri: str, model_uri: str, dst: Path) -> Path:
    """Fetch a registered version into `dst` (the caller removes it) and return the directory
    `load_predictor` loads; ModelRegistryError names a model or version not there."""
    version = resolve_version(tracking_uri, model_uri)
    dst = Path(dst)
    # The version's own artifact URI: a models:/ URI would be resolved against the process's
    # default registry, not `tracking_uri`.
    with quiet_transfers():
        local = download_artifacts(
            artifact_uri=version["download_uri"], dst_path=str(dst), tracking_uri=tracking_uri
        )
    predictor_dir = Path(local) / "artifacts" / PREDICTOR_ARTIFACT
    if not predictor_dir.is_dir():
        raise ModelRegistryError(
            f"{model_uri}: not a model `orchestrator ensemble --register` logged "
            f"(no artifacts/{PREDICTOR_ARTIFACT} in it)"
        )
    return predictor_dir


def resolve_version(tracking_uri: str, model_uri: str) -> dict[str, Any]:
    """The registered version `model_uri` names (name, version, tags, download_uri), or
    ModelRegistryError saying which models or versions exist."""
    name, number, alias = parse_model_uri(model_uri)
    if not store_exists(tracking_uri):
        raise ModelRegistryError(f"{model_uri}: no MLflow store at {tracking_uri}")
    client = tracking_client(tracking_uri)
    try:
        with_retries(lambda: client.get_registered_model(name))
    except MlflowException as err:
        known = [m.name for m in with_retries(lambda: client.search_registered_models())]
        where = f"registered: {', '.join(sorted(known))}" if known else "it has none"
        raise ModelRegistryError(
            f"{model_uri}: no registered model '{name}' in {tracking_uri} ({where})"
        ) from err
    try:
        if alias is not None:
            found = with_retries(lambda: client.get_model_version_by_alias(name, alias))
        else:
            found = with_retries(lambda: client.get_model_version(name, str(number)))
    except MlflowException as err:
        versions = with_retries(lambda: client.search_model_versions(f"name = '{name}'"))
        have = ", ".join(str(n) for n in sorted(int(v.version) for v in versions)) or "none"
        asked = f"alias '{alias}'" if alias is not None else f"version {number}"
        raise ModelRegistryError(
            f"{model_uri}: model '{name}' has no {asked} (versions: {have})"
        ) from err
    download_uri = with_retries(
        lambda: client.get_model_version_download_uri(name, str(found.version))
    )
    return {
        "name": name,
        "version": str(found.version),
        "tags": dict(found.tags),
        "download_uri": download_uri,
    }
