"""The `storage` scenario of `bench/chaos.py`: the results directory fills up, or turns
read-only, while a sweep runs.

The results directory is a tmpfs the harness mounts (root only; elsewhere the scenario says why
it cannot run). A history draws one fault: `full`, a tmpfs of 14-40 MB that the sweep's 4
trials (~5 MB a checkpoint) outgrow, or `read-only`, a read-only bind mount put over the
directory at a drawn moment (files already open stay writable, as on a remount that waited for
them). The sweep must then end with one `Error:` line naming the directory and exit 1 (or end
normally, if it finished first), the stores must pass SQLite's integrity check, and once the
space is back (the tmpfs grown, the bind mount gone) `--resume` must finish it with every
invariant of `chaos_checks.py` holding.
"""

from __future__ import annotations

import sqlite3
import subprocess
import time
from pathlib import Path

import numpy as np
import yaml

from bench.chaos_checks import Findings, check_optuna, check_store, ray_trials
from bench.chaos_faults import Driven, drive, reaped, start


def can_mount() -> str | None:
    """Why this machine cannot run the scenario, or None."""
    probe = Path("/tmp/chaos-mount-probe")
    probe.mkdir(exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(probe)],
                          capture_output=True, text=True)  # fmt: skip
    if done.returncode != 0:
        return f"cannot mount a tmpfs here ({done.stderr.strip() or 'not root'})"
    subprocess.run(["umount", str(probe)], check=True)
    return None


def mount(*args: str) -> None:
    subprocess.run(["mount", *args], check=True, capture_output=True)


def integrity(database: Path) -> str | None:
    if not database.is_file():
        return None
    with sqlite3.connect(f"file:{database}?mode=ro", uri=True) as db:
        answer = db.execute("PRAGMA integrity_check").fetchone()[0]
    return None if answer == "ok" else f"{database.name}: {answer}"


def storage_history(rng: np.random.Generator, work: Path, space: dict) -> tuple[Driven, Findings]:
    results = work / "results"
    results.mkdir(parents=True, exist_ok=True)
    space_file = work / "space.yaml"
    space_file.write_text(yaml.safe_dump(space, sort_keys=False))
    full = bool(rng.integers(0, 2))
    size_mb, at_s = int(rng.integers(14, 41)), float(rng.uniform(8.0, 20.0))
    mount("-t", "tmpfs", "-o", f"size={size_mb if full else 400}m", "tmpfs", str(results))
    args = ["sweep", str(space_file), "--results-dir", str(results)]
    driven, findings = Driven(), Findings()
    try:
        with reaped(start(args, work / "driver.log")) as proc:
            if not full:
                deadline = time.monotonic() + at_s
                while time.monotonic() < deadline and proc.poll() is None:
                    time.sleep(0.05)
                if proc.poll() is None:
                    mount("--bind", str(results), str(results))
                    mount("-o", "remount,bind,ro", str(results))
            proc.wait(timeout=600)
        driven.exits.append(proc.returncode)
        findings.add(judge_fault_exit(proc.returncode, work / "driver.log", results, full))
        driven.faults += int(proc.returncode != 0)
        if not full and proc.returncode != 0:
            subprocess.run(["umount", str(results)], check=True)  # the bind mount
        elif full:
            mount("-o", "remount,size=400m", str(results))
        if proc.returncode != 0:
            resumed = drive([*args, "--resume"], [], [], work / "resume.log")
            driven.resumes += 1
            driven.exits += resumed.exits
            findings.violations += resumed.bad_exits
        root = results / space["name"]
        for db in (results / "mlflow.db", root / "optuna.db"):
            broken = integrity(db)
            if broken:
                findings.half_written.append(broken)
        uri = f"sqlite:///{results / 'mlflow.db'}"
        findings.add(check_store(root, uri, space["name"], 4, {}))
        findings.add(check_optuna(f"sqlite:///{root / 'optuna.db'}", ray_trials(root)))
    finally:
        unmount_all(results)
    return driven, findings


def unmount_all(path: Path) -> None:
    """Every mount on `path` (the bind mount, then the tmpfs); one Ray's exiting workers still
    hold is detached lazily."""
    for _ in range(4):
        mounted = subprocess.run(["mountpoint", "-q", str(path)]).returncode == 0
        if not mounted:
            return
        if subprocess.run(["umount", str(path)], capture_output=True).returncode != 0:
            time.sleep(2)
            subprocess.run(["umount", "-l", str(path)], capture_output=True)


def judge_fault_exit(code: int, log: Path, results: Path, full: bool) -> Findings:
    """A storage fault must end the sweep with exit 1 and one `Error: <results>...` line that
    says to --resume (its last `Error:` line: Ray may log after it); a sweep that finished
    before the fault exits 0."""
    found = Findings()
    if code == 0:
        return found
    errors = [line for line in log.read_text(errors="replace").splitlines()
              if line.startswith("Error: ")]  # fmt: skip
    line = errors[-1] if errors else ""
    what = "full" if full else "read-only"
    named = line.startswith((f"Error: {results}", f"Error: {results.resolve()}"))
    if code != 1 or len(errors) != 1 or not named or "--resume" not in line:
        found.violations.append(f"{what}: exit {code}, Error lines {errors[-2:]!r}")
    return found
