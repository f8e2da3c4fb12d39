"""The `attention` strategy's mass, measured beside SDPA, equals eager attention's weights on a live cache."""

import pytest
import torch

from kv_efficient_vla_ros.core.cache import CacheConfig
from kv_efficient_vla_ros.core.cache.attention_mass import AttentionMass
from kv_efficient_vla_ros.core.openvla.generation import positions
from kv_efficient_vla_ros.core.runner import PolicyRunner
from kv_efficient_vla_ros.core.synthetic import synthetic_frames

INSTRUCTION = "lift the red cube"


def _eager(model, embeds, position_ids, cache):
    config = model.language_model.config
    config._attn_implementation = "eager"
    try:
        return model.language_model.model(
            inputs_embeds=embeds,
            position_ids=position_ids,
            past_key_values=cache,
            use_cache=True,
            output_attentions=True,
        )
    finally:
        config._attn_implementation = "sdpa"


@torch.inference_mode()
@pytest.mark.parametrize("rope_compact", [False, True])
def test_mass_beside_sdpa_equals_eager_weights(tiny_policy, rope_compact):
    model = tiny_policy.model
    config = CacheConfig(strategy="window", budget_tokens=512, recent_chunks=1, rope_compact=rope_compact)
    runner = PolicyRunner(tiny_policy, config)
    frames = synthetic_frames(5, seed=2)
    for frame in frames[:4]:  # evictions leave gaps in the positions (without rope_compact)
        runner.step(frame, INSTRUCTION)
    cache = runner.cache
    _, prompt = tiny_policy.prompt_embeddings(INSTRUCTION)
    patches = model.embed_image(tiny_policy.image_processor(frames[4]))
    embeds = torch.cat([patches, prompt], dim=1)
    position_ids = positions(cache.next_position, embeds.shape[1], embeds.device)
    length, first = cache.length, patches.shape[1]
    history_end = length + first

    # the prompt's queries in the frame + prompt forward
    mass = AttentionMass(model, history_end, entropy=True)
    with mass.last_rows(prompt.shape[1]):
        hidden = model.hidden_states(embeds, position_ids, cache)
    cache.crop(length - cache.length)
    eager = _eager(model, embeds, position_ids, cache)
    reference = sum(a[0, :, first:, :history_end].sum(dim=(0, 1)) for a in eager.attentions)
    torch.testing.assert_close(mass.mass, reference.float(), rtol=1e-5, atol=1e-5)
    assert mass.mass.sum() > 0.5 * model.config.text_config.num_hidden_layers  # most of the mass is on the history
    rows = [a[0, :, first:].double() for a in eager.attentions]
    entropy = torch.stack([-(w * w.clamp_min(1e-30).log()).sum(dim=-1).mean() for w in rows])
    torch.testing.assert_close(mass.entropy, entropy.float(), rtol=1e-4, atol=1e-4)

    # and one decode step's query, through the lean decode path
    token = model.embed_tokens(torch.tensor([[model.action_ids.start + 3]]))
    step = AttentionMass(model, history_end)
    after_prompt = length + embeds.shape[1]
    with step.last_rows(1):
        model.next_token_hidden(token, int(position_ids[0, -1]) + 1, cache)
    cache.crop(after_prompt - cache.length)
    eager = _eager(model, token, position_ids[:, -1:] + 1, cache)
    reference = sum(a[0, :, :, :history_end].sum(dim=(0, 1)) for a in eager.attentions)
    torch.testing.assert_close(step.mass, reference.float(), rtol=1e-5, atol=1e-5)
    assert hidden.shape[1] == embeds.shape[1]
