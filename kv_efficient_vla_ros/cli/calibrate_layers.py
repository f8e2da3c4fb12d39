"""``kv-vla-calibrate-layers``: per-layer importance for EfficientVLA layer pruning (``layer_pruning.*``)."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..core.accelerators.layer_pruning import layer_importance, save_importance
from ..core.defaults import as_given, trained_policy_checkpoint
from ..core.policy import OpenVLAPolicy


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="kv-vla-calibrate-layers",
        description="Measure each LLM layer's importance, 1 - cos(h_in, h_out) averaged over the tokens of "
        "single-frame ticks from recorded episodes of the task, and write it as JSON (least important first "
        "is what layer_pruning.prune_layers drops). Calibrate on training episodes, never on evaluation seeds.",
    )
    parser.add_argument("--checkpoint", help="checkpoint directory (default: the shipped trained memory policy)")
    parser.add_argument("--unnorm-key", default="", help="norm_stats key (default: the checkpoint's only one)")
    parser.add_argument(
        "--episodes-dir", type=Path, default=Path("data/demos/delayed_cue"), help="recorded episodes (make demos)"
    )
    parser.add_argument("--frames", type=int, default=64, help="calibration frames, spread evenly over the episodes")
    parser.add_argument("--out", type=Path, default=Path("results/layer_importance_delayed_cue.json"))
    args = parser.parse_args(argv)

    from ..core.sim.episodes import recorded_stream  # loads robosuite

    checkpoint = args.checkpoint or str(trained_policy_checkpoint())
    policy = OpenVLAPolicy.from_checkpoint(checkpoint, args.unnorm_key or None)
    try:
        frames, instruction, episodes = recorded_stream(args.episodes_dir)
    except FileNotFoundError as err:
        raise SystemExit(str(err)) from err
    step = max(1, len(frames) // args.frames)
    chosen = frames[::step][: args.frames]
    importance = layer_importance(policy, chosen, instruction)
    source = f"{len(chosen)} frames: every {step}th of the {len(frames)} frames of {episodes} episodes in "
    source += as_given(args.episodes_dir)
    save_importance(args.out, importance, as_given(checkpoint), source)
    ranked = sorted(range(len(importance)), key=importance.__getitem__)
    print("layer importance (1 - cos):", ", ".join(f"{i}: {importance[i]:.4f}" for i in range(len(importance))))
    print(f"least important first: {ranked}; wrote {args.out}")


if __name__ == "__main__":
    main()
