"""The gate trainer: teacher targets from the full cache's attention, and a loss that goes down."""

import torch

from kv_efficient_vla_ros.core.cache import CacheConfig
from kv_efficient_vla_ros.core.cache.gate import RecurrentGate
from kv_efficient_vla_ros.core.synthetic import synthetic_frames
from kv_efficient_vla_ros.core.training.gate import teacher_episode, train

INSTRUCTION = "lift the red cube"


def test_teacher_targets_come_from_the_full_cache(tiny_policy):
    config = CacheConfig(recent_chunks=1)
    descriptors, ticks = teacher_episode(tiny_policy, synthetic_frames(5), INSTRUCTION, config, (0, 2, 3))
    assert len(descriptors) == 5 and next(iter(descriptors.values())).shape == (3 * 4 * 64,)
    assert [len(t.candidates) for t in ticks] == [0, 1, 2, 3, 4]  # nothing evicted, the newest protected
    for tick in ticks[1:]:
        assert float(tick.targets.max()) == 1.0 and bool((tick.targets >= 0).all())


def test_training_lowers_the_loss_and_saves_a_loadable_gate(tiny_policy, tmp_path):
    episodes = [(synthetic_frames(6, seed=s), INSTRUCTION) for s in range(2)]
    gate, report = train(
        tiny_policy, episodes, CacheConfig(recent_chunks=1, options={"gate_hidden": 16}), epochs=15, lr=1e-2, seed=0
    )
    assert report["loss_last_epoch"] < report["loss_first_epoch"]
    loaded = RecurrentGate.load(gate.save(tmp_path / "gate"), gate.config)
    for a, b in zip(gate.state_dict().values(), loaded.state_dict().values(), strict=True):
        assert torch.equal(a, b)
