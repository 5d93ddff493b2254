"""The quickstart's model as a checkpoint, for the benches that need one and no training.

`configs/quickstart.yaml`'s config (the packaged all-MiniLM-L6-v2 encoder, mean pooling, the
cosine_mix pair heads, max length 64, eval batches of 256) with its heads untrained: the encoder
weights are exactly the published ones, so a comparison with another library loading the same
files compares the same weights, and speed does not depend on what the heads learned.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from model.checkpoint import save_checkpoint  # noqa: E402
from model.config import TrainConfig, build_config, merge  # noqa: E402
from model.evaluate import OVERALL  # noqa: E402
from model.train import build_model, seed_everything  # noqa: E402

QUICKSTART = REPO / "configs" / "quickstart.yaml"


def quickstart_config(precision: str = "fp32", **model: Any) -> TrainConfig:
    """The quickstart config on CPU in `precision` (`bf16` autocasts on CPU too), with `model`
    keys merged over its `model` section."""
    raw = yaml.safe_load(QUICKSTART.read_text())
    return build_config(
        TrainConfig, merge(raw, {"device": "cpu", "precision": precision, "model": model})
    )


def quickstart_checkpoint(target: Path, precision: str = "fp32", **model: Any) -> Path:
    """`quickstart_config(precision, **model)` saved untrained as a best checkpoint at `target`;
    the same seed gives the same head weights whatever the precision."""
    cfg = quickstart_config(precision, **model)
    seed_everything(cfg.seed)
    network, model_dir = build_model(cfg)
    return save_checkpoint(target, network, cfg, model_dir, {OVERALL: 0.0})
