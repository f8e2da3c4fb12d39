"""``kv-vla-record-demos``: scripted-expert episodes in the MuJoCo Panda, to ``.npz`` and rosbag2.

Each episode becomes ``episode_SEED.npz`` (frames, policy-space actions, instruction, success) for training
and benchmarks, and a rosbag2 bag (camera, instruction, the expert's action as EndEffectorAction, task
success) that ``kv-vla-replay`` can play into the nodes.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ..core.sim.action_mapping import ActionMapping
from ..core.sim.episodes import run_expert_episode
from ..core.sim.tasks import TASKS, PandaTask
from ..ros.bags import write_episode_bag


def record(
    task: str, episodes: int, out: Path, seed: int, max_steps: int, control_hz: float, bags: bool, image_size: int
) -> dict:
    mapping = ActionMapping()
    sim = PandaTask(task, seed, image_size=image_size, control_hz=control_hz, horizon=max_steps)
    results = []
    for i in tqdm(range(episodes), desc=f"{task} demos"):
        episode = run_expert_episode(sim, seed + i, max_steps, mapping)
        # named by seed: a recording from another first seed names its files apart
        episode.save(out / task / f"episode_{seed + i:03d}.npz")
        if bags:
            write_episode_bag(episode, out / task / f"episode_{seed + i:03d}_bag", control_hz)
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
        "image_size": sim.image_size,
        "seeds": [seed, seed + episodes - 1],
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
    parser.add_argument("--image-size", type=int, default=0, help="camera image side in pixels; 0 = the task's")
    parser.add_argument("--no-bags", action="store_true", help="write only the .npz files")
    args = parser.parse_args(argv)
    bags = not args.no_bags
    s = record(args.task, args.episodes, args.out, args.seed, args.max_steps, args.control_hz, bags, args.image_size)
    print(
        f"{s['task']}: expert success {s['success_rate']:.0%} over {s['episodes']} episodes, mean length "
        f"{s['mean_length']:.1f} steps at {s['control_hz']:g} Hz; sim step {s['step_ms']:.1f} ms, render "
        f"{s['render_ms']:.1f} ms, reset {s['reset_s']:.2f} s; written to {args.out / args.task}"
    )


if __name__ == "__main__":
    main()
