"""``kv-vla-bringup``: the nodes of ``launch/policy.launch.py``, from the same YAML, without ``ros2 launch``.

For installs that have only the Python ROS 2 wheels. Starts the policy node, the diagnostics node and a
camera source (the synthetic camera, the MuJoCo sim, or a rosbag2 bag replayed at its recorded timing)
as separate processes, prints what ``/diagnostics`` measures, and after ``--duration`` seconds of
control (with ``--sim``: or as soon as the episode is decided) stops them all with SIGINT. The sim runs
in lockstep with the policy unless ``--realtime``: the same episode on any machine.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import rclpy
from rclpy.node import Node

from ..ros.bringup import Monitor, default_params_file, node_command, stop


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


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="kv-vla-bringup",
        description="Start the policy node, the diagnostics node and a camera source from config/policy.yaml "
        "(what launch/policy.launch.py starts), print the measured control frequency and cache size from "
        "/diagnostics, and stop everything cleanly after --duration seconds of control.",
    )
    parser.add_argument("--duration", type=float, default=20.0, help="seconds to run once actions flow")
    parser.add_argument("--params", type=Path, help="YAML parameter file (default: the package's config/policy.yaml)")
    parser.add_argument(
        "--checkpoint", help="checkpoint directory (default: the YAML's; '' there = the shipped trained policy)"
    )
    parser.add_argument(
        "--strategy", "--policy", help="cache eviction strategy override (full, none, window, ..., gated)"
    )
    parser.add_argument("--namespace", default="", help="namespace of all nodes")
    parser.add_argument("--bag", type=Path, help="replay this rosbag2 bag as the camera instead of the synthetic one")
    parser.add_argument(
        "--sim", help="close the loop with the MuJoCo Panda on this task (lift, cued_lift, delayed_cue)"
    )
    parser.add_argument("--seed", type=int, help="with --sim: the episode's seed (default: the YAML's)")
    parser.add_argument(
        "--realtime",
        action="store_true",
        help="with --sim: step the sim at its control_hz in real time instead of in lockstep with the policy "
        "(lockstep: one step per action answering the newest image, deterministic)",
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
        sim = {"task": args.sim, "lockstep": not args.realtime} | ({} if args.seed is None else {"seed": args.seed})
        commands["sim_node"] = node_command("sim_node", params, args.namespace, sim)
    elif args.bag:
        commands["bag_replay"] = [
            sys.executable,
            "-m",
            "kv_efficient_vla_ros.cli.replay",
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
            if args.sim and monitor.episode_done():
                break
        print(f"[bringup] measured: {monitor.line()}")
        if args.sim:
            pace = "real time" if args.realtime else "lockstep"
            outcome = monitor.episode() or "no status from sim_node"
            if not monitor.episode_done():
                outcome += f" (not decided after {args.duration:g} s)"
            print(f"[bringup] episode ({pace}): {outcome}")
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
