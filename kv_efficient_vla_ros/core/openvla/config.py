"""Parse an official OpenVLA ``config.json`` into the dimensions the model is built with.

The official config names its backbones by id (``vision_backbone_id``, ``llm_backbone_id``); the
dimensions those ids imply live in :data:`VISION_BACKBONES`. The ``tiny-*`` ids are this project's own
small backbones of the same families, so a tiny checkpoint loads through exactly the same code.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from transformers import LlamaConfig

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
SIGLIP_MEAN = (0.5, 0.5, 0.5)
SIGLIP_STD = (0.5, 0.5, 0.5)


@dataclass(frozen=True)
class ViTSpec:
    """One timm ViT featurizer, in the dimensions timm builds it with."""

    family: Literal["dinov2", "siglip"]
    embed_dim: int
    depth: int
    num_heads: int
    mlp_dim: int
    image_size: int
    patch_size: int = 14
    num_registers: int = 0  # DINOv2-with-registers: 4 register tokens after CLS
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD

    @property
    def num_patches(self) -> int:
        return (self.image_size // self.patch_size) ** 2

    @property
    def num_prefix_tokens(self) -> int:
        """CLS + registers in front of the patches (DINOv2); SigLIP has none."""
        return 1 + self.num_registers if self.family == "dinov2" else 0


def _dinov2_l(size: int) -> ViTSpec:  # timm vit_large_patch14_reg4_dinov2.lvd142m
    return ViTSpec("dinov2", 1024, 24, 16, 4096, size, num_registers=4)


def _siglip_so400m(size: int) -> ViTSpec:  # timm vit_so400m_patch14_siglip_{224,384}
    return ViTSpec("siglip", 1152, 27, 16, 4304, size, mean=SIGLIP_MEAN, std=SIGLIP_STD)


def _tiny_dinov2(size: int = 224) -> ViTSpec:
    return ViTSpec("dinov2", 64, 3, 2, 256, size, num_registers=4)


def _tiny_siglip(size: int = 224) -> ViTSpec:
    return ViTSpec("siglip", 64, 3, 2, 256, size, mean=SIGLIP_MEAN, std=SIGLIP_STD)


# Prismatic's vision backbone ids that transformers has exact modules for (CLIP/IN1k ids are not
# supported: their timm layouts need other modules). Order matters: featurizer, then fused_featurizer.
VISION_BACKBONES: dict[str, tuple[ViTSpec, ...]] = {
    "dinov2-vit-l": (_dinov2_l(224),),
    "siglip-vit-so400m": (_siglip_so400m(224),),
    "siglip-vit-so400m-384px": (_siglip_so400m(384),),
    "dinosiglip-vit-so-224px": (_dinov2_l(224), _siglip_so400m(224)),
    "dinosiglip-vit-so-384px": (_dinov2_l(384), _siglip_so400m(384)),
    "tiny-dinosiglip-224px": (_tiny_dinov2(), _tiny_siglip()),
    # 112 px = 64 patches of 14 px: the trained memory policy's input (a 30-frame history trains in minutes)
    "tiny-dinosiglip-112px": (_tiny_dinov2(112), _tiny_siglip(112)),
    "tiny-siglip-224px": (_tiny_siglip(),),
}

PROJECTORS = ("gelu-mlp", "fused-gelu-mlp")
RESIZE_STRATEGIES = ("resize-naive", "resize-crop", "letterbox")


class CheckpointError(ValueError):
    """A checkpoint directory that cannot be loaded as it is; the message says why."""


@dataclass
class OpenVLAConfig:
    """The fields of an official OpenVLA ``config.json`` that decide the model and its outputs."""

    vision_backbone_id: str
    llm_backbone_id: str
    arch_specifier: str
    use_fused_vision_backbone: bool
    image_resize_strategy: str
    text_config: LlamaConfig
    n_action_bins: int = 256
    pad_to_multiple_of: int = 64
    norm_stats: dict[str, Any] = field(default_factory=dict)
    raw: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def vision_specs(self) -> tuple[ViTSpec, ...]:
        return VISION_BACKBONES[self.vision_backbone_id]

    @property
    def vision_dim(self) -> int:
        return sum(spec.embed_dim for spec in self.vision_specs)

    @property
    def llm_dim(self) -> int:
        return self.text_config.hidden_size

    @property
    def num_patches(self) -> int:
        return self.vision_specs[0].num_patches

    @property
    def head_dim(self) -> int:
        """Per-head width of the LLM's attention (explicit in some configs, else hidden / heads)."""
        text = self.text_config
        return getattr(text, "head_dim", None) or text.hidden_size // text.num_attention_heads

    @property
    def text_vocab_size(self) -> int:
        """Vocabulary the tokenizer knows; the embedding is padded past it (official ``predict_action``)."""
        return self.text_config.vocab_size - self.pad_to_multiple_of

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> OpenVLAConfig:
        missing = [
            k
            for k in ("vision_backbone_id", "llm_backbone_id", "arch_specifier", "use_fused_vision_backbone")
            if k not in raw
        ]
        if missing:
            raise CheckpointError(f"config.json lacks the OpenVLA field(s) {missing}")
        backbone = raw["vision_backbone_id"]
        if backbone not in VISION_BACKBONES:
            raise CheckpointError(
                f"vision_backbone_id {backbone!r} is not supported; known ids: {sorted(VISION_BACKBONES)}"
            )
        specs = VISION_BACKBONES[backbone]
        fused = bool(raw["use_fused_vision_backbone"])
        if fused != (len(specs) == 2):
            raise CheckpointError(
                f"use_fused_vision_backbone={fused} contradicts vision_backbone_id {backbone!r} "
                f"({len(specs)} featurizer(s))"
            )
        projector = raw["arch_specifier"].split("+")[-1]
        if projector not in PROJECTORS:
            raise CheckpointError(f"arch_specifier {raw['arch_specifier']!r}: projector must be one of {PROJECTORS}")
        if (projector == "fused-gelu-mlp") != fused:
            raise CheckpointError(f"projector {projector!r} does not fit use_fused_vision_backbone={fused}")
        strategy = raw.get("image_resize_strategy", "resize-naive")
        if strategy not in RESIZE_STRATEGIES:
            raise CheckpointError(f"image_resize_strategy {strategy!r}: expected one of {RESIZE_STRATEGIES}")
        sizes = raw.get("image_sizes")
        if sizes is not None and list(sizes) != [s.image_size for s in specs]:
            raise CheckpointError(f"image_sizes {sizes} do not match backbone {backbone!r}")
        # Official configs store text_config as a diff against LlamaConfig's defaults (hidden 4096, ...).
        text = dict(raw.get("text_config") or {})
        text.pop("model_type", None)
        text_config = LlamaConfig(**text)
        return cls(
            vision_backbone_id=backbone,
            llm_backbone_id=raw["llm_backbone_id"],
            arch_specifier=raw["arch_specifier"],
            use_fused_vision_backbone=fused,
            image_resize_strategy=strategy,
            text_config=text_config,
            n_action_bins=int(raw.get("n_action_bins", 256)),
            pad_to_multiple_of=int(raw.get("pad_to_multiple_of", 64)),
            norm_stats=dict(raw.get("norm_stats") or {}),
            raw=raw,
        )

    @classmethod
    def from_checkpoint(cls, checkpoint_dir: str | Path) -> OpenVLAConfig:
        path = Path(checkpoint_dir) / "config.json"
        if not path.is_file():
            raise CheckpointError(f"{checkpoint_dir}: no config.json (not an OpenVLA checkpoint directory)")
        try:
            raw = json.loads(path.read_text())
        except json.JSONDecodeError as err:
            raise CheckpointError(f"{path}: invalid JSON ({err})") from err
        config = cls.from_dict(raw)
        stats_path = Path(checkpoint_dir) / "dataset_statistics.json"
        if not config.norm_stats and stats_path.is_file():
            config.norm_stats = json.loads(stats_path.read_text())
        return config
