"""Does token selection keep the patches that show the cue? Measured on training demos only.

    python tools/probe_selection_cue.py [--episodes 40] [--keep 32 48] > results/probe_selection_cue.md

On each recorded `delayed_cue` demo the first trained policy runs with `full` and token selection; at the two
ticks the cue is visible, the cue's patches are the 2 whose pixels changed most from the frame before it
appeared (the light covers two 14-px patches of the 112-px image: mean change 88 and 127 of 255 on the first
demos, the arm's largest 50-70). Reported: the share of those patches the selector kept, against what
keeping `keep` of 64 patches at random would give.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from kv_efficient_vla_ros.core.accelerators.config import TokenSelectionConfig
from kv_efficient_vla_ros.core.cache import CacheConfig
from kv_efficient_vla_ros.core.policy import OpenVLAPolicy
from kv_efficient_vla_ros.core.runner import PolicyRunner
from kv_efficient_vla_ros.core.sim.episodes import Episode

PATCH, CUE_PATCHES = 14, 2


def cue_patches(before: np.ndarray, after: np.ndarray) -> set[int]:
    """The patch indices (row-major) whose pixels changed most between two frames."""
    change = np.abs(after.astype(np.float32) - before.astype(np.float32)).mean(axis=2)
    side = change.shape[0] // PATCH
    per_patch = change[: side * PATCH, : side * PATCH].reshape(side, PATCH, side, PATCH).mean(axis=(1, 3))
    return set(np.argsort(per_patch.reshape(-1))[-CUE_PATCHES:].tolist())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", default="checkpoints/openvla-tiny-delayed-cue", help="the first trained policy")
    parser.add_argument("--episodes-dir", type=Path, default=Path("data/demos/delayed_cue"))
    parser.add_argument("--episodes", type=int, default=40)
    parser.add_argument("--keep", type=int, nargs="+", default=[32, 48])
    args = parser.parse_args()
    policy = OpenVLAPolicy.from_checkpoint(args.checkpoint)
    paths = sorted(args.episodes_dir.glob("episode_*.npz"))[: args.episodes]
    episodes = [e for e in (Episode.load(p) for p in paths) if e.cue_step >= 1]
    print(f"`python tools/probe_selection_cue.py --episodes {args.episodes} --keep {' '.join(map(str, args.keep))}`\n")
    print(f"{len(episodes)} training demos with a cue (of the first {len(paths)} in {args.episodes_dir}).\n")
    print("| keep_tokens | cue patches kept, first cue frame | second cue frame | at random |")
    print("|---:|---:|---:|---:|")
    for keep in args.keep:
        shares = {0: [], 1: []}
        for episode in episodes:
            runner = PolicyRunner(policy, CacheConfig(strategy="full"), token_selection=TokenSelectionConfig(keep))
            cue = cue_patches(episode.frames[episode.cue_step - 1], episode.frames[episode.cue_step])
            for tick, frame in enumerate(episode.frames[: episode.cue_step + 2]):
                runner.step(frame, episode.instruction)
                offset = tick - episode.cue_step
                if offset in shares:
                    shares[offset].append(len(cue & set(runner.selector.kept.tolist())) / len(cue))
        print(f"| {keep} of 64 | {np.mean(shares[0]):.0%} | {np.mean(shares[1]):.0%} | {keep / 64:.0%} |")


if __name__ == "__main__":
    main()
