"""Shared fixtures: where the CS224N data lives and a tiny model config that trains in seconds."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]


def find_data_dir() -> Path | None:
    """$ORCHESTRATOR_DATA_DIR, else the product's default `data/` (what `data fetch` fills)."""
    candidates = [os.environ.get("ORCHESTRATOR_DATA_DIR"), REPO / "data"]
    for candidate in candidates:
        if candidate and (Path(candidate) / "ids-sst-dev.csv").is_file():
            return Path(candidate)
    return None


@pytest.fixture(scope="session")
def data_dir() -> Path:
    found = find_data_dir()
    if found is None:
        pytest.skip(
            "CS224N data not found: run `orchestrator data fetch` or set ORCHESTRATOR_DATA_DIR"
        )
    return found


@pytest.fixture
def tiny_config_dict() -> dict[str, Any]:
    """configs/tiny.yaml as a mapping: a 2-layer, 32-wide random BERT on 64 examples per task."""
    return yaml.safe_load((REPO / "configs" / "tiny.yaml").read_text())
