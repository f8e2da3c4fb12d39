"""``kv-vla-demo``: run the policy on a short synthetic episode and print its actions."""

from __future__ import annotations

import argparse
import logging

import numpy as np

from ..core.openvla.tiny import ensure_default_checkpoint
from ..core.policy import OpenVLAPolicy
from ..core.synthetic import synthetic_frames


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="kv-vla-demo",
        description="Run an OpenVLA-format policy on a synthetic camera episode and print one action per "
        "frame (x y z roll pitch yaw gripper, un-normalized) with per-stage latency.",
    )
    parser.add_argument("--checkpoint", help="checkpoint directory (default: the embedded tiny checkpoint)")
    parser.add_argument("--unnorm-key", default="sim_panda_lift", help="dataset key of norm_stats to un-normalize with")
    parser.add_argument("--instruction", default="lift the red cube")
    parser.add_argument("--frames", type=int, default=8, help="episode length in frames")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="[%(levelname)s] %(message)s")

    checkpoint = args.checkpoint or ensure_default_checkpoint()
    policy = OpenVLAPolicy.from_checkpoint(checkpoint, unnorm_key=args.unnorm_key, device=args.device)
    print(
        f"checkpoint {checkpoint}  ({policy.config.vision_backbone_id}, LLM "
        f"{policy.config.llm_dim} wide x {policy.config.text_config.num_hidden_layers} layers)"
    )
    print(f"instruction: {args.instruction!r}   unnorm_key: {args.unnorm_key}")
    print(f"{'frame':>5}  {'action (x y z roll pitch yaw gripper)':<58}  vision_ms  llm_ms")
    totals = []
    for i, frame in enumerate(synthetic_frames(args.frames)):
        out = policy.predict(frame, args.instruction)
        totals.append(out.latency_s["total"])
        action = " ".join(f"{a:+.3f}" for a in out.action)
        print(f"{i:>5}  {action:<58}  {1e3 * out.latency_s['vision']:9.1f}  {1e3 * out.latency_s['llm']:6.1f}")
    steady = totals[1:] or totals  # the first call pays one-time allocation costs
    print(f"median single-frame latency {1e3 * float(np.median(steady)):.1f} ms over {len(steady)} frames")


if __name__ == "__main__":
    main()
