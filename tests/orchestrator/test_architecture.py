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
    "ray": (
        "orchestrator/sweep/ray_cluster.py",
        "orchestrator/sweep/ray_tune.py",
        "orchestrator/sweep/trainable.py",
    ),
    "optuna": ("orchestrator/search/",),
    "mlflow": ("orchestrator/tracking/", "orchestrator/registry/"),
    "click": ("orchestrator/cli/",),
}
# The orchestrator's layers, lowest first: a package may import its own layer's packages and
# those below, never one above. "root" is the modules at orchestrator/'s top (contract, config,
# objectives, ...); "api" is `orchestrator/__init__.py` and `orchestrator/api.py`, the notebook
# facade over everything.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("root",),
    ("tracking",),
    ("space", "ensemble"),
    ("search", "predict"),
    ("sweep", "registry"),
    ("ablation",),
    ("report",),
    ("api", "cli"),
)
MAX_ROOT_MODULES = 10
MAX_MODULE_LINES = 400
KNOWN_MODULES = {
    ".".join(p.relative_to(ROOT).with_suffix("").parts)
    for package in PACKAGES
    for p in (ROOT / package).rglob("*.py")
}
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
            # `from pkg import mod` imports pkg.mod; `from mod import name` imports mod.
            submodules = {f"{node.module}.{alias.name}" for alias in node.names}
            names.update(submodules)
            if not submodules <= KNOWN_MODULES:
                names.add(node.module)
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
        ("orchestrator.report.sweep_report", ("ray", "optuna")),
        ("orchestrator.cli", ("ray", "optuna", "mlflow")),
        ("orchestrator.space.schema", ("ray", "optuna", "mlflow")),
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


def package_of(module: str) -> str:
    """The layer name of an orchestrator module: its subpackage, "root" or "api"."""
    parts = module.split(".")
    if parts == ["orchestrator"] or parts[1] == "api":
        return "api"
    return parts[1] if (ROOT / "orchestrator" / parts[1]).is_dir() else "root"


def layer_index() -> dict[str, int]:
    return {package: i for i, layer in enumerate(LAYERS) for package in layer}


def upward_imports(graph: Mapping[str, set[str]]) -> list[str]:
    """Every `a imports b` between orchestrator modules where b's package sits above a's."""
    rank = layer_index()
    found = []
    for module, imported in sorted(graph.items()):
        if not module.startswith("orchestrator"):
            continue
        for target in sorted(t for t in imported if t.startswith("orchestrator")):
            if rank[package_of(target)] > rank[package_of(module)]:
                found.append(f"{module} ({package_of(module)}) imports {target}")
    return found


def test_upward_imports_are_seen():
    graph = {
        "orchestrator.tracking.store": {"orchestrator.report.plots"},
        "orchestrator.report.plots": {"orchestrator.contract"},
    }
    assert upward_imports(graph) == [
        "orchestrator.tracking.store (tracking) imports orchestrator.report.plots"
    ]


def test_every_package_has_a_layer():
    assert set(orchestrator_packages()) == set(layer_index()) - {"root", "api"}


def test_no_package_imports_one_above_it():
    assert upward_imports(import_graph(project_modules())) == []


def test_the_root_holds_few_modules():
    root = sorted(p.name for p in (ROOT / "orchestrator").glob("*.py"))
    assert len(root) <= MAX_ROOT_MODULES, root


def orchestrator_packages() -> list[str]:
    folders = (ROOT / "orchestrator").iterdir()
    return sorted(p.name for p in folders if (p / "__init__.py").is_file())


@pytest.mark.parametrize("package", orchestrator_packages())
def test_each_package_docstring_lists_its_modules(package):
    """A newcomer opening a package's `__init__` reads its idea and every module in it."""
    init = ROOT / "orchestrator" / package / "__init__.py"
    doc = ast.get_docstring(ast.parse(init.read_text())) or ""
    modules = sorted(p.stem for p in init.parent.glob("*.py") if p.stem != "__init__")
    missing = [m for m in modules if f"{m}" not in doc]
    assert len(doc.splitlines()) >= 3 and not missing, f"{init}: docstring lacks {missing}"


def test_each_public_function_name_is_defined_once():
    """Two public functions of one name in two modules read as one idea written twice."""
    where: dict[str, list[str]] = {}
    for name, path in project_modules().items():
        if not name.startswith("orchestrator"):
            continue
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, (ast.FunctionDef, ast.ClassDef)) and not node.name.startswith("_"):
                where.setdefault(node.name, []).append(name)
    twice = {n: m for n, m in where.items() if len(m) > 1 and n not in ("main",)}
    assert not twice
