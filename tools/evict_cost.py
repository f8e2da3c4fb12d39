"""Evict cost per tick of the bounded policies, for a before/after comparison of two code trees.

    PYTHONPATH=<tree> python tools/evict_cost.py --label LABEL [--checkpoint DIR] >> runs.jsonl
    python tools/evict_cost.py --table runs.jsonl

Each call measures `window` and `gated` with rope_compact off and on (budget 1,024 tokens, recent 2,
synthetic frames, median over the steady ticks) and prints one JSON line; only public APIs are used, so
the same script measures an older tree. Alternate the trees' calls so that both see the same machine.
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections import defaultdict

from kv_efficient_vla_ros.core.cache import CacheConfig
from kv_efficient_vla_ros.core.policy import OpenVLAPolicy
from kv_efficient_vla_ros.core.runner import PolicyRunner
from kv_efficient_vla_ros.core.synthetic import synthetic_frames

CASES = [(strategy, compact) for strategy in ("window", "gated") for compact in (False, True)]


def measure(policy: OpenVLAPolicy, frames: list, strategy: str, rope_compact: bool, budget: int) -> dict:
    config = CacheConfig(strategy=strategy, budget_tokens=budget, recent_chunks=2, rope_compact=rope_compact)
    runner = PolicyRunner(policy, config)
    stats = [runner.step(frame, "lift the red cube").stats for frame in frames]
    steady = stats[len(stats) // 4 :]
    return {
        "evict_ms": statistics.median(s.latency_ms["evict"] for s in steady),
        "tick_ms": statistics.median(s.latency_ms["total"] for s in steady),
        "max_position": max(s.max_position for s in stats),
    }


def table(path: str) -> None:
    runs = defaultdict(list)
    for line in open(path):
        run = json.loads(line)
        runs[run["label"]].append(run)
    print("| policy | rope_compact | " + " | ".join(f"{label}: evict ms / tick ms (share)" for label in runs) + " |")
    print("|---|---|" + "---|" * len(runs))
    for strategy, compact in CASES:
        key = f"{strategy}/{compact}"
        cells = []
        for label_runs in runs.values():
            evict = statistics.median(r["cases"][key]["evict_ms"] for r in label_runs)
            tick = statistics.median(r["cases"][key]["tick_ms"] for r in label_runs)
            cells.append(f"{evict:.1f} / {tick:.0f} ({100 * evict / tick:.1f} %)")
        print(f"| {strategy} | {compact} | " + " | ".join(cells) + " |")
    print("\nMedians over " + ", ".join(f"{len(r)} runs ({label})" for label, r in runs.items()) + ".")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--label", help="name of the code tree measured")
    parser.add_argument("--table", metavar="RUNS_JSONL", help="print the markdown table of earlier runs instead")
    parser.add_argument("--checkpoint", default="data/checkpoints/openvla-512x8")
    parser.add_argument("--unnorm-key", default="sim_panda_lift")
    parser.add_argument("--budget-tokens", type=int, default=1024)
    parser.add_argument("--frames", type=int, default=24)
    args = parser.parse_args()
    if args.table:
        table(args.table)
        return
    policy = OpenVLAPolicy.from_checkpoint(args.checkpoint, args.unnorm_key)
    frames = synthetic_frames(args.frames, seed=1)
    cases = {f"{s}/{c}": measure(policy, frames, s, c, args.budget_tokens) for s, c in CASES}
    print(json.dumps({"label": args.label, "checkpoint": args.checkpoint, "cases": cases}))


if __name__ == "__main__":
    main()
