"""Every eviction strategy over the same episode, in one process, against ``full`` (``kv-vla-bench-cache``).

One run of the longest horizon per row; a horizon h reports ticks 0..h-1 of it, which is exactly an
h-frame episode (a tick never depends on later frames). Timings are ratios to ``full`` from this run.
A row is a strategy, alone or with accelerators (``gated+select+prune``: token selection, layer pruning).
"""

from __future__ import annotations

import platform
import resource
import statistics
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from ..accelerators.config import split_row
from ..accelerators.rows import RowAccelerators
from ..cache.config import CacheConfig
from ..policy import OpenVLAPolicy
from ..runner import STAGES, PolicyRunner
from ..synthetic import synthetic_frames
from .flops import tick_flops


def load_frames(source: str, frames: int, episodes_dir: Path | None) -> tuple[list[np.ndarray], str, str]:
    """``frames`` camera frames (recorded sim episodes played back to back, or synthetic), instruction."""
    if source == "synthetic":
        return synthetic_frames(frames, seed=0), "lift the red cube", "synthetic moving cube"
    from ..sim.episodes import recorded_stream  # loads robosuite: only when recorded episodes are asked for

    collected, instruction, n_episodes = recorded_stream(episodes_dir)
    if len(collected) < frames:
        raise ValueError(f"{episodes_dir} holds {len(collected)} frames, fewer than the {frames} asked for")
    return collected[:frames], instruction, f"{n_episodes} recorded episodes from {episodes_dir}, back to back"


def run_episode(runner: PolicyRunner, frames: list[np.ndarray], instruction: str, desc: str) -> tuple[list, list[int]]:
    """The step results, and the minor page faults of each tick (memory the allocator had to map anew)."""
    runner.reset()
    results, faults = [], []
    for frame in tqdm(frames, desc=desc, leave=False):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        results.append(runner.step(frame, instruction))
        faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    return results, faults


def summarize(results: list, reference: list | None, flops: list[int], faults: list[int]) -> dict:
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
        "page_faults_median": statistics.median(faults),
        "chunks_summarized": sum(s.summarized for s in stats),
        "chunks_dropped": sum(s.dropped for s in stats),
        "reused_share": statistics.fmean(s.reused_share for s in stats),
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


def tick_flops_of(results: list, policy: OpenVLAPolicy, instruction: str, frame: int) -> list[int]:
    """Analytical FLOPs of each tick, for frames of ``frame`` tokens; token reuse skips the reused token-layers
    of the prefill (every token-layer of a prefill costs the same: projections, and attention over all keys)."""
    prompt = policy.prompt_embeddings(instruction)[1].shape[1]
    contexts = [0] + [r.stats.tokens for r in results[:-1]]
    flops = []
    for context, result in zip(contexts, results, strict=True):
        new = frame + (context == 0)
        tick = tick_flops(policy.config, context, new, prompt)
        skipped = result.stats.reused_share * frame / (new + prompt)
        flops.append(tick.total - round(skipped * tick.prefill))
    return flops


def bench_dtype(device: str) -> torch.dtype:
    return torch.bfloat16 if device.startswith("cuda") else torch.float32


def run(
    policy: OpenVLAPolicy,
    model_name: str,
    horizons: list[int],
    cache: CacheConfig,
    strategies: tuple[str, ...],
    source: str,
    episodes_dir: Path | None,
    accelerators: RowAccelerators | None = None,
) -> dict:
    """``policy`` (from a checkpoint, or random weights of an official shape, named ``model_name``); rows
    ``strategies``, those with accelerator suffixes run as ``accelerators`` say (default: built for the rows)."""
    device = policy.model.device
    frames, instruction, described = load_frames(source, max(horizons), episodes_dir)
    accelerators = accelerators or RowAccelerators.for_rows(policy, strategies)
    runners = {
        name: accelerators.runner(policy, name, replace(cache, strategy=split_row(name)[0])) for name in strategies
    }
    for name, runner in runners.items():  # warm-up: allocator, kernels, the gate
        run_episode(runner, frames[:2], instruction, f"warm-up {name}")
    results, faults, gpu_peak = {}, {}, {}
    for name, runner in runners.items():
        if device.type == "cuda":
            torch.cuda.synchronize(device)
            torch.cuda.reset_peak_memory_stats(device)
        results[name], faults[name] = run_episode(runner, frames, instruction, name)
        if device.type == "cuda":  # weights, every runner's cache, and this episode's work buffers
            gpu_peak[name] = torch.cuda.max_memory_allocated(device)
    flops = {
        name: tick_flops_of(r, runners[name].policy, instruction, runners[name].frame_tokens)
        for name, r in results.items()
    }
    per_horizon = {}
    for h in horizons:
        reference = results["full"][:h] if "full" in results else None
        table = {name: summarize(r[:h], reference, flops[name][:h], faults[name][:h]) for name, r in results.items()}
        if reference is not None:
            full = table["full"]
            for s in table.values():
                s["kv_reduction"] = full["kv_bytes_peak"] / s["kv_bytes_peak"]
                s["speedup"] = full["latency_ms_median"] / s["latency_ms_median"]
                s["flops_saved"] = 1.0 - s["flops_per_tick"] / full["flops_per_tick"]
        per_horizon[h] = table
    config = policy.config
    return {
        "checkpoint": model_name,
        "llm": f"{config.llm_dim} wide x {config.text_config.num_hidden_layers} layers",
        "vision": config.vision_backbone_id,
        "device": f"{device} {str(policy.model.dtype).removeprefix('torch.')}",
        "gpu_peak_bytes": gpu_peak,
        "frames": described,
        "instruction": instruction,
        "horizons": horizons,
        "cache": cache.flat(),
        "token_selection": asdict(accelerators.selection),
        "token_reuse": asdict(accelerators.reuse),
        "pruned_llm_layers": pruned.config.text_config.num_hidden_layers if (pruned := accelerators.pruned) else None,
        "torch_threads": torch.get_num_threads(),
        "cpu": platform.processor() or platform.machine(),
        "per_horizon": per_horizon,
    }
