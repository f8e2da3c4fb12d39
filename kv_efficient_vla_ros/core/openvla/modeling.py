"""The Prismatic / OpenVLA architecture, assembled from transformers' own modules.

Module names follow the official checkpoint keys (``vision_backbone.featurizer``,
``vision_backbone.fused_featurizer``, ``projector``, ``language_model``) so the weight map stays a
rename of the timm-layout parts only.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import (
    Dinov2WithRegistersConfig,
    Dinov2WithRegistersModel,
    LlamaForCausalLM,
    SiglipVisionConfig,
    SiglipVisionModel,
)
from transformers.cache_utils import Cache

from .config import OpenVLAConfig, ViTSpec


def build_featurizer(spec: ViTSpec) -> nn.Module:
    """A transformers ViT that computes exactly timm's features for ``spec``.

    Built one block short: OpenVLA reads the second-to-last block, so the last one is never run.
    ``gelu`` (exact) and eps 1e-6 are timm's settings; transformers' SigLIP default differs.
    """
    common = dict(
        hidden_size=spec.embed_dim,
        num_hidden_layers=spec.depth - 1,
        num_attention_heads=spec.num_heads,
        image_size=spec.image_size,
        patch_size=spec.patch_size,
        hidden_act="gelu",
        layer_norm_eps=1e-6,
    )
    if spec.family == "dinov2":
        if spec.mlp_dim % spec.embed_dim:  # DINOv2's config has mlp_ratio, not an intermediate size
            raise ValueError(f"DINOv2 needs mlp_dim a multiple of embed_dim, got {spec.mlp_dim}/{spec.embed_dim}")
        config = Dinov2WithRegistersConfig(
            **common,
            mlp_ratio=spec.mlp_dim // spec.embed_dim,
            num_register_tokens=spec.num_registers,
            qkv_bias=True,
        )
        model = Dinov2WithRegistersModel(config)
    else:
        config = SiglipVisionConfig(**common, intermediate_size=spec.mlp_dim, vision_use_head=False)
        model = SiglipVisionModel(config)
    model.config._attn_implementation = "sdpa"
    return model


class PrismaticVisionBackbone(nn.Module):
    """One or two featurizers; a fused backbone splits a 6-channel input 3/3 and concatenates features."""

    def __init__(self, specs: tuple[ViTSpec, ...]):
        super().__init__()
        self.specs = specs
        self.featurizer = build_featurizer(specs[0])
        self.fused_featurizer = build_featurizer(specs[1]) if len(specs) == 2 else None

    @staticmethod
    def _patch_features(featurizer: nn.Module, spec: ViTSpec, pixel_values: torch.Tensor) -> torch.Tensor:
        # embeddings + encoder, skipping the final norm: timm's get_intermediate_layers(n={depth - 2}).
        hidden = featurizer.embeddings(pixel_values)
        hidden = featurizer.encoder(hidden).last_hidden_state
        return hidden[:, spec.num_prefix_tokens :]

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        if self.fused_featurizer is None:
            return self._patch_features(self.featurizer, self.specs[0], pixel_values)
        first, second = torch.split(pixel_values, [3, 3], dim=1)
        return torch.cat(
            [
                self._patch_features(self.featurizer, self.specs[0], first),
                self._patch_features(self.fused_featurizer, self.specs[1], second),
            ],
            dim=2,
        )


class PrismaticProjector(nn.Module):
    """``gelu-mlp`` (fc1, GELU, fc2) or ``fused-gelu-mlp`` (fc1, GELU, fc2, GELU, fc3)."""

    def __init__(self, fused: bool, vision_dim: int, llm_dim: int):
        super().__init__()
        self.fused = fused
        if fused:
            self.fc1 = nn.Linear(vision_dim, 4 * vision_dim)
            self.fc2 = nn.Linear(4 * vision_dim, llm_dim)
            self.fc3 = nn.Linear(llm_dim, llm_dim)
        else:
            self.fc1 = nn.Linear(vision_dim, llm_dim)
            self.fc2 = nn.Linear(llm_dim, llm_dim)
        self.act = nn.GELU()

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        x = self.fc2(self.act(self.fc1(features)))
        return self.fc3(self.act(x)) if self.fused else x


class OpenVLAModel(nn.Module):
    """Vision backbone + projector + Llama. Inference helpers only; the cache is the caller's."""

    def __init__(self, config: OpenVLAConfig, attn_implementation: str = "sdpa"):
        super().__init__()
        self.config = config
        self.vision_backbone = PrismaticVisionBackbone(config.vision_specs)
        self.projector = PrismaticProjector(config.use_fused_vision_backbone, config.vision_dim, config.llm_dim)
        config.text_config._attn_implementation = attn_implementation
        self.language_model = LlamaForCausalLM(config.text_config)
        n_bins = config.n_action_bins
        # The action tokens are the last n_bins ids of the text vocabulary.
        self.action_ids = slice(config.text_vocab_size - n_bins, config.text_vocab_size)

    @property
    def device(self) -> torch.device:
        return self.projector.fc1.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.projector.fc1.weight.dtype

    def embed_image(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """``[B, C, H, W]`` pixels -> ``[B, num_patches, llm_dim]`` patch embeddings for the LLM."""
        return self.projector(self.vision_backbone(pixel_values.to(self.dtype)))

    def embed_tokens(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.language_model.model.embed_tokens(input_ids)

    def hidden_states(
        self,
        inputs_embeds: torch.Tensor,
        position_ids: torch.Tensor,
        cache: Cache | None,
        attention_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Run the LLM over new embeddings appended to ``cache``; returns the final-norm hidden states.

        ``position_ids`` are always explicit: after tokens are evicted the cache's physical length no
        longer says where RoPE should continue. ``cache=None`` (training) keeps no keys and values.
        """
        return self._llm(inputs_embeds, position_ids, cache, attention_mask).last_hidden_state

    def next_token_hidden(self, inputs_embeds: torch.Tensor, position: int, cache: Cache) -> torch.Tensor:
        """:meth:`hidden_states` for one token ``[B, 1, D]`` appended after everything ``cache`` holds.

        The decoder layers without ``LlamaModel.forward``'s per-call work (mask building, output objects):
        a lone query may see every cached key, so transformers builds no mask for it either, and the
        result is bit-identical (tested)."""
        llm = self.language_model.model
        position_ids = torch.full((1, 1), position, dtype=torch.long, device=inputs_embeds.device)
        position_embeddings = llm.rotary_emb(inputs_embeds, position_ids=position_ids)
        hidden = inputs_embeds
        for layer in llm.layers[: llm.config.num_hidden_layers]:
            hidden = layer(
                hidden,
                attention_mask=None,
                position_embeddings=position_embeddings,
                position_ids=position_ids,
                past_key_values=cache,
                use_cache=True,
            )
        return llm.norm(hidden)

    def _llm(self, inputs_embeds, position_ids, cache, attention_mask=None):
        return self.language_model.model(
            inputs_embeds=inputs_embeds,
            position_ids=position_ids,
            past_key_values=cache,
            attention_mask=attention_mask,
            use_cache=cache is not None,
        )

    def action_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Logits over the action ids only: reads n_bins rows of the output layer, not the vocabulary."""
        return nn.functional.linear(hidden, self.language_model.lm_head.weight[self.action_ids])

    def vocab_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.language_model.lm_head(hidden)
