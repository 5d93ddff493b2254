"""model/ stays pure PyTorch: no module in it imports the orchestrator, ray, optuna or mlflow."""

from __future__ import annotations

import ast
from pathlib import Path

FORBIDDEN = {"orchestrator", "ray", "optuna", "mlflow"}
MODEL_DIR = Path(__file__).resolve().parents[2] / "model"


def imported_roots(path: Path) -> set[str]:
    roots = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            roots.add(node.module.split(".")[0])
    return roots


def test_model_package_imports_no_framework():
    offenders = {
        f"{path.name}: {sorted(imported_roots(path) & FORBIDDEN)}"
        for path in sorted(MODEL_DIR.glob("*.py"))
        if imported_roots(path) & FORBIDDEN
    }
    assert not offenders
    assert len(list(MODEL_DIR.glob("*.py"))) > 5  # the walk really saw the package
