"""Per-trial resources against the Ray nodes, without Ray: the laptop CPU fallback, requests local
Ray can never place (one-line errors naming the space file and key), and the cluster warning."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from orchestrator.cluster import ClusterNode
from orchestrator.space.schema import Resources, load_space
from orchestrator.sweep.placement import (
    ResourcesError,
    TrialPlacement,
    fit_trials_to_cluster,
    plan_trial_resources,
)

LAPTOP = [{"CPU": 2.0, "memory": 8e9}]  # Ray's resources of a 2-core machine without a GPU
GPU_BOX = [{"CPU": 16.0, "GPU": 1.0}]
SPACE = "spaces/s.yaml"
REPO = Path(__file__).resolve().parents[3]


def test_a_request_the_machine_has_is_kept() -> None:
    asked = Resources(cpu=2, gpu=0)
    assert plan_trial_resources(SPACE, asked, LAPTOP, local=True) == TrialPlacement(asked)
    asked = Resources(cpu=4, gpu=0.5)
    assert plan_trial_resources(SPACE, asked, GPU_BOX, local=True) == TrialPlacement(asked)


def test_a_gpu_space_on_a_laptop_runs_its_trials_on_cpu() -> None:
    plan = plan_trial_resources(SPACE, Resources(cpu=4, gpu=0.5), LAPTOP, local=True)
    assert plan.resources == Resources(cpu=2.0, gpu=0.0) and plan.on_cpu
    assert plan.notice == (
        "note: spaces/s.yaml asks for resources.gpu 0.5 per trial but this machine has no GPU; "
        "running the trials on CPU (2 CPU each)"
    )
    # Fewer CPUs than the machine has are kept.
    plan = plan_trial_resources(SPACE, Resources(cpu=1, gpu=1), LAPTOP, local=True)
    assert plan.resources == Resources(cpu=1.0, gpu=0.0) and plan.on_cpu


@pytest.mark.parametrize(
    ("asked", "nodes", "message"),
    [
        (
            Resources(cpu=1000, gpu=0),
            LAPTOP,
            "spaces/s.yaml: resources.cpu: 1000 CPUs per trial, but this machine has 2; Ray "
            "could never start a trial (ask for at most 2)",
        ),
        (
            Resources(cpu=1, gpu=2),
            GPU_BOX,
            "spaces/s.yaml: resources.gpu: 2 GPUs per trial, but this machine has 1; Ray could "
            "never start a trial (ask for at most 1)",
        ),
        (
            Resources(cpu=32, gpu=1),
            GPU_BOX,
            "spaces/s.yaml: resources.cpu: 32 CPUs per trial, but this machine has 16;",
        ),
        (
            Resources(cpu=1, gpu=1.5),
            [{"CPU": 8.0, "GPU": 4.0}],
            "spaces/s.yaml: resources.gpu: 1.5 GPUs per trial can never be placed; a fraction "
            "shares one GPU, so ask for at most 1 or a whole number",
        ),
        # A fraction above 1 is refused even where the laptop fallback would apply.
        (Resources(cpu=1, gpu=1.5), LAPTOP, "spaces/s.yaml: resources.gpu: 1.5 GPUs per trial"),
    ],
)
def test_local_ray_refuses_what_it_can_never_place(
    asked: Resources, nodes: list[dict[str, float]], message: str
) -> None:
    with pytest.raises(ResourcesError) as raised:
        plan_trial_resources(SPACE, asked, nodes, local=True)
    assert str(raised.value).startswith(message) and "\n" not in str(raised.value)


def test_a_cluster_may_grow_so_it_only_warns() -> None:
    nodes = [{"CPU": 8.0}, {"CPU": 4.0, "GPU": 1.0}]
    asked = Resources(cpu=8, gpu=1)
    plan = plan_trial_resources(SPACE, asked, nodes, local=False)
    assert plan.resources == asked and not plan.on_cpu
    assert plan.notice == (
        "warning: no node of the Ray cluster has resources.cpu 8 and resources.gpu 1 that "
        "spaces/s.yaml asks per trial; trials will wait until one joins (see `ray status`)"
    )
    # One node that fits the whole request is enough; CPUs of one node and a GPU of another
    # are not.
    assert plan_trial_resources(SPACE, Resources(4, 1), nodes, local=False).notice is None
    with pytest.raises(ResourcesError, match=r"resources\.gpu: 1\.5 GPUs"):
        plan_trial_resources(SPACE, Resources(1, 1.5), nodes, local=False)


def nodes_of(resources: list[dict[str, float]]) -> list[ClusterNode]:
    return [ClusterNode(f"n{i}", f"10.0.0.{i}", r) for i, r in enumerate(resources)]


def test_the_shipped_gpu_spaces_fall_back_to_cpu_on_a_laptop() -> None:
    space = load_space(REPO / "search_spaces" / "smart.yaml")
    space = space.replace(base=dataclasses.replace(space.base, device="cuda"))
    lines: list[str] = []
    fitted = fit_trials_to_cluster(space, nodes_of(LAPTOP), local=True, echo=lines.append)
    assert fitted.resources == Resources(cpu=2.0, gpu=0.0)
    assert fitted.base.device == "cpu"  # a base config saying cuda is overridden too
    assert fitted.base.model == space.base.model and fitted.params == space.params
    assert len(lines) == 1 and "this machine has no GPU; running the trials on CPU" in lines[0]


def test_fit_trials_to_cluster_warns_on_a_cluster_and_changes_nothing() -> None:
    nodes = nodes_of([{"CPU": 2.0}, {"CPU": 2.0}])
    space = load_space(REPO / "search_spaces" / "smart.yaml")
    lines: list[str] = []
    assert fit_trials_to_cluster(space, nodes, local=False, echo=lines.append) == space
    assert len(lines) == 1 and lines[0].startswith("warning: no node of the Ray cluster has")
