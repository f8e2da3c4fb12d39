"""``kv-vla-eval``: closed-loop success of the expert and of cache strategies in the MuJoCo Panda."""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

from ..core.accelerators.config import PRUNE, REUSE, SELECT, split_row
from ..core.cache.strategies import STRATEGY_NAMES, GatedStrategy
from ..core.defaults import as_given, trained_gate_checkpoint, trained_policy_checkpoint
from ..core.evaluation.closed_loop import EXPERT, EvalSetup, evaluate, strategy_of, summarize
from ..core.evaluation.report import markdown, plot_strips, plot_success, plot_success_vs_latency, write_json
from ..core.options import described_fields
from ..core.sim.tasks import TASKS

DEFAULT_STRATEGIES = "expert,full,none,window,sink_window,attention,random,gated,kv_eff_ref"


def parse_gate_row(item: str) -> tuple[str, str, tuple[tuple[str, object], ...]]:
    """``NAME=DIR[@OPTION=VALUE...]`` -> (name, gate directory, gated-strategy option overrides, typed as the
    option's default)."""
    name, equals, rest = item.partition("=")
    if not name or not equals or ":" in name:
        raise ValueError(f"--gates {item!r}: expected NAME=DIR[@OPTION=VALUE...] (NAME= for an untrained, seeded gate)")
    path, *assignments = rest.split("@")
    defaults = {key: default for key, default, help in described_fields(GatedStrategy) if help}
    options = []
    for assignment in assignments:
        key, equals, value = assignment.partition("=")
        if not equals or key not in defaults or key == "gate_checkpoint":
            known = ", ".join(k for k in defaults if k != "gate_checkpoint")
            raise ValueError(f"--gates {item!r}: {assignment!r} is not OPTION=VALUE with OPTION one of {known}")
        options.append((key, type(defaults[key])(value)))
    return name, path, tuple(options)


def render(path: Path) -> None:
    """The Markdown table and success PNG of a results JSON, from its recorded setup and results."""
    data = json.loads(path.read_text())
    setup = EvalSetup.from_record(data["setup"])
    path.with_suffix(".md").write_text(markdown(setup, data["results"], data["command"]))
    plot_success(setup, data["results"], path.with_suffix(".png"))
    print(f"wrote {path.with_suffix('.md')} and {path.with_suffix('.png')} from {path}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="kv-vla-eval",
        description="Run seeded episodes of a MuJoCo Panda task in closed loop, in-process (no DDS), for the "
        "scripted expert and each cache strategy on the same seeds, and write the success rate with its 95 %% "
        "Wilson interval per strategy (JSON, Markdown, PNG, image strips). The JSON is rewritten after every "
        "seed, so an interrupted run keeps what it finished.",
    )
    parser.add_argument("--task", choices=TASKS, default="delayed_cue")
    parser.add_argument("--checkpoint", help="OpenVLA-format checkpoint (default: the trained memory policy)")
    parser.add_argument("--unnorm-key", default="", help="norm_stats key (default: the checkpoint's only one)")
    parser.add_argument(
        "--strategies",
        "--policies",
        default=DEFAULT_STRATEGIES,
        help=f"comma-separated, from {EXPERT},{','.join(STRATEGY_NAMES)}; a strategy with {SELECT}, {REUSE} and/or "
        f"{PRUNE} appended runs with EfficientVLA token selection / VLA-Cache token reuse / EfficientVLA layer "
        "pruning (default: %(default)s)",
    )
    parser.add_argument(
        "--keep-tokens",
        type=int,
        default=0,
        help=f"patch tokens per frame of the {SELECT} rows; 0 = half the frame's (the token budget stays "
        "--budget-frames whole frames, so it holds more selected frames)",
    )
    parser.add_argument("--prune-layers", type=int, default=1, help=f"LLM layers the {PRUNE} rows drop")
    parser.add_argument(
        "--layer-importance",
        default="results/layer_importance_delayed_cue.json",
        help=f"the {PRUNE} rows' calibration (kv-vla-calibrate-layers, on training demos)",
    )
    parser.add_argument(
        "--budget-frames",
        default="4",
        help="history budget of the bounded strategies in frames; a comma-separated list gives one row per budget",
    )
    parser.add_argument(
        "--gate-checkpoint",
        help="gate of `gated` (default: the gate shipped for the trained policy; '' = an untrained, seeded gate)",
    )
    parser.add_argument(
        "--gates",
        default="",
        metavar="NAME=DIR[@OPTION=VALUE...],...",
        help="more gates to compare in the same run: one row `gated:NAME` each, beside `gated`; @OPTION=VALUE "
        "overrides a gated-strategy option for that row (e.g. NAME=DIR@summary_threshold=0.5: keep or drop, no "
        "summaries)",
    )
    parser.add_argument(
        "--rope-compact",
        action="store_true",
        help="re-rotate kept keys to contiguous positions (the trained policy saw the positions the full cache "
        "gives, so the default keeps them)",
    )
    parser.add_argument(
        "--agreement", action="store_true", help="also run `full` on each episode's frames: action-token agreement"
    )
    parser.add_argument("--recent-chunks", type=int, default=2, help="newest chunks always kept")
    parser.add_argument("--episodes", type=int, default=100)
    parser.add_argument(
        "--seed-start", type=int, default=100_000, help="first seed (training demos use seeds below 1000)"
    )
    parser.add_argument("--max-steps", type=int, default=40, help="control steps before an episode counts as failed")
    parser.add_argument("--image-size", type=int, default=0, help="camera image side in pixels; 0 = the task's")
    parser.add_argument("--workers", type=int, default=2, help="processes (each: one sim, one model, one thread)")
    parser.add_argument("--strips", type=int, default=2, help="write image strips of the first N seeds")
    parser.add_argument("--out", type=Path, default=Path("results/eval_delayed_cue.json"))
    parser.add_argument(
        "--render",
        type=Path,
        metavar="JSON",
        help="run nothing: write the Markdown and PNG of an earlier run's JSON again, beside it",
    )
    args = parser.parse_args(argv)
    if args.render:
        render(args.render)
        return

    strategies = tuple(s.strip() for s in args.strategies.split(",") if s.strip())
    try:
        unknown = [s for s in strategies if s != EXPERT and strategy_of(s) not in STRATEGY_NAMES]
    except ValueError as err:
        parser.error(str(err))
    if unknown:
        parser.error(f"unknown strategies {unknown}; choose from {EXPERT},{','.join(STRATEGY_NAMES)}")
    checkpoint = as_given(args.checkpoint or str(trained_policy_checkpoint()))
    budgets = tuple(int(b) for b in args.budget_frames.split(",") if b.strip())
    if not budgets or min(budgets) < args.recent_chunks:
        parser.error(f"--budget-frames {args.budget_frames}: a budget must hold the {args.recent_chunks} recent chunks")
    gate = as_given(str(trained_gate_checkpoint())) if args.gate_checkpoint is None else args.gate_checkpoint
    try:
        extra_gates = [parse_gate_row(g.strip()) for g in args.gates.split(",") if g.strip()]
    except ValueError as err:
        parser.error(str(err))
    setup = EvalSetup(
        task=args.task,
        checkpoint=checkpoint,
        unnorm_key=args.unnorm_key,
        strategies=strategies,
        budgets_frames=budgets,
        recent_chunks=args.recent_chunks,
        image_size=args.image_size,
        max_steps=args.max_steps,
        strip_seeds=args.seed_start + args.strips,
        gate_checkpoint=str(gate),
        rope_compact=args.rope_compact,
        agreement=args.agreement,
        extra_gates=tuple(extra_gates),
        keep_tokens=args.keep_tokens,
        prune_layers=args.prune_layers,
        layer_importance=args.layer_importance,
    )
    command = shlex.join(["kv-vla-eval", *(sys.argv[1:] if argv is None else argv)])
    seeds = list(range(args.seed_start, args.seed_start + args.episodes))

    def save(outcomes) -> None:
        write_json(args.out, {"command": command, "setup": setup.__dict__, "results": summarize(setup, outcomes)})

    outcomes = evaluate(setup, seeds, args.workers, on_seed=save)
    results = summarize(setup, outcomes)
    args.out.with_suffix(".md").write_text(markdown(setup, results, command))
    plot_success(setup, results, args.out.with_suffix(".png"))
    if any(split_row(s)[1] for s in strategies):  # accelerators: where each row sits between speed and success
        plot_success_vs_latency(setup, results, args.out.with_name(f"{args.out.stem}_vs_latency.png"))
    for seed in seeds[: args.strips]:
        plot_strips(outcomes, args.out.with_name(f"{args.out.stem}_strip_seed{seed}.png"), seed)
    print(markdown(setup, results, command))
    print(f"wrote {args.out} (.md, .png, strips)")


if __name__ == "__main__":
    main()
