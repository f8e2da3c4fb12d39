"""The policy runner: stats, resets, budgets with the real model, and a cache untouched by bad input."""

import numpy as np
import pytest
import torch

from kv_efficient_vla_ros.core.cache import STRATEGY_NAMES, CacheConfig
from kv_efficient_vla_ros.core.openvla.processor import InvalidInputError
from kv_efficient_vla_ros.core.runner import STAGES, PolicyRunner
from kv_efficient_vla_ros.core.synthetic import synthetic_frames

INSTRUCTION = "lift the red cube"


@pytest.mark.parametrize("strategy", STRATEGY_NAMES)
def test_every_strategy_respects_the_budget_with_the_model(tiny_policy, strategy):
    config = CacheConfig(
        strategy=strategy,
        budget_tokens=768,
        recent_chunks=1,
        chunk_tokens=128,
        summary_tokens=8,
        options={"keep_threshold": 0.51, "summary_threshold": 0.49},
    )
    runner = PolicyRunner(tiny_policy, config)
    per_token = runner.cache.storage.bytes_per_token
    for t, frame in enumerate(synthetic_frames(8, seed=4)):
        stats = runner.step(frame, INSTRUCTION).stats
        assert stats.tick == t and stats.strategy == strategy
        assert set(stats.latency_ms) == set(STAGES)
        assert stats.kv_bytes == stats.tokens * per_token
        if strategy == "full":
            assert stats.history_tokens == (t + 1) * 256
        elif strategy == "none":
            assert stats.history_tokens == 0
        else:
            assert stats.history_tokens <= 768
            positions = runner.cache.storage.positions[runner.cache.token_slots()]
            assert bool((positions.diff() == 1).all())  # rope_compact keeps positions gap-free
    if runner.cache.strategy.bounded:
        assert stats.kv_bytes_peak <= (1 + 768 + 256 + 32) * per_token


def test_changed_instruction_starts_a_new_episode(tiny_policy):
    runner = PolicyRunner(tiny_policy, CacheConfig(strategy="window", budget_tokens=1024))
    frames = synthetic_frames(3)
    for frame in frames:
        runner.step(frame, INSTRUCTION)
    assert runner.cache.history_tokens == 768
    out = runner.step(frames[0], "push the blue block")
    assert out.stats.tick == 0 and out.stats.history_tokens == 256
    fresh = PolicyRunner(tiny_policy, CacheConfig(strategy="window", budget_tokens=1024)).step(
        frames[0], "push the blue block"
    )
    np.testing.assert_array_equal(out.token_ids, fresh.token_ids)


@pytest.mark.parametrize("strategy", ["window", "gated"])
def test_the_longest_allowed_instruction_never_reallocates_the_cache(tiny_policy, strategy):
    tokenizer = tiny_policy.prompt_tokenizer
    words = []
    while len(tokenizer.tokenizer(" ".join([*words, "red"]), add_special_tokens=False).input_ids) <= 64:
        words.append("red")
    runner = PolicyRunner(tiny_policy, CacheConfig(strategy=strategy, budget_tokens=768))
    buffer = runner.cache.storage.buffer
    for frame in synthetic_frames(6):
        runner.step(frame, " ".join(words))
    assert runner.cache.storage.buffer is buffer


@pytest.mark.parametrize(
    ("image", "instruction"),
    [
        (np.full((224, 224, 3), np.nan, np.float32), INSTRUCTION),
        (np.zeros((224, 224, 4), np.uint8), INSTRUCTION),
        (np.zeros((224, 224, 3), np.uint8), ""),
        (np.zeros((224, 224, 3), np.uint8), "x" * 100_000),
    ],
)
def test_bad_input_leaves_the_cache_untouched(tiny_policy, image, instruction):
    runner = PolicyRunner(tiny_policy, CacheConfig(strategy="gated", budget_tokens=768))
    for frame in synthetic_frames(2):
        runner.step(frame, INSTRUCTION)
    before = runner.cache.storage.live().clone()
    chunks = [(c.id, c.length) for c in runner.cache.chunks]
    gate = runner.cache.strategy.gate
    gate_state = gate.hidden_vector().clone()
    with pytest.raises(InvalidInputError):
        runner.step(image, instruction)
    assert torch.equal(runner.cache.storage.live(), before)
    assert [(c.id, c.length) for c in runner.cache.chunks] == chunks
    assert torch.equal(gate.hidden_vector(), gate_state)
    assert runner.step(synthetic_frames(1)[0], INSTRUCTION).stats.tick == 2  # and it keeps serving


@pytest.mark.parametrize("strategy", ["attention", "random", "gated"])
def test_a_failed_tick_is_rolled_back_with_the_strategy_and_gate_state(tiny_policy, strategy, monkeypatch):
    """A failure after the frame was added and scored, before eviction: the next ticks are as if it never happened."""
    config = CacheConfig(
        strategy=strategy,
        budget_tokens=512,
        recent_chunks=1,
        chunk_tokens=128,
        summary_tokens=8,
        options={"keep_threshold": 0.51, "summary_threshold": 0.49},
    )
    failing, reference = PolicyRunner(tiny_policy, config), PolicyRunner(tiny_policy, config)
    frames = synthetic_frames(6, seed=7)
    for frame in frames[:3]:
        failing.step(frame, INSTRUCTION)
        reference.step(frame, INSTRUCTION)

    def fail(*args):
        raise RuntimeError("failed before eviction")

    with monkeypatch.context() as patch:
        # chunks added, gate advanced, attention folded, random numbers drawn: then the failure
        patch.setattr(failing.cache, "_enforce_budget", fail)
        with pytest.raises(RuntimeError, match="before eviction"):
            failing.step(frames[3], INSTRUCTION)
    assert failing.tick == reference.tick == 3
    assert failing.cache.next_chunk_id == reference.cache.next_chunk_id
    for frame in frames[3:]:
        a, b = failing.step(frame, INSTRUCTION), reference.step(frame, INSTRUCTION)
        np.testing.assert_array_equal(a.token_ids, b.token_ids)
        torch.testing.assert_close(a.action_logits, b.action_logits, rtol=0, atol=1e-6)
        assert a.stats.utilities == b.stats.utilities and a.stats.tick == b.stats.tick


def test_untrained_gate_warns(tiny_policy, caplog):
    PolicyRunner(tiny_policy, CacheConfig(strategy="gated"))
    assert "untrained gate" in caplog.text


def test_kv_eff_ref_keeps_old_chunks_as_one_mean_token_or_drops_them(tiny_policy):
    config = CacheConfig(strategy="kv_eff_ref", budget_tokens=1024, recent_chunks=1)
    runner = PolicyRunner(tiny_policy, config)
    decisions = {"summarized": 0, "dropped": 0}
    for frame in synthetic_frames(8, seed=5):
        stats = runner.step(frame, INSTRUCTION).stats
        decisions["summarized"] += stats.summarized
        decisions["dropped"] += stats.dropped
    *old, newest = runner.cache.chunks
    assert newest.length == 256 and not newest.summarized
    assert all(c.summarized and c.length == 1 for c in old)
    assert decisions["summarized"] + decisions["dropped"] == 7  # every chunk judged once, when it left the window
    assert len(old) == decisions["summarized"]
