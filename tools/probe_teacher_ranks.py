"""Does a per-frame likelihood teacher single out the cue? Rank of the cue frames among all frames.

    python tools/probe_teacher_ranks.py [--keep-first-frame] [--block-frames N] [--replace | --keep-alone] \
        >> results/probe_teacher_ranks.md

For each held-out gate demo, the policy acts with its whole history (`full`); then each block of
`--block-frames` frames is evicted as it leaves the recent window (or, with `--replace`, shown as its
neighbouring frame), and a frame's effect is the largest drop, over later ticks, in the log-likelihood of
the actions the policy took: summed over the 7 action tokens, or on the side token (dy) only. Reported:
where the best-ranked cue frame lands (0 = the teacher's top frame).
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from kv_efficient_vla_ros.core.cache import CacheConfig
from kv_efficient_vla_ros.core.policy import OpenVLAPolicy
from kv_efficient_vla_ros.core.runner import PolicyRunner
from kv_efficient_vla_ros.core.sim.episodes import Episode
from kv_efficient_vla_ros.core.training.teacher import block_drops

FIRST_POLICY = "checkpoints/openvla-tiny-delayed-cue"  # results/probe_teacher_ranks.md was measured on it
VALIDATION_SEEDS = (2, 4, 8, 10, 16, 20, 27, 34, 42, 51, 52, 57)  # the gates' held-out demos
SIDE_TOKEN = 1  # dy: which side the arm moves to


def effects(
    policy: OpenVLAPolicy, episode: Episode, recent: int, first: int, block_frames: int, counterfactual: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per frame: the largest later log-likelihood loss without its block (``teacher.block_drops``), over all 7
    tokens and on the side token; a frame takes the largest of its blocks."""
    frames = list(episode.frames)
    runner = PolicyRunner(policy, CacheConfig(strategy="full"))
    token_ids = torch.tensor(np.stack([runner.step(f, episode.instruction).token_ids for f in frames]))
    all_tokens, side = torch.zeros(len(frames)), torch.zeros(len(frames))
    drops = block_drops(policy, frames, episode.instruction, token_ids, recent, block_frames, counterfactual, first)
    for block, drop in drops:
        for f in block:
            all_tokens[f] = max(all_tokens[f], drop.sum(-1).clamp(min=0).max())
            side[f] = max(side[f], drop[:, SIDE_TOKEN].clamp(min=0).max())
    return all_tokens, side


def cue_rank(effect: torch.Tensor, cue_step: int) -> int:
    order = torch.argsort(effect, descending=True).tolist()
    return min(order.index(c) for c in (cue_step, cue_step + 1) if c < len(effect))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", default=FIRST_POLICY, help="policy (default: the first trained policy)")
    parser.add_argument("--episodes-dir", default="data/demos/delayed_cue")
    parser.add_argument("--recent-chunks", type=int, default=2)
    parser.add_argument("--keep-first-frame", action="store_true", help="never evict (nor rate) frame 0")
    parser.add_argument("--block-frames", type=int, default=1, help="frames removed together")
    parser.add_argument("--replace", action="store_true", help="replace the block by the frame before it instead")
    parser.add_argument("--keep-alone", action="store_true", help="gain from keeping the block alone beside the window")
    args = parser.parse_args()
    torch.set_num_threads(2)
    policy = OpenVLAPolicy.from_checkpoint(args.checkpoint)
    first = 1 if args.keep_first_frame else 0
    counterfactual = "keep_alone" if args.keep_alone else "replace" if args.replace else "evict"
    ranks = {"all 7 tokens": [], "side token": []}
    for seed in VALIDATION_SEEDS:
        episode = Episode.load(f"{args.episodes_dir}/episode_{seed:03d}.npz")
        for name, effect in zip(
            ranks,
            effects(policy, episode, args.recent_chunks, first, args.block_frames, counterfactual),
            strict=True,
        ):
            ranks[name].append(cue_rank(effect, episode.cue_step))
    flag = (
        " --keep-first-frame" * args.keep_first_frame + " --replace" * args.replace + " --keep-alone" * args.keep_alone
    )
    flag += f" --block-frames {args.block_frames}" * (args.block_frames != 1)
    flag += f" --checkpoint {args.checkpoint}" * (args.checkpoint != FIRST_POLICY)
    print(f"\n`python tools/probe_teacher_ranks.py{flag}`: {len(VALIDATION_SEEDS)} held-out demos\n")
    print("| effect on | cue frame ranked first | mean rank of the best cue frame | ranks per episode |")
    print("|---|---:|---:|---|")
    for name, values in ranks.items():
        print(f"| {name} | {sum(r == 0 for r in values)} of {len(values)} | {np.mean(values):.2f} | {values} |")


if __name__ == "__main__":
    main()
