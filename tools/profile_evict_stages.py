"""Where `gated`'s evict time goes: summarizing, moving the tail, and the minor page faults of each, per tick.

    python tools/profile_evict_stages.py [--checkpoint data/checkpoints/openvla-512x8] > results/profile_evict_stages.md

`gated` (untrained gate: it summarizes one chunk per tick here), budget 1,024 tokens, recent 2, rope_compact off,
20 synthetic frames; the cache's summarize / relayout / move calls are timed by wrapping them.
"""

from __future__ import annotations

import argparse
import resource
import time

import kv_efficient_vla_ros.core.cache.manager as manager
from kv_efficient_vla_ros.core.cache import CacheConfig
from kv_efficient_vla_ros.core.policy import OpenVLAPolicy
from kv_efficient_vla_ros.core.runner import PolicyRunner
from kv_efficient_vla_ros.core.synthetic import synthetic_frames


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", default="data/checkpoints/openvla-512x8")
    parser.add_argument("--unnorm-key", default="sim_panda_lift")
    args = parser.parse_args()
    policy = OpenVLAPolicy.from_checkpoint(args.checkpoint, args.unnorm_key)
    config = CacheConfig(strategy="gated", budget_tokens=1024, recent_chunks=2, rope_compact=False)
    runner = PolicyRunner(policy, config)
    cache, measured = runner.cache, {}

    def timed(name, function):
        def call(*a, **k):
            faults, start = resource.getrusage(resource.RUSAGE_SELF).ru_minflt, time.perf_counter()
            out = function(*a, **k)
            faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults
            measured[name] = (1e3 * (time.perf_counter() - start), faults)
            return out

        return call

    manager.summarize = timed("summarize", manager.summarize)
    cache._relayout = timed("relayout", cache._relayout)
    cache.storage.move = timed("move", cache.storage.move)
    print(f"`python tools/profile_evict_stages.py --checkpoint {args.checkpoint}`\n")
    print("| tick | evict ms | summarize ms (page faults) | relayout ms | of which move ms (page faults) |")
    print("|---:|---:|---:|---:|---:|")
    for tick, frame in enumerate(synthetic_frames(20, seed=1)):
        measured.clear()
        stats = runner.step(frame, "lift the red cube").stats

        def cell(name):
            ms, faults = measured.get(name, (0.0, 0))
            return f"{ms:.1f} ({faults})"

        relayout = measured.get("relayout", (0.0, 0))[0]
        print(f"| {tick} | {stats.latency_ms['evict']:.1f} | {cell('summarize')} | {relayout:.1f} | {cell('move')} |")


if __name__ == "__main__":
    main()
