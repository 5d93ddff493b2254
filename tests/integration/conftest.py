"""Fixtures the integration tests share."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def ray_2cpu():
    """Local Ray with two CPUs for the tests of one module, shut down after them."""
    import ray

    from orchestrator.sweep.ray_tune import init_ray

    init_ray(None, num_cpus=2)
    yield
    ray.shutdown()
