"""``kv-vla-train-policy``: behaviour cloning of an OpenVLA-format policy on recorded expert episodes."""

from __future__ import annotations

import argparse
import json
import logging
from collections import Counter
from dataclasses import fields
from pathlib import Path

import numpy as np

from ..core.sim.episodes import Episode
from ..core.training.behavior_cloning import TrainConfig, train_memory_policy
from ..core.training.plots import plot_training

NORM_KEYS = {"delayed_cue": "sim_panda_delayed_cue", "cued_lift": "sim_panda_cued_lift", "lift": "sim_panda_lift"}


def load_episodes(directories: list[Path], limit: int | None = None) -> list[Episode]:
    """The ``episode_*.npz`` of every directory, directory by directory, the first ``limit`` of them."""
    paths = [p for directory in directories for p in sorted(directory.glob("episode_*.npz"))][:limit]
    named = ", ".join(map(str, directories))
    if not paths:
        raise SystemExit(f"no episode_*.npz in {named}: record demos first (kv-vla-record-demos)")
    episodes = [Episode.load(p) for p in paths]
    repeated = sorted(seed for seed, n in Counter(e.seed for e in episodes).items() if n > 1)
    if repeated:
        raise SystemExit(f"seeds recorded twice in {named}: {repeated[:10]}; give each seed once")
    return episodes


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="kv-vla-train-policy",
        description="Train a small OpenVLA-format policy by behaviour cloning on expert episodes, with each tick "
        "seeing the whole episode so far exactly as the runner presents it with the full cache (one forward per "
        "episode with a block attention mask). Writes a checkpoint in the official layout (norm_stats from the "
        "demos), training.json and a loss curve PNG.",
    )
    parser.add_argument(
        "--episodes-dir",
        type=Path,
        nargs="+",
        default=[Path("data/demos/delayed_cue")],
        help="directories of recorded episodes (kv-vla-record-demos), used together",
    )
    parser.add_argument("--out", type=Path, required=True, help="checkpoint directory to create")
    parser.add_argument("--limit", type=int, help="use only the first N episodes (quick runs)")
    parser.add_argument("--init", type=Path, help="start from this checkpoint instead of a seeded tiny model")
    parser.add_argument("--plot", type=Path, help="loss curve PNG (default: <out>/training.png)")
    defaults = TrainConfig()
    for f in fields(TrainConfig):  # each explained where TrainConfig declares it
        default = getattr(defaults, f.name)
        parser.add_argument(
            f"--{f.name.replace('_', '-')}", type=type(default), default=None, help=f"TrainConfig.{f.name} ({default})"
        )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    config = TrainConfig(
        **{f.name: getattr(args, f.name) for f in fields(TrainConfig) if getattr(args, f.name) is not None}
    )
    episodes = load_episodes(args.episodes_dir, args.limit)
    tasks = {e.task for e in episodes}
    if len(tasks) != 1:
        raise SystemExit(f"episodes of several tasks in {args.episodes_dir}: {sorted(tasks)}")
    task = tasks.pop()
    success = np.mean([e.success for e in episodes])
    seeds = sorted(e.seed for e in episodes)
    print(f"{len(episodes)} {task} episodes (expert success {success:.0%}), seeds {seeds[0]}..{seeds[-1]}")
    plot = args.plot or args.out.with_suffix(".png")

    def checkpoint_plot(history) -> None:
        plot_training(history, plot, title=f"behaviour cloning on {task}")

    out, _, summary = train_memory_policy(
        [e for e in episodes if e.success],
        args.out,
        NORM_KEYS.get(task, f"sim_panda_{task}"),
        config,
        on_validate=checkpoint_plot,
        init=args.init,
    )
    print(json.dumps(summary | {"train_seeds": "...", "validation_seeds": summary["validation_seeds"]}, indent=1))
    print(f"wrote {out} and {plot}")


if __name__ == "__main__":
    main()
