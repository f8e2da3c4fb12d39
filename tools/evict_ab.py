"""Evict cost of `window` without rope_compact (the policy node's default), with and without rotating
tokens that only move (by a zero delta), in one process, alternating.

    python tools/evict_ab.py [--checkpoint DIR] [--repeats 3]

The old path is emulated by making ``delta.any()`` answer True inside ``ChunkedCache._rebuild``.
"""

from __future__ import annotations

import argparse
import statistics
from unittest import mock

import torch

from kv_efficient_vla_ros.core.cache import CacheConfig
from kv_efficient_vla_ros.core.policy import OpenVLAPolicy
from kv_efficient_vla_ros.core.runner import PolicyRunner
from kv_efficient_vla_ros.core.synthetic import synthetic_frames


def evict_ms(policy: OpenVLAPolicy, frames: list, budget: int) -> tuple[float, float]:
    config = CacheConfig(strategy="window", budget_tokens=budget, recent_chunks=2, rope_compact=False)
    runner = PolicyRunner(policy, config)
    stats = [runner.step(frame, "lift the red cube").stats for frame in frames]
    steady = stats[len(stats) // 4 :]
    return statistics.median(s.latency_ms["evict"] for s in steady), statistics.median(
        s.latency_ms["total"] for s in steady
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", default="data/checkpoints/openvla-512x8")
    parser.add_argument("--unnorm-key", default="sim_panda_lift")
    parser.add_argument("--budget-tokens", type=int, default=1024)
    parser.add_argument("--frames", type=int, default=24)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    policy = OpenVLAPolicy.from_checkpoint(args.checkpoint, args.unnorm_key)
    frames = synthetic_frames(args.frames, seed=1)
    runs = {"copy only (now)": [], "rotate by zero (before)": []}
    for _ in range(args.repeats):
        runs["copy only (now)"].append(evict_ms(policy, frames, args.budget_tokens))
        with mock.patch.object(torch.Tensor, "any", lambda self, *a, **k: torch.tensor(True)):
            runs["rotate by zero (before)"].append(evict_ms(policy, frames, args.budget_tokens))
    print(f"`python tools/evict_ab.py --checkpoint {args.checkpoint} --repeats {args.repeats}`\n")
    print("| `window`, rope_compact off | evict ms (median per run) | tick ms | evict share |")
    print("|---|---|---|---:|")
    for name, results in runs.items():
        evicts = ", ".join(f"{e:.1f}" for e, _ in results)
        ticks = ", ".join(f"{t:.0f}" for _, t in results)
        share = statistics.median(e / t for e, t in results)
        print(f"| {name} | {evicts} | {ticks} | {100 * share:.1f} % |")


if __name__ == "__main__":
    main()
