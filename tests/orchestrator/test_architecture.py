"""The shape of the code: each framework behind its adapter, no import cycles, small modules.

Imports are read from the source (every `import` in a module, function-level ones included), so a
lazy import that dodges a cycle or smuggles a framework in counts the same as a top-level one.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("model", "orchestrator")
# Which modules may import each framework (paths relative to the repository root; a trailing `/`
# is a whole package). Their APIs move between releases: one place to fix each.
FRAMEWORK_HOMES: dict[str, tuple[str, ...]] = {
    "ray": ("orchestrator/ray_tune.py", "orchestrator/trainable.py"),
    "optuna": (
        "orchestrator/search.py",
        "orchestrator/search_history.py",
        "orchestrator/importance.py",
    ),
    "mlflow": ("orchestrator/tracking/",),
    "click": ("orchestrator/cli/",),
}
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60


def project_modules() -> dict[str, Path]:
    """Dotted module name -> file, for every module of model/ and orchestrator/."""
    modules = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            modules[".".join(parts)] = path
    return modules


def imported_names(path: Path) -> set[str]:
    """Every absolute module name `path` imports anywhere (`from a.b import c`: a.b and a.b.c)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def import_graph(modules: Mapping[str, Path]) -> dict[str, set[str]]:
    """Project module -> the project modules it imports."""
    return {name: imported_names(path) & set(modules) for name, path in modules.items()}


def find_cycle(graph: Mapping[str, set[str]]) -> list[str] | None:
    """One import cycle as a path `[a, b, ..., a]`, or None (depth-first search with colours)."""
    state: dict[str, str] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        state[node] = "done"
        stack.pop()
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_find_cycle_sees_a_cycle_and_only_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def test_no_import_cycle_between_project_modules():
    modules = project_modules()
    assert "orchestrator.cli" in modules and "model.train" in modules  # the walk saw both packages
    assert find_cycle(import_graph(modules)) is None


@pytest.mark.parametrize("framework", sorted(FRAMEWORK_HOMES))
def test_each_framework_is_imported_only_in_its_adapter(framework):
    homes = FRAMEWORK_HOMES[framework]
    importers = {
        str(path.relative_to(ROOT))
        for path in project_modules().values()
        if any(n == framework or n.startswith(f"{framework}.") for n in imported_names(path))
    }
    outside = sorted(p for p in importers if not any(p == h or p.startswith(h) for h in homes))
    assert not outside, f"{framework} imported outside {homes}: {outside}"
    assert importers, f"no module imports {framework}: is FRAMEWORK_HOMES stale?"


def test_modules_and_functions_are_small():
    too_long = []
    for path in project_modules().values():
        source = path.read_text()
        where = path.relative_to(ROOT)
        if len(source.splitlines()) > MAX_MODULE_LINES:
            too_long.append(f"{where}: {len(source.splitlines())} lines")
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1  # type: ignore[operator]
                if length > MAX_FUNCTION_LINES:
                    too_long.append(f"{where}:{node.lineno} {node.name}: {length} lines")
    assert not too_long


@pytest.mark.parametrize(
    ("module", "absent"),
    [
        ("orchestrator.results", ("ray", "optuna")),
        ("orchestrator.cli", ("ray", "optuna", "mlflow")),
        ("orchestrator.space", ("ray", "optuna", "mlflow")),
    ],
)
def test_importing_a_command_module_loads_no_framework_it_does_not_use(module, absent):
    """`orchestrator report` must not start Ray's import machinery to write a table, and
    `orchestrator --help` must stay fast: checked in a fresh interpreter."""
    code = f"import sys, {module}; print(sorted(m for m in {absent!r} if m in sys.modules))"
    loaded = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.strip()
    assert loaded == "[]", f"importing {module} loaded {loaded}"
