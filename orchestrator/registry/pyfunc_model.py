"""The MLflow pyfunc model `orchestrator ensemble --register` logs: a `Predictor` (an ensemble or
one checkpoint) loaded from the model's own artifacts, answering DataFrames of sentences.

`mlflow.pyfunc.load_model(uri).predict(frame)` and `mlflow models serve` return exactly what
`Predictor.predict_frame(frame)` (`orchestrator predict`) does on the same rows. Rows it cannot
predict (an unknown task, a repeated id) raise an MlflowException with the project's one-line
message and INVALID_PARAMETER_VALUE: the way MLflow's scoring server passes a model's own message
to the client (HTTP 400); any other exception becomes its generic "unexpected error" message.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE
from mlflow.pyfunc import PythonModel

from model.config import TASKS, ConfigError
from model.data import DataError
from orchestrator.predict.predictor import (
    ID_COLUMN,
    PREDICTION_COLUMN,
    PROBABILITY_COLUMNS,
    SENTENCE1_COLUMN,
    SENTENCE2_COLUMN,
    TASK_COLUMN,
    Predictor,
    load_predictor,
)

# The model's `artifacts` key: the copy of the ensemble (or checkpoint) directory it serves.
PREDICTOR_ARTIFACT = "predictor"
# model_config key, overridable at load: mlflow.pyfunc.load_model(uri, model_config=...).
DEVICE_KEY = "device"
# One row per task: the input example logged with the model and shown in the MLflow UI.
INPUT_EXAMPLE = pd.DataFrame(
    {
        ID_COLUMN: ["sst-1", "para-1", "sts-1"],
        TASK_COLUMN: list(TASKS),
        SENTENCE1_COLUMN: [
            "A gripping, beautifully acted film.",
            "How do I learn to cook?",
            "A man is playing a guitar.",
        ],
        SENTENCE2_COLUMN: [None, "What is the best way to learn cooking?", "A man plays guitar."],
    }
)


class PredictorModel(PythonModel):
    """Loads the predictor from the `predictor` artifact once; predicts frames with it."""

    def __init__(self) -> None:
        self._predictor: Predictor | None = None

    def load_context(self, context: Any) -> None:
        device = (context.model_config or {}).get(DEVICE_KEY, "cpu")
        source = Path(context.artifacts[PREDICTOR_ARTIFACT])
        self._predictor = load_predictor(source, device=str(device))

    def predict(
        self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None
    ) -> pd.DataFrame:
        """Columns `task`, `sentence1`, `sentence2` (empty for sst), optional `id` in; `id`,
        `task`, `prediction` and the class probabilities out, rows in input order."""
        if self._predictor is None:
            raise RuntimeError("PredictorModel.predict before load_context")
        try:
            return self._predictor.predict_frame(model_input)
        except (ConfigError, DataError) as err:  # PredictError is a ConfigError
            message = str(err).splitlines()[0] if str(err) else type(err).__name__
            raise MlflowException(message, error_code=INVALID_PARAMETER_VALUE) from err


def output_column_names() -> list[str]:
    """Every column `predict` may return, in its order (a frame of one task has a subset)."""
    columns = [ID_COLUMN, TASK_COLUMN, PREDICTION_COLUMN]
    for task in TASKS:
        columns += [c for c in PROBABILITY_COLUMNS[task] if c not in columns]
    return columns
