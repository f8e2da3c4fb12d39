"""In-process A/B of the tick's hot-path changes, interleaved so machine noise hits both sides alike.

    python tools/hot_path_ab.py [--checkpoint DIR] [--contexts 8 32 64] [--repeats 30] > results/hot_path_ab.md

On a `full` cache holding N frames: (1) prefill of a frame and the prompt as two forwards (before) or one
(after); (2) one decode step through ``LlamaModel.forward`` (before) or ``next_token_hidden`` (after).
Each call appends to the live cache and is cropped back, so every repeat sees the same context.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from kv_efficient_vla_ros.core.cache import CacheConfig
from kv_efficient_vla_ros.core.openvla.generation import positions
from kv_efficient_vla_ros.core.policy import OpenVLAPolicy
from kv_efficient_vla_ros.core.runner import PolicyRunner
from kv_efficient_vla_ros.core.synthetic import synthetic_frames

INSTRUCTION = "lift the red cube and carry it to the side where the green light was"


def timed(fn, cache) -> float:
    length = cache.length
    start = time.perf_counter()
    fn()
    elapsed = time.perf_counter() - start
    cache.crop(length - cache.length)
    return 1e3 * elapsed


@torch.inference_mode()
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", default="data/checkpoints/openvla-512x8")
    parser.add_argument("--unnorm-key", default="sim_panda_lift")
    parser.add_argument("--contexts", type=int, nargs="+", default=[8, 32, 64])
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args()
    policy = OpenVLAPolicy.from_checkpoint(args.checkpoint, args.unnorm_key)
    model = policy.model
    runner = PolicyRunner(policy, CacheConfig(strategy="full"))
    frames = synthetic_frames(max(args.contexts) + 1, seed=0)
    _, prompt = policy.prompt_embeddings(INSTRUCTION)
    token = model.embed_tokens(torch.tensor([[model.action_ids.start + 17]]))
    patches = model.embed_image(policy.image_processor(frames[-1]))
    f, p = patches.shape[1], prompt.shape[1]
    text = model.config.text_config
    print(
        f"`python tools/hot_path_ab.py --checkpoint {args.checkpoint} --contexts "
        f"{' '.join(map(str, args.contexts))} --repeats {args.repeats}`\n"
    )
    print(
        f"{text.hidden_size} wide x {text.num_hidden_layers} layers, {f} patch tokens per frame, prompt {p} "
        f"tokens, cpu float32, {torch.get_num_threads()} threads; median of {args.repeats} interleaved repeats, ms.\n"
    )
    print(
        "| frames cached | prefill: frame, then prompt | prefill: one forward | change "
        "| decode step: LlamaModel.forward | decode step: next_token_hidden | change |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for tick, frame in enumerate(frames[:-1], start=1):
        runner.step(frame, INSTRUCTION)
        if tick in args.contexts:
            m = measure(model, runner.cache, patches, prompt, token, args.repeats)
            prefill = 100 * (m["fused"] / m["separate"] - 1)
            decode = 100 * (m["lean_step"] / m["forward_step"] - 1)
            print(
                f"| {tick} | {m['separate']:.1f} | {m['fused']:.1f} | {prefill:+.0f}% "
                f"| {m['forward_step']:.2f} | {m['lean_step']:.2f} | {decode:+.0f}% |"
            )


def measure(model, cache, patches, prompt, token, repeats: int) -> dict[str, float]:
    pos, f, p = cache.next_position, patches.shape[1], prompt.shape[1]

    def separate():
        model.hidden_states(patches, positions(pos, f, patches.device), cache)
        model.hidden_states(prompt, positions(pos + f, p, prompt.device), cache)

    def fused():
        both = torch.cat([patches, prompt], dim=1)
        model.hidden_states(both, positions(pos, f + p, both.device), cache)

    def forward_step():
        model.hidden_states(token, positions(pos, 1, token.device), cache)

    def lean_step():
        model.next_token_hidden(token, pos, cache)

    samples = {fn: [] for fn in (separate, fused, forward_step, lean_step)}
    for _ in range(repeats):
        for fn, times in samples.items():
            times.append(timed(fn, cache))
    return {fn.__name__: statistics.median(times) for fn, times in samples.items()}


if __name__ == "__main__":
    main()
