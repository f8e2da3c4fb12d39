"""EfficientVLA token selection: exact against a single forward over the chosen tokens, and what it chooses."""

import numpy as np
import pytest
import torch
from transformers import DynamicCache

from kv_efficient_vla_ros.core.accelerators.config import TokenSelectionConfig
from kv_efficient_vla_ros.core.accelerators.token_selection import TokenSelector
from kv_efficient_vla_ros.core.cache import CacheConfig
from kv_efficient_vla_ros.core.runner import PolicyRunner
from kv_efficient_vla_ros.core.synthetic import synthetic_frames

INSTRUCTION = "lift the red cube"


def test_keeping_every_token_is_the_plain_path_bit_for_bit(tiny_policy):
    config = CacheConfig(strategy="window", budget_tokens=512, recent_chunks=1)
    plain = PolicyRunner(tiny_policy, config)
    everything = PolicyRunner(tiny_policy, config, token_selection=TokenSelectionConfig(keep_tokens=256))
    for frame in synthetic_frames(4, seed=6):
        a, b = plain.step(frame, INSTRUCTION), everything.step(frame, INSTRUCTION)
        assert torch.equal(a.action_logits, b.action_logits)
    assert everything.selector.relevance is not None and bool((everything.selector.relevance > 0).all())


@torch.inference_mode()
def test_selected_frames_equal_one_forward_over_the_chosen_tokens(tiny_policy):
    """With `full`, tick t's logits equal one forward over BOS, the tokens chosen from frames 0..t at their
    places in the whole frames, the prompt after the last whole frame, and the fed action tokens."""
    selection = TokenSelectionConfig(keep_tokens=96, relevant_share=0.5)
    runner = PolicyRunner(tiny_policy, CacheConfig(strategy="full"), token_selection=selection)
    model, frames = tiny_policy.model, synthetic_frames(3, seed=7)
    bos, prompt = tiny_policy.prompt_embeddings(INSTRUCTION)
    chosen = []
    for t, frame in enumerate(frames):
        out = runner.step(frame, INSTRUCTION)
        chosen.append(runner.selector.kept.clone())
        seen = frames[: t + 1]
        patches = [model.embed_image(tiny_policy.image_processor(f))[:, k] for f, k in zip(seen, chosen, strict=True)]
        frame_positions = [torch.tensor([0])]  # BOS
        starts = [1]  # where each frame's patch 0 would sit
        for k in chosen[:-1]:
            starts.append(starts[-1] + int(k[-1]) + 1)  # the next frame follows the last kept token
        frame_positions += [s + k for s, k in zip(starts, chosen, strict=True)]
        after_frame = starts[-1] + 256
        actions = model.embed_tokens(torch.as_tensor(out.token_ids[:-1])[None])
        embeds = torch.cat([bos, *patches, prompt, actions], dim=1)
        text = torch.arange(after_frame, after_frame + prompt.shape[1] + actions.shape[1])
        position_ids = torch.cat([*frame_positions, text])[None]
        hidden = model.hidden_states(embeds, position_ids, DynamicCache())
        first = embeds.shape[1] - actions.shape[1] - 1
        torch.testing.assert_close(out.action_logits, model.action_logits(hidden[0, first:]), rtol=0, atol=1e-4)
        assert out.stats.tokens == 1 + (t + 1) * 96
    assert not torch.equal(chosen[0], chosen[1]), "relevance from tick 0 must change the choice"


def test_a_bounded_budget_holds_more_frames_of_fewer_tokens(tiny_policy):
    selection = TokenSelectionConfig(keep_tokens=64)
    runner = PolicyRunner(
        tiny_policy, CacheConfig(strategy="window", budget_tokens=512, recent_chunks=2), token_selection=selection
    )
    for frame in synthetic_frames(10, seed=8):
        stats = runner.step(frame, INSTRUCTION).stats
    assert stats.history_tokens == 512 and len({c.tick for c in runner.cache.chunks}) == 8  # 8 frames, not 2
    assert all(c.length == 64 for c in runner.cache.chunks)


def test_diversity_and_relevance_choose_as_described():
    torch.manual_seed(0)
    patches = torch.randn(16, 8)
    patches[8:] = patches[0] + 1e-3 * torch.randn(8, 8)  # half the frame repeats patch 0
    selector = TokenSelector(TokenSelectionConfig(keep_tokens=8, relevant_share=0.25), 16)
    kept = selector.select(patches)
    assert kept.tolist() == sorted(kept.tolist()) and len(kept) == 8
    assert len(set(kept.tolist()) & {0, *range(8, 16)}) == 1  # one of the near-identical patches, not several
    selector.observe(torch.arange(8, dtype=torch.float32))  # the last kept tokens drew the most attention
    again = selector.select(patches)
    assert set(kept[-2:].tolist()) <= set(again.tolist())  # the 2 most relevant (0.25 x 8) are kept first


def test_bad_token_selection_values_name_the_parameter(tiny_policy):
    for values, name in [({"keep_tokens": 257}, "keep_tokens"), ({"relevant_share": 1.5}, "relevant_share")]:
        with pytest.raises(ValueError, match=name):
            PolicyRunner(tiny_policy, CacheConfig(), token_selection=TokenSelectionConfig(**values))
    with pytest.raises(ValueError, match="relevance_layer"):
        PolicyRunner(tiny_policy, CacheConfig(), token_selection=TokenSelectionConfig(keep_tokens=8, relevance_layer=9))


def test_a_failed_tick_restores_the_selection_state(tiny_policy):
    runner = PolicyRunner(tiny_policy, CacheConfig(strategy="window"), token_selection=TokenSelectionConfig(32))
    frames = synthetic_frames(2, seed=9)
    runner.step(frames[0], INSTRUCTION)
    before = runner.selector.snapshot()
    runner.cache.end_tick = lambda: (_ for _ in ()).throw(RuntimeError("evict failed"))
    with pytest.raises(RuntimeError):
        runner.step(frames[1], INSTRUCTION)
    assert runner.selector.relevance is before[0] and np.array_equal(runner.selector.kept, before[1])
