"""The behaviour-cloning forward sees exactly what the runner shows the model with the full cache."""

import numpy as np
import pytest
import torch

from kv_efficient_vla_ros.core.accelerators.config import TokenSelectionConfig
from kv_efficient_vla_ros.core.cache.config import CacheConfig
from kv_efficient_vla_ros.core.openvla.tiny import write_tiny_checkpoint
from kv_efficient_vla_ros.core.policy import OpenVLAPolicy
from kv_efficient_vla_ros.core.runner import PolicyRunner
from kv_efficient_vla_ros.core.sim.episodes import Episode
from kv_efficient_vla_ros.core.training.behavior_cloning import (
    MEMORY_POLICY_SPEC,
    BehaviorCloning,
    TrainConfig,
    random_token_dropout,
    sparse_evictions,
)
from kv_efficient_vla_ros.core.training.history import HistoryLayout, episode_hidden

TICKS = 5


@pytest.fixture(scope="module")
def policy_112(tmp_path_factory):
    # the trained policy's architecture, with random weights large enough to make history matter
    spec = MEMORY_POLICY_SPEC.__class__(**{**MEMORY_POLICY_SPEC.__dict__, "initializer_range": 0.1})
    path = write_tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "m", spec)
    return OpenVLAPolicy.from_checkpoint(path, unnorm_key="sim_panda_lift")


def test_training_forward_equals_the_runner_with_full_at_every_tick(policy_112):
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, size=(TICKS, 112, 112, 3), dtype=np.uint8)
    instruction = "touch the red cube then move to the side where the green light flashed"
    runner = PolicyRunner(policy_112, CacheConfig(strategy="full"))
    results = [runner.step(frame, instruction) for frame in frames]

    model = policy_112.model
    prompt_ids = torch.tensor(policy_112.prompt_tokenizer(instruction))
    layout = HistoryLayout(TICKS, model.config.num_patches, len(prompt_ids) - 1)
    action_ids = torch.tensor(np.stack([r.token_ids for r in results]))
    with torch.no_grad():
        pixels = torch.cat([policy_112.image_processor(f) for f in frames])
        hidden = episode_hidden(model, layout, model.embed_image(pixels), model.embed_tokens(prompt_ids), action_ids)
        logits = model.action_logits(hidden)  # [T, 7, 256]
    for t, result in enumerate(results):
        torch.testing.assert_close(logits[t], result.action_logits, atol=1e-4, rtol=0)
    # the history matters: the same forward with each tick seeing only its own frame differs
    lonely = HistoryLayout(1, model.config.num_patches, len(prompt_ids) - 1)
    with torch.no_grad():
        alone = model.action_logits(
            episode_hidden(
                model, lonely, model.embed_image(pixels[-1:]), model.embed_tokens(prompt_ids), action_ids[-1:]
            )
        )
    assert (alone[0] - logits[-1]).abs().max() > 1e-3


def test_block_mask_by_hand():
    layout = HistoryLayout(ticks=2, frame_tokens=2, prompt_tokens=1)  # BOS f f p a a a a a a  f f p a...
    visible = layout.visible()
    tick1_frame = 1 + layout.tick_tokens  # first patch of frame 1
    tick0_text = range(3, 1 + layout.tick_tokens)
    assert visible[tick1_frame, 0] and visible[tick1_frame, 1] and visible[tick1_frame, 2]
    assert not any(visible[tick1_frame, j] for j in tick0_text)  # earlier prompts and actions are gone
    assert not visible[1, 2]  # causal within a frame
    last = layout.length - 1
    assert visible[last, tick1_frame] and not visible[last, 3]
    _, _, position = layout.token_table()
    assert position[tick1_frame] == 3  # frame 1 continues right after frame 0 (text positions are reused)
    np.testing.assert_array_equal(layout.predicting_slots()[0].numpy(), np.arange(3, 10))


def test_gapped_training_forward_equals_the_runner_with_a_bounded_cache(policy_112):
    """Frames a strategy evicted are hidden from later ticks; without rope_compact positions are unchanged."""
    ticks = 7
    rng = np.random.default_rng(1)
    frames = rng.integers(0, 256, size=(ticks, 112, 112, 3), dtype=np.uint8)
    instruction = "touch the red cube then move to the side where the green light flashed"
    model = policy_112.model
    config = CacheConfig(
        strategy="random", recent_chunks=1, budget_tokens=3 * model.config.num_patches, rope_compact=False
    )
    runner = PolicyRunner(policy_112, config)
    results, drop_tick = [], torch.full((ticks,), ticks)
    for t, frame in enumerate(frames):
        results.append(runner.step(frame, instruction))
        present = {chunk.tick for chunk in runner.cache.chunks}
        for f in range(t + 1):
            if f not in present and drop_tick[f] == ticks:
                drop_tick[f] = t + 1
    assert (drop_tick < ticks).sum() >= 2  # the budget evicted something before the end

    prompt_ids = torch.tensor(policy_112.prompt_tokenizer(instruction))
    layout = HistoryLayout(ticks, model.config.num_patches, len(prompt_ids) - 1)
    action_ids = torch.tensor(np.stack([r.token_ids for r in results]))
    with torch.no_grad():
        pixels = torch.cat([policy_112.image_processor(f) for f in frames])
        patches, prompt = model.embed_image(pixels), model.embed_tokens(prompt_ids)
        gapped = model.action_logits(
            episode_hidden(model, layout, patches, prompt, action_ids, layout.additive_mask(drop_tick=drop_tick))
        )
        whole = model.action_logits(episode_hidden(model, layout, patches, prompt, action_ids))
    for t, result in enumerate(results):
        torch.testing.assert_close(gapped[t], result.action_logits, atol=1e-4, rtol=0)
    assert (whole[-1] - gapped[-1]).abs().max() > 1e-3  # the evictions matter


def test_eviction_mask_by_hand():
    layout = HistoryLayout(ticks=3, frame_tokens=1, prompt_tokens=1)  # BOS f p a*6 | f p a*6 | f p a*6
    visible = layout.visible(drop_tick=torch.tensor([1, 3, 3]))  # frame 0 evicted after tick 0
    frame = [1 + t * layout.tick_tokens for t in range(3)]
    assert visible[frame[0] + 1, frame[0]]  # tick 0's prompt sees its frame
    assert not visible[frame[1], frame[0]] and not visible[frame[2] + 1, frame[0]]
    assert visible[frame[2], frame[1]] and visible[frame[2], 0]  # kept frame and BOS stay visible
    assert torch.equal(layout.visible(drop_tick=torch.tensor([3, 3, 3])), layout.visible())


def test_token_dropout_forward_equals_the_runner_with_token_selection(policy_112):
    """Frames of the patches token selection kept, at their places, and a bounded cache's gaps: the training
    forward with those patches dropped and those frames evicted gives the runner's logits at every tick."""
    ticks = 6
    rng = np.random.default_rng(2)
    frames = rng.integers(0, 256, size=(ticks, 112, 112, 3), dtype=np.uint8)
    instruction = "touch the red cube then move to the side where the green light flashed"
    model = policy_112.model
    patches_per_frame, keep = model.config.num_patches, 24
    config = CacheConfig(strategy="random", recent_chunks=1, budget_tokens=3 * keep, rope_compact=False)
    runner = PolicyRunner(policy_112, config, token_selection=TokenSelectionConfig(keep_tokens=keep))
    results, drop_tick = [], torch.full((ticks,), ticks)
    dropped = torch.ones(ticks, patches_per_frame, dtype=torch.bool)
    for t, frame in enumerate(frames):
        results.append(runner.step(frame, instruction))
        dropped[t, runner.selector.kept] = False
        present = {chunk.tick for chunk in runner.cache.chunks}
        for f in range(t + 1):
            if f not in present and drop_tick[f] == ticks:
                drop_tick[f] = t + 1
    assert (drop_tick < ticks).any() and dropped[:, -1].any()  # evictions, and a frame without its last patch

    prompt_ids = torch.tensor(policy_112.prompt_tokenizer(instruction))
    layout = HistoryLayout(ticks, patches_per_frame, len(prompt_ids) - 1)
    action_ids = torch.tensor(np.stack([r.token_ids for r in results]))
    with torch.no_grad():
        pixels = torch.cat([policy_112.image_processor(f) for f in frames])
        patches, prompt = model.embed_image(pixels), model.embed_tokens(prompt_ids)
        mask = layout.additive_mask(drop_tick=drop_tick, dropped=dropped)
        logits = model.action_logits(episode_hidden(model, layout, patches, prompt, action_ids, mask, dropped))
        whole = model.action_logits(
            episode_hidden(model, layout, patches, prompt, action_ids, layout.additive_mask(drop_tick=drop_tick))
        )
    for t, result in enumerate(results):
        torch.testing.assert_close(logits[t], result.action_logits, atol=1e-4, rtol=0)
    assert (whole[-1] - logits[-1]).abs().max() > 1e-3  # the dropped patches matter


def test_random_token_dropout_keeps_one_count_per_episode():
    dropped = random_token_dropout(ticks=5, patches=64, rng=np.random.default_rng(0), keep_min=16)
    kept = (~dropped).sum(dim=1)
    assert dropped.shape == (5, 64) and len(set(kept.tolist())) == 1 and 16 <= int(kept[0]) < 64
    assert not all(torch.equal(dropped[0], row) for row in dropped[1:])  # each frame its own subset


def test_sparse_evictions_keep_few_old_frames_and_often_the_cue():
    rng, ticks, cue_step = np.random.default_rng(0), 25, 10
    with_cue = 0
    for _ in range(400):
        drop_tick = sparse_evictions(ticks, rng, cue_step, max_old=4)
        evicted = (drop_tick < ticks).tolist()
        recent = {int(drop_tick[f]) - f - 1 for f in range(ticks) if evicted[f]}  # frames beside the newest
        assert len(recent) == 1 and recent <= {1, 2}
        leaving = range(ticks - recent.pop() - 1)  # frames that leave the window before the last tick
        old_kept = [f for f in leaving if not evicted[f]]
        assert len(old_kept) <= 4
        with_cue += cue_step in old_kept
    assert 0.3 < with_cue / 400 < 0.6  # half the time when at least one old frame is kept, rarely by chance


def test_first_decision_tick_weighs_most_while_a_cue_frame_is_in_the_history(policy_112):
    ticks, cue_step = 12, 3
    actions = np.zeros((ticks, 7), np.float32)
    actions[8:, 1] = 0.045  # moves to the cued side (left) from tick 8 on
    episode = Episode("delayed_cue", 0, "x", np.zeros((ticks, 112, 112, 3), np.uint8), actions, True, 1, cue_step)
    config = TrainConfig(memory_tick_weight=10.0, first_decision_weight=40.0)
    trainer = BehaviorCloning(policy_112.model, policy_112.prompt_tokenizer, [episode], "k", config)
    data = trainer.tensors(episode)
    assert data.decision_ticks.tolist() == [8, 9, 10, 11]
    expected = torch.ones(ticks, 7)
    expected[9:] = 10.0
    expected[8] = 40.0
    torch.testing.assert_close(trainer.token_weights(data), expected)
    kept_cue = torch.tensor([ticks if f in (cue_step, cue_step + 1) else f + 2 for f in range(ticks)])
    torch.testing.assert_close(trainer.token_weights(data, kept_cue), expected)
    expected[8] = 1.0  # both cue frames evicted before the decision: nothing there tells the side
    torch.testing.assert_close(trainer.token_weights(data, torch.arange(ticks) + 2), expected)
    trainer.config = TrainConfig(memory_tick_weight=10.0)  # off: every decision tick alike, as before
    expected[8] = 10.0
    torch.testing.assert_close(trainer.token_weights(data), expected)
