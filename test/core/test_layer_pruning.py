"""EfficientVLA layer pruning: the pruned view equals skipping the layers, leaves the full model alone, and the
calibration ranks a layer that changes nothing last."""

import json

import pytest
import torch

from kv_efficient_vla_ros.core.accelerators.layer_pruning import (
    layer_importance,
    layers_to_drop,
    pruned_policy,
    save_importance,
)
from kv_efficient_vla_ros.core.cache import CacheConfig
from kv_efficient_vla_ros.core.openvla.generation import positions
from kv_efficient_vla_ros.core.policy import OpenVLAPolicy
from kv_efficient_vla_ros.core.runner import PolicyRunner
from kv_efficient_vla_ros.core.synthetic import synthetic_frames

INSTRUCTION = "lift the red cube"


def _logits(policy, frames, strategy="window"):
    runner = PolicyRunner(policy, CacheConfig(strategy=strategy, budget_tokens=512, recent_chunks=1))
    return [runner.step(frame, INSTRUCTION).action_logits for frame in frames], runner


def test_dropping_nothing_is_the_same_model(tiny_policy):
    frames = synthetic_frames(3, seed=10)
    full, _ = _logits(tiny_policy, frames)
    view, _ = _logits(pruned_policy(tiny_policy, []), frames)
    assert all(torch.equal(a, b) for a, b in zip(full, view, strict=True))


@torch.inference_mode()
def test_a_pruned_view_skips_its_layers_and_leaves_the_full_model_alone(tiny_policy):
    frames = synthetic_frames(3, seed=11)
    before, _ = _logits(tiny_policy, frames)
    pruned = pruned_policy(tiny_policy, [1, 2])
    after_pruning, runner = _logits(pruned, frames)
    assert runner.cache.storage.num_layers == 2 and pruned.config.text_config.num_hidden_layers == 2
    again, _ = _logits(tiny_policy, frames)
    assert all(torch.equal(a, b) for a, b in zip(before, again, strict=True))  # the full model is untouched
    assert (after_pruning[-1] - before[-1]).abs().max() > 1e-3

    # the view's forward equals the full model's with layers 1 and 2 replaced by the identity
    model = tiny_policy.model
    bos, prompt = tiny_policy.prompt_embeddings(INSTRUCTION)
    embeds = torch.cat([bos, model.embed_image(tiny_policy.image_processor(frames[0])), prompt], dim=1)
    ids = positions(0, embeds.shape[1], embeds.device)
    layers = model.language_model.model.layers

    def identity(module, args, kwargs, output):
        return args[0] if args else kwargs["hidden_states"]

    skips = [layers[i].register_forward_hook(identity, with_kwargs=True) for i in (1, 2)]
    try:
        skipped = model.hidden_states(embeds, ids, None)
    finally:
        for handle in skips:
            handle.remove()
    torch.testing.assert_close(pruned.model.hidden_states(embeds, ids, None), skipped, rtol=0, atol=1e-5)


def test_the_calibration_ranks_a_layer_that_changes_nothing_last(tiny_checkpoint, tmp_path):
    policy = OpenVLAPolicy.from_checkpoint(tiny_checkpoint, unnorm_key="sim_panda_lift")  # its own: weights edited
    layer = policy.model.language_model.model.layers[2]
    with torch.no_grad():  # no attention output, no MLP output: the layer passes its input through
        layer.self_attn.o_proj.weight.zero_()
        layer.mlp.down_proj.weight.zero_()
    importance = layer_importance(policy, synthetic_frames(4, seed=12), INSTRUCTION)
    assert len(importance) == 4 and importance[2] == pytest.approx(0.0, abs=1e-6)
    assert min(importance[i] for i in (0, 1, 3)) > 1e-3
    path = tmp_path / "importance.json"
    save_importance(path, importance, "tiny", "4 synthetic frames")
    assert json.loads(path.read_text())["least_important_first"][0] == 2
    assert layers_to_drop(path, 1, 4) == [2]
    with pytest.raises(ValueError, match="calibrated for 4"):
        layers_to_drop(path, 1, 8)
    with pytest.raises(ValueError, match="prune_layers"):
        layers_to_drop(path, 4, 4)
