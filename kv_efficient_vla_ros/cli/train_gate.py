"""``kv-vla-train-gate``: fit the recurrent gate to a teacher over recorded episodes and save it."""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from ..core.cache.config import CacheConfig
from ..core.cache.gate import GATE_TYPES
from ..core.defaults import as_given, trained_policy_checkpoint
from ..core.policy import OpenVLAPolicy
from ..core.training.gate import RecordedEpisode, new_gate, teacher_episodes, train, with_targets
from ..core.training.plots import plot_gate_training
from ..core.training.teacher import TEACHERS


def load_recorded(directory: Path, limit: int) -> list[RecordedEpisode]:
    from ..core.sim.episodes import Episode  # loads robosuite: only when episodes are read

    paths = sorted(directory.glob("episode_*.npz"))[:limit]
    if not paths:
        raise SystemExit(f"no episode_*.npz in {directory}: record demos first (make demos)")
    episodes = [Episode.load(p) for p in paths]
    return [RecordedEpisode(e.seed, list(e.frames), e.instruction, e.cue_step) for e in episodes]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="kv-vla-train-gate",
        description="Fit the recurrent gate of the gated cache to a teacher's chunk utilities over recorded "
        "episodes (see --teacher), with a held-out split; save gate.safetensors + gate.json + training.json and a PNG.",
    )
    parser.add_argument("--checkpoint", help="policy checkpoint (default: the trained memory policy)")
    parser.add_argument("--unnorm-key", default="", help="norm_stats key (default: the checkpoint's only one)")
    parser.add_argument("--episodes-dir", type=Path, default=Path("data/demos/delayed_cue"))
    parser.add_argument("--episodes", type=int, default=60, help="recorded episodes to use (the first N by seed)")
    parser.add_argument("--val-fraction", type=float, default=0.2, help="held-out share of the episodes")
    parser.add_argument(
        "--teacher",
        choices=TEACHERS,
        default="hindsight",
        help="hindsight: what evicting a chunk costs the later actions; attention: the attention mass on it now; "
        "cue: the frames the sim recorded as showing the cue (privileged labels, an upper bound: delayed_cue only)",
    )
    parser.add_argument(
        "--hindsight-scale",
        type=float,
        default=0.3,
        help="log-likelihood loss (nats, summed over the 7 action tokens) at which a chunk's target utility is 0.5",
    )
    parser.add_argument(
        "--hindsight-replace",
        action="store_true",
        help="hindsight counterfactual: show the neighbouring frame in the block's place (history length and "
        "positions unchanged) instead of evicting the block",
    )
    parser.add_argument("--teacher-cache", type=Path, help="reuse (or write) the teacher's targets here")
    parser.add_argument("--recent-chunks", type=int, default=2, help="newest chunks never judged (as the cache)")
    parser.add_argument("--budget-frames", type=int, default=4, help="for the held-out cue-kept metric")
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--gate-type", choices=GATE_TYPES, default="gru")
    parser.add_argument("--gate-hidden", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    parser.add_argument("--out", type=Path, required=True, help="gate directory to write")
    parser.add_argument("--plot", type=Path, help="training curves PNG (default: <out>/training.png)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    checkpoint = as_given(args.checkpoint or trained_policy_checkpoint())
    policy = OpenVLAPolicy.from_checkpoint(checkpoint, unnorm_key=args.unnorm_key)
    options = {"gate_type": args.gate_type, "gate_hidden": args.gate_hidden, "seed": args.seed}
    config = CacheConfig(recent_chunks=args.recent_chunks, options=options)
    gate = new_gate(policy, config)

    if args.teacher_cache and args.teacher_cache.exists():
        cached = torch.load(args.teacher_cache, weights_only=False)
        same_checkpoint = Path(cached["checkpoint"]).resolve() == Path(checkpoint).resolve()
        settings = (cached["teacher"], cached["recent_chunks"], cached.get("hindsight_replace", False))
        if settings != (args.teacher, args.recent_chunks, args.hindsight_replace) or not same_checkpoint:
            raise SystemExit(f"{args.teacher_cache} was computed for other settings: delete it or pick another path")
        data, cost = cached["episodes"], cached["cost"]
        print(f"teacher targets from {args.teacher_cache}")
    else:
        recorded = load_recorded(args.episodes_dir, args.episodes)
        data, cost = teacher_episodes(
            policy, recorded, config, gate.config.layers, args.teacher, args.hindsight_replace
        )
        if args.teacher_cache:
            args.teacher_cache.parent.mkdir(parents=True, exist_ok=True)
            torch.save(
                {
                    "teacher": args.teacher,
                    "checkpoint": checkpoint,
                    "recent_chunks": args.recent_chunks,
                    "hindsight_replace": args.hindsight_replace,
                    "episodes": data,
                    "cost": cost,
                },
                args.teacher_cache,
            )

    if args.teacher == "hindsight":
        data = with_targets(data, args.hindsight_scale)
    order = np.random.default_rng(args.seed).permutation(len(data))
    n_val = max(1, round(args.val_fraction * len(data)))
    val_set = [data[i] for i in sorted(order[:n_val])]
    train_set = [data[i] for i in sorted(order[n_val:])]
    older_slots = max(0, args.budget_frames - args.recent_chunks)
    t0 = time.perf_counter()
    gate, history = train(train_set, val_set, gate, args.epochs, args.lr, older_slots, args.seed)
    minutes = (time.perf_counter() - t0) / 60
    gate.save(args.out)
    report = {
        "teacher": args.teacher,
        "hindsight_scale": args.hindsight_scale if args.teacher == "hindsight" else None,
        "hindsight_replace": args.hindsight_replace if args.teacher == "hindsight" else None,
        "checkpoint": checkpoint,
        "gate_type": args.gate_type,
        "gate_hidden": args.gate_hidden,
        "recent_chunks": args.recent_chunks,
        "budget_frames": args.budget_frames,
        "train_seeds": [e.seed for e in train_set],
        "validation_seeds": [e.seed for e in val_set],
        "teacher_cost": cost | {"s_per_episode": (cost["full_pass_s"] + cost["hindsight_s"]) / max(1, len(data))},
        "train_minutes": round(minutes, 2),
        "final": {k: v[-1] for k, v in asdict(history).items() if k != "epoch"},
        "history": asdict(history),
    }
    (args.out / "training.json").write_text(json.dumps(report, indent=1) + "\n")
    plot = plot_gate_training(history, args.plot or args.out / "training.png", f"{args.gate_type} gate, {args.teacher}")
    final = report["final"]
    print(
        f"{args.gate_type} gate on {len(train_set)} episodes ({args.teacher} teacher): held-out BCE "
        f"{final['val_loss']:.4f}, keep accuracy {final['val_accuracy']:.3f}, cue kept {final['val_cue_kept']:.2f}; "
        f"saved {args.out}, {plot}"
    )


if __name__ == "__main__":
    main()
