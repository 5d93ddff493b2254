"""Package `__init__`s that name their public functions without importing them.

Each package's `__init__` lists what it exports and from which of its modules; the module is
imported on first use. So `import orchestrator.sweep.state` does not start Ray's import machinery
through `orchestrator.sweep`'s re-export of `run_plain_sweep`, and `orchestrator --help` stays
quick.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any


def exported_attribute(package: str, exports: Mapping[str, str], name: str) -> Any:
    """`package`'s export `name`, imported from the module `exports[name]` names (relative to
    the package); AttributeError for a name it does not export, as a module would raise."""
    module = exports.get(name)
    if module is None:
        raise AttributeError(f"module {package!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{package}.{module}"), name)
