"""VLA-Cache token reuse: exact where it must be (nothing reused; an unchanged frame without history), keys
re-rotated to the new frame's positions, and the plan VLA-Cache describes."""

import numpy as np
import pytest
import torch

from kv_efficient_vla_ros.core.accelerators.config import TokenReuseConfig, TokenSelectionConfig
from kv_efficient_vla_ros.core.accelerators.token_reuse import layer_reuse_shares, prefill_reusing
from kv_efficient_vla_ros.core.cache import CacheConfig
from kv_efficient_vla_ros.core.cache.storage import KEYS
from kv_efficient_vla_ros.core.runner import PolicyRunner
from kv_efficient_vla_ros.core.synthetic import synthetic_frames

INSTRUCTION = "lift the red cube"
EVERYWHERE = TokenReuseConfig(enabled=True, layer_adaptive=False, relevant_share=0.0, max_reuse_share=1.0)


def test_reusing_nothing_is_the_plain_path_bit_for_bit(tiny_policy):
    config = CacheConfig(strategy="window", budget_tokens=512, recent_chunks=1)
    plain = PolicyRunner(tiny_policy, config)
    reuse = PolicyRunner(tiny_policy, config, token_reuse=TokenReuseConfig(enabled=True, max_reuse_share=0.0))
    frame = synthetic_frames(1, seed=3)[0]
    for _ in range(4):  # the same frame every tick: everything is similar, the cap reuses none of it
        a, b = plain.step(frame, INSTRUCTION), reuse.step(frame, INSTRUCTION)
        assert torch.equal(a.action_logits, b.action_logits) and b.stats.reused_share == 0.0


@torch.inference_mode()
def test_the_layer_by_layer_prefill_computing_everything_equals_the_model_forward(tiny_policy):
    """The reuse path's own forward (explicit causal mask, rows written to their slots) with no token reused."""
    runner = PolicyRunner(tiny_policy, CacheConfig(strategy="full"))
    frames = synthetic_frames(3, seed=4)
    for frame in frames[:2]:
        runner.step(frame, INSTRUCTION)
    cache, model = runner.cache, tiny_policy.model
    _, prompt = tiny_policy.prompt_embeddings(INSTRUCTION)
    embeds = torch.cat([model.embed_image(tiny_policy.image_processor(frames[2])), prompt], dim=1)
    length = cache.length
    positions = cache.reserve_positions(embeds.shape[1])[None]
    reference = model.hidden_states(embeds, positions, cache)
    kv_reference = cache.storage.live().clone()
    cache.crop(length - cache.length)
    never = torch.full((embeds.shape[1],), model.config.text_config.num_hidden_layers)
    hidden = prefill_reusing(model, embeds, positions, cache, never, None)
    torch.testing.assert_close(hidden, reference, rtol=0, atol=1e-5)
    torch.testing.assert_close(cache.storage.live(), kv_reference, rtol=0, atol=1e-5)


def test_an_unchanged_frame_reused_everywhere_equals_recomputation_without_history(tiny_policy):
    """With `none` (stock OpenVLA, VLA-Cache's setting) the reused K/V are what recomputing would give."""
    plain = PolicyRunner(tiny_policy, CacheConfig(strategy="none"))
    reuse = PolicyRunner(tiny_policy, CacheConfig(strategy="none"), token_reuse=EVERYWHERE)
    frame = synthetic_frames(1, seed=5)[0]
    for tick in range(3):
        a, b = plain.step(frame, INSTRUCTION), reuse.step(frame, INSTRUCTION)
        torch.testing.assert_close(b.action_logits, a.action_logits, rtol=0, atol=1e-4)
        assert b.stats.reused_share == (1.0 if tick else 0.0)


@torch.inference_mode()
def test_reused_keys_are_re_rotated_to_the_new_frame_positions(tiny_policy):
    """At layer 0 a key depends only on its token and position: a reused key must equal the recomputed one."""
    plain = PolicyRunner(tiny_policy, CacheConfig(strategy="full"))
    reuse = PolicyRunner(tiny_policy, CacheConfig(strategy="full"), token_reuse=EVERYWHERE)
    frame, n = synthetic_frames(1, seed=6)[0], tiny_policy.config.num_patches
    for _ in range(2):
        plain.step(frame, INSTRUCTION), reuse.step(frame, INSTRUCTION)
    second = slice(1 + n, 1 + 2 * n)  # frame 1, one frame further than frame 0
    assert int(reuse.cache.storage.positions[1 + n]) == 1 + n
    expected = plain.cache.storage.buffer[0, KEYS, :, :, second]
    # float32 rotations composed (encode at p, rotate by delta) against one (encode at p + delta)
    torch.testing.assert_close(reuse.cache.storage.buffer[0, KEYS, :, :, second], expected, rtol=0, atol=2e-4)
    first = reuse.cache.storage.buffer[0, KEYS, :, :, 1 : 1 + n]
    assert (first - expected).abs().max() > 1e-2  # a copy without re-rotation would differ


def test_layer_shares_follow_the_entropy_drop_and_never_shrink():
    shares = layer_reuse_shares(torch.tensor([4.0, 3.0, 2.0, 2.5, 1.0]), sensitivity=1.0)
    assert shares[0] == 0.0 and bool((shares[1:] >= shares[:-1]).all())
    torch.testing.assert_close(shares[1], torch.tensor(0.25))  # (4 - 3) / 4
    torch.testing.assert_close(shares[2], torch.tensor(0.25 + 1 / 3))
    assert float(shares[-1]) <= 1.0 and float(layer_reuse_shares(torch.tensor([3.0, 1.0]), 5.0)[1]) == 1.0


def test_relevant_patches_are_recomputed_and_the_cap_holds(tiny_policy):
    config = TokenReuseConfig(enabled=True, layer_adaptive=False, relevant_share=0.25, max_reuse_share=0.5)
    runner = PolicyRunner(tiny_policy, CacheConfig(strategy="full"), token_reuse=config)
    frame, n = synthetic_frames(1, seed=7)[0], tiny_policy.config.num_patches
    runner.step(frame, INSTRUCTION)
    relevant = runner.reuser.relevance.topk(n // 4).indices
    pixels = tiny_policy.image_processor(frame)
    plan = runner.reuser.plan(pixels, torch.arange(n), torch.arange(n) + 1 + n)
    reused = plan.reused.nonzero().flatten()
    assert len(reused) == n // 2 and not bool(torch.isin(reused, relevant).any())
    assert torch.equal(plan.delta[reused], torch.full((len(reused),), n))  # one frame later


def test_reuse_combines_with_token_selection_and_a_bounded_cache(tiny_policy):
    config = CacheConfig(strategy="window", budget_tokens=256, recent_chunks=1)
    runner = PolicyRunner(
        tiny_policy, config, token_selection=TokenSelectionConfig(keep_tokens=64), token_reuse=EVERYWHERE
    )
    frame = synthetic_frames(1, seed=8)[0]
    shares = [runner.step(frame, INSTRUCTION).stats.reused_share for _ in range(6)]
    assert shares[0] == 0.0 and min(shares[2:]) > 0.0  # patches kept on two ticks in a row are reused
    assert runner.cache.history_tokens <= 256


def test_a_failed_tick_restores_the_previous_frame(tiny_policy, monkeypatch):
    runner = PolicyRunner(tiny_policy, CacheConfig(strategy="window"), token_reuse=EVERYWHERE)
    frames = synthetic_frames(2, seed=9)
    runner.step(frames[0], INSTRUCTION)
    before = runner.reuser.snapshot()
    monkeypatch.setattr(runner.cache, "end_tick", lambda: (_ for _ in ()).throw(RuntimeError("boom")))
    with pytest.raises(RuntimeError):
        runner.step(frames[1], INSTRUCTION)
    after = runner.reuser.snapshot()
    assert after[0] == before[0] and after[1] is before[1] and np.array_equal(after[2], before[2])


def test_bad_reuse_values_name_the_parameter(tiny_policy):
    for values in ({"similarity_threshold": 1.5}, {"max_reuse_share": -0.1}, {"entropy_sensitivity": -1.0}):
        name = next(iter(values))
        with pytest.raises(ValueError, match=name):
            PolicyRunner(tiny_policy, CacheConfig(), token_reuse=TokenReuseConfig(enabled=True, **values))
