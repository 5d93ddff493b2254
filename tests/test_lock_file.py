"""requirements.lock keeps up with pyproject.toml: every package that `dependencies` or the `dev`
extra names is pinned there, each pin within pyproject's range, with no local build label (`+cpu`
is on no public index), and the dev tools stay out of what a user installs. Reads two files only;
a failure here means: run `make lock`.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

if sys.version_info >= (3, 11):
    import tomllib
else:
    tomllib = pytest.importorskip("tomli")

ROOT = Path(__file__).resolve().parents[1]
LOCK = ROOT / "requirements.lock"
PIN = re.compile(r"^(?P<name>[A-Za-z0-9._-]+)==(?P<version>[^\s;]+)")
DEV_TOOLS = ("pytest", "ruff", "mypy")


def lock_pins(text: str) -> dict[str, str]:
    """The lock's `name==version` lines by normalized name; comments and `# via` lines skipped."""
    pins: dict[str, str] = {}
    for line in text.splitlines():
        match = PIN.match(line)
        if match:
            pins[canonicalize_name(match["name"])] = match["version"]
        elif line.strip() and not line.lstrip().startswith("#"):
            raise ValueError(f"requirements.lock: not a `name==version` line: {line!r}")
    return pins


def lock_problems(requirements: list[str], pins: dict[str, str]) -> list[str]:
    """One line for each requirement that the pins leave out or pin outside its range."""
    problems = []
    for text in requirements:
        requirement = Requirement(text)
        if requirement.marker is not None and not requirement.marker.evaluate():
            continue  # not for this Python/platform, so not in a lock resolved here
        pinned = pins.get(canonicalize_name(requirement.name))
        if pinned is None:
            problems.append(f"{requirement.name}: not in requirements.lock")
        elif not requirement.specifier.contains(Version(pinned), prereleases=True):
            problems.append(f"{requirement.name}=={pinned} is outside {text!r}")
    return problems


def project() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def test_the_check_catches_a_missing_package_and_an_out_of_range_pin():
    requirements = ["torch>=2.4,<2.14", "ray[tune]>=2.40,<2.61", "click>=8.1,<9"]
    pins = {"torch": "2.14.0", "ray": "2.60.0"}
    assert lock_problems(requirements, pins) == [
        "torch==2.14.0 is outside 'torch>=2.4,<2.14'",
        "click: not in requirements.lock",
    ]
    assert lock_problems(requirements, {**pins, "torch": "2.13.0", "click": "8.1.0"}) == []
    # A requirement whose marker excludes this interpreter needs no pin.
    assert lock_problems(['tomli>=2; python_version < "3"'], {}) == []
    assert lock_pins("# header\nRay==2.60.0\n    # via x\n") == {"ray": "2.60.0"}
    with pytest.raises(ValueError, match="not a `name==version` line"):
        lock_pins("torch>=2.4\n")


def test_the_lock_pins_every_dependency_and_dev_tool_within_range():
    meta = project()
    requirements = [*meta["dependencies"], *meta["optional-dependencies"]["dev"]]
    assert lock_problems(requirements, lock_pins(LOCK.read_text())) == []


def test_the_lock_has_no_local_build_labels():
    labelled = [f"{name}=={v}" for name, v in lock_pins(LOCK.read_text()).items() if "+" in v]
    assert labelled == []


def test_dev_tools_are_in_the_dev_extra_not_in_what_a_user_installs():
    meta = project()
    user = {canonicalize_name(Requirement(r).name) for r in meta["dependencies"]}
    dev = {canonicalize_name(Requirement(r).name) for r in meta["optional-dependencies"]["dev"]}
    assert set(DEV_TOOLS) <= dev
    assert not set(DEV_TOOLS) & user
