"""Analytical FLOPs of one control tick, from the model config and the cache's size.

Counted as executed: 2 FLOPs per multiply-accumulate of every matrix product, attention as the dense
``queries x keys`` rectangles the kernels compute (the causal mask does not skip work). Norms,
activations, RoPE and the gate are left out (well under 1 % here); ``FlopCounterMode`` agrees in a test.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..openvla.config import OpenVLAConfig, ViTSpec


@dataclass(frozen=True)
class TickFlops:
    vision: int
    projector: int
    prefill: int  # the frame's patch tokens and the prompt, appended to the cache in one forward
    decode: int  # 6 fed action tokens + 7 output heads over the action ids

    @property
    def total(self) -> int:
        return self.vision + self.projector + self.prefill + self.decode


def vit_flops(spec: ViTSpec) -> int:
    """One featurizer, with its last block skipped (OpenVLA reads the second-to-last)."""
    d, m, p = spec.embed_dim, spec.mlp_dim, spec.patch_size
    n = spec.num_patches + spec.num_prefix_tokens
    patch_embed = 2 * spec.num_patches * 3 * p * p * d
    block = 2 * n * d * 3 * d + 4 * n * n * d + 2 * n * d * d + 2 * 2 * n * d * m
    return patch_embed + (spec.depth - 1) * block


def projector_flops(config: OpenVLAConfig) -> int:
    v, llm, p = config.vision_dim, config.llm_dim, config.num_patches
    if config.use_fused_vision_backbone:
        return 2 * p * (v * 4 * v + 4 * v * llm + llm * llm)
    return 2 * p * (v * llm + llm * llm)


def llm_flops(config: OpenVLAConfig, new_tokens: int, context: int) -> int:
    """``new_tokens`` appended after ``context`` cached tokens, through every layer."""
    text = config.text_config
    d, inter = text.hidden_size, text.intermediate_size
    q_width, kv_width = text.num_attention_heads * config.head_dim, text.num_key_value_heads * config.head_dim
    linear = 2 * d * q_width + 2 * 2 * d * kv_width + 2 * q_width * d + 3 * 2 * d * inter
    attention = 2 * 2 * q_width * (context + new_tokens)  # scores and weighted values, dense
    return text.num_hidden_layers * new_tokens * (linear + attention)


def tick_flops(
    config: OpenVLAConfig, context: int, frame_tokens: int, prompt_tokens: int, n_actions: int = 7
) -> TickFlops:
    """One tick: ``context`` cached tokens before it (BOS included once present)."""
    vision = sum(vit_flops(spec) for spec in config.vision_specs)
    prefill = llm_flops(config, frame_tokens + prompt_tokens, context)
    decode = 0
    for step in range(1, n_actions):  # each fed action token sees everything before it
        decode += llm_flops(config, 1, context + frame_tokens + prompt_tokens + step - 1)
    decode += n_actions * 2 * config.llm_dim * config.n_action_bins
    return TickFlops(vision, projector_flops(config), prefill, decode)
