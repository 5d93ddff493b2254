"""Prediction with a trained checkpoint, an ensemble or a registered model.

Modules:
- `predictor`: `load_predictor(dir)` and `Predictor.predict_frame`, what `predict`, `ensemble`'s
  model and `mlflow models serve` answer with.
- `inputs`: what `orchestrator predict` reads: a CS224N CSV of any task, or plain text.
- `outputs`: what it writes: a prediction CSV or a leaderboard file, atomically.

    from orchestrator.predict import load_predictor
    load_predictor(Path("results/quickstart/ensemble")).predict_frame(frame)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from orchestrator.lazy_exports import exported_attribute

if TYPE_CHECKING:
    from orchestrator.predict.predictor import PredictError, Predictor, load_predictor

# Each public name and the module it lives in, imported on first use (lazy_exports.py).
EXPORTS = {
    "PredictError": "predictor",
    "Predictor": "predictor",
    "load_predictor": "predictor",
}
__all__ = [
    "PredictError",
    "Predictor",
    "load_predictor",
]


def __getattr__(name: str) -> Any:
    return exported_attribute(__name__, EXPORTS, name)
