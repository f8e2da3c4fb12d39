"""Do frames of fewer tokens cost a policy its actions? Measured on the validation demos of behaviour cloning.

    python tools/probe_token_dropout.py > results/probe_token_dropout.md

For each checkpoint, the training forward (the history the runner shows with `full`) on the validation
split of the 240 recorded demos (the same seeded split training held out), with every frame keeping a random
`keep` of its 64 patches (a fixed seed; the same subsets for every checkpoint). Reported: action-token
accuracy over all ticks, and the accuracy of the side token's sign at the ticks the remembered cue decides.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from kv_efficient_vla_ros.cli.train_policy import load_episodes
from kv_efficient_vla_ros.core.openvla.checkpoint import load_model
from kv_efficient_vla_ros.core.openvla.processor import PromptTokenizer
from kv_efficient_vla_ros.core.training.behavior_cloning import BehaviorCloning, TrainConfig

CHECKPOINTS = ("checkpoints/openvla-tiny-delayed-cue", "checkpoints/openvla-tiny-delayed-cue-token-dropout")


@torch.no_grad()
def accuracies(trainer: BehaviorCloning, keep: int, seed: int) -> tuple[float, float]:
    rng = np.random.default_rng(seed)
    center = trainer.action_tokenizer.text_vocab_size - trainer.action_tokenizer.n_bins // 2
    tokens, sides = [], []
    for episode in trainer.val:
        data = trainer.tensors(episode)
        patches = trainer.model.config.num_patches
        ranks = np.argsort(rng.random((len(data.pixels), patches)), axis=1)
        dropped = torch.from_numpy(ranks >= keep) if keep < patches else None
        _, predicted = trainer.loss(data, None, dropped)
        tokens.append((predicted == data.action_ids).float().mean().item())
        if len(data.decision_ticks):
            side, target = predicted[data.decision_ticks, 1], data.action_ids[data.decision_ticks, 1]
            sides.append(((side < center) == (target < center)).float().mean().item())
    return float(np.mean(tokens)), float(np.mean(sides))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes-dir", type=Path, default=Path("data/demos/delayed_cue"))
    parser.add_argument("--keep", type=int, nargs="+", default=[64, 48, 32, 16])
    parser.add_argument("--seed", type=int, default=123)
    args = parser.parse_args()
    episodes = [e for e in load_episodes([args.episodes_dir]) if e.success]
    rows = []
    for checkpoint in CHECKPOINTS:
        model = load_model(checkpoint).eval()
        trainer = BehaviorCloning(
            model, PromptTokenizer.from_checkpoint(checkpoint), episodes, "sim_panda_delayed_cue", TrainConfig()
        )
        cells = [accuracies(trainer, keep, args.seed) for keep in args.keep]
        rows.append(f"| `{checkpoint}` | " + " | ".join(f"{100 * t:.1f} % / {100 * s:.1f} %" for t, s in cells) + " |")
    print("# Token dropout: action accuracy with frames of fewer tokens (validation demos)\n")
    print("`python tools/probe_token_dropout.py > results/probe_token_dropout.md`\n")
    print(
        f"{len(trainer.val)} validation episodes (the seeded split training held out: never trained on); every "
        "frame keeps a random `keep` of its 64 patches at their places (the positions token selection gives them). "
        "Cells: action-token accuracy / side accuracy at the cue-decided ticks.\n"
    )
    print("| checkpoint | " + " | ".join(f"keep {k}" for k in args.keep) + " |")
    print("|---|" + "---:|" * len(args.keep))
    print("\n".join(rows))


if __name__ == "__main__":
    main()
