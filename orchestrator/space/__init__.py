"""The search-space YAML: what a sweep or study varies, optimises and must satisfy.

`load_space(path)` / `parse_space(mapping)` give a validated, frozen `SearchSpace`; every error
names the file and the key. Modules:
- `schema`: the top-level keys and `SearchSpace` (name, base config, params, sampler, scheduler).
- `params`: one parameter: a dotted config key's distribution and its `when` conditions.
- `guards`: settings a sampled config would leave inert (warned, as `train` refuses them).
- `objective_keys`: `metric:`, `mode:`, `objectives:` and `constraints:` as objectives.
- `arms`: an ablation study's `arms:` × `seeds:`, one arm the baseline.
- `lineage`: `warm_start:` (a sweep's earlier sweep) and what must match between the two.
- `retention`: `retention: {keep_best: K}`, which finished trials keep their weights.

    from orchestrator.space import load_space
    space = load_space("search_spaces/smart.yaml")
    [p.key for p in space.searched]
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from orchestrator.lazy_exports import exported_attribute

if TYPE_CHECKING:
    from orchestrator.space.arms import StudySpec
    from orchestrator.space.schema import SearchSpace, SpaceError, load_space, parse_space

# Each public name and the module it lives in, imported on first use (lazy_exports.py).
EXPORTS = {
    "SearchSpace": "schema",
    "SpaceError": "schema",
    "StudySpec": "arms",
    "load_space": "schema",
    "parse_space": "schema",
}
__all__ = [
    "SearchSpace",
    "SpaceError",
    "StudySpec",
    "load_space",
    "parse_space",
]


# Where the classes of the old flat module `orchestrator.space` live now (for old pickles).
LEGACY = ('schema',)


def __getattr__(name: str) -> Any:
    return exported_attribute(__name__, EXPORTS, name, LEGACY)
