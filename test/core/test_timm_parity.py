"""The mapped transformers featurizers compute exactly timm's features (where timm imports).

timm cannot be imported with the CPU-only torch of this project's environment (it pulls torchvision);
the GPU machines have it. Random weights, tiny dimensions, the official timm model families.
"""

import pytest
import torch

from kv_efficient_vla_ros.core.openvla.checkpoint import load_official_tensors
from kv_efficient_vla_ros.core.openvla.config import VISION_BACKBONES
from kv_efficient_vla_ros.core.openvla.modeling import PrismaticVisionBackbone
from kv_efficient_vla_ros.core.openvla.weight_map import FEATURIZER_PREFIXES, _vit_rules

timm = pytest.importorskip("timm", reason="timm needs torchvision, which has no CPU build here")

TIMM_FAMILIES = {"dinov2": "vit_large_patch14_reg4_dinov2", "siglip": "vit_so400m_patch14_siglip_224"}


def _timm_featurizer(spec):
    model = timm.create_model(
        TIMM_FAMILIES[spec.family],
        pretrained=False,
        num_classes=0,
        img_size=spec.image_size,
        embed_dim=spec.embed_dim,
        depth=spec.depth,
        num_heads=spec.num_heads,
        mlp_ratio=spec.mlp_dim / spec.embed_dim,
    )
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():  # LayerScale's 1e-5 init would hide mapping errors
            p.copy_(0.1 * torch.randn(p.shape, generator=generator))
    return model.eval()


@pytest.mark.parametrize("backbone_id", ["tiny-dinosiglip-224px", "tiny-siglip-224px"])
def test_featurizers_match_timm(backbone_id):
    specs = VISION_BACKBONES[backbone_id]
    ours = PrismaticVisionBackbone(specs).eval()
    rules, official, timm_models = [], {}, []
    for prefix, spec in zip(FEATURIZER_PREFIXES, specs, strict=False):
        model = _timm_featurizer(spec)
        timm_models.append(model)
        # official checkpoints store timm's LayerScale `gamma` as `scale_factor`
        state = {f"{prefix}.{k.replace('.gamma', '.scale_factor')}": v for k, v in model.state_dict().items()}
        spec_rules = _vit_rules(prefix, prefix.removeprefix("vision_backbone."), spec)
        assert set(state) == {r.official for r in spec_rules}  # the name map is timm's layout, exactly
        rules += spec_rules
        official.update(state)
    load_official_tensors(ours, rules, official.__getitem__)

    images = [torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(i)) for i in range(len(specs))]
    with torch.no_grad():
        features = [
            m.get_intermediate_layers(x, n=[s.depth - 2])[0] for m, s, x in zip(timm_models, specs, images, strict=True)
        ]
        expected = torch.cat(features, dim=2)
        got = ours(torch.cat(images, dim=1))
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
