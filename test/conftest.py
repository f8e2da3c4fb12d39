"""Shared fixtures; every test is marked with its layer (core, ros, sim) from the directory it lives in."""

from pathlib import Path

import pytest

from kv_efficient_vla_ros.core.openvla.tiny import write_tiny_checkpoint
from kv_efficient_vla_ros.core.policy import OpenVLAPolicy

LAYERS = ("core", "ros", "sim")


def pytest_collection_modifyitems(items):
    for item in items:
        layer = item.path.parent.name
        if layer in LAYERS:
            item.add_marker(getattr(pytest.mark, layer))


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    return write_tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny")


@pytest.fixture(scope="session")
def tiny_policy(tiny_checkpoint) -> OpenVLAPolicy:
    return OpenVLAPolicy.from_checkpoint(tiny_checkpoint, unnorm_key="sim_panda_lift")


@pytest.fixture(scope="session")
def ros():
    """One rclpy context for the test process (the nodes under test run in their own processes)."""
    import rclpy

    rclpy.init()
    yield
    rclpy.try_shutdown()


@pytest.fixture(scope="session")
def trained_checkpoint() -> Path:
    """The committed behaviour-cloned memory policy (``make policy`` rebuilds it)."""
    from kv_efficient_vla_ros.core.defaults import trained_policy_checkpoint

    return trained_policy_checkpoint()
