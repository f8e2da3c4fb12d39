"""Does the gated cache still hold the cue when the episode is decided? Closed loop, one policy and gate.

    python tools/probe_cue_in_cache.py --checkpoint DIR --gate DIR [--seeds N] >> results/probe_cue_in_cache.md

Runs the first N held-out seeds (100000 and up) whose cue is on the right (-1: the side the policies
default away from) with `gated` at a 4-frame budget, and reports per episode the frames in the cache at
the last tick and whether the episode succeeded.
"""

from __future__ import annotations

import argparse

import torch

from kv_efficient_vla_ros.core.cache import CacheConfig
from kv_efficient_vla_ros.core.policy import OpenVLAPolicy
from kv_efficient_vla_ros.core.runner import PolicyRunner
from kv_efficient_vla_ros.core.sim.action_mapping import ActionMapping
from kv_efficient_vla_ros.core.sim.tasks import PandaTask

MAX_STEPS = 40


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--gate", required=True)
    parser.add_argument("--seeds", type=int, default=12)
    parser.add_argument("--budget-frames", type=int, default=4)
    args = parser.parse_args()
    torch.set_num_threads(1)
    policy = OpenVLAPolicy.from_checkpoint(args.checkpoint)
    frame_tokens = policy.config.num_patches
    config = CacheConfig(
        strategy="gated",
        budget_tokens=args.budget_frames * frame_tokens,
        recent_chunks=2,
        rope_compact=False,  # as kv-vla-eval and the policy node: the policy was trained with gaps in positions
        options={"gate_checkpoint": args.gate},
    )
    runner, sim, mapping = (
        PolicyRunner(policy, config),
        PandaTask("delayed_cue", 0, horizon=MAX_STEPS + 5),
        ActionMapping(),
    )
    rows, seed = [], 100000
    while len(rows) < args.seeds:
        state = sim.reset(seed)
        if state.cue_side == -1:
            runner.reset()
            for _ in range(MAX_STEPS):
                result = runner.step(sim.render(), sim.instruction)
                state = sim.step(mapping.to_controller(result.action))
                if sim.decided():
                    break
            held = sorted(c.tick for c in runner.cache.chunks)
            cue_held = sum(f in held for f in (state.cue_step, state.cue_step + 1))
            rows.append((seed, state.cue_step, held, cue_held, sim.success()))
        seed += 1
    print(
        f"\n`python tools/probe_cue_in_cache.py --checkpoint {args.checkpoint} --gate {args.gate} --seeds {args.seeds}`"
    )
    print(f"\nBudget {args.budget_frames} frames, 2 recent; held-out seeds whose cue is on the right (-1).\n")
    print("| seed | cue frames | frames in the cache at the last tick | cue frames held | success |")
    print("|---:|---|---|---:|---|")
    for seed, cue_step, held, cue_held, success in rows:
        print(f"| {seed} | {cue_step}, {cue_step + 1} | {held} | {cue_held} of 2 | {'yes' if success else 'no'} |")
    held_any, successes = sum(r[3] > 0 for r in rows), sum(r[4] for r in rows)
    print(f"\nCue held at the last tick in {held_any} of {len(rows)}; success in {successes} of {len(rows)}.")


if __name__ == "__main__":
    main()
