"""``kv-vla-bench-cache``: every cache policy over the same episode, in one process, against ``full``."""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
from dataclasses import asdict

import numpy as np
import torch
from tqdm import tqdm

from ..cache.config import POLICIES, CacheConfig
from ..openvla.tiny import ensure_default_checkpoint
from ..policy import OpenVLAPolicy
from ..runner import STAGES, PolicyRunner
from ..synthetic import synthetic_frames
from . import write_results


def run_episode(runner: PolicyRunner, frames: list[np.ndarray], instruction: str, desc: str) -> list:
    runner.reset()
    return [runner.step(frame, instruction) for frame in tqdm(frames, desc=desc, leave=False)]


def summarize_policy(results: list, reference: list | None) -> dict:
    stats = [r.stats for r in results]
    totals = [s.latency_ms["total"] for s in stats]
    summary = {
        "latency_ms_median": statistics.median(totals),
        "latency_ms_p95": float(np.percentile(totals, 95)),
        "stage_ms_median": {k: statistics.median(s.latency_ms[k] for s in stats) for k in STAGES},
        "kv_bytes_peak": max(s.kv_bytes_peak for s in stats),
        "kv_bytes_mean": statistics.fmean(s.kv_bytes for s in stats),
        "kv_bytes_final": stats[-1].kv_bytes,
        "tokens_final": stats[-1].tokens,
        "max_position": max(s.max_position for s in stats),
        "chunks_summarized": sum(s.summarized for s in stats),
        "chunks_dropped": sum(s.dropped for s in stats),
    }
    if reference is not None:
        same = [np.array_equal(r.token_ids, f.token_ids) for r, f in zip(results, reference, strict=True)]
        tokens = np.mean([np.mean(r.token_ids == f.token_ids) for r, f in zip(results, reference, strict=True)])
        pairs = list(zip(results, reference, strict=True))
        mae = np.mean([np.abs(r.action - f.action).mean() for r, f in pairs])
        # argmax can hide a shift; the action-row logits show how far eviction moved the model
        logits = np.mean([float((r.action_logits - f.action_logits).abs().mean()) for r, f in pairs])
        summary.update(
            action_agreement=float(np.mean(same)),
            token_agreement=float(tokens),
            action_mae=float(mae),
            logit_mae=logits,
        )
    return summary


def run(checkpoint: str, frames: int, cache: CacheConfig, policies: tuple[str, ...], instruction: str) -> dict:
    policy = OpenVLAPolicy.from_checkpoint(checkpoint, unnorm_key="sim_panda_lift")
    episode = synthetic_frames(frames, seed=0)
    runners = {name: PolicyRunner(policy, CacheConfig(**{**asdict(cache), "policy": name})) for name in policies}
    for name, runner in runners.items():  # warm-up: allocator, kernels, the gate
        run_episode(runner, episode[:2], instruction, f"warm-up {name}")
    results = {name: run_episode(runner, episode, instruction, name) for name, runner in runners.items()}
    reference = results.get("full")
    per_policy = {name: summarize_policy(r, reference) for name, r in results.items()}
    if reference is not None:
        full = per_policy["full"]
        for s in per_policy.values():
            s["kv_peak_vs_full"] = s["kv_bytes_peak"] / full["kv_bytes_peak"]
            s["latency_vs_full"] = s["latency_ms_median"] / full["latency_ms_median"]
    config = policy.config
    return {
        "checkpoint": str(checkpoint),
        "llm": f"{config.llm_dim} wide x {config.text_config.num_hidden_layers} layers",
        "frames": frames,
        "cache": asdict(cache),
        "torch_threads": torch.get_num_threads(),
        "cpu": platform.processor() or platform.machine(),
        "policies": per_policy,
    }


def to_markdown(r: dict) -> str:
    c = r["cache"]
    lines = [
        f"{r['frames']}-frame synthetic episode, tiny model ({r['llm']}), CPU fp32, {r['torch_threads']} threads; "
        f"budget {c['budget_tokens']} tokens, chunk {c['chunk_tokens'] or 'one frame'}, recent {c['recent_chunks']}, "
        f"rope_compact {c['rope_compact']}. Ratios are to `full` in the same run.",
        "",
        "| policy | KV peak MB | x full | KV mean MB | tick ms (median) | p95 | x full | vision | prefill | decode "
        "| gate | evict | same action as full | logit MAE vs full |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, s in r["policies"].items():
        st = s["stage_ms_median"]
        lines.append(
            f"| {name} | {s['kv_bytes_peak'] / 1e6:.2f} | {s.get('kv_peak_vs_full', float('nan')):.2f} "
            f"| {s['kv_bytes_mean'] / 1e6:.2f} | {s['latency_ms_median']:.1f} | {s['latency_ms_p95']:.1f} "
            f"| {s.get('latency_vs_full', float('nan')):.2f} | {st['vision']:.1f} | {st['prefill']:.1f} "
            f"| {st['decode']:.1f} | {st['gate']:.2f} | {st['evict']:.2f} "
            f"| {100 * s.get('action_agreement', float('nan')):.0f}% | {s.get('logit_mae', float('nan')):.4f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    defaults = CacheConfig()
    parser = argparse.ArgumentParser(
        prog="kv-vla-bench-cache",
        description="Run every cache policy over the same episode in one process; print KV bytes and per-tick "
        "latency next to the `full` cache (ratios from the same run); write JSON and Markdown.",
    )
    parser.add_argument("--checkpoint", help="checkpoint directory (default: the embedded tiny checkpoint)")
    parser.add_argument("--frames", type=int, default=32, help="episode length")
    parser.add_argument("--policies", nargs="+", default=list(POLICIES), choices=POLICIES)
    parser.add_argument("--budget-tokens", type=int, default=defaults.budget_tokens)
    parser.add_argument("--recent-chunks", type=int, default=defaults.recent_chunks)
    parser.add_argument("--chunk-tokens", type=int, default=defaults.chunk_tokens)
    parser.add_argument("--gate-checkpoint", default=defaults.gate_checkpoint)
    parser.add_argument("--instruction", default="lift the red cube")
    parser.add_argument("--out", default="results/cache_policies.json", help="JSON output (Markdown beside it)")
    args = parser.parse_args(argv)
    cache = CacheConfig(
        budget_tokens=args.budget_tokens,
        recent_chunks=args.recent_chunks,
        chunk_tokens=args.chunk_tokens,
        gate_checkpoint=args.gate_checkpoint,
    )
    checkpoint = args.checkpoint or str(ensure_default_checkpoint())
    result = run(checkpoint, args.frames, cache, tuple(args.policies), args.instruction)
    command = "kv-vla-bench-cache " + " ".join(sys.argv[1:] if argv is None else argv)
    write_results(args.out, result, to_markdown(result), command)


if __name__ == "__main__":
    main()
