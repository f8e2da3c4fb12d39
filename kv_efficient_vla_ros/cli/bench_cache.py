"""``kv-vla-bench-cache``: every eviction strategy over the same episode, in one process, against ``full``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..core.accelerators.config import TokenReuseConfig, split_row
from ..core.accelerators.rows import RowAccelerators
from ..core.benchmarks.cache_strategies import bench_dtype, run
from ..core.benchmarks.report import cache_markdown, cache_plot, write_results
from ..core.cache.config import CacheConfig
from ..core.cache.strategies import STRATEGY_NAMES
from ..core.defaults import as_given, trained_policy_checkpoint
from ..core.openvla.action_tokenizer import ActionStats
from ..core.openvla.shapes import SHAPES, random_weight_model
from ..core.policy import OpenVLAPolicy


def row_name(name: str) -> str:
    """argparse type of a row: a strategy with optional accelerator suffixes."""
    try:
        strategy, _ = split_row(name)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from err
    if strategy not in STRATEGY_NAMES:
        raise argparse.ArgumentTypeError(f"{name!r}: strategy {strategy!r} is not one of {STRATEGY_NAMES}")
    return name


def main(argv: list[str] | None = None) -> None:
    defaults = CacheConfig()
    parser = argparse.ArgumentParser(
        prog="kv-vla-bench-cache",
        description="Run every eviction strategy over the same episode in one process and report, per strategy and "
        "horizon, tick latency (median, p95, by stage), KV bytes, FLOPs per tick and agreement with the `full` "
        "cache (ratios from the same run); write JSON, a Markdown table and PNG plots.",
    )
    model = parser.add_mutually_exclusive_group()
    model.add_argument("--checkpoint", help="checkpoint directory (default: the shipped trained memory policy)")
    model.add_argument(
        "--shape",
        choices=sorted(SHAPES),
        help="random weights with this official checkpoint's exact shapes instead of a checkpoint "
        "(e.g. openvla-7b on --device cuda: bf16, SDPA)",
    )
    parser.add_argument(
        "--llm-layers", type=int, help="with --shape: cut the LLM to this many layers (a CPU run of the same code)"
    )
    parser.add_argument("--unnorm-key", default="", help="norm_stats key (default: the checkpoint's only one)")
    parser.add_argument("--horizons", type=int, nargs="+", default=[8, 16, 32, 64], help="episode lengths")
    parser.add_argument(
        "--strategies",
        "--policies",
        nargs="+",
        default=list(STRATEGY_NAMES),
        type=row_name,
        dest="strategies",
        metavar="ROW",
        help=f"strategies ({' '.join(STRATEGY_NAMES)}), each alone or with accelerators: +select (token "
        "selection), +reuse (VLA-Cache token reuse), +prune (layer pruning), e.g. gated+select+reuse+prune; "
        "default: every strategy alone",
    )
    parser.add_argument(
        "--keep-tokens",
        type=int,
        default=0,
        help="patch tokens per frame of the +select rows (EfficientVLA token selection); default: half the patches",
    )
    parser.add_argument("--prune-layers", type=int, default=1, help="LLM layers the +prune rows drop (EfficientVLA)")
    parser.add_argument(
        "--layer-importance",
        default="results/layer_importance_delayed_cue.json",
        help="the +prune rows' calibration (kv-vla-calibrate-layers for this checkpoint)",
    )
    parser.add_argument(
        "--reuse-layer-adaptive",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="+reuse rows: reuse share per layer from the attention entropy (VLA-Cache eq. 9); --no-... reuses every "
        "reusable token at every layer (a random-weight model's attention never focuses: the schedule reuses nothing)",
    )
    parser.add_argument(
        "--source",
        choices=("sim", "synthetic"),
        default="sim",
        help="recorded MuJoCo episodes (--episodes-dir) or the synthetic camera",
    )
    parser.add_argument(
        "--episodes-dir", type=Path, default=Path("data/demos/delayed_cue"), help="recorded episodes (make demos)"
    )
    parser.add_argument("--budget-tokens", type=int, default=defaults.budget_tokens)
    parser.add_argument("--recent-chunks", type=int, default=defaults.recent_chunks)
    parser.add_argument("--chunk-tokens", type=int, default=defaults.chunk_tokens)
    parser.add_argument("--gate-checkpoint", default=defaults.flat()["gate_checkpoint"])
    parser.add_argument(
        "--rope-compact",
        action=argparse.BooleanOptionalAction,
        default=defaults.rope_compact,
        help="re-rotate kept keys to contiguous positions after each eviction (the policy node's default is off)",
    )
    parser.add_argument("--device", default="cpu", help="cpu (fp32) or cuda (bf16)")
    parser.add_argument(
        "--out", type=Path, default=Path("results/cache_policies.json"), help="JSON output (Markdown and PNG beside it)"
    )
    args = parser.parse_args(argv)
    cache = CacheConfig(
        budget_tokens=args.budget_tokens,
        recent_chunks=args.recent_chunks,
        chunk_tokens=args.chunk_tokens,
        rope_compact=args.rope_compact,
        options={"gate_checkpoint": args.gate_checkpoint},
    )
    if args.llm_layers is not None and not args.shape:
        parser.error("--llm-layers needs --shape")
    dtype = bench_dtype(args.device)
    if args.shape:
        model, tokenizer = random_weight_model(args.shape, args.device, dtype, args.llm_layers)
        policy = OpenVLAPolicy(model, tokenizer, ActionStats.from_norm_stats(model.config.norm_stats, None))
        layers = f", LLM cut to {args.llm_layers} layers" if args.llm_layers else ""
        model_name = f"random weights, {args.shape} shapes{layers}"
    else:
        checkpoint = args.checkpoint or str(trained_policy_checkpoint())
        policy = OpenVLAPolicy.from_checkpoint(checkpoint, args.unnorm_key or None, args.device, dtype)
        model_name = as_given(checkpoint)
    horizons = sorted(set(args.horizons))
    try:
        rows = tuple(args.strategies)
        reuse = TokenReuseConfig(enabled=True, layer_adaptive=args.reuse_layer_adaptive)
        accelerators = RowAccelerators.for_rows(
            policy, rows, args.keep_tokens, args.prune_layers, args.layer_importance, reuse
        )
        result = run(policy, model_name, horizons, cache, rows, args.source, args.episodes_dir, accelerators)
    except (FileNotFoundError, ValueError) as err:  # no recorded episodes, or too few frames
        raise SystemExit(str(err)) from err
    command = "kv-vla-bench-cache " + " ".join(sys.argv[1:] if argv is None else argv)
    write_results(args.out, result, cache_markdown(result), command)
    print(f"wrote {cache_plot(result, args.out)}")


if __name__ == "__main__":
    main()
