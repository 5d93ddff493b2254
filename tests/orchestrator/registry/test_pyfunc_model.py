"""The pyfunc model's answer to rows it cannot predict: the project's one-line message as an
MlflowException with INVALID_PARAMETER_VALUE, which MLflow's scoring server (`mlflow models
serve`) returns as the HTTP 400 answer's message, where any other exception becomes MLflow's
generic "unexpected error" with the project's message only in the stack trace. Checked on the
pyfunc's predict and on the scoring server's own `invocations` handler, without serving."""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any

import pandas as pd
import pytest
from mlflow.exceptions import MlflowException
from mlflow.pyfunc import scoring_server

from orchestrator.registry.pyfunc_model import PREDICTOR_ARTIFACT, PredictorModel
from tests.orchestrator.sweep_store import save_untrained_checkpoint, tiny_config

UNKNOWN_TASK = "row 2: unknown task 'nli' (expected one of sst, para, sts)"


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> PredictorModel:
    checkpoint = save_untrained_checkpoint(
        tmp_path_factory.mktemp("pyfunc") / "best", tiny_config(seed=0)
    )
    loaded = PredictorModel()
    loaded.load_context(
        SimpleNamespace(artifacts={PREDICTOR_ARTIFACT: str(checkpoint)}, model_config=None)
    )
    return loaded


def rows(*tasks: str) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "task": list(tasks),
            "sentence1": ["A fine film ."] * len(tasks),
            "sentence2": [None if t == "sst" else "A good film ." for t in tasks],
        }
    )


def test_rows_it_can_predict_are_predicted(model: PredictorModel) -> None:
    out = model.predict(None, rows("sst", "sts"))
    assert list(out["task"]) == ["sst", "sts"] and list(out["id"]) == ["1", "2"]


def test_an_unknown_task_is_an_invalid_parameter_with_the_projects_message(
    model: PredictorModel,
) -> None:
    with pytest.raises(MlflowException) as caught:
        model.predict(None, rows("sst", "nli"))
    assert caught.value.message == UNKNOWN_TASK
    assert caught.value.error_code == "INVALID_PARAMETER_VALUE"
    assert caught.value.get_http_status_code() == 400


class Served:
    """What the scoring server calls: PyFuncModel.predict(data, params=...)."""

    def __init__(self, model: PredictorModel) -> None:
        self.model = model

    def predict(self, data: pd.DataFrame, params: dict[str, Any] | None = None) -> pd.DataFrame:
        return self.model.predict(None, data, params)


def test_the_scoring_server_answers_400_with_the_projects_message(model: PredictorModel) -> None:
    body = rows("sst", "nli").to_csv(index=False)
    with pytest.raises(MlflowException) as caught:
        scoring_server.invocations(body, "text/csv", Served(model), None)
    answer = json.loads(caught.value.serialize_as_json())  # the HTTP answer's body
    assert caught.value.get_http_status_code() == 400
    assert answer["error_code"] == "INVALID_PARAMETER_VALUE"
    assert answer["message"].endswith(f"Error: {UNKNOWN_TASK}")
    assert "unexpected error" not in answer["message"]
    good = scoring_server.invocations(rows("sst").to_csv(index=False), "text/csv",
                                      Served(model), None)  # fmt: skip
    assert good.status == 200 and json.loads(good.response)["predictions"][0]["task"] == "sst"
