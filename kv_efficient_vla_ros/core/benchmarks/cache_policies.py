"""``kv-vla-bench-cache``: every eviction strategy over the same episode, in one process, against ``full``.

One run of the longest horizon per strategy; a horizon h reports ticks 0..h-1 of it, which is exactly an
h-frame episode (a tick never depends on later frames). Timings are ratios to ``full`` from this run.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from ..cache.config import CacheConfig
from ..cache.strategies import STRATEGY_NAMES
from ..openvla.tiny import ensure_default_checkpoint
from ..policy import OpenVLAPolicy
from ..runner import STAGES, PolicyRunner
from ..synthetic import synthetic_frames
from . import write_results
from .flops import tick_flops

# KV-Efficient VLA (arXiv 2509.21354), as reported by its authors, not measured here.
PAPER = {"flops_saved": 0.246, "speedup": 1.34, "kv_reduction": 1.87}
# SPEC §8, against full at a 32-frame horizon.
TARGETS = {"kv_reduction": 4.0, "speedup": 2.0, "flops_saved": 0.5, "agreement": 0.95, "gate_share": 0.02}


def load_frames(source: str, frames: int, episodes_dir: Path | None) -> tuple[list[np.ndarray], str, str]:
    """``frames`` camera frames (recorded sim episodes played back to back, or synthetic), instruction."""
    if source == "synthetic":
        return synthetic_frames(frames, seed=0), "lift the red cube", "synthetic moving cube"
    from ..sim.episodes import Episode

    paths = sorted(Path(episodes_dir).glob("episode_*.npz")) if episodes_dir else []
    if not paths:
        raise SystemExit(f"no episode_*.npz in {episodes_dir}: record some with kv-vla-record-demos")
    collected, instruction = [], None
    for path in paths:
        episode = Episode.load(path)
        instruction = instruction or episode.instruction
        collected += list(episode.frames)
        if len(collected) >= frames:
            break
    if len(collected) < frames:
        raise SystemExit(f"{episodes_dir} holds {len(collected)} frames, fewer than the {frames} asked for")
    return collected[:frames], instruction, f"{len(paths)} recorded episodes from {episodes_dir}, back to back"


def run_episode(runner: PolicyRunner, frames: list[np.ndarray], instruction: str, desc: str) -> list:
    runner.reset()
    return [runner.step(frame, instruction) for frame in tqdm(frames, desc=desc, leave=False)]


def summarize(results: list, reference: list | None, flops: list[int]) -> dict:
    stats = [r.stats for r in results]
    totals = [s.latency_ms["total"] for s in stats]
    summary = {
        "latency_ms_median": statistics.median(totals),
        "latency_ms_p95": float(np.percentile(totals, 95)),
        "stage_ms_median": {k: statistics.median(s.latency_ms[k] for s in stats) for k in STAGES},
        "gate_share": statistics.fmean(s.latency_ms["gate"] / s.latency_ms["total"] for s in stats),
        "kv_bytes_peak": max(s.kv_bytes_peak for s in stats),
        "kv_bytes_mean": statistics.fmean(s.kv_bytes for s in stats),
        "tokens_final": stats[-1].tokens,
        "max_position": max(s.max_position for s in stats),
        "flops_per_tick": statistics.fmean(flops),
        "chunks_summarized": sum(s.summarized for s in stats),
        "chunks_dropped": sum(s.dropped for s in stats),
    }
    if reference is not None:
        pairs = list(zip(results, reference, strict=True))
        summary.update(
            action_agreement=float(np.mean([np.array_equal(r.token_ids, f.token_ids) for r, f in pairs])),
            token_agreement=float(np.mean([np.mean(r.token_ids == f.token_ids) for r, f in pairs])),
            action_mae=float(np.mean([np.abs(r.action - f.action).mean() for r, f in pairs])),
            # argmax can hide a shift; the action-row logits show how far eviction moved the model
            logit_mae=float(np.mean([float((r.action_logits - f.action_logits).abs().mean()) for r, f in pairs])),
        )
    return summary


def tick_flops_of(results: list, policy: OpenVLAPolicy, instruction: str) -> list[int]:
    prompt = policy.prompt_embeddings(instruction)[1].shape[1]
    frame = policy.config.num_patches
    contexts = [0] + [r.stats.tokens for r in results[:-1]]
    return [tick_flops(policy.config, c, frame + (c == 0), prompt).total for c in contexts]


def run(
    checkpoint: str,
    horizons: list[int],
    cache: CacheConfig,
    strategies: tuple[str, ...],
    source: str,
    episodes_dir: Path | None,
    device: str,
) -> dict:
    dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    policy = OpenVLAPolicy.from_checkpoint(checkpoint, unnorm_key="sim_panda_lift", device=device, dtype=dtype)
    frames, instruction, described = load_frames(source, max(horizons), episodes_dir)
    runners = {name: PolicyRunner(policy, replace(cache, strategy=name)) for name in strategies}
    for name, runner in runners.items():  # warm-up: allocator, kernels, the gate
        run_episode(runner, frames[:2], instruction, f"warm-up {name}")
    results = {name: run_episode(runner, frames, instruction, name) for name, runner in runners.items()}
    flops = {name: tick_flops_of(r, policy, instruction) for name, r in results.items()}
    per_horizon = {}
    for h in horizons:
        reference = results["full"][:h] if "full" in results else None
        table = {name: summarize(r[:h], reference, flops[name][:h]) for name, r in results.items()}
        if reference is not None:
            full = table["full"]
            for s in table.values():
                s["kv_reduction"] = full["kv_bytes_peak"] / s["kv_bytes_peak"]
                s["speedup"] = full["latency_ms_median"] / s["latency_ms_median"]
                s["flops_saved"] = 1.0 - s["flops_per_tick"] / full["flops_per_tick"]
        per_horizon[h] = table
    config = policy.config
    return {
        "checkpoint": str(checkpoint),
        "llm": f"{config.llm_dim} wide x {config.text_config.num_hidden_layers} layers",
        "device": f"{device} {str(dtype).removeprefix('torch.')}",
        "frames": described,
        "instruction": instruction,
        "horizons": horizons,
        "cache": cache.flat(),
        "torch_threads": torch.get_num_threads(),
        "cpu": platform.processor() or platform.machine(),
        "per_horizon": per_horizon,
    }


def _fmt(value: float | None, pattern: str) -> str:
    return "n/a" if value is None else format(value, pattern)


def to_markdown(r: dict) -> str:
    c = r["cache"]
    h = 32 if 32 in r["per_horizon"] else max(r["per_horizon"])
    table = r["per_horizon"][h]
    lines = [
        f"Tiny-format model {r['llm']}, {r['device']}, {r['torch_threads']} threads; frames: {r['frames']}. "
        f"Budget {c['budget_tokens']} tokens, chunk {c['chunk_tokens'] or 'one frame'}, recent {c['recent_chunks']}, "
        f"rope_compact {c['rope_compact']}, gate {c['gate_checkpoint'] or 'untrained'}. Ratios are to `full` in "
        "the same run.",
        "",
        f"**At {h} frames:**",
        "",
        "| strategy | KV peak MB | KV x smaller | tick ms median | p95 | speedup | vision | prefill | decode | gate "
        "| evict | GFLOPs/tick | FLOPs saved | same action as full | action MAE | logit MAE |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, s in table.items():
        st = s["stage_ms_median"]
        lines.append(
            f"| {name} | {s['kv_bytes_peak'] / 1e6:.2f} | {_fmt(s.get('kv_reduction'), '.2f')} "
            f"| {s['latency_ms_median']:.1f} | {s['latency_ms_p95']:.1f} | {_fmt(s.get('speedup'), '.2f')} "
            f"| {st['vision']:.1f} | {st['prefill']:.1f} | {st['decode']:.1f} | {st['gate']:.2f} | {st['evict']:.2f} "
            f"| {s['flops_per_tick'] / 1e9:.2f} | {_fmt(s.get('flops_saved'), '.1%')} "
            f"| {_fmt(s.get('action_agreement'), '.0%')} | {_fmt(s.get('action_mae'), '.4f')} "
            f"| {_fmt(s.get('logit_mae'), '.4f')} |"
        )
    lines.append(
        f"| *paper (KV-Efficient VLA, reported)* | | {PAPER['kv_reduction']:.2f} | | | {PAPER['speedup']:.2f} "
        f"| | | | | | | {PAPER['flops_saved']:.1%} | | | |"
    )
    if "gated" in table and "kv_reduction" in table["gated"]:
        g = table["gated"]
        checks = [
            ("KV memory >= 4x smaller", g["kv_reduction"], TARGETS["kv_reduction"], ".2f"),
            ("tick latency >= 2x lower", g["speedup"], TARGETS["speedup"], ".2f"),
            ("FLOPs >= 50% lower", g["flops_saved"], TARGETS["flops_saved"], ".1%"),
            ("same action as full >= 95%", g["action_agreement"], TARGETS["agreement"], ".0%"),
        ]
        lines += [
            "",
            f"**`gated` against SPEC §8 at {h} frames:**",
            "",
            "| target | measured | met |",
            "|---|---:|---|",
        ]
        for label, value, target, pattern in checks:
            lines.append(f"| {label} | {format(value, pattern)} | {'yes' if value >= target else 'no'} |")
        share = g["gate_share"]
        lines.append(
            f"| gate overhead < 2% of a tick | {share:.2%} | {'yes' if share < TARGETS['gate_share'] else 'no'} |"
        )
        rivals = [p for p in ("window", "sink_window", "attention", "random") if p in table]
        beaten = [p for p in rivals if g["action_agreement"] > table[p]["action_agreement"]]
        lines.append(
            f"| beats {', '.join(rivals)} on agreement | {len(beaten)} of {len(rivals)} | "
            f"{'yes' if rivals and len(beaten) == len(rivals) else 'no'} |"
        )
    lines += ["", "**By horizon** (tick ms median / KV peak MB / same action as full):", ""]
    horizons = r["horizons"]
    lines.append("| strategy | " + " | ".join(f"{h} frames" for h in horizons) + " |")
    lines.append("|---|" + "---:|" * len(horizons))
    for name in table:
        cells = []
        for hh in horizons:
            s = r["per_horizon"][hh][name]
            cells.append(
                f"{s['latency_ms_median']:.0f} / {s['kv_bytes_peak'] / 1e6:.1f} / "
                f"{_fmt(s.get('action_agreement'), '.0%')}"
            )
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(r: dict, out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    horizons = r["horizons"]
    strategies = list(r["per_horizon"][horizons[0]])
    panels = [
        ("tick latency, median (ms)", lambda s: s["latency_ms_median"]),
        ("KV cache peak (MB)", lambda s: s["kv_bytes_peak"] / 1e6),
        ("GFLOPs per tick", lambda s: s["flops_per_tick"] / 1e9),
        ("same action as full", lambda s: s.get("action_agreement", np.nan)),
    ]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.6))
    for ax, (title, value) in zip(axes, panels, strict=True):
        for name in strategies:
            ax.plot(horizons, [value(r["per_horizon"][h][name]) for h in horizons], marker="o", label=name)
        ax.set_title(title)
        ax.set_xlabel("episode length (frames)")
        ax.set_xscale("log", base=2)
        ax.set_xticks(horizons, [str(h) for h in horizons])
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(f"eviction strategies, {r['llm']} ({r['device']}), budget {r['cache']['budget_tokens']} tokens")
    fig.tight_layout()
    path = out.with_suffix(".png")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> None:
    defaults = CacheConfig()
    parser = argparse.ArgumentParser(
        prog="kv-vla-bench-cache",
        description="Run every eviction strategy over the same episode in one process and report, per strategy and "
        "horizon, tick latency (median, p95, by stage), KV bytes, FLOPs per tick and agreement with the `full` "
        "cache (ratios from the same run); write JSON, a Markdown table and PNG plots.",
    )
    parser.add_argument("--checkpoint", help="checkpoint directory (default: the embedded tiny checkpoint)")
    parser.add_argument("--horizons", type=int, nargs="+", default=[8, 16, 32, 64], help="episode lengths")
    parser.add_argument(
        "--strategies", "--policies", nargs="+", default=list(STRATEGY_NAMES), choices=STRATEGY_NAMES, dest="strategies"
    )
    parser.add_argument(
        "--source",
        choices=("sim", "synthetic"),
        default="sim",
        help="recorded MuJoCo episodes (--episodes-dir) or the synthetic camera",
    )
    parser.add_argument("--episodes-dir", type=Path, default=Path("data/demos/cued_lift"))
    parser.add_argument("--budget-tokens", type=int, default=defaults.budget_tokens)
    parser.add_argument("--recent-chunks", type=int, default=defaults.recent_chunks)
    parser.add_argument("--chunk-tokens", type=int, default=defaults.chunk_tokens)
    parser.add_argument("--gate-checkpoint", default=defaults.flat()["gate_checkpoint"])
    parser.add_argument("--device", default="cpu", help="cpu (fp32) or cuda (bf16)")
    parser.add_argument(
        "--out", type=Path, default=Path("results/cache_policies.json"), help="JSON output (Markdown and PNG beside it)"
    )
    args = parser.parse_args(argv)
    cache = CacheConfig(
        budget_tokens=args.budget_tokens,
        recent_chunks=args.recent_chunks,
        chunk_tokens=args.chunk_tokens,
        options={"gate_checkpoint": args.gate_checkpoint},
    )
    checkpoint = args.checkpoint or str(ensure_default_checkpoint())
    horizons = sorted(set(args.horizons))
    result = run(checkpoint, horizons, cache, tuple(args.strategies), args.source, args.episodes_dir, args.device)
    command = "kv-vla-bench-cache " + " ".join(sys.argv[1:] if argv is None else argv)
    write_results(args.out, result, to_markdown(result), command)
    print(f"wrote {plot(result, args.out)}")


if __name__ == "__main__":
    main()
