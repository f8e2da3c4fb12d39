"""Random-weight models with an official checkpoint's exact shapes: a 7B-shape tick can be benchmarked
without downloading 15 GB. Allocated as :func:`~.checkpoint.load_model` allocates (no init pass), then
filled with small seeded weights: normal(0, 0.02) matrices, norm and layer-scale gains 1, biases 0."""

from __future__ import annotations

import copy

import torch
from transformers.initialization import no_init_weights

from .checkpoint import default_dtype
from .config import OpenVLAConfig
from .modeling import OpenVLAModel
from .processor import PromptTokenizer
from .tiny import build_tokenizer

# The fields of openvla/openvla-7b's config.json that decide the model (norm_stats abridged to one key).
OPENVLA_7B = {
    "arch_specifier": "no-align+fused-gelu-mlp",
    "architectures": ["OpenVLAForActionPrediction"],
    "hf_llm_id": "meta-llama/Llama-2-7b-hf",
    "image_resize_strategy": "resize-naive",
    "image_sizes": [224, 224],
    "llm_backbone_id": "llama2-7b-pure",
    "llm_max_length": 2048,
    "model_type": "openvla",
    "n_action_bins": 256,
    "norm_stats": {"bridge_orig": {"action": {"q01": [0.0] * 7, "q99": [1.0] * 7, "mask": [True] * 6 + [False]}}},
    "pad_to_multiple_of": 64,
    "pad_token_id": 32000,
    "text_config": {"model_type": "llama", "pad_token_id": 32000, "torch_dtype": "bfloat16", "vocab_size": 32064},
    "timm_model_ids": ["vit_large_patch14_reg4_dinov2.lvd142m", "vit_so400m_patch14_siglip_224"],
    "timm_override_act_layers": [None, None],
    "torch_dtype": "bfloat16",
    "use_fused_vision_backbone": True,
    "vision_backbone_id": "dinosiglip-vit-so-224px",
}
SHAPES = {"openvla-7b": OPENVLA_7B}


def random_weight_model(
    shape: str,
    device: str = "cpu",
    dtype: torch.dtype = torch.float32,
    llm_layers: int | None = None,
    seed: int = 0,
) -> tuple[OpenVLAModel, PromptTokenizer]:
    """A model with ``shape``'s dimensions and random weights, and a Llama-sized tokenizer; ``llm_layers``
    cuts the LLM's depth (a CPU run of the same code at a size this machine holds)."""
    if shape not in SHAPES:
        raise ValueError(f"unknown shape {shape!r}; known: {sorted(SHAPES)}")
    config = OpenVLAConfig.from_dict(copy.deepcopy(SHAPES[shape]))
    if llm_layers is not None:
        if not 1 <= llm_layers <= config.text_config.num_hidden_layers:
            raise ValueError(f"llm_layers must be in 1..{config.text_config.num_hidden_layers}, got {llm_layers}")
        config.text_config.num_hidden_layers = llm_layers
    with no_init_weights(), default_dtype(dtype), torch.device(device):
        model = OpenVLAModel(config)
    fill_random(model, seed)
    return model.eval(), PromptTokenizer(build_tokenizer(config.text_vocab_size, seed))


@torch.no_grad()
def fill_random(model: torch.nn.Module, seed: int = 0) -> None:
    generator = torch.Generator(device=next(model.parameters()).device).manual_seed(seed)
    for name, param in model.named_parameters():
        leaf = name.rsplit(".", 2)
        if "norm" in leaf[-2] or leaf[-1] == "lambda1":
            param.fill_(1.0 if leaf[-1] in ("weight", "lambda1") else 0.0)
        elif param.ndim == 1 or leaf[-1] == "mask_token":
            param.zero_()
        else:
            param.normal_(0.0, 0.02, generator=generator)
