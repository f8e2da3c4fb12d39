"""The MuJoCo Panda tasks: rendering, the cue, the action mapping, and the scripted experts' success rate."""

import numpy as np
import pytest

from kv_efficient_vla_ros.core.sim.action_mapping import ActionMapping
from kv_efficient_vla_ros.core.sim.episodes import Episode, run_expert_episode
from kv_efficient_vla_ros.core.sim.tasks import TASKS, PandaTask

EPISODES = 5


@pytest.fixture
def make_sim():
    """One environment at a time: two offscreen GL contexts in one process rendered garbage in CI."""
    made = []

    def make(task):
        while made:
            made.pop().close()
        made.append(PandaTask(task, seed=0))
        return made[-1]

    yield make
    for sim in made:
        sim.close()


def _green(frame: np.ndarray) -> np.ndarray:
    r, g, b = (frame[..., i].astype(int) for i in range(3))
    return (g > 180) & (r < 80) & (b < 80)


def test_camera_is_upright_and_the_cue_shows_only_early(make_sim):
    sim = make_sim("cued_lift")
    state = sim.reset(seed=3)
    first = sim.render()
    assert first.shape == (224, 224, 3) and first.dtype == np.uint8
    assert first[:20].mean() < first[-20:].mean()  # dark wall above, white table below
    green = _green(first)
    assert green.sum() > 200
    columns = np.nonzero(green.any(axis=0))[0]
    left_half = columns.mean() < 112
    assert left_half == (state.cue_side == -1)  # the camera faces the robot: +y (left) is image right
    for _ in range(sim.env.cue_steps):
        sim.step(np.zeros(7))
    assert _green(sim.render()).sum() == 0


def test_delayed_cue_flashes_mid_episode_on_its_side(make_sim):
    sim = make_sim("delayed_cue")
    seen = {}
    for seed in range(4):
        state = sim.reset(seed=seed)
        assert sim.env.cue_window[0] <= state.cue_step <= sim.env.cue_window[1]
        visible = []
        for _ in range(state.cue_step + sim.env.cue_duration + 1):
            visible.append(_green(sim.render()))
            state = sim.step(np.zeros(7))
        lit = [t for t, green in enumerate(visible) if green.sum() > 20]
        assert lit == list(range(state.cue_step, state.cue_step + sim.env.cue_duration))
        columns = np.nonzero(visible[state.cue_step].any(axis=0))[0]
        assert (columns.mean() > sim.image_size / 2) == (state.cue_side == 1)  # +y (left) is image right
        seen[state.cue_side] = True
        assert not sim.decided()  # holding still decides nothing
    assert seen.keys() == {-1, 1}


def test_action_mapping_by_hand():
    mapping = ActionMapping(max_position_m=0.05, max_rotation_rad=0.5, binarize_gripper=True)
    policy = np.array([0.025, -0.1, 0.0, 0.25, 0.0, -1.0, 0.3])
    np.testing.assert_allclose(mapping.to_controller(policy), [0.5, -1.0, 0.0, 0.5, 0.0, -1.0, -1.0])
    assert mapping.to_controller(np.array([0, 0, 0, 0, 0, 0, -0.7]))[6] == 1.0  # policy close -> robosuite +1
    controller = np.array([0.2, -0.4, 1.0, 0.0, 0.1, -0.3, 1.0])
    np.testing.assert_allclose(mapping.to_controller(mapping.to_policy(controller)), controller)


@pytest.mark.parametrize("task", TASKS)
def test_scripted_expert_success_rate(make_sim, task, capsys):
    mapping = ActionMapping()
    sim = make_sim(task)
    episodes = [run_expert_episode(sim, seed, 60, mapping, render=False) for seed in range(EPISODES)]
    rate = np.mean([e.success for e in episodes])
    lengths = [len(e.actions) for e in episodes]
    with capsys.disabled():
        print(
            f"\n[{task}] expert success {rate:.0%} over {EPISODES} seeded episodes, mean length {np.mean(lengths):.1f}"
        )
    assert rate >= 0.8
    if task in ("cued_lift", "delayed_cue"):
        assert {e.cue_side for e in episodes} == {-1, 1}  # both sides occur
    assert np.all(np.abs(episodes[0].actions[:, :3]) <= 0.05 + 1e-9)


def test_episode_round_trips_through_npz(make_sim, tmp_path):
    episode = run_expert_episode(make_sim("lift"), 7, 8, ActionMapping(), render=True)
    loaded = Episode.load(episode.save(tmp_path / "e.npz"))
    assert loaded.frames.shape == (8, 224, 224, 3) and loaded.instruction == "lift the red cube"
    np.testing.assert_array_equal(loaded.frames, episode.frames)
    np.testing.assert_allclose(loaded.actions, episode.actions, atol=1e-6)
