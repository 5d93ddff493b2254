"""Whether Ray can ever start one trial of a sweep, decided before anything is written.

Ray queues a trial whose resources no node has and waits for one forever, saying so only in a
warning a minute later. So right after `ray.init` the sweep compares a space's per-trial request
(`resources: {cpu, gpu}`) with each node's total resources:

- Ray started by the sweep on a machine without a GPU, for a space that asks for one: a laptop
  running a GPU-sized space. Its trials run on the CPU instead (no GPU, at most the machine's CPUs
  each, the trainer's device forced to `cpu`), and a notice says so.
- Ray started by the sweep, asking for more CPUs or GPUs than the machine has: an error naming the
  space file and the key.
- An existing cluster (`--address`): an autoscaler may add a node that fits, so only a warning.

A fractional GPU above 1 fits no node anywhere: Ray packs fractions onto a single GPU.
Nothing here talks to Ray; the sweep driver passes the nodes in (from its Ray adapter).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from model.config import ConfigError
from orchestrator.cluster import ClusterNode
from orchestrator.space.schema import Resources, SearchSpace


class ResourcesError(ConfigError):
    """A per-trial resource request that no node of the Ray cluster can ever satisfy."""


@dataclass(frozen=True)
class TrialPlacement:
    """What each trial asks Ray for, whether it must train on the CPU, and a line for the user."""

    resources: Resources
    on_cpu: bool = False  # the laptop fallback: the trainer must not pick a GPU either
    notice: str | None = None


def plan_trial_resources(
    space_file: str,
    requested: Resources,
    nodes: Sequence[Mapping[str, float]],
    *,
    local: bool,
) -> TrialPlacement:
    """Fit `requested` (one trial's resources, from `space_file`) to the alive nodes' total
    resources (Ray's `{"CPU": 8.0, "GPU": 1.0, ...}` per node); `local`: Ray was started by the
    sweep on this machine, so no node will ever join. Raises ResourcesError (see module doc)."""
    cpu, gpu = requested.cpu, requested.gpu
    if gpu > 1 and not float(gpu).is_integer():
        raise ResourcesError(
            f"{space_file}: resources.gpu: {gpu:g} GPUs per trial can never be placed; a fraction "
            "shares one GPU, so ask for at most 1 or a whole number"
        )
    cpus = max((float(n.get("CPU", 0.0)) for n in nodes), default=0.0)
    gpus = max((float(n.get("GPU", 0.0)) for n in nodes), default=0.0)
    if not local:
        if any(n.get("CPU", 0.0) >= cpu and n.get("GPU", 0.0) >= gpu for n in nodes):
            return TrialPlacement(requested)
        return TrialPlacement(
            requested,
            notice=f"warning: no node of the Ray cluster has resources.cpu {cpu:g} and "
            f"resources.gpu {gpu:g} that {space_file} asks per trial; trials will wait until "
            "one joins (see `ray status`)",
        )
    if gpu > 0 and gpus == 0:
        # A GPU-sized space on a laptop: its cpu count was chosen to feed a GPU, so keep to the
        # machine's CPUs rather than refuse to run.
        on_cpu = Resources(cpu=min(cpu, cpus), gpu=0.0)
        return TrialPlacement(
            on_cpu,
            on_cpu=True,
            notice=f"note: {space_file} asks for resources.gpu {gpu:g} per trial but this "
            f"machine has no GPU; running the trials on CPU ({on_cpu.cpu:g} CPU each)",
        )
    if gpu > gpus:
        raise ResourcesError(
            f"{space_file}: resources.gpu: {gpu:g} GPUs per trial, but this machine has "
            f"{gpus:g}; Ray could never start a trial (ask for at most {gpus:g})"
        )
    if cpu > cpus:
        raise ResourcesError(
            f"{space_file}: resources.cpu: {cpu:g} CPUs per trial, but this machine has "
            f"{cpus:g}; Ray could never start a trial (ask for at most {cpus:g})"
        )
    return TrialPlacement(requested)


def fit_trials_to_cluster(
    space: SearchSpace, nodes: Sequence[ClusterNode], *, local: bool, echo: Callable[[str], None]
) -> SearchSpace:
    """`space` with per-trial resources the `nodes` can place: on a laptop without a GPU, a GPU
    space's trials move to the CPU. Echoes the plan's notice; raises ResourcesError."""
    resources = [node.resources for node in nodes]
    placement = plan_trial_resources(space.source, space.resources, resources, local=local)
    if placement.notice:
        echo(placement.notice)
    if placement.on_cpu:
        # `device: auto` finds no GPU here anyway; a base config saying `cuda` would fail.
        space = space.replace(base=dataclasses.replace(space.base, device="cpu"))
    return space.replace(resources=placement.resources)
