"""kv-vla-train-policy, reduced: real demos from the sim, a few optimizer steps, an official-layout checkpoint."""

import json

import numpy as np
import pytest

from kv_efficient_vla_ros.cli.train_policy import main as train_main
from kv_efficient_vla_ros.core.policy import OpenVLAPolicy
from kv_efficient_vla_ros.core.sim.action_mapping import ActionMapping
from kv_efficient_vla_ros.core.sim.episodes import Episode, run_expert_episode
from kv_efficient_vla_ros.core.sim.tasks import PandaTask
from kv_efficient_vla_ros.core.training.behavior_cloning import action_norm_stats, normalize_actions


def test_train_policy_writes_a_loadable_checkpoint_with_the_demos_statistics(tmp_path):
    sim = PandaTask("delayed_cue", seed=0)
    try:
        episodes = [run_expert_episode(sim, seed, 40, ActionMapping()) for seed in (900, 901, 902)]
    finally:
        sim.close()
    # two recordings of disjoint seeds, trained on together
    demos, more_demos = tmp_path / "demos", tmp_path / "more_demos"
    for episode in episodes:
        episode.save((demos if episode.seed < 902 else more_demos) / f"episode_{episode.seed:03d}.npz")
    out = tmp_path / "policy"
    train_main(
        [
            "--episodes-dir", str(demos), str(more_demos), "--out", str(out), "--epochs", "1", "--warmup-steps", "1",
            "--validation-fraction", "0.34", "--plot", str(tmp_path / "curve.png"),
            "--token-dropout-fraction", "1.0", "--token-keep-min", "8",  # frames of fewer tokens, every episode
        ]
    )  # fmt: skip
    policy = OpenVLAPolicy.from_checkpoint(out)  # the only norm_stats key: the task's
    stats = policy.model.config.norm_stats["sim_panda_delayed_cue"]["action"]
    actions = np.concatenate([e.actions for e in episodes])
    np.testing.assert_allclose(stats["q01"], np.quantile(actions, 0.01, axis=0), atol=1e-6)
    assert stats["mask"][6] is False
    training = json.loads((out / "training.json").read_text())["summary"]
    assert training["steps"] == 2 and len(training["validation_seeds"]) == 1
    assert sorted(training["train_seeds"] + training["validation_seeds"]) == [900, 901, 902]
    assert training["config"]["token_dropout_fraction"] == 1.0
    assert (tmp_path / "curve.png").stat().st_size > 5_000
    result = policy.predict(episodes[0].frames[0], episodes[0].instruction)
    assert np.isfinite(result.action).all()


def test_train_policy_refuses_a_seed_recorded_twice(tmp_path):
    episode = Episode(
        task="delayed_cue", seed=7, instruction="x", frames=np.zeros((1, 8, 8, 3), np.uint8),
        actions=np.zeros((1, 7), np.float32), success=True, cue_side=1, cue_step=6,
    )  # fmt: skip
    for name in ("a", "b"):
        episode.save(tmp_path / name / "episode_007.npz")
    with pytest.raises(SystemExit, match=r"seeds recorded twice .*\[7\]"):
        train_main(["--episodes-dir", str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(tmp_path / "policy")])


def test_official_normalization_round_trips_through_the_bins():
    actions = np.array([[0.04, -0.02, 0.0, 0.0, 0.0, 0.0, 1.0], [-0.04, 0.03, 0.01, 0.0, 0.0, 0.0, 1.0]] * 50)
    stats = action_norm_stats(actions, 2)
    normalized = normalize_actions(actions, stats)
    assert normalized.min() >= -1 and normalized.max() <= 1
    q01, q99 = np.asarray(stats["action"]["q01"]), np.asarray(stats["action"]["q99"])
    back = np.where(stats["action"]["mask"], 0.5 * (normalized + 1) * (q99 - q01) + q01, normalized)
    np.testing.assert_allclose(back, actions, atol=1e-6)
