"""``kv-vla-bringup``: the nodes of ``launch/policy.launch.py``, from the same YAML, without ``ros2 launch``.

For installs that have only the Python ROS 2 wheels. Starts the policy node, the diagnostics node and a
camera source (the synthetic camera, or a rosbag2 bag replayed at its recorded timing) as separate
processes, prints what ``/diagnostics`` measures, and after ``--duration`` seconds of control stops
them all with SIGINT.
"""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.node import Node
from sensor_msgs.msg import Image

from ..msg import EndEffectorAction
from .conversions import image_to_rgb
from .interfaces import (
    ACTION,
    CACHE_STATUS,
    CAMERA,
    CAMERA_QOS,
    CONTROL_LOOP_STATUS,
    DIAGNOSTICS,
    DIAGNOSTICS_QOS,
    EPISODE_TASK,
    LEVELS,
    NODES,
    OUTPUT_QOS,
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
        command += ["-p", f"{name}:={value}"]
    return command


class Monitor(Node):
    """Listens to /diagnostics and the actions, to report what the nodes measure."""

    def __init__(self, namespace: str, keep_frames: bool = False):
        super().__init__("bringup_monitor", namespace=namespace or None)
        self.statuses: dict[str, dict] = {}
        self.actions = 0
        self.frames: list[np.ndarray] = []
        self.create_subscription(DiagnosticArray, DIAGNOSTICS, self._on_diagnostics, DIAGNOSTICS_QOS)
        self.create_subscription(EndEffectorAction, ACTION, self._on_action, OUTPUT_QOS)
        if keep_frames:
            self.create_subscription(Image, CAMERA, self._on_image, CAMERA_QOS)

    def _on_image(self, msg: Image) -> None:
        self.frames.append(image_to_rgb(msg, 1, 10**8))

    def _on_diagnostics(self, msg: DiagnosticArray) -> None:
        for status in msg.status:
            values = {kv.key: kv.value for kv in status.values}
            self.statuses[status.name] = {"level": status_level(status), "message": status.message, **values}

    def _on_action(self, msg: EndEffectorAction) -> None:
        self.actions += 1

    def episode(self) -> str:
        status = self.statuses.get(status_name("sim_node", EPISODE_TASK))
        return status["message"] if status else ""

    def line(self) -> str:
        loop = self.statuses.get(CONTROL_LOOP_STATUS, {})
        cache = self.statuses.get(CACHE_STATUS, {})
        budget = cache.get("budget_tokens", "?")  # "0": the strategy keeps no budget
        return (
            f"control {loop.get('control_hz', '?')} Hz (target {loop.get('target_hz', '?')}) "
            f"p50 {loop.get('latency_p50_ms', '?')} ms p95 {loop.get('latency_p95_ms', '?')} ms "
            f"[{LEVELS.get(loop.get('level'), '?')}] | cache {cache.get('tokens', '?')} tokens "
            f"{int(cache.get('kv_bytes', 0)) / 1e6:.2f} MB, budget {'none' if budget == '0' else budget} "
            f"({cache.get('policy', '?')}) [{LEVELS.get(cache.get('level'), '?')}] | actions {self.actions}"
            + (f" | sim: {self.episode()}" if self.episode() else "")
        )


def save_strip(frames: list[np.ndarray], path: Path, count: int = 10) -> Path:
    """Every len/count-th camera frame side by side, half size: the episode at a glance."""
    from PIL import Image as PILImage

    picked = [frames[i] for i in np.linspace(0, len(frames) - 1, min(count, len(frames))).astype(int)]
    strip = np.concatenate([f[::2, ::2] for f in picked], axis=1)
    path.parent.mkdir(parents=True, exist_ok=True)
    PILImage.fromarray(strip).save(path)
    return path


def _spin_for(node: Node, seconds: float) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end and rclpy.ok():
        rclpy.spin_once(node, timeout_sec=min(0.1, max(0.0, end - time.monotonic())))


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


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="kv-vla-bringup",
        description="Start the policy node, the diagnostics node and a camera source from config/policy.yaml "
        "(what launch/policy.launch.py starts), print the measured control frequency and cache size from "
        "/diagnostics, and stop everything cleanly after --duration seconds of control.",
    )
    parser.add_argument("--duration", type=float, default=20.0, help="seconds to run once actions flow")
    parser.add_argument("--params", type=Path, help="YAML parameter file (default: the package's config/policy.yaml)")
    parser.add_argument("--checkpoint", help="checkpoint directory (default: the YAML's; '' there = tiny)")
    parser.add_argument(
        "--strategy", "--policy", help="cache eviction strategy override (full, none, window, ..., gated)"
    )
    parser.add_argument("--namespace", default="", help="namespace of all nodes")
    parser.add_argument("--bag", type=Path, help="replay this rosbag2 bag as the camera instead of the synthetic one")
    parser.add_argument(
        "--sim", choices=("lift", "cued_lift"), help="close the loop with the MuJoCo Panda on this task"
    )
    parser.add_argument("--strip", type=Path, help="with --sim: where to write the episode's image strip (PNG)")
    parser.add_argument("--startup-timeout", type=float, default=180.0, help="seconds to wait for the first action")
    args = parser.parse_args(argv)

    params = args.params or default_params_file()
    overrides = {}
    if args.checkpoint is not None:
        overrides["checkpoint"] = args.checkpoint
    if args.strategy:
        overrides["cache.strategy"] = args.strategy
    commands = {
        "policy_node": node_command("policy_node", params, args.namespace, overrides),
        "diagnostics_node": node_command("diagnostics_node", params, args.namespace),
    }
    if args.sim:
        commands["sim_node"] = node_command("sim_node", params, args.namespace, {"task": args.sim})
    elif args.bag:
        commands["bag_replay"] = [
            sys.executable,
            "-m",
            "kv_efficient_vla_ros.ros.bags",
            str(args.bag),
            "--loop",
            "1000",
        ]
    else:
        commands["synthetic_camera"] = node_command("synthetic_camera", params, args.namespace)

    rclpy.init()
    monitor = Monitor(args.namespace, keep_frames=args.sim is not None)
    print(f"[bringup] parameters from {params}")
    children = {name: subprocess.Popen(command) for name, command in commands.items()}
    codes: dict[str, int] = {}
    try:
        deadline = time.monotonic() + args.startup_timeout
        while monitor.actions == 0:
            dead = {n: c.returncode for n, c in children.items() if c.poll() is not None}
            if dead or time.monotonic() > deadline:
                raise SystemExit(f"[bringup] no action after start: exited {dead or 'none'}; see the node logs above")
            _spin_for(monitor, 0.5)
        print(f"[bringup] actions flowing; running {args.duration:g} s")
        start = time.monotonic()
        while time.monotonic() - start < args.duration:
            _spin_for(monitor, 2.0)
            print(f"[bringup] t={time.monotonic() - start:4.0f}s  {monitor.line()}", flush=True)
            if any(c.poll() is not None for c in children.values()):
                raise SystemExit("[bringup] a node exited early")
        print(f"[bringup] measured: {monitor.line()}")
        if args.sim:
            print(f"[bringup] episode: {monitor.episode() or 'no status from sim_node'}")
            if monitor.frames:
                strip = save_strip(monitor.frames, args.strip or Path("results") / f"closed_loop_{args.sim}.png")
                print(f"[bringup] wrote {len(monitor.frames)} camera frames as a strip to {strip}")
    finally:
        codes = stop(children)
        monitor.destroy_node()
        rclpy.try_shutdown()
        print(f"[bringup] stopped: {codes}")
    if any(code != 0 for code in codes.values()):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
