"""MLflow models: an ensemble or one checkpoint as a registered pyfunc model.

Modules:
- `models`: log the model (weights, tokenizers, code, signature), register a version, download
  one back for `predict --model`.
- `pyfunc_model`: `PredictorModel`, the class `mlflow.pyfunc` loads and `mlflow models serve`
  runs.
- `checkpoint`: `orchestrator register`: one trial's checkpoint as a new version.

    from orchestrator.registry import register_model
    register_model(uri, run_id, Path("results/quickstart/ensemble"), "minbert-quickstart")
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from orchestrator.lazy_exports import exported_attribute

if TYPE_CHECKING:
    from orchestrator.registry.models import register_model
    from orchestrator.registry.pyfunc_model import PredictorModel

# Each public name and the module it lives in, imported on first use (lazy_exports.py).
EXPORTS = {
    "PredictorModel": "pyfunc_model",
    "register_model": "models",
}
__all__ = [
    "PredictorModel",
    "register_model",
]


def __getattr__(name: str) -> Any:
    return exported_attribute(__name__, EXPORTS, name)
