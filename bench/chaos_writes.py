"""The `trial` and `writes` scenarios of `bench/chaos.py`.

`trial`: SIGKILL a sweep's running trial processes (Ray's actors in the driver's process group)
at drawn moments; Ray retries each from its last checkpoint and the sweep must end by itself.

`writes`: a finished tiny sweep (made once per run of the harness, shared by its histories), then
per history each of `report`, `ensemble --top 2` and `predict --out` is SIGKILLed at a drawn
moment and its files compared with what was there before: each must be the old complete file,
a new complete one (byte-equal to what a clean run writes next, or for files that carry a run id
or a time, one that parses to its end), or absent where there was none. Files whose name starts
with "." are a writer's temporary files, which readers never open; they are counted apart.
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from bench.chaos_checks import Findings
from bench.chaos_faults import Driven, drive, reaped, start

DATA = Path(os.environ.get("ORCHESTRATOR_DATA_DIR", "data"))


def trial_pids(driver: int) -> list[int]:
    """Ray's trial actors (process title `ray::ImplicitFunc...`) among the driver's descendants
    (Ray starts them in process groups of their own, under its raylet), from /proc."""
    parents: dict[int, int] = {}
    titles: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
            titles[int(entry.name)] = (entry / "cmdline").read_bytes().decode(errors="replace")
        except (FileNotFoundError, ProcessLookupError, PermissionError, IndexError):
            continue

    def descends(pid: int) -> bool:
        while pid > 1:
            if pid == driver:
                return True
            pid = parents.get(pid, 0)
        return False

    return [pid for pid, title in titles.items()
            if title.startswith("ray::ImplicitFunc") and descends(pid)]  # fmt: skip


def kill_trials_while(args: list[str], delays: list[float], log: Path) -> tuple[Driven, int]:
    """Run `args`; for each delay, once trial processes run, wait that long and SIGKILL one of
    them. Returns how the command ended and how many trial processes were killed."""
    killed = 0
    with reaped(start(args, log)) as proc:
        for delay in delays:
            while proc.poll() is None and not trial_pids(proc.pid):
                time.sleep(0.1)
            time.sleep(delay)
            pids = trial_pids(proc.pid) if proc.poll() is None else []
            if pids:
                try:
                    os.kill(pids[int(delay * 1000) % len(pids)], signal.SIGKILL)
                    killed += 1
                except ProcessLookupError:
                    pass
        proc.wait(timeout=600)
    driven = Driven(exits=[proc.returncode])
    if proc.returncode != 0:
        driven.bad_exits.append(f"exit {proc.returncode}: {log.read_text()[-600:]}")
    return driven, killed


def writes_history(rng: np.random.Generator, work: Path, space: dict) -> tuple[Driven, Findings]:
    results = shared_sweep(work.parent / "writes-sweep", space)
    sst_dev = DATA / "ids-sst-dev.csv"
    ensemble = results / "chaos" / "ensemble"
    where = ["--results-dir", str(results)]
    commands = {
        "report": (["report", "chaos", *where], [results / "chaos"]),
        "ensemble": (
            ["ensemble", "--top", "2", "--sweep", "chaos", *where, "--dev", "sweep"],
            [ensemble],
        ),
        "predict": (
            ["predict", "--ensemble", str(ensemble), str(sst_dev), "--task", "sst", "--out",
             str(results / "preds.csv")],
            [results / "preds.csv"],
        ),
    }
    driven, findings = Driven(), Findings()
    for name, (args, paths) in commands.items():
        old = snapshot(paths)
        at_s = float(rng.uniform(0.3, 12.0))
        with reaped(start(args, work / f"{name}.log")) as proc:
            deadline = time.monotonic() + at_s
            while time.monotonic() < deadline and proc.poll() is None:
                time.sleep(0.02)
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                driven.faults += 1
            proc.wait()
        during = snapshot(paths)
        clean = drive(args, args, [], work / f"{name}-clean.log")
        driven.exits += clean.exits
        findings.violations += [f"{name}: {line}" for line in clean.bad_exits]
        new = snapshot(paths)
        findings.half_written += [f"{name}: {line}" for line in compare(old, during, new)]
    return driven, findings


def shared_sweep(where: Path, space: dict) -> Path:
    """A finished 4-trial sweep, made on the first call and reused by later histories."""
    results = where / "results"
    if (results / "chaos" / "sweep.json").is_file():
        return results
    where.mkdir(parents=True, exist_ok=True)
    space_file = where / "space.yaml"
    space_file.write_text(yaml.safe_dump(space, sort_keys=False))
    ended = drive(["sweep", str(space_file), "--results-dir", str(results)], [], [],
                  where / "sweep.log")  # fmt: skip
    if ended.exits != [0]:
        raise RuntimeError(f"the shared sweep failed: {ended.bad_exits}")
    return results


def snapshot(paths: list[Path]) -> dict[Path, bytes]:
    """Every file under `paths` (a file or a directory) by path: its bytes."""
    files: dict[Path, bytes] = {}
    for path in paths:
        found = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
        for file in found:
            try:
                files[file] = file.read_bytes()
            except FileNotFoundError:
                continue
    return files


def compare(
    old: dict[Path, bytes], during: dict[Path, bytes], new: dict[Path, bytes]
) -> list[str]:
    """Each file as the kill left it that is neither the old nor a whole new one, and each
    file the kill left missing that was there before and is there after a clean run."""
    broken = [f"{path}: gone after the kill" for path in old
              if path not in during and path in new]  # fmt: skip
    for path, content in during.items():
        if path.name.startswith(".") or any(part.startswith(".") for part in path.parts[-3:-1]):
            continue  # a writer's temporary file: readers never open it
        if content in (old.get(path), new.get(path)) or whole(path, content):
            continue
        broken.append(f"{path}: {len(content)} bytes, neither the old nor a whole new file")
    return broken


def whole(path: Path, content: bytes) -> bool:
    """Whether a file that may differ between runs (a run id, a time) is complete: JSON,
    Parquet and PNG parse to their end. Text files (CSV, Markdown) must be byte-equal to the
    old or the new one: a cut at a line boundary would look whole."""
    try:
        if path.suffix == ".json":
            json.loads(content)
            return True
        if path.suffix == ".parquet":
            import io

            import pyarrow.parquet as pq

            pq.read_table(io.BytesIO(content))
            return True
        if path.suffix == ".png":
            return content.endswith(b"IEND\xaeB`\x82")
    except Exception:  # any parse error: the file is not whole
        return False
    return False  # other files: only the old or the new bytes count


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_server(store: Path, port: int, log: Path) -> Any:
    """`orchestrator tracking-server` on 127.0.0.1:port over a SQLite file, up and answering."""
    import urllib.request

    proc = start(["tracking-server", "--port", str(port), "--backend-store-uri",
                  f"sqlite:///{store / 'mlflow.db'}", "--artifacts-destination",
                  str(store / "artifacts"), "--workers", "1"], log)  # fmt: skip
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2):
                return proc
        except OSError:
            if proc.poll() is not None:
                tail = log.read_text()[-400:]
                raise RuntimeError(f"the tracking server exited: {tail}") from None
            time.sleep(0.3)
    raise RuntimeError("the tracking server did not answer in 90 s")


def server_history(rng: np.random.Generator, work: Path, space: dict) -> tuple[Driven, Findings]:
    """A sweep logging to a tracking server that is SIGKILLed at a drawn moment and restarted
    after a drawn outage; the sweep must end by itself, every trial logged once."""
    from bench.chaos_checks import check_optuna, check_store, ray_trials
    from bench.chaos_faults import command_env

    store, results, port = work / "server", work / "results", free_port()
    store.mkdir(parents=True, exist_ok=True)
    space_file = work / "space.yaml"
    space_file.write_text(yaml.safe_dump(space, sort_keys=False))
    env = {**command_env(), "MLFLOW_TRACKING_URI": f"http://127.0.0.1:{port}"}
    server = start_server(store, port, work / "server.log")
    at_s, outage_s = float(rng.uniform(3.0, 20.0)), float(rng.uniform(1.0, 8.0))
    driven = Driven()
    try:
        with reaped(start(["sweep", str(space_file), "--results-dir", str(results)],
                          work / "driver.log", env)) as proc:  # fmt: skip
            deadline = time.monotonic() + at_s
            while time.monotonic() < deadline and proc.poll() is None:
                time.sleep(0.05)
            if proc.poll() is None:
                os.killpg(server.pid, signal.SIGKILL)
                server.wait()
                driven.faults += 1
                time.sleep(outage_s)
                server = start_server(store, port, work / "server.log")
            proc.wait(timeout=600)
        driven.exits.append(proc.returncode)
    finally:
        with reaped(server):
            pass
    findings = Findings()
    if proc.returncode != 0:
        tail = (work / "driver.log").read_text()[-600:]
        findings.violations.append(f"exit {proc.returncode}: {tail}")
        return driven, findings
    root = results / space["name"]
    findings.add(check_store(root, f"sqlite:///{store / 'mlflow.db'}", space["name"], 4, {}))
    findings.add(check_optuna(f"sqlite:///{root / 'optuna.db'}", ray_trials(root)))
    return driven, findings
