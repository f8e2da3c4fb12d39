"""The one name map between official OpenVLA checkpoint keys and this project's modules.

Official checkpoints store the vision featurizers in timm's layout; we build them from transformers'
``Dinov2WithRegistersModel`` / ``SiglipVisionModel``. Each :class:`TensorRule` says how one official
tensor becomes model parameters (and back, for writing checkpoints in the official layout).

Featurizer features are the output of the second-to-last timm block with no final norm, so the
modules are built one block short and the last block and SigLIP's ``attn_pool`` head are declared
``UNUSED``: present in the file and checked for shape, but never loaded.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from .config import OpenVLAConfig, ViTSpec

Tensors = tuple[torch.Tensor, ...]


@dataclass(frozen=True)
class Conversion:
    name: str
    to_model: Callable[[torch.Tensor], Tensors]
    to_official: Callable[[Tensors], torch.Tensor]


COPY = Conversion("copy", lambda t: (t,), lambda ts: ts[0])
# timm's fused attn.qkv is q, k, v stacked along the output dim (weights and biases alike).
SPLIT_QKV = Conversion("split_qkv", lambda t: tuple(t.chunk(3, dim=0)), lambda ts: torch.cat(ts, dim=0))
# timm's DINOv2 pos_embed covers patches only (no_embed_class); transformers' has a slot for CLS first.
PREPEND_CLS_POSITION = Conversion(
    "prepend_cls_position",
    lambda t: (torch.cat([t.new_zeros(t.shape[0], 1, t.shape[2]), t], dim=1),),
    lambda ts: ts[0][:, 1:],
)
# SigLIP keeps positions in an nn.Embedding: the batch dim of timm's pos_embed goes away.
SQUEEZE_BATCH = Conversion("squeeze_batch", lambda t: (t[0],), lambda ts: ts[0][None])
UNUSED = Conversion("unused", lambda t: (), lambda ts: torch.empty(0))


@dataclass(frozen=True)
class TensorRule:
    official: str
    shape: tuple[int, ...]
    targets: tuple[str, ...]
    conversion: Conversion


# transformers' per-family names for the parts of one timm block.
_BLOCK_NAMES = {
    "dinov2": {
        "block": "encoder.layer.{i}",
        "norm1": "norm1",
        "norm2": "norm2",
        "q": "attention.q_proj",
        "k": "attention.k_proj",
        "v": "attention.v_proj",
        "proj": "attention.o_proj",
        "ls1": "layer_scale1.lambda1",
        "ls2": "layer_scale2.lambda1",
    },
    "siglip": {
        "block": "encoder.layers.{i}",
        "norm1": "layer_norm1",
        "norm2": "layer_norm2",
        "q": "self_attn.q_proj",
        "k": "self_attn.k_proj",
        "v": "self_attn.v_proj",
        "proj": "self_attn.out_proj",
    },
}


def _block_layout(spec: ViTSpec) -> list[tuple[str, tuple[int, ...], tuple[str, ...], Conversion]]:
    """(timm name, shape, transformers names, conversion) of each tensor in one block."""
    d, m = spec.embed_dim, spec.mlp_dim
    names = _BLOCK_NAMES[spec.family]
    layout = []

    def affine(official: str, fan_out: int, fan_in: int | None, part: str) -> None:
        weight_shape = (fan_out,) if fan_in is None else (fan_out, fan_in)
        layout.append((f"{official}.weight", weight_shape, (f"{part}.weight",), COPY))
        layout.append((f"{official}.bias", (fan_out,), (f"{part}.bias",), COPY))

    affine("norm1", d, None, names["norm1"])
    for param, shape in (("weight", (3 * d, d)), ("bias", (3 * d,))):
        layout.append((f"attn.qkv.{param}", shape, tuple(f"{names[x]}.{param}" for x in "qkv"), SPLIT_QKV))
    affine("attn.proj", d, d, names["proj"])
    affine("norm2", d, None, names["norm2"])
    affine("mlp.fc1", m, d, "mlp.fc1")
    affine("mlp.fc2", d, m, "mlp.fc2")
    if spec.family == "dinov2":  # official checkpoints rename timm's LayerScale `gamma` to `scale_factor`
        layout.append(("ls1.scale_factor", (d,), (names["ls1"],), COPY))
        layout.append(("ls2.scale_factor", (d,), (names["ls2"],), COPY))
    return layout


def _vit_rules(official_prefix: str, model_prefix: str, spec: ViTSpec) -> list[TensorRule]:
    d, m, p = spec.embed_dim, spec.mlp_dim, spec.patch_size
    rules: list[TensorRule] = []

    def add(official: str, shape: tuple[int, ...], targets: tuple[str, ...], conversion: Conversion = COPY) -> None:
        model_names = tuple(f"{model_prefix}.{t}" for t in targets)
        rules.append(TensorRule(f"{official_prefix}.{official}", shape, model_names, conversion))

    if spec.family == "dinov2":
        add("cls_token", (1, 1, d), ("embeddings.cls_token",))
        add("reg_token", (1, spec.num_registers, d), ("embeddings.register_tokens",))
        add("pos_embed", (1, spec.num_patches, d), ("embeddings.position_embeddings",), PREPEND_CLS_POSITION)
        add("patch_embed.proj.weight", (d, 3, p, p), ("embeddings.patch_embeddings.projection.weight",))
        add("patch_embed.proj.bias", (d,), ("embeddings.patch_embeddings.projection.bias",))
    else:
        add("pos_embed", (1, spec.num_patches, d), ("embeddings.position_embedding.weight",), SQUEEZE_BATCH)
        add("patch_embed.proj.weight", (d, 3, p, p), ("embeddings.patch_embedding.weight",))
        add("patch_embed.proj.bias", (d,), ("embeddings.patch_embedding.bias",))

    block_layout = _block_layout(spec)
    for i in range(spec.depth):
        block = _BLOCK_NAMES[spec.family]["block"].format(i=i)
        for official, shape, parts, conversion in block_layout:
            if i < spec.depth - 1:
                add(f"blocks.{i}.{official}", shape, tuple(f"{block}.{part}" for part in parts), conversion)
            else:  # the last block is never run: its features are not the ones OpenVLA reads
                add(f"blocks.{i}.{official}", shape, (), UNUSED)

    # timm's final norm maps onto transformers' one; neither runs for second-to-last-block features.
    final_norm = "layernorm" if spec.family == "dinov2" else "post_layernorm"
    add("norm.weight", (d,), (f"{final_norm}.weight",))
    add("norm.bias", (d,), (f"{final_norm}.bias",))
    if spec.family == "siglip":  # timm's MAP pooling head ('map' global pool), unused for patch features
        for name, shape in (
            ("latent", (1, 1, d)),
            ("q.weight", (d, d)),
            ("q.bias", (d,)),
            ("kv.weight", (2 * d, d)),
            ("kv.bias", (2 * d,)),
            ("proj.weight", (d, d)),
            ("proj.bias", (d,)),
            ("norm.weight", (d,)),
            ("norm.bias", (d,)),
            ("mlp.fc1.weight", (m, d)),
            ("mlp.fc1.bias", (m,)),
            ("mlp.fc2.weight", (d, m)),
            ("mlp.fc2.bias", (d,)),
        ):
            add(f"attn_pool.{name}", shape, (), UNUSED)
    return rules


def _projector_rules(config: OpenVLAConfig) -> list[TensorRule]:
    v, llm = config.vision_dim, config.llm_dim
    if config.use_fused_vision_backbone:
        dims = [(v, 4 * v), (4 * v, llm), (llm, llm)]
    else:
        dims = [(v, llm), (llm, llm)]
    rules = []
    for i, (fan_in, fan_out) in enumerate(dims, start=1):
        rules.append(TensorRule(f"projector.fc{i}.weight", (fan_out, fan_in), (f"projector.fc{i}.weight",), COPY))
        rules.append(TensorRule(f"projector.fc{i}.bias", (fan_out,), (f"projector.fc{i}.bias",), COPY))
    return rules


def _llm_rules(config: OpenVLAConfig) -> list[TensorRule]:
    from transformers import LlamaForCausalLM

    with torch.device("meta"):  # shapes only, no memory
        llm = LlamaForCausalLM(config.text_config)
    return [
        TensorRule(f"language_model.{name}", tuple(t.shape), (f"language_model.{name}",), COPY)
        for name, t in llm.state_dict().items()
    ]


FEATURIZER_PREFIXES = ("vision_backbone.featurizer", "vision_backbone.fused_featurizer")


def official_rules(config: OpenVLAConfig) -> list[TensorRule]:
    """Every tensor an official checkpoint of this config holds, in a stable order."""
    rules: list[TensorRule] = []
    for prefix, spec in zip(FEATURIZER_PREFIXES, config.vision_specs, strict=False):
        rules += _vit_rules(prefix, prefix, spec)
    return rules + _projector_rules(config) + _llm_rules(config)
