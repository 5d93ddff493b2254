"""Ray itself, for the sweep: start a local Ray or join a cluster (Ctrl-C and SIGTERM held
while it starts), list the alive nodes as `cluster.ClusterNode`s, and run a task on each.

With `ray_tune.py` and `trainable.py`, the only modules that import Ray.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from orchestrator.cluster import ClusterNode, NodeReplies

SNAPSHOT_PERIOD_ENV = "TUNE_GLOBAL_CHECKPOINT_S"
USER_SNAPSHOT_PERIOD = os.environ.get(SNAPSHOT_PERIOD_ENV)  # the user's, when set, always wins
FAST_SNAPSHOT_TRIALS = 200  # experiments up to this size save their state every 2 s


def set_snapshot_period(trials: int) -> None:
    """How often Tune saves an experiment of `trials` trials for --resume (read as Tune starts
    or restores one). A driver killed with -9 loses the trials' progress since the last save,
    which --resume runs again (sweep/lost_checkpoint.py). The state holds every trial, so a
    fixed period costs O(trials) per trial: a small experiment saves every 2 s (a few ms
    each), a larger one at Tune's adaptive period, every 10 s or 19x as long as saving took
    (under 5% of the driver's time however many trials)."""
    period = "2" if trials <= FAST_SNAPSHOT_TRIALS else "auto"
    os.environ[SNAPSHOT_PERIOD_ENV] = USER_SNAPSHOT_PERIOD or period


def init_ray(address: str | None, num_cpus: int | None) -> None:
    """Start a local Ray (or join `address`) once per process, quietly."""
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    # Ray keeps every checkpoint's result of a trial (we keep all its checkpoints: ray_tune.py)
    # and saves them all with the experiment: only the score, not ~100 metrics per epoch.
    os.environ.setdefault("TUNE_ONLY_STORE_CHECKPOINT_SCORE_ATTRIBUTE", "1")
    # Ray's newer console output prints a header even at verbose=0; the live table is ours.
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    if ray.is_initialized():
        return
    repo = str(Path(__file__).resolve().parents[1])
    pythonpath = os.pathsep.join(p for p in (repo, os.environ.get("PYTHONPATH")) if p)
    with signals_held():
        ray.init(
            address=address,
            num_cpus=None if address else num_cpus,
            include_dashboard=False,
            logging_level=logging.WARNING,
            # Trials' own output stays in Ray's session logs; failures reach the table and
            # MLflow through their error files.
            log_to_driver=False,
            # Workers import `model` and `orchestrator` from this checkout even when not
            # installed.
            runtime_env={"env_vars": {"PYTHONPATH": pythonpath}},
        )


@contextmanager
def signals_held() -> Iterator[None]:
    """Ctrl-C and SIGTERM while Ray starts are held until it has, then handled by the handlers
    that were there before (the CLI's: exit 130 / 143); a second Ctrl-C is not held. Raised
    inside ray.init's connection code they crashed the driver (exit -11 and -6, measured by
    bench/chaos.py); and ray.init installs `sys.exit(15)` as the SIGTERM handler, which would
    skip the CLI's. Only in the main thread, where handlers live."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held: list[int] = []

    def hold(number: int, frame: Any) -> None:
        if number == signal.SIGINT and signal.SIGINT in held:
            raise KeyboardInterrupt  # a second Ctrl-C: at once, as `fit_tuner` does
        held.append(number)

    previous = {signum: signal.signal(signum, hold) for signum in (signal.SIGINT, signal.SIGTERM)}
    # ray.init replaces the SIGTERM handler through this helper; a no-op while it starts.
    helpers = ray._private.utils
    set_sigterm = getattr(helpers, "set_sigterm_handler", None)
    if set_sigterm is not None:
        helpers.set_sigterm_handler = lambda handler: None
    try:
        yield
    finally:
        if set_sigterm is not None:
            helpers.set_sigterm_handler = set_sigterm
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        if held:  # also when Ray failed to start: the signal still ends the command
            signal.raise_signal(held[0])  # now handled as it would have been


def alive_nodes() -> list[ClusterNode]:
    """The connected Ray cluster's alive nodes and their total resources."""
    return [
        ClusterNode(
            node_id=node["NodeID"],
            ip=node["NodeManagerAddress"],
            resources=dict(node.get("Resources", {})),
        )
        for node in ray.nodes()
        if node.get("Alive")
    ]


def run_on_nodes(
    function: Callable[..., Any],
    args: Sequence[Any],
    nodes: Sequence[ClusterNode],
    timeout_s: float,
) -> NodeReplies:
    """Run `function(*args)` as a zero-CPU task pinned to each node; a node that does not answer
    within `timeout_s` (or dies meanwhile) is listed as unanswered and its task cancelled."""
    task = ray.remote(num_cpus=0, max_retries=0)(function)
    pending = {
        task.options(
            scheduling_strategy=NodeAffinitySchedulingStrategy(node.node_id, soft=False)
        ).remote(*args): node
        for node in nodes
    }
    ready, not_ready = ray.wait(list(pending), num_returns=len(pending), timeout=timeout_s)
    answered = []
    for ref in ready:
        try:
            answered.append((pending[ref], ray.get(ref)))
        except Exception:  # the node died meanwhile: it did not answer
            not_ready.append(ref)
    for ref in not_ready:
        ray.cancel(ref, force=True)
    return NodeReplies(tuple(answered), tuple(pending[ref] for ref in not_ready))
