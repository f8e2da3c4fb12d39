"""Decoding over the 256 action ids only is exact against full-vocabulary decoding on those ids."""

import numpy as np
import torch
from transformers import DynamicCache

from kv_efficient_vla_ros.core.openvla.generation import positions
from kv_efficient_vla_ros.core.synthetic import synthetic_frames


def _reference_tokens(policy, frame, instruction):
    """Full-vocabulary logits, argmax taken over the action rows: the restricted decode's spec."""
    model = policy.model
    bos, prompt = policy.prompt_embeddings(instruction)
    embeds = torch.cat([bos, model.embed_image(policy.image_processor(frame)), prompt], dim=1)
    cache, start, chosen = DynamicCache(), 0, []
    for _ in range(7):
        hidden = model.hidden_states(embeds, positions(start, embeds.shape[1], embeds.device), cache)
        logits = model.vocab_logits(hidden[:, -1])
        token = logits[:, model.action_ids].argmax(-1) + model.action_ids.start
        chosen.append(int(token))
        start += embeds.shape[1]
        embeds = model.embed_tokens(token[:, None])
    return np.array(chosen)


@torch.inference_mode()
def test_action_logits_equal_the_full_vocabulary_rows(tiny_policy):
    model = tiny_policy.model
    hidden = torch.randn(16, model.config.llm_dim)
    full = model.vocab_logits(hidden)[:, model.action_ids]
    restricted = model.action_logits(hidden)
    torch.testing.assert_close(restricted, full, rtol=1e-5, atol=1e-5)
    assert torch.equal(restricted.argmax(-1), full.argmax(-1))


@torch.inference_mode()
def test_restricted_decode_matches_full_vocabulary_decode(tiny_policy):
    for frame in synthetic_frames(4, seed=7):
        out = tiny_policy.predict(frame, "lift the red cube", restrict_to_actions=True)
        np.testing.assert_array_equal(out.token_ids, _reference_tokens(tiny_policy, frame, "lift the red cube"))
        first = tiny_policy.model.action_ids.start
        assert np.all((out.token_ids >= first) & (out.token_ids < first + 256))
