"""The analytical FLOPs of a tick equal what torch's FlopCounterMode counts while the tick runs."""

import pytest
from torch.utils.flop_counter import FlopCounterMode

from kv_efficient_vla_ros.core.benchmarks.flops import tick_flops
from kv_efficient_vla_ros.core.cache import CacheConfig
from kv_efficient_vla_ros.core.policy import OpenVLAPolicy
from kv_efficient_vla_ros.core.runner import PolicyRunner
from kv_efficient_vla_ros.core.synthetic import synthetic_frames

INSTRUCTION = "lift the red cube"


@pytest.mark.parametrize("strategy", ["full", "window"])
def test_analytical_flops_match_the_flop_counter(tiny_checkpoint, strategy):
    model_policy = OpenVLAPolicy.from_checkpoint(tiny_checkpoint, unnorm_key="sim_panda_lift")
    # FlopCounterMode cannot see inside CPU SDPA kernels; eager attention runs the same products as matmuls
    model = model_policy.model
    model.language_model.config._attn_implementation = "eager"
    for featurizer in (model.vision_backbone.featurizer, model.vision_backbone.fused_featurizer):
        featurizer.config._attn_implementation = "eager"
    runner = PolicyRunner(model_policy, CacheConfig(strategy=strategy, budget_tokens=512, recent_chunks=1))
    prompt_tokens = model_policy.prompt_embeddings(INSTRUCTION)[1].shape[1]
    for frame in synthetic_frames(4):
        context = runner.cache.length
        with FlopCounterMode(display=False) as counter:
            runner.step(frame, INSTRUCTION)
        frame_tokens = 256 + (context == 0)  # BOS enters with the first frame
        expected = tick_flops(model_policy.config, context, frame_tokens, prompt_tokens)
        assert counter.get_total_flops() == pytest.approx(expected.total, rel=1e-3)
    if strategy == "window":
        assert context == 1 + 512  # the last tick ran on a bounded context
