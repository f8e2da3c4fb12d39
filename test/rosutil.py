"""Helpers for the tests that run real nodes in separate processes over real DDS."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import numpy as np
import rclpy
import yaml
from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import TwistStamped
from rclpy.node import Node
from sensor_msgs.msg import Image
from std_msgs.msg import String

from kv_efficient_vla_ros.msg import CacheStats, EndEffectorAction
from kv_efficient_vla_ros.ros.bringup import default_params_file, node_command, stop
from kv_efficient_vla_ros.ros.interfaces import (
    CAMERA_QOS,
    INSTRUCTION_QOS,
    OUTPUT_QOS,
    node_fqn,
    rgb_to_image,
    status_level,
    status_name,
)


def write_params(
    path: Path, policy_node: dict, diagnostics: dict | None = None, camera: dict | None = None, sim: dict | None = None
) -> Path:
    """The package YAML with test overrides (nested ``cache`` keys merge)."""
    params = yaml.safe_load(default_params_file().read_text())
    node = params["/**/policy_node"]["ros__parameters"]
    for key, value in policy_node.items():
        if key == "cache":
            node["cache"].update(value)
        else:
            node[key] = value
    params["/**/diagnostics_node"]["ros__parameters"].update(diagnostics or {})
    params["/**/synthetic_camera"]["ros__parameters"].update(camera or {})
    params["/**/sim_node"]["ros__parameters"].update(sim or {})
    path.write_text(yaml.safe_dump(params))
    return path


def start(
    nodes: list[str], params: Path, namespace: str = "", logs: Path | None = None, overrides: dict | None = None
) -> dict[str, subprocess.Popen]:
    """The nodes as processes; with ``logs``, each one's stdout and stderr go to ``logs/<node>.log``."""
    children = {}
    for name in nodes:
        out = None if logs is None else (logs / f"{name}.log").open("w")
        command = node_command(name, params, namespace, overrides)
        children[name] = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT if out else None)
    return children


level = status_level


class Probe(Node):
    """Publishes camera images and instructions; records everything the nodes publish."""

    def __init__(self, namespace: str = ""):
        super().__init__("test_probe", namespace=namespace or None)
        self.image_pub = self.create_publisher(Image, "camera/image_raw", CAMERA_QOS)
        self.instruction_pub = self.create_publisher(String, "instruction", INSTRUCTION_QOS)
        self.actions: list[tuple[float, EndEffectorAction]] = []
        self.twists: list[tuple[float, TwistStamped]] = []
        self.stats: list[tuple[float, CacheStats]] = []
        self.statuses: dict[str, tuple[float, object]] = {}
        self.namespace = namespace
        self.create_subscription(
            EndEffectorAction, "action", lambda m: self.actions.append((time.monotonic(), m)), OUTPUT_QOS
        )
        self.create_subscription(
            TwistStamped, "delta_twist_cmds", lambda m: self.twists.append((time.monotonic(), m)), OUTPUT_QOS
        )
        self.create_subscription(
            CacheStats, "cache_stats", lambda m: self.stats.append((time.monotonic(), m)), OUTPUT_QOS
        )
        self.create_subscription(DiagnosticArray, "/diagnostics", self._on_diagnostics, 10)
        self.sent_stamps: set[tuple[int, int]] = set()

    def _on_diagnostics(self, msg: DiagnosticArray) -> None:
        for status in msg.status:  # /diagnostics is shared: keep only our namespace's nodes
            if status.hardware_id.startswith(self.namespace or "/"):
                self.statuses[status.name] = (time.monotonic(), status)

    def status_values(self, name: str) -> dict[str, str]:
        return {kv.key: kv.value for kv in self.statuses[name][1].values}

    def status_key(self, node: str, task: str) -> str:
        """The status name ``node`` publishes for ``task`` in this probe's namespace."""
        return status_name(node_fqn(self.namespace, node), task)

    def send_image(self, image: Image | np.ndarray, restamp: bool = True) -> Image:
        """Publish a frame stamped now (or, ``restamp=False``, with the stamp it has: a repeated frame)."""
        msg = rgb_to_image(image) if isinstance(image, np.ndarray) else image
        if restamp:
            msg.header.stamp = self.get_clock().now().to_msg()
        self.image_pub.publish(msg)
        self.sent_stamps.add((msg.header.stamp.sec, msg.header.stamp.nanosec))
        return msg

    def spin(self, seconds: float, images: list | None = None, hz: float = 10.0, restamp: bool = True) -> list[Image]:
        """Spin for ``seconds``; when ``images`` are given, publish them in turn at ``hz``."""
        sent, end, next_image, i = [], time.monotonic() + seconds, time.monotonic(), 0
        while time.monotonic() < end:
            if images is not None and time.monotonic() >= next_image:
                sent.append(self.send_image(images[i % len(images)], restamp))
                i += 1
                next_image += 1.0 / hz
            rclpy.spin_once(self, timeout_sec=0.02)
        return sent

    def wait_for(self, condition, timeout: float, images: list | None = None) -> bool:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if condition():
                return True
            self.spin(0.2, images)
        return condition()


__all__ = ["Probe", "level", "start", "stop", "write_params"]
