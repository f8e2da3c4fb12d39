"""The official openvla-7b config parses to the dimensions its backbone ids imply, and the weight map
covers the full-size architecture (checked on the meta device: shapes only, no memory)."""

import pytest
import torch

from kv_efficient_vla_ros.core.openvla.config import CheckpointError, OpenVLAConfig
from kv_efficient_vla_ros.core.openvla.modeling import OpenVLAModel
from kv_efficient_vla_ros.core.openvla.shapes import OPENVLA_7B
from kv_efficient_vla_ros.core.openvla.weight_map import UNUSED, official_rules


def test_openvla_7b_dimensions():
    config = OpenVLAConfig.from_dict(OPENVLA_7B)
    dino, siglip = config.vision_specs
    assert (dino.embed_dim, dino.depth, dino.num_heads, dino.mlp_dim, dino.num_registers) == (1024, 24, 16, 4096, 4)
    assert (siglip.embed_dim, siglip.depth, siglip.mlp_dim) == (1152, 27, 4304)
    assert config.vision_dim == 2176 and config.num_patches == 256
    text = config.text_config
    assert (text.hidden_size, text.num_hidden_layers, text.num_attention_heads, text.intermediate_size) == (
        4096,
        32,
        32,
        11008,
    )
    assert config.text_vocab_size == 32000


def test_weight_map_covers_the_full_size_model():
    config = OpenVLAConfig.from_dict(OPENVLA_7B)
    rules = official_rules(config)
    total = sum(torch.Size(r.shape).numel() for r in rules)
    assert 7.4e9 < total < 7.7e9  # OpenVLA is a 7.5B-parameter model
    with torch.device("meta"):
        model = OpenVLAModel(config)
    params = dict(model.named_parameters())
    covered = set()
    for rule in rules:
        if rule.conversion is UNUSED:
            continue
        converted = rule.conversion.to_model(torch.empty(rule.shape, device="meta"))
        for target, tensor in zip(rule.targets, converted, strict=True):
            assert params[target].shape == tensor.shape, rule.official
            covered.add(target)
    assert set(params) - covered == {
        "vision_backbone.featurizer.embeddings.mask_token"  # transformers-only, for masked pre-training
    }
    names = {r.official for r in rules}
    assert "vision_backbone.featurizer.blocks.23.ls2.scale_factor" in names
    assert "vision_backbone.fused_featurizer.blocks.26.attn.qkv.weight" in names
    assert "projector.fc1.weight" in names and "projector.fc3.bias" in names


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"vision_backbone_id": "clip-vit-l"}, "not supported; known ids"),
        ({"use_fused_vision_backbone": False}, "contradicts"),
        ({"arch_specifier": "no-align+linear"}, "projector must be one of"),
        ({"image_resize_strategy": "stretch"}, "image_resize_strategy"),
        ({"image_sizes": [384, 384]}, "image_sizes"),
    ],
)
def test_bad_configs_are_refused(change, message):
    with pytest.raises(CheckpointError, match=message):
        OpenVLAConfig.from_dict({**OPENVLA_7B, **change})
