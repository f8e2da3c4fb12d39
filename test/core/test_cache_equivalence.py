"""The cache across ticks is exact: numerically against single forwards over the whole sequence."""

from dataclasses import replace

import numpy as np
import pytest
import torch
from transformers import DynamicCache

from kv_efficient_vla_ros.core.cache import CacheConfig
from kv_efficient_vla_ros.core.openvla.generation import positions
from kv_efficient_vla_ros.core.runner import PolicyRunner
from kv_efficient_vla_ros.core.synthetic import synthetic_frames

INSTRUCTION = "lift the red cube"


@torch.inference_mode()
def _reference_logits(policy, frames, token_ids, mask=None):
    """One forward over [BOS] [all frames] [prompt] [6 fed action tokens]; action-row logits of the 7 steps."""
    model = policy.model
    bos, prompt = policy.prompt_embeddings(INSTRUCTION)
    patches = [model.embed_image(policy.image_processor(f)) for f in frames]
    actions = model.embed_tokens(torch.as_tensor(token_ids[:-1])[None])
    embeds = torch.cat([bos, *patches, prompt, actions], dim=1)
    hidden = model.hidden_states(embeds, positions(0, embeds.shape[1], embeds.device), DynamicCache(), mask)
    first = embeds.shape[1] - actions.shape[1] - 1  # the last prompt token predicts the first action
    return model.action_logits(hidden[0, first:])


def test_full_strategy_equals_one_forward(tiny_policy):
    runner = PolicyRunner(tiny_policy, CacheConfig(strategy="full"))
    frames = synthetic_frames(4, seed=1)
    for t, frame in enumerate(frames):
        out = runner.step(frame, INSTRUCTION)
        reference = _reference_logits(tiny_policy, frames[: t + 1], out.token_ids)
        torch.testing.assert_close(out.action_logits, reference, rtol=0, atol=1e-4)
        np.testing.assert_array_equal(out.token_ids - tiny_policy.model.action_ids.start, reference.argmax(-1).numpy())
    assert out.stats.tokens == 1 + 4 * 256 and out.stats.dropped == 0


def test_none_strategy_equals_single_frame_inference(tiny_policy):
    runner = PolicyRunner(tiny_policy, CacheConfig(strategy="none"))
    for frame in synthetic_frames(3, seed=2):
        out = runner.step(frame, INSTRUCTION)
        single = tiny_policy.predict(frame, INSTRUCTION)
        np.testing.assert_array_equal(out.token_ids, single.token_ids)
        assert out.stats.tokens == 1  # only BOS survives a tick


def _visibility_mask(alive_before, frame_tokens, chunk_len, tail_tokens):
    """4D mask in which each token sees exactly what the cache held when it was encoded.

    ``alive_before[t]``: chunk ids cached when tick t began. Frame t's tokens see BOS, those chunks and
    themselves causally; the last tick's prompt and action tokens also see that tick's frame.
    """
    n_frames = len(alive_before)
    per_frame = frame_tokens // chunk_len
    n = 1 + n_frames * frame_tokens + tail_tokens
    visible = torch.zeros(n, n, dtype=torch.bool)
    visible[:, 0] = True  # BOS
    last_frame = set(range((n_frames - 1) * per_frame, n_frames * per_frame))
    for t in range(n_frames + 1):
        start = 1 + t * frame_tokens
        end = start + (frame_tokens if t < n_frames else tail_tokens)
        alive = alive_before[t] if t < n_frames else alive_before[-1] | last_frame
        for chunk_id in alive:
            s = 1 + chunk_id * chunk_len
            visible[start:end, s : s + chunk_len] = True
        visible[start:end, start:end] = torch.ones(end - start, end - start).tril().bool()
    mask = torch.zeros(n, n)
    mask[~visible] = torch.finfo(torch.float32).min
    return mask[None, None]


@pytest.mark.parametrize("strategy", ["window", "random", "attention"])
def test_evicting_then_continuing_equals_a_masked_forward(tiny_policy, strategy):
    config = CacheConfig(strategy=strategy, chunk_tokens=128, recent_chunks=2, budget_tokens=384, rope_compact=False)
    runner = PolicyRunner(tiny_policy, config)
    frames = synthetic_frames(5, seed=3)
    alive_before = []
    for frame in frames:
        alive_before.append({c.id for c in runner.cache.chunks})
        out = runner.step(frame, INSTRUCTION)
    assert len(alive_before[-1]) < 8, "the test must evict something"
    prompt_len = tiny_policy.prompt_embeddings(INSTRUCTION)[1].shape[1]
    mask = _visibility_mask(alive_before, 256, 128, prompt_len + 6)
    reference = _reference_logits(tiny_policy, frames, out.token_ids, mask)
    torch.testing.assert_close(out.action_logits, reference, rtol=0, atol=1e-4)
    unmasked = _reference_logits(tiny_policy, frames, out.token_ids)
    assert (unmasked - reference).abs().max() > 1e-3, "the eviction must matter for this check to mean anything"


def test_gap_free_positions_at_any_offset_equal_positions_from_zero(tiny_policy):
    """rope_compact keeps the history gap-free but lets it drift upward (attention sees only position
    differences); compacting to 0, 1, 2, ... after every eviction, as the smallest position_limit forces,
    gives the same actions."""
    config = CacheConfig(strategy="window", budget_tokens=512, recent_chunks=1, rope_compact=True)
    drifting = PolicyRunner(tiny_policy, config)
    tick_tokens = tiny_policy.config.text_config.max_position_embeddings - drifting.cache.max_next_position
    smallest = 1 + 512 + tick_tokens  # BOS, the budget and one tick
    from_zero = PolicyRunner(tiny_policy, replace(config, position_limit=smallest))
    for frame in synthetic_frames(6, seed=5):
        a, b = drifting.step(frame, INSTRUCTION), from_zero.step(frame, INSTRUCTION)
        torch.testing.assert_close(a.action_logits, b.action_logits, rtol=0, atol=1e-4)
        np.testing.assert_array_equal(a.token_ids, b.token_ids)
    assert from_zero.cache.compactions == 4 and drifting.cache.compactions == 0
    assert drifting.cache.max_position > 1000 and from_zero.cache.max_position == 512
    with pytest.raises(ValueError, match="position_limit"):
        PolicyRunner(tiny_policy, replace(config, position_limit=smallest - 1))
