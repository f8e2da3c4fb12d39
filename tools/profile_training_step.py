"""Where one behaviour-cloning step of the memory policy spends its time (fresh tiny model, real demos).

python tools/profile_training_step.py [--steps 6] > results/profile_training_step.md
"""

from __future__ import annotations

import argparse
import time
from itertools import pairwise
from pathlib import Path

import torch

from kv_efficient_vla_ros.core.openvla.processor import PromptTokenizer
from kv_efficient_vla_ros.core.openvla.tiny import build_tiny_model
from kv_efficient_vla_ros.core.sim.episodes import Episode
from kv_efficient_vla_ros.core.training.behavior_cloning import (
    MEMORY_POLICY_SPEC,
    BehaviorCloning,
    TrainConfig,
    random_evictions,
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--episodes-dir", type=Path, default=Path("data/demos/delayed_cue"))
    parser.add_argument("--steps", type=int, default=6)
    args = parser.parse_args()
    episodes = [Episode.load(p) for p in sorted(args.episodes_dir.glob("episode_*.npz"))[: args.steps + 4]]
    model, tokenizer, _ = build_tiny_model(MEMORY_POLICY_SPEC)
    trainer = BehaviorCloning(model, PromptTokenizer(tokenizer), episodes, "profile", TrainConfig())
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    model.train()
    print(f"`python tools/profile_training_step.py --steps {args.steps}` ({torch.get_num_threads()} threads)\n")
    print(
        "| step | frames | sequence tokens | gapped | tensors ms | mask ms | forward ms | backward ms | optimizer ms |"
    )
    print("|---:|---:|---:|---|---:|---:|---:|---:|---:|")
    for step, episode in enumerate(trainer.train_set[: args.steps]):
        t = [time.perf_counter()]
        data = trainer.tensors(episode)
        t.append(time.perf_counter())
        gapped = step % 2 == 1
        drop_tick = random_evictions(len(data.pixels), trainer.rng, 0.5) if gapped else None
        layout, _ = trainer._layout(len(data.pixels))
        if drop_tick is not None:
            layout.additive_mask(drop_tick=drop_tick)  # what the loss builds again: its cost alone
        t.append(time.perf_counter())
        loss, _ = trainer.loss(data, drop_tick)
        t.append(time.perf_counter())
        optimizer.zero_grad()
        loss.backward()
        t.append(time.perf_counter())
        optimizer.step()
        t.append(time.perf_counter())
        ms = [f"{1e3 * (b - a):.0f}" for a, b in pairwise(t)]
        print(f"| {step} | {len(data.pixels)} | {layout.length} | {gapped} | " + " | ".join(ms) + " |")
    print("\nThe first step pays for allocations; `forward` includes the vision towers and the loss.")


if __name__ == "__main__":
    main()
