"""What proposes a sweep's trials, as the Ray adapter (`ray_tune.StudySearcher`) sees it.

Two kinds: the Optuna study of a search (`search.SweepStudy`) and `FixedTrials`, a list of
configs run in order: an ablation study's confirm phase, where every arm runs its chosen config
on every seed and nothing is searched.
"""

from __future__ import annotations

import pickle
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from orchestrator.space.schema import SearchSpace


class TrialProposer(Protocol):
    """Asked for each new trial's config, told each epoch's value and each trial's end, and
    saved / restored with Ray's experiment state."""

    space: SearchSpace

    def ask(self, trial_id: str) -> dict[str, Any] | None: ...

    def report(self, trial_id: str, value: float, step: int) -> None: ...

    def tell(
        self, trial_id: str, last: Mapping[str, Any] | None, *, step: int, error: bool = False
    ) -> Any: ...

    def save(self, path: str | Path) -> None: ...

    def restore(self, path: str | Path) -> None: ...


class FixedTrials:
    """Proposes `configs` in order, one per trial id (the same one again if asked twice)."""

    def __init__(self, space: SearchSpace, configs: Sequence[Mapping[str, Any]]) -> None:
        self.space = space
        self.configs = [dict(c) for c in configs]
        self.asked: dict[str, int] = {}  # trial id -> index into configs

    def ask(self, trial_id: str) -> dict[str, Any] | None:
        if trial_id not in self.asked:
            if len(self.asked) >= len(self.configs):
                return None  # every config is running or ran
            self.asked[trial_id] = len(self.asked)
        return dict(self.configs[self.asked[trial_id]])

    def report(self, trial_id: str, value: float, step: int) -> None:
        """Nothing to learn from: the configs are fixed."""

    def tell(
        self, trial_id: str, last: Mapping[str, Any] | None, *, step: int, error: bool = False
    ) -> None:
        """Nothing to learn from: the configs are fixed."""

    def save(self, path: str | Path) -> None:
        Path(path).write_bytes(pickle.dumps({"configs": self.configs, "asked": self.asked}))

    def restore(self, path: str | Path) -> None:
        state = pickle.loads(Path(path).read_bytes())
        self.configs, self.asked = list(state["configs"]), dict(state["asked"])
