"""Kill anything at any moment, lose nothing: a fault-injection harness (issue 25).

Each history runs one scenario on a tiny random-init BERT (`configs/tiny.yaml`, real Ray, Optuna
and MLflow) and injects faults at moments drawn from a seeded generator, then checks the
invariants of `chaos_checks.py` by reading the stores directly:
- `sweep`: a 4-trial TPE sweep, hit 1-3 times (SIGKILL of the whole process group, SIGTERM of
  the driver or SIGINT of the group), `--resume`d after each until it ends by itself;
- `study`: a 2-arm study with a tuning phase (2 trials per arm, then 2 seeds per arm), likewise;
- `extend`: a finished sweep's `--extend 2`, hit and `--resume`d likewise;
- `trial`: a sweep whose running trial processes are SIGKILLed 1-2 times, each 0-4 s after trial
  processes are up (Ray retries a trial from its last checkpoint), the driver left alone: it must
  end by itself with every trial finished;
- `server`: a sweep logging to `orchestrator tracking-server`, whose server is SIGKILLed at a
  drawn moment and restarted after a drawn outage of 1-8 s: the sweep must end by itself;
- `storage`: the results directory (a tmpfs) fills up or turns read-only mid-sweep: one
  `Error:` line, exit 1, intact stores, and `--resume` finishes once space is back
  (`chaos_storage.py`; needs root to mount, else skipped with the reason);
- `writes`: `report`, `ensemble --top 2` and `predict --out` of a finished sweep, each SIGKILLed
  at a random moment and run again: every file they write must be, at any moment, the old
  complete one or the new complete one (compared byte for byte with a clean run's).

Per scenario it prints histories, faults injected, resumes, lost trials, duplicated trials,
half-written files and other invariant violations, and each breach in full.

    python bench/chaos.py --histories 10 --seed 0
    python bench/chaos.py --histories 2 --scenarios sweep trial --keep /tmp/chaos
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.chaos_checks import Findings, check_optuna, check_store, finished_trials, ray_trials
from bench.chaos_faults import REPO, SIGNALS, Driven, draw_faults, drive
from bench.chaos_storage import can_mount, storage_history
from bench.chaos_writes import kill_trials_while, server_history, writes_history

TINY = str(REPO / "configs" / "tiny.yaml")
SMALL = {"data.max_examples.sst": 64, "data.max_examples.para": 64}
SWEEP = {
    "name": "chaos",
    "base": TINY,
    "num_samples": 4,
    "max_concurrent": 2,
    "sampler": "tpe",
    "seed": 0,
    "scheduler": "none",
    "space": {"optim.lr": {"float": [1.0e-3, 1.0e-2], "log": True}, "optim.epochs": 3, **SMALL},
}
STUDY = {
    "name": "chaos",
    "base": TINY,
    "num_samples": 2,
    "max_concurrent": 2,
    "sampler": "random",
    "scheduler": "none",
    "space": {"optim.lr": {"float": [1.0e-3, 1.0e-2], "log": True}},
    "arms": {"plain": dict(SMALL), "cosine": {**SMALL, "model.pair_encoding": "cosine"}},
    "seeds": 2,
    "confirm_epochs": 2,
}


@dataclass
class Tally:
    histories: int = 0
    faults: int = 0
    resumes: int = 0
    findings: Findings = field(default_factory=Findings)
    wall_s: float = 0.0

    def row(self, name: str) -> str:
        f = self.findings
        return (
            f"| {name} | {self.histories} | {self.faults} | {self.resumes} | {len(f.lost)} "
            f"| {len(f.duplicated)} | {len(f.half_written)} | {len(f.violations)} "
            f"| {self.wall_s:.0f} |"
        )


def sweep_history(
    rng: np.random.Generator,
    work: Path,
    space: dict,
    planned: int,
    span_s: float,
    first_extra: tuple[str, ...] = (),
) -> tuple[Driven, Findings]:
    """One sweep or study under faults, then its invariants."""
    results = work / "results"
    space_file = work / "space.yaml"
    space_file.write_text(yaml.safe_dump(space, sort_keys=False))
    base = ["sweep", str(space_file), "--results-dir", str(results)]
    uri = f"sqlite:///{results / 'mlflow.db'}"
    before: dict = {}

    def snapshot() -> None:
        if (results / "mlflow.db").is_file():
            before.update(finished_trials(uri, space["name"]))

    if first_extra:  # an extension: the sweep it extends first runs to its end, unhit
        drive(base, base, [], work / "base.log")
        snapshot()
    faults = draw_faults(rng, 3, span_s, SIGNALS)
    first = [*base, *first_extra]
    saved = results / space["name"] / ("extend-1" if first_extra else "sweep.json")

    def again() -> list[str]:
        """`--resume` once the command saved its state; before that, the command again."""
        return [*base, "--resume"] if saved.exists() else first

    driven = drive(first, again, faults, work / "driver.log", before_fault=snapshot)
    findings = Findings(violations=list(driven.bad_exits))
    if driven.exits and driven.exits[-1] == 0:
        root = results / space["name"]
        findings.add(check_store(root, uri, space["name"], planned, before))
        findings.add(check_optuna(f"sqlite:///{root / 'optuna.db'}", ray_trials(root)))
    return driven, findings


def trial_history(rng: np.random.Generator, work: Path) -> tuple[Driven, Findings]:
    """A sweep whose trial processes are SIGKILLed at drawn moments; the driver is not hit."""
    results = work / "results"
    space_file = work / "space.yaml"
    space_file.write_text(yaml.safe_dump(SWEEP, sort_keys=False))
    # At most 2 kills: Ray retries a trial twice (MAX_FAILURES), and two kills may hit one trial.
    delays = [float(d) for d in rng.uniform(0.0, 4.0, size=int(rng.integers(1, 3)))]
    args = ["sweep", str(space_file), "--results-dir", str(results)]
    driven, killed = kill_trials_while(args, delays, work / "driver.log")
    findings = Findings(violations=list(driven.bad_exits))
    if driven.exits and driven.exits[-1] == 0:
        uri = f"sqlite:///{results / 'mlflow.db'}"
        root = results / "chaos"
        findings.add(check_store(root, uri, "chaos", 4, {}))
        findings.add(check_optuna(f"sqlite:///{root / 'optuna.db'}", ray_trials(root)))
    driven.faults = killed
    return driven, findings


SCENARIOS: dict[str, Callable[[np.random.Generator, Path], tuple[Driven, Findings]]] = {
    "sweep": lambda rng, work: sweep_history(rng, work, SWEEP, 4, 25.0),
    "study": lambda rng, work: sweep_history(rng, work, STUDY, 8, 60.0),
    "extend": lambda rng, work: sweep_history(rng, work, SWEEP, 6, 20.0, ("--extend", "2")),
    "trial": trial_history,
    "writes": lambda rng, work: writes_history(rng, work, SWEEP),
    "server": lambda rng, work: server_history(rng, work, SWEEP),
    "storage": lambda rng, work: storage_history(rng, work, SWEEP),
}
# What a scenario needs of the machine: why it cannot run here, or None.
NEEDS: dict[str, Callable[[], str | None]] = {"storage": can_mount}


def main(argv: list[str] | None = None) -> dict[str, Tally]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--histories", type=int, default=10, help="histories per scenario")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--scenarios", nargs="+", choices=list(SCENARIOS), default=list(SCENARIOS))
    parser.add_argument("--keep", type=Path, default=None, help="keep each history's files here")
    args = parser.parse_args(argv)
    rng = np.random.default_rng(args.seed)
    tallies: dict[str, Tally] = {}
    root = args.keep or Path(tempfile.mkdtemp(prefix="chaos-"))
    for name in args.scenarios:
        missing = NEEDS.get(name, lambda: None)()
        if missing:
            print(f"{name}: skipped: {missing}", flush=True)
            continue
        tally = tallies[name] = Tally()
        for number in range(args.histories):
            work = root / f"{name}-{number}"
            work.mkdir(parents=True, exist_ok=True)
            start = time.monotonic()
            driven, findings = SCENARIOS[name](rng, work)
            tally.wall_s += time.monotonic() - start
            tally.histories += 1
            tally.faults += driven.faults
            tally.resumes += driven.resumes
            tally.findings.add(findings)
            print(f"{name} #{number}: {driven.faults} faults, exits {driven.exits}, "
                  f"{len(findings.lines)} findings", flush=True)  # fmt: skip
            for line in findings.lines:
                print(f"    {line}", flush=True)
            if args.keep is None:
                shutil.rmtree(work, ignore_errors=True)
    print_table(tallies, args)
    return tallies


def print_table(tallies: dict[str, Tally], args: argparse.Namespace) -> None:
    print(f"\n# bench/chaos.py --histories {args.histories} --seed {args.seed}\n")
    print("| scenario | histories | faults | resumes | lost trials | duplicated trials "
          "| half-written files | other violations | wall s |")  # fmt: skip
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name, tally in tallies.items():
        print(tally.row(name))


if __name__ == "__main__":
    main()
