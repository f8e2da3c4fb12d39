"""``kv-vla-bench-single-frame``: single-frame latency, and what decoding over the action ids saves."""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import torch
from tqdm import tqdm

from ..openvla.tiny import ensure_default_checkpoint
from ..policy import OpenVLAPolicy
from ..synthetic import synthetic_frames
from . import write_results


def _median_ms(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(times)


def run(checkpoint: str, repeats: int, instruction: str) -> dict:
    policy = OpenVLAPolicy.from_checkpoint(checkpoint, unnorm_key="sim_panda_lift")
    model, config = policy.model, policy.config
    frame = synthetic_frames(1)[0]
    for restrict in (True, False):  # warm-up: allocator and kernels
        policy.predict(frame, instruction, restrict_to_actions=restrict)

    stages = {}
    for restrict, name in ((False, "full_vocab"), (True, "action_ids")):
        runs = [
            policy.predict(frame, instruction, restrict_to_actions=restrict)
            for _ in tqdm(range(repeats), desc=f"predict ({name})", leave=False)
        ]
        stages[name] = {k: 1e3 * statistics.median(r.latency_s[k] for r in runs) for k in ("vision", "llm", "total")}

    hidden = torch.randn(1, config.llm_dim)
    with torch.inference_mode():
        head_full = _median_ms(lambda: model.vocab_logits(hidden).argmax(-1), 50 * repeats)
        head_actions = _median_ms(lambda: model.action_logits(hidden).argmax(-1), 50 * repeats)
    vocab_rows = model.language_model.lm_head.weight.shape[0]
    return {
        "checkpoint": str(checkpoint),
        "llm": f"{config.llm_dim} wide x {config.text_config.num_hidden_layers} layers, vocab {vocab_rows}",
        "vision_backbone_id": config.vision_backbone_id,
        "torch_threads": torch.get_num_threads(),
        "cpu": platform.processor() or platform.machine(),
        "repeats": repeats,
        "latency_ms": stages,
        "output_layer_ms_per_token": {"full_vocab": head_full, "action_ids": head_actions},
        "output_layer_flops_per_token": {
            "full_vocab": 2 * vocab_rows * config.llm_dim,
            "action_ids": 2 * config.n_action_bins * config.llm_dim,
        },
    }


def to_markdown(r: dict) -> str:
    full, act = r["latency_ms"]["full_vocab"], r["latency_ms"]["action_ids"]
    head = r["output_layer_ms_per_token"]
    lines = [
        f"Single-frame latency, {r['llm']}, {r['vision_backbone_id']}, CPU fp32, {r['torch_threads']} threads, "
        f"median of {r['repeats']}:",
        "",
        "| decoding | vision ms | LLM (prefill + 7 tokens) ms | total ms |",
        "|---|---:|---:|---:|",
        f"| full vocabulary (official) | {full['vision']:.1f} | {full['llm']:.1f} | {full['total']:.1f} |",
        f"| action ids only | {act['vision']:.1f} | {act['llm']:.1f} | {act['total']:.1f} |",
        "",
        f"Action-ids-only decoding: LLM time x{full['llm'] / act['llm']:.2f} faster, total "
        f"x{full['total'] / act['total']:.2f}; output layer per token {head['full_vocab']:.3f} ms -> "
        f"{head['action_ids']:.3f} ms.",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="kv-vla-bench-single-frame",
        description="Measure single-frame policy latency on CPU with full-vocabulary vs action-ids-only "
        "decoding; prints a Markdown table and writes JSON.",
    )
    parser.add_argument("--checkpoint", help="checkpoint directory (default: the embedded tiny checkpoint)")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--instruction", default="lift the red cube")
    parser.add_argument("--out", default="results/single_frame.json", help="JSON output path")
    args = parser.parse_args(argv)
    result = run(args.checkpoint or str(ensure_default_checkpoint()), args.repeats, args.instruction)
    write_results(args.out, result, to_markdown(result), f"kv-vla-bench-single-frame --repeats {args.repeats}")


if __name__ == "__main__":
    main()
