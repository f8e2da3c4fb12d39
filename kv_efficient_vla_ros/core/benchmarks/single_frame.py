"""Single-frame latency, and what decoding over the action ids saves (``kv-vla-bench-single-frame``)."""

from __future__ import annotations

import platform
import statistics
import time

import torch
from tqdm import tqdm

from ..policy import OpenVLAPolicy
from ..synthetic import synthetic_frames


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
