"""``kv-vla-record-demos``: scripted-expert episodes in the MuJoCo Panda, to ``.npz`` and rosbag2.

Each episode becomes ``episode_NNN.npz`` (frames, policy-space actions, instruction, success) for training
and benchmarks, and a rosbag2 bag (camera, instruction, the expert's action as EndEffectorAction, task
success) that ``kv-vla-replay`` can play into the nodes.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from rclpy.serialization import serialize_message
from rosbags.rosbag2 import Writer
from rosbags.typesys import Stores, get_types_from_msg, get_typestore
from std_msgs.msg import Bool, Header, String
from tqdm import tqdm

from ..core.sim.action_mapping import ActionMapping
from ..core.sim.episodes import Episode, run_expert_episode
from ..core.sim.tasks import TASKS, PandaTask
from .bags import STORAGES
from .interfaces import action_message, rgb_to_image

MSG_DIRS = (Path(__file__).resolve().parents[2] / "msg",)


def typestore_with_package_messages():
    """Kilted's standard types plus this package's messages, read from their .msg definitions."""
    typestore = get_typestore(Stores.ROS2_KILTED)
    for directory in MSG_DIRS:
        for path in sorted(directory.glob("*.msg")):
            typestore.register(get_types_from_msg(path.read_text(), f"kv_efficient_vla_ros/msg/{path.stem}"))
    return typestore


def write_episode_bag(episode: Episode, path: Path, control_hz: float, storage: str = "mcap") -> Path:
    typestore = typestore_with_package_messages()
    period_ns = int(1e9 / control_hz)
    with Writer(path, version=9, storage_plugin=STORAGES[storage]) as writer:
        add = lambda topic, msgtype: writer.add_connection(topic, msgtype, typestore=typestore)  # noqa: E731
        camera = add("/camera/image_raw", "sensor_msgs/msg/Image")
        instruction = add("/instruction", "std_msgs/msg/String")
        action = add("/expert/action", "kv_efficient_vla_ros/msg/EndEffectorAction")
        success = add("/task_success", "std_msgs/msg/Bool")
        writer.write(instruction, 0, serialize_message(String(data=episode.instruction)))
        for t, (frame, act) in enumerate(zip(episode.frames, episode.actions, strict=True)):
            stamp = t * period_ns
            image = rgb_to_image(frame)
            image.header.stamp.sec, image.header.stamp.nanosec = divmod(stamp, 10**9)
            image.header.frame_id = "agentview"
            writer.write(camera, stamp, serialize_message(image))
            msg = action_message(act, Header(stamp=image.header.stamp), t)
            writer.write(action, stamp + 1, serialize_message(msg))
        writer.write(success, len(episode.actions) * period_ns, serialize_message(Bool(data=episode.success)))
    return path


def record(task: str, episodes: int, out: Path, seed: int, max_steps: int, control_hz: float, bags: bool) -> dict:
    mapping = ActionMapping()
    sim = PandaTask(task, seed, control_hz=control_hz, horizon=max_steps)
    results = []
    for i in tqdm(range(episodes), desc=f"{task} demos"):
        episode = run_expert_episode(sim, seed + i, max_steps, mapping)
        episode.save(out / task / f"episode_{i:03d}.npz")
        if bags:
            write_episode_bag(episode, out / task / f"episode_{i:03d}_bag", control_hz)
        results.append(episode)
    sim.close()
    summary = {
        "task": task,
        "episodes": episodes,
        "success_rate": float(np.mean([e.success for e in results])),
        "mean_length": float(np.mean([len(e.actions) for e in results])),
        "step_ms": 1e3 * float(np.mean([e.timing_s["step"] for e in results])),
        "render_ms": 1e3 * float(np.mean([e.timing_s["render"] for e in results])),
        "reset_s": float(np.mean([e.timing_s["reset"] for e in results])),
        "control_hz": control_hz,
    }
    (out / task / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="kv-vla-record-demos",
        description="Record scripted-expert episodes of a MuJoCo Panda task to .npz and rosbag2 (MCAP), and print "
        "the expert's success rate, episode length, sim step time and render time.",
    )
    parser.add_argument("--task", choices=TASKS, default="lift")
    parser.add_argument("--episodes", type=int, default=10)
    parser.add_argument("--out", type=Path, default=Path("data/demos"))
    parser.add_argument("--seed", type=int, default=0, help="seed of the first episode (then +1 each)")
    parser.add_argument("--max-steps", type=int, default=60)
    parser.add_argument("--control-hz", type=float, default=5.0)
    parser.add_argument("--no-bags", action="store_true", help="write only the .npz files")
    args = parser.parse_args(argv)
    s = record(args.task, args.episodes, args.out, args.seed, args.max_steps, args.control_hz, not args.no_bags)
    print(
        f"{s['task']}: expert success {s['success_rate']:.0%} over {s['episodes']} episodes, mean length "
        f"{s['mean_length']:.1f} steps at {s['control_hz']:g} Hz; sim step {s['step_ms']:.1f} ms, render "
        f"{s['render_ms']:.1f} ms, reset {s['reset_s']:.2f} s; written to {args.out / args.task}"
    )


if __name__ == "__main__":
    main()
