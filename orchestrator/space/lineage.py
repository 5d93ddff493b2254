"""How a sweep relates to an earlier one: `warm_start: {sweep: NAME, top: K}` in a space file, and
the rules for carrying an earlier sweep's trials into a study (`--extend`, warm start).

A parameter's distribution is compared as a plain spec (`{"kind": "float", "low": ..., "high": ...,
"log": ..., "step": ...}`, `{"kind": "choice", "choices": [...]}`), the form `search/history.py`
gives both the space's parameters and the distributions an Optuna study stored. An extension must
run the very sweep it extends (every recorded key equal: objective, scheduler, parameters, base
config); a warm start only needs each searched parameter to be of the same kind and scale there,
as its trials are told to the new study under the new distributions (those outside them are not).
Nothing here imports a framework.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from orchestrator.space.params import Fail

WARM_START_KEYS = ("sweep", "top")
DEFAULT_WARM_START_TOP = 1
Spec = Mapping[str, Any]


@dataclass(frozen=True)
class WarmStartSpec:
    """Start from sweep `sweep` (in the same results directory): its `top` best configs run first,
    and its finished trials are told to the new study."""

    sweep: str
    top: int = DEFAULT_WARM_START_TOP


def parse_warm_start(raw: Any, fail: Fail) -> WarmStartSpec | None:
    """`warm_start: {sweep: NAME, top: K}` (K >= 0; 0 tells the trials and enqueues none)."""
    if raw is None:
        return None
    if not isinstance(raw, Mapping):
        raise fail("warm_start", "expected a mapping like {sweep: NAME, top: 3}")
    for key in raw:
        if key not in WARM_START_KEYS:
            raise fail(f"warm_start.{key}", f"unknown key (known: {', '.join(WARM_START_KEYS)})")
    sweep = raw.get("sweep")
    if not isinstance(sweep, str) or not sweep:
        raise fail("warm_start.sweep", f"expected the name of an earlier sweep, got {sweep!r}")
    top = raw.get("top", DEFAULT_WARM_START_TOP)
    if isinstance(top, bool) or not isinstance(top, int) or top < 0:
        raise fail("warm_start.top", f"expected an integer >= 0, got {top!r}")
    return WarmStartSpec(sweep=sweep, top=top)


def describe_spec(spec: Spec | None) -> str:
    """A spec as a space file would write it: `{float: [1e-05, 0.001], log: true}`."""
    if spec is None:
        return "absent"
    kind = spec.get("kind")
    if kind == "choice":
        return f"{{choice: {json.dumps(list(spec.get('choices', ())))}}}"
    if kind in ("float", "int"):
        extras = "".join(
            f", {key}: {json.dumps(spec[key])}"
            for key in ("log", "step", "when")
            if spec.get(key) not in (None, False, [], 1 if kind == "int" else None)
        )
        return f"{{{kind}: [{spec.get('low')}, {spec.get('high')}]{extras}}}"
    return json.dumps(spec, default=str)


def normalised(value: Any) -> Any:
    """`value` as it reads back from JSON (tuples as lists), so records compare equal."""
    return json.loads(json.dumps(value, default=str))


def record_differences(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(key, what changed) for every key of two sweep records (`history.sweep_record`)
    whose values differ, in the new record's order, then keys only the old one has."""
    out = []
    old, new = normalised(old), normalised(new)
    for key in [*new, *(k for k in old if k not in new)]:
        was, now = old.get(key), new.get(key)
        if was != now:
            out.append((key, f"{_describe(now)} here, {_describe(was)} in the sweep"))
    return out


def _describe(value: Any) -> str:
    if isinstance(value, Mapping) and "kind" in value:
        return describe_spec(value)
    return "absent" if value is None else json.dumps(value, default=str)


def distribution_differences(
    old: Mapping[str, Spec], new: Mapping[str, Spec]
) -> list[tuple[str, str]]:
    """(space.KEY, what changed) for each parameter whose distribution the study stored differs
    from this space's (type, range, scale, step or choices): what an extension cannot take."""
    out = []
    for key, spec in new.items():
        was = old.get(key)
        if was is not None and normalised(was) != normalised(spec):
            change = f"{describe_spec(spec)} here, {describe_spec(was)} in the sweep's study"
            out.append((f"space.{key}", change))
    return out


def warm_start_problems(old: Mapping[str, Spec], new: Mapping[str, Spec]) -> list[str]:
    """Why the earlier sweep's trials cannot be told to a study of this space: each searched
    parameter either side lacks, or whose kind (float / int / choice) or log scale differs.
    Ranges, steps and choices may differ: trials outside the new ones are just not told."""
    problems = []
    for key, spec in new.items():
        was = old.get(key)
        if was is None:
            problems.append(f"space.{key} (not searched there)")
        elif was.get("kind") != spec.get("kind"):
            problems.append(f"space.{key} ({spec.get('kind')} here, {was.get('kind')} there)")
        elif bool(was.get("log")) != bool(spec.get("log")):
            scale = "log" if spec.get("log") else "linear"
            problems.append(f"space.{key} ({scale} scale here, not there)")
    problems += [f"space.{key} (searched there, not here)" for key in old if key not in new]
    return problems
