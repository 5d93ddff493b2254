"""Faults for `bench/chaos.py`: run a CLI command in its own process group, hit it at a drawn
moment with SIGKILL (the whole group: the driver and Ray's local cluster), SIGTERM (the driver,
as a scheduler cancelling a job) or SIGINT (the group, as Ctrl-C in a terminal), wait until
every process of the group is gone, and run it again with `--resume` until it ends by itself.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SIGNALS = ("kill", "term", "int")
# What each fault's command must exit with, as a shell reports it (README: 130 for Ctrl-C,
# 143 for SIGTERM; a SIGKILL cannot be caught): Popen's -N is the shell's 128 + N.
EXPECTED_EXIT = {"kill": {-9, 137}, "term": {143, -15}, "int": {130, -2}}


@dataclass(frozen=True)
class Fault:
    at_s: float  # seconds after the command started
    kind: str  # kill / term / int


@dataclass
class Driven:
    """How a command fared under its faults."""

    faults: int = 0  # injected while it ran
    resumes: int = 0
    exits: list[int] = field(default_factory=list)
    bad_exits: list[str] = field(default_factory=list)


def draw_faults(
    rng: np.random.Generator, most: int, span_s: float, kinds: Sequence[str]
) -> list[Fault]:
    """1..most faults, each at a moment drawn uniformly over the first `span_s` seconds of the
    command it hits, of a kind drawn from `kinds`."""
    count = int(rng.integers(1, most + 1))
    return [Fault(float(rng.uniform(0.5, span_s)), str(rng.choice(list(kinds))))
            for _ in range(count)]  # fmt: skip


def command_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "RAY_ADDRESS")}
    env["PYTHONPATH"] = str(REPO)
    env.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    return env


def start(
    args: Sequence[str], log: Path, env: dict[str, str] | None = None
) -> subprocess.Popen[str]:
    """The command in a process group of its own, its output into `log` (a pipe nobody reads
    while it runs could fill and stall it)."""
    with log.open("a") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "orchestrator.cli", *args],
            cwd=REPO,
            env=env or command_env(),
            stdout=out,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
            # A harness started in the background inherits SIGINT ignored: restore it, as a
            # terminal's foreground job has it.
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )


def inject(proc: subprocess.Popen[str], kind: str) -> None:
    try:
        if kind == "kill":
            os.killpg(proc.pid, signal.SIGKILL)
        elif kind == "term":
            os.kill(proc.pid, signal.SIGTERM)
        else:
            os.killpg(proc.pid, signal.SIGINT)
    except ProcessLookupError:
        pass


def wait_until_gone(group: int, timeout_s: float = 90.0) -> bool:
    """Until no process of the group is left; SIGKILLs what is left after the timeout (False)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            os.killpg(group, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.1)
    os.killpg(group, signal.SIGKILL)
    return False


@contextmanager
def reaped(proc: subprocess.Popen[str]) -> Iterator[subprocess.Popen[str]]:
    """The command's whole process group is gone when the block ends, even when the harness
    itself fails (a leftover sweep would go on writing into the next history's directory)."""
    try:
        yield proc
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        wait_until_gone(proc.pid)


def drive(
    first: Sequence[str],
    resume: Sequence[str] | Callable[[], Sequence[str]],
    faults: Sequence[Fault],
    log: Path,
    *,
    before_fault: Callable[[], None] = lambda: None,
    timeout_s: float = 600.0,
) -> Driven:
    """Run `first`, hit it with each fault in turn (each resumed run with `resume`, or what it
    returns: a command killed before it saved anything is run again as it was), then let the
    last run end by itself. A fault whose moment comes after its run ended is not injected."""
    driven = Driven()
    args = first
    for fault in [*faults, None]:
        with reaped(start(args, log)) as proc:
            ended = _one_run(proc, fault, driven, log, timeout_s, before_fault)
        if ended:
            return driven
        args = resume() if callable(resume) else resume
        driven.resumes += 1
    return driven


def _one_run(
    proc: subprocess.Popen[str],
    fault: Fault | None,
    driven: Driven,
    log: Path,
    timeout_s: float,
    before_fault: Callable[[], None],
) -> bool:
    """One run of the command, hit by `fault` if it still runs then; whether it ended by itself
    (else it is to be resumed)."""
    if fault is not None and _runs_past(proc, fault.at_s):
        before_fault()
        inject(proc, fault.kind)
        code = proc.wait(timeout=timeout_s)
        if not wait_until_gone(proc.pid):
            driven.bad_exits.append(f"processes left after {fault.kind}")
        driven.faults += 1
        driven.exits.append(code)
        if code not in EXPECTED_EXIT[fault.kind] and code != 0:
            driven.bad_exits.append(f"exit {code} after {fault.kind} at {fault.at_s:.1f} s")
        return code == 0  # 0: it ended before the signal took hold
    proc.wait(timeout=timeout_s)
    wait_until_gone(proc.pid)
    driven.exits.append(proc.returncode)
    if proc.returncode != 0:
        tail = log.read_text()[-400:]
        driven.bad_exits.append(f"exit {proc.returncode} without a fault: {tail}")
    return True


def _runs_past(proc: subprocess.Popen[str], at_s: float) -> bool:
    """Whether `proc` is still running `at_s` seconds after it started."""
    deadline = time.monotonic() + at_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        time.sleep(0.05)
    return proc.poll() is None
