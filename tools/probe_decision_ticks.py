"""Which decision tick does a policy get wrong? The side token's sign, tick by tick, on demos it never saw.

    make probe-decision-ticks   # records 96 probe demos (seeds 200000+), then this > results/probe_decision_ticks.md

In closed loop only the first tick that moves sideways decides: from the next one on, the newest frames
show the arm already moving to a side, and a policy can copy that motion without remembering the cue.
The validation metric of behaviour cloning averages every decision tick, so it can look better than what
decides an episode. For each checkpoint, the training forward (the history the runner shows with `full`)
on recorded demos no policy trained on, each target tokenized with the checkpoint's own norm_stats;
reported: how often the predicted sideways step goes toward the cued side, holds, or goes away, at the
first, second and later decision ticks, and at the first by cue step.
"""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

from kv_efficient_vla_ros.cli.train_policy import load_episodes
from kv_efficient_vla_ros.core.openvla.action_tokenizer import ActionStats
from kv_efficient_vla_ros.core.openvla.checkpoint import load_model
from kv_efficient_vla_ros.core.openvla.processor import PromptTokenizer
from kv_efficient_vla_ros.core.training.behavior_cloning import BehaviorCloning, TrainConfig

NORM_KEY = "sim_panda_delayed_cue"
CHECKPOINTS = (
    "checkpoints/openvla-tiny-delayed-cue",
    "checkpoints/openvla-tiny-delayed-cue-sparse",
    "checkpoints/openvla-tiny-delayed-cue-first-decision",
)


HOLD_M = 0.01  # a predicted sideways step smaller than this chooses no side yet


@torch.no_grad()
def decisions(trainer: BehaviorCloning, stats: ActionStats) -> list[tuple[int, int, list[str]]]:
    """Per episode: cue step, cue side, and at each decision tick whether the predicted sideways step goes
    `toward` the cued side, `away` from it, or `holds` (under HOLD_M)."""
    out = []
    for episode in trainer.val:
        data = trainer.tensors(episode)
        if not len(data.decision_ticks):
            continue
        _, predicted = trainer.loss(data)
        normalized = trainer.action_tokenizer.token_ids_to_normalized(predicted[data.decision_ticks].numpy())
        dy = stats.unnormalize(normalized)[:, 1] * episode.cue_side
        kinds = ["toward" if d > HOLD_M else "away" if d < -HOLD_M else "holds" for d in dy]
        out.append((episode.cue_step, episode.cue_side, kinds))
    return out


def shares(kinds: list[str]) -> str:
    if not kinds:
        return "-"
    return " / ".join(f"{100 * kinds.count(k) / len(kinds):.0f}" for k in ("toward", "holds", "away"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes-dir", type=Path, default=Path("data/demos_probe/delayed_cue"))
    parser.add_argument("--checkpoints", nargs="+", default=list(CHECKPOINTS))
    args = parser.parse_args()
    episodes = [e for e in load_episodes([args.episodes_dir]) if e.success]
    seeds = sorted(e.seed for e in episodes)
    rows, by_cue_step = [], {}
    for checkpoint in args.checkpoints:
        model = load_model(checkpoint).eval()
        config = TrainConfig(validation_fraction=1.0)  # every episode is probed
        trainer = BehaviorCloning(model, PromptTokenizer.from_checkpoint(checkpoint), episodes, NORM_KEY, config)
        trainer.norm_stats = model.config.norm_stats[NORM_KEY]  # targets in the checkpoint's bins, not the demos'
        results = decisions(trainer, ActionStats.from_norm_stats(model.config.norm_stats, NORM_KEY))
        first = [kinds[0] for _, _, kinds in results]
        second = [kinds[1] for _, _, kinds in results if len(kinds) > 1]
        later = [k for _, _, kinds in results for k in kinds[2:]]
        left = [kinds[0] for _, side, kinds in results if side > 0]
        right = [kinds[0] for _, side, kinds in results if side < 0]
        cells = [first, second, later, left, right]
        rows.append(f"| `{checkpoint}` | " + " | ".join(shares(c) for c in cells) + " |")
        steps = defaultdict(list)
        for cue_step, _, kinds in results:
            steps[cue_step].append(kinds[0] == "toward")
        by_cue_step[checkpoint] = steps
    print("# The sideways step at each decision tick (teacher-forced, whole history)\n")
    print(f"`python tools/probe_decision_ticks.py {' '.join(sys.argv[1:])}`".replace(" `", "`") + "\n")
    source = f"{len(episodes)} recorded demos, seeds {seeds[0]}-{seeds[-1]} (`{args.episodes_dir}`)"
    print(f"{source}. Each cell: % of ticks stepping toward the cued side / holding (< {HOLD_M} m) / away.\n")
    print("| checkpoint | first decision tick | second | third and later | first, left-cued | first, right-cued |")
    print("|---|---:|---:|---:|---:|---:|")
    print("\n".join(rows))
    cue_steps = sorted({s for steps in by_cue_step.values() for s in steps})
    print("\nFirst decision tick stepping toward the cued side, by cue step:\n")
    print("| checkpoint | " + " | ".join(f"cue {s}" for s in cue_steps) + " |")
    print("|---|" + "---:|" * len(cue_steps))
    for checkpoint, steps in by_cue_step.items():
        cells = [f"{100 * np.mean(steps[s]):.0f} %" if steps[s] else "-" for s in cue_steps]
        print(f"| `{checkpoint}` | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
