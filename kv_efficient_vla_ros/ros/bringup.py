"""Bringing the nodes up as processes without ``ros2 launch`` (for ``kv-vla-bringup`` and the tests).

The command line to start a node from the package's YAML, a monitor node that listens to what
``/diagnostics`` measures, and a clean stop (SIGINT, then SIGTERM, then SIGKILL).
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.node import Node
from sensor_msgs.msg import Image

from ..msg import EndEffectorAction
from .conversions import image_to_rgb
from .interfaces import (
    ACTION,
    CACHE_TASK,
    CAMERA,
    CAMERA_QOS,
    CONTROL_LOOP_TASK,
    DIAGNOSTICS,
    DIAGNOSTICS_QOS,
    EPISODE_TASK,
    LEVELS,
    NODES,
    OUTPUT_QOS,
    node_fqn,
    status_level,
    status_name,
)
from .params import package_path


def default_params_file() -> Path:
    """The package's ``config/policy.yaml``: beside the source tree, or where setup.py installed it."""
    path = package_path("config/policy.yaml")
    if not path.is_file():
        raise FileNotFoundError("config/policy.yaml not found; pass --params")
    return path


def node_command(node: str, params_file: Path, namespace: str = "", overrides: dict | None = None) -> list[str]:
    command = [sys.executable, "-m", NODES[node], "--ros-args", "--params-file", str(params_file)]
    if namespace:
        command += ["-r", f"__ns:={namespace}"]
    for name, value in (overrides or {}).items():
        command += ["-p", f"{name}:={str(value).lower() if isinstance(value, bool) else value}"]
    return command


class Monitor(Node):
    """Listens to /diagnostics and the actions, to report what the nodes measure."""

    def __init__(self, namespace: str, keep_frames: bool = False):
        super().__init__("bringup_monitor", namespace=namespace or None)
        self.statuses: dict[str, dict] = {}
        self.actions = 0
        self.frames: list[np.ndarray] = []
        self._frame_stamps: set[tuple[int, int]] = set()  # a frame re-published with its stamp is kept once
        self.create_subscription(DiagnosticArray, DIAGNOSTICS, self._on_diagnostics, DIAGNOSTICS_QOS)
        self.create_subscription(EndEffectorAction, ACTION, self._on_action, OUTPUT_QOS)
        if keep_frames:
            self.create_subscription(Image, CAMERA, self._on_image, CAMERA_QOS)

    def _on_image(self, msg: Image) -> None:
        stamp = (msg.header.stamp.sec, msg.header.stamp.nanosec)
        if stamp not in self._frame_stamps:
            self._frame_stamps.add(stamp)
            self.frames.append(image_to_rgb(msg, 1, 10**8))

    def _on_diagnostics(self, msg: DiagnosticArray) -> None:
        for status in msg.status:
            values = {kv.key: kv.value for kv in status.values}
            self.statuses[status.name] = {"level": status_level(status), "message": status.message, **values}

    def _on_action(self, msg: EndEffectorAction) -> None:
        self.actions += 1

    def status(self, node: str, task: str) -> dict:
        """The latest status ``task`` of ``node`` in this monitor's namespace (empty before the first)."""
        return self.statuses.get(status_name(node_fqn(self.get_namespace(), node), task), {})

    def episode(self) -> str:
        return self.status("sim_node", EPISODE_TASK).get("message", "")

    def episode_done(self) -> bool:
        return self.status("sim_node", EPISODE_TASK).get("done") == "True"

    def line(self) -> str:
        loop = self.status("diagnostics_node", CONTROL_LOOP_TASK)
        cache = self.status("diagnostics_node", CACHE_TASK)
        budget = cache.get("budget_tokens", "?")  # "0": the strategy keeps no budget
        return (
            f"control {loop.get('control_hz', '?')} Hz (target {loop.get('target_hz', '?')}) "
            f"p50 {loop.get('latency_p50_ms', '?')} ms p95 {loop.get('latency_p95_ms', '?')} ms "
            f"[{LEVELS.get(loop.get('level'), '?')}] | cache {cache.get('tokens', '?')} tokens "
            f"{int(cache.get('kv_bytes', 0)) / 1e6:.2f} MB, budget {'none' if budget == '0' else budget} "
            f"({cache.get('policy', '?')}) [{LEVELS.get(cache.get('level'), '?')}] | actions {self.actions}"
            + (f" | sim: {self.episode()}" if self.episode() else "")
        )


def stop(children: dict[str, subprocess.Popen], timeout_s: float = 15.0) -> dict[str, int]:
    """SIGINT, then SIGTERM, then SIGKILL for a child that is still there after ``timeout_s`` each."""
    for sig in (signal.SIGINT, signal.SIGTERM):
        for child in children.values():
            if child.poll() is None:
                child.send_signal(sig)
        deadline = time.monotonic() + timeout_s
        for child in children.values():
            try:
                child.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
    for name, child in children.items():
        if child.poll() is None:
            print(f"[bringup] {name} ignored SIGINT and SIGTERM: killing it", flush=True)
            child.kill()
    return {name: child.wait() for name, child in children.items()}
