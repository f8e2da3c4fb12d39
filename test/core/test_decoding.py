"""Decoding over the 256 action ids only is exact against full-vocabulary decoding on those ids; the
official decoding reproduces predict_action."""

import numpy as np
import pytest
import torch
from transformers import DynamicCache

from kv_efficient_vla_ros.core.cache import CacheConfig
from kv_efficient_vla_ros.core.openvla.generation import positions
from kv_efficient_vla_ros.core.runner import PolicyRunner
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


def _official_predict_action(policy, frame, instruction):
    """OpenVLA's ``predict_action`` step by step: greedy over the whole vocabulary (``generate``), then its
    de-tokenization (modeling_prismatic.py): ``vocab_size - ids``, ``clip(d - 1, 0, len(bin_centers) - 1)``,
    ``bin_centers[...]``, with ``vocab_size = text_config.vocab_size - pad_to_multiple_of`` (the text vocabulary)."""
    model, config = policy.model, policy.config
    bos, prompt = policy.prompt_embeddings(instruction)
    embeds = torch.cat([bos, model.embed_image(policy.image_processor(frame)), prompt], dim=1)
    cache, start, chosen = DynamicCache(), 0, []
    for _ in range(7):
        hidden = model.hidden_states(embeds, positions(start, embeds.shape[1], embeds.device), cache)
        token = model.vocab_logits(hidden[:, -1]).argmax(-1)
        chosen.append(int(token))
        start += embeds.shape[1]
        embeds = model.embed_tokens(token[:, None])
    ids = np.array(chosen)
    bins = np.linspace(-1, 1, config.n_action_bins)
    bin_centers = (bins[:-1] + bins[1:]) / 2.0
    discretized = np.clip(config.text_vocab_size - ids - 1, a_min=0, a_max=bin_centers.shape[0] - 1)
    return ids, bin_centers[discretized]


@torch.inference_mode()
def test_official_decoding_reproduces_predict_action(tiny_policy):
    official = PolicyRunner(tiny_policy, CacheConfig(strategy="none"), decoding="official")
    default = PolicyRunner(tiny_policy, CacheConfig(strategy="none"))
    first_action_id = tiny_policy.model.action_ids.start
    outside = 0
    for frame in synthetic_frames(4, seed=7):
        official.reset()
        default.reset()
        result = official.step(frame, "lift the red cube")
        ids, normalized = _official_predict_action(tiny_policy, frame, "lift the red cube")
        np.testing.assert_array_equal(result.token_ids, ids)
        np.testing.assert_array_equal(result.normalized, normalized)
        np.testing.assert_allclose(result.action, tiny_policy.action_stats.unnormalize(normalized))
        assert result.action_logits is None
        best = default.step(frame, "lift the red cube").token_ids
        assert np.all(best >= first_action_id)  # the default never leaves the action ids
        outside += int(np.sum(ids < first_action_id))
    # The untrained tiny model's whole-vocabulary argmax mostly falls outside the action ids: exactly the case
    # where the two decodings differ (each such id becomes the last bin, +0.996).
    assert outside > 0


def test_an_unknown_decoding_is_refused(tiny_policy):
    with pytest.raises(ValueError, match="decoding must be one of"):
        PolicyRunner(tiny_policy, CacheConfig(strategy="none"), decoding="beam")


@torch.inference_mode()
@pytest.mark.parametrize("strategy", ["full", "window"])
def test_the_lean_decode_step_is_bit_identical_to_the_model_forward(tiny_policy, strategy):
    """next_token_hidden skips LlamaModel.forward's per-call work; on a live cache (evictions, gaps in the
    positions) it must give exactly the forward's hidden states and write exactly the same keys and values."""
    model = tiny_policy.model
    runner = PolicyRunner(tiny_policy, CacheConfig(strategy=strategy, budget_tokens=512, recent_chunks=1))
    for frame in synthetic_frames(4, seed=3):
        runner.step(frame, "lift the red cube")
    cache = runner.cache
    length, position = cache.length, cache.next_position + 5  # a gap, as after a cropped prompt
    token = model.embed_tokens(torch.tensor([[model.action_ids.start + 17]]))
    lean = model.next_token_hidden(token, position, cache)
    lean_kv = cache.storage.buffer[..., : length + 1, :].clone()
    cache.crop(-1)
    assert cache.length == length
    reference = model.hidden_states(token, positions(position, 1, token.device), cache)
    assert torch.equal(lean, reference)
    assert torch.equal(lean_kv, cache.storage.buffer[..., : length + 1, :])
