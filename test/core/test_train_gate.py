"""The gate trainer: teachers computed from the full cache, a loss that goes down, a gate that loads."""

import pytest
import torch

from kv_efficient_vla_ros.core.cache import CacheConfig
from kv_efficient_vla_ros.core.cache.gate import RecurrentGate
from kv_efficient_vla_ros.core.synthetic import synthetic_frames
from kv_efficient_vla_ros.core.training.gate import RecordedEpisode, evaluate_gate, new_gate, teacher_episodes, train
from kv_efficient_vla_ros.core.training.teacher import FullPass, frame_effects, full_pass, hindsight_utilities, squash

INSTRUCTION = "lift the red cube"


def test_attention_teacher_comes_from_the_full_cache(tiny_policy):
    config = CacheConfig(recent_chunks=1)
    record = full_pass(tiny_policy, synthetic_frames(5), INSTRUCTION, config, (0, 2, 3))
    assert len(record.descriptors) == 5 and next(iter(record.descriptors.values())).shape == (3 * 4 * 64,)
    assert [len(c) for c in record.candidates] == [0, 1, 2, 3, 4]  # nothing evicted, the newest protected
    assert record.token_ids.shape == (5, 7)
    episodes, cost = teacher_episodes(
        tiny_policy, [RecordedEpisode(0, synthetic_frames(5), INSTRUCTION)], config, (0, 2, 3), "attention"
    )
    for tick in episodes[0].ticks[1:]:
        assert float(tick.targets.max()) == 1.0 and bool((tick.targets >= 0).all())
    assert cost["ticks"] == 5 and cost["full_pass_s"] > 0


def test_frame_effects_are_zero_inside_the_window_and_measure_the_evicted_block(tiny_policy):
    frames = synthetic_frames(5)
    record = full_pass(tiny_policy, frames, INSTRUCTION, CacheConfig(recent_chunks=1), (0,))
    effects = frame_effects(tiny_policy, frames, INSTRUCTION, record.token_ids, recent=1, block_frames=1)
    assert effects.shape == (5, 5)
    for f in range(5):
        assert torch.all(effects[f, : f + 2] == 0)  # visible in the window (or not yet seen): no effect
    assert torch.all(effects[4:] == 0)  # still in the window at the last tick
    assert float(effects[0, 2:].max()) > 0  # evicting frame 0 moves later actions away from the full cache's
    assert bool((effects >= 0).all())  # a loss, clamped at 0
    pairs = frame_effects(tiny_policy, frames, INSTRUCTION, record.token_ids, recent=1, block_frames=2)
    assert bool((pairs[1] > 0).any()) and not torch.equal(pairs, effects)


def test_replacing_a_block_measures_its_content_only(tiny_policy):
    frames = synthetic_frames(6)
    frames[3] = frames[2]  # frame 3 says nothing that frame 2 does not
    record = full_pass(tiny_policy, frames, INSTRUCTION, CacheConfig(recent_chunks=1), (0,))
    effects = frame_effects(tiny_policy, frames, INSTRUCTION, record.token_ids, recent=1, block_frames=1, replace=True)
    assert torch.all(effects[3] == 0)  # shown frame 2 in its place: the same history
    assert float(effects[:3].max()) > 0  # frames that differ from their neighbour do matter
    evicted = frame_effects(tiny_policy, frames, INSTRUCTION, record.token_ids, recent=1, block_frames=1)
    assert float(evicted[3].max()) > 0  # evicting it shortens the history: an effect without new content


def test_cue_teacher_marks_the_cue_frames(tiny_policy):
    config = CacheConfig(recent_chunks=1)
    recorded = [RecordedEpisode(0, synthetic_frames(6), INSTRUCTION, cue_step=1)]
    episodes, _ = teacher_episodes(tiny_policy, recorded, config, (0,), "cue")
    last = episodes[0].ticks[-1]  # candidates: frames 0-4 (5, the newest, in the window)
    assert last.targets.tolist() == [0.0, 1.0, 1.0, 0.0, 0.0]
    no_cue = [RecordedEpisode(0, synthetic_frames(3), INSTRUCTION)]
    with pytest.raises(ValueError, match="needs episodes with a cue"):
        teacher_episodes(tiny_policy, no_cue, config, (0,), "cue")


def test_hindsight_target_is_the_largest_later_effect():
    # 4 ticks, recent 1: frame 0 matters only at tick 3, frame 1 never
    effects = torch.tensor([[0, 0, 0.1, 3.0], [0, 0, 0, 0.0], [0, 0, 0, 0], [0, 0, 0, 0]])
    record = FullPass({}, {0: 0, 1: 1, 2: 2, 3: 3}, [], [[], [0], [0, 1], [0, 1, 2]], [], torch.zeros(4, 7))
    utilities = hindsight_utilities(record, effects)
    assert torch.allclose(utilities[1], torch.tensor([3.0]))  # judged at tick 1, it will matter at tick 3
    assert torch.allclose(utilities[2], torch.tensor([3.0, 0.0]))
    assert torch.allclose(utilities[3], torch.tensor([0.0, 0.0, 0.0]))  # nothing comes after the last tick
    assert torch.allclose(squash(utilities[2], scale=1.0), torch.tensor([0.75, 0.0]))


def test_training_lowers_the_loss_and_saves_a_loadable_gate(tiny_policy, tmp_path):
    config = CacheConfig(recent_chunks=1, options={"gate_hidden": 16})
    recorded = [RecordedEpisode(s, synthetic_frames(6, seed=s), INSTRUCTION, cue_step=2) for s in range(3)]
    gate = new_gate(tiny_policy, config)
    data, _ = teacher_episodes(tiny_policy, recorded, config, gate.config.layers, "attention")
    before = evaluate_gate(gate, data[:2], older_slots=2)[0]
    gate, history = train(data[:2], data[2:], gate, epochs=15, lr=1e-2, older_slots=2, seed=0)
    assert history.train_loss[-1] < history.train_loss[0]
    assert evaluate_gate(gate, data[:2], older_slots=2)[0] < before
    cue_kept = history.val_cue_kept[-1]
    assert (cue_kept != cue_kept or 0 <= cue_kept <= 1) and 0 <= history.val_accuracy[-1] <= 1  # nan: not needed
    loaded = RecurrentGate.load(gate.save(tmp_path / "gate"), gate.config)
    for a, b in zip(gate.state_dict().values(), loaded.state_dict().values(), strict=True):
        assert torch.equal(a, b)
