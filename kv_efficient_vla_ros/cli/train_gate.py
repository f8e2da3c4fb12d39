"""``kv-vla-train-gate``: fit the recurrent gate over recorded episodes and save it."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..core.cache.config import CacheConfig
from ..core.cache.gate import GATE_TYPES
from ..core.openvla.tiny import ensure_default_checkpoint
from ..core.policy import OpenVLAPolicy
from ..core.training.gate import train


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="kv-vla-train-gate",
        description="Fit the recurrent gate to the attention mass the action queries put on each chunk with the "
        "full cache, over recorded episodes; save gate.safetensors + gate.json.",
    )
    parser.add_argument("--checkpoint", help="checkpoint directory (default: the embedded tiny checkpoint)")
    parser.add_argument("--episodes-dir", type=Path, default=Path("data/demos/cued_lift"))
    parser.add_argument("--episodes", type=int, default=8, help="how many recorded episodes to learn from")
    parser.add_argument("--frames", type=int, default=32, help="frames per training sequence")
    parser.add_argument(
        "--skip-frames",
        type=int,
        default=64,
        help="leave the stream's first frames out: kv-vla-bench-cache evaluates on them",
    )
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--gate-type", choices=GATE_TYPES, default="gru")
    parser.add_argument("--gate-hidden", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("data/gates/tiny_gru"))
    args = parser.parse_args(argv)

    from ..core.sim.episodes import recorded_stream  # loads robosuite: only when episodes are read

    try:
        stream, instruction, _ = recorded_stream(args.episodes_dir)
    except FileNotFoundError as err:
        raise SystemExit(str(err)) from err
    policy = OpenVLAPolicy.from_checkpoint(args.checkpoint or ensure_default_checkpoint(), "sim_panda_lift")
    # sequences of --frames frames, episodes back to back as the benchmark plays them
    stream = stream[args.skip_frames :]
    starts = range(0, max(1, len(stream) - args.frames + 1), args.frames)
    episodes = [(stream[s : s + args.frames], instruction) for s in starts][: args.episodes]
    config = CacheConfig(options={"gate_type": args.gate_type, "gate_hidden": args.gate_hidden, "seed": args.seed})
    gate, report = train(policy, episodes, config, args.epochs, args.lr, args.seed)
    gate.save(args.out)
    (args.out / "training.json").write_text(json.dumps(report, indent=2) + "\n")
    print(
        f"trained a {args.gate_type} gate on {report['episodes']} sequences of {args.frames} frames: BCE "
        f"{report['loss_first_epoch']:.4f} -> {report['loss_last_epoch']:.4f}; saved to {args.out}"
    )


if __name__ == "__main__":
    main()
