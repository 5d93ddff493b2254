"""Package `__init__`s that name their public functions without importing them.

Each package's `__init__` lists what it exports and from which of its modules; the module is
imported on first use. So `import orchestrator.sweep.state` does not start Ray's import machinery
through `orchestrator.sweep`'s re-export of `run_plain_sweep`, and `orchestrator --help` stays
quick.
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Mapping, Sequence
from typing import Any


def exported_attribute(
    package: str, exports: Mapping[str, str], name: str, legacy: Sequence[str] = ()
) -> Any:
    """`package`'s export `name`, imported from the module `exports[name]` names (relative to
    the package); else a name the package's old flat module had, found in its `legacy` modules
    (pickles made before the packages move name classes that way); else AttributeError, as a
    module would raise."""
    module = exports.get(name)
    if module is not None:
        return getattr(importlib.import_module(f"{package}.{module}"), name)
    # `from package import submodule` asks for the attribute first: a submodule's name must
    # fail here so the import system imports it, instead of importing every legacy home.
    is_submodule = importlib.util.find_spec(f"{package}.{name}") is not None
    for old_home in () if is_submodule else legacy:
        found = getattr(importlib.import_module(f"{package}.{old_home}"), name, None)
        if found is not None:
            return found
    raise AttributeError(f"module {package!r} has no attribute {name!r}")
