"""The sim bridge in closed loop with the policy node over real DDS, and demonstrations to npz + rosbag2."""

import numpy as np
import pytest
from rosbags.highlevel import AnyReader
from sensor_msgs.msg import JointState
from std_msgs.msg import Bool

from kv_efficient_vla_ros.cli import record_demos
from kv_efficient_vla_ros.core.sim.episodes import Episode
from kv_efficient_vla_ros.ros.bags import typestore_with_package_messages
from kv_efficient_vla_ros.ros.interfaces import OUTPUT_QOS
from rosutil import Probe, start, stop, write_params

NS = "/sim_loop"
EPISODE = f"{NS}/sim_node: episode"


def _stamp(msg) -> tuple[int, int]:
    return msg.header.stamp.sec, msg.header.stamp.nanosec


@pytest.mark.parametrize("lockstep", [True, False], ids=["lockstep", "realtime"])
def test_policy_drives_the_simulated_panda(ros, tiny_checkpoint, tmp_path, lockstep):
    params = write_params(
        tmp_path / "policy.yaml",
        {
            "checkpoint": str(tiny_checkpoint),
            "unnorm_key": "sim_panda_lift",
            "cache": {"strategy": "window", "budget_tokens": 512, "recent_chunks": 1},
        },
        sim={"horizon": 60, "lockstep": lockstep},
    )
    children = start(["sim_node", "policy_node"], params, NS)
    probe = Probe(NS)
    joints: list[JointState] = []
    successes: list[bool] = []
    probe.create_subscription(JointState, "joint_states", joints.append, OUTPUT_QOS)
    probe.create_subscription(Bool, "task_success", lambda m: successes.append(m.data), OUTPUT_QOS)
    try:
        assert probe.wait_for(lambda: EPISODE in probe.statuses and len(probe.actions) > 0, timeout=180)
        start_joints = np.array(joints[-1].position)
        assert probe.wait_for(lambda: int(probe.status_values(EPISODE)["actions_applied"]) >= 15, timeout=90)
        moved = np.abs(np.array(joints[-1].position) - start_joints).max()
        assert moved > 1e-3, "the actions must move the arm"
        assert len(joints[-1].name) == 7 and successes
        assert len(probe.actions) >= 15
        if lockstep:
            # Freeze the loop (no more actions), then read the sim's final count.
            assert stop({"policy_node": children.pop("policy_node")}) == {"policy_node": 0}
            probe.spin(2.5)
            values = probe.status_values(EPISODE)
            assert values["lockstep"] == "True" and values["done"] == "False"
            stamps = [_stamp(a) for _, a in probe.actions]
            assert len(set(stamps)) == len(stamps), "the policy answered an observation twice"
            # each action answered the newest observation and made exactly one step; the arm never held still.
            # An observation re-published under a new stamp (no answer for 2 s: an answer lost, a starved
            # process) may get one more answer, which the sim ignores.
            applied, republished = int(values["actions_applied"]), int(values["republished"])
            assert int(values["steps"]) == applied and int(values["held_steps"]) == 0
            assert applied <= len(stamps) <= applied + republished
            assert int(values["stale_actions"]) <= republished
        else:
            values = probe.status_values(EPISODE)
            assert values["lockstep"] == "False" and int(values["steps"]) >= 15
    finally:
        probe.destroy_node()
        assert all(code == 0 for code in stop(children).values())


def test_record_demos_writes_npz_and_a_replayable_bag(tmp_path, capsys):
    record_demos.main(["--task", "lift", "--episodes", "1", "--out", str(tmp_path), "--max-steps", "30"])
    assert "lift: expert success 100% over 1 episodes" in capsys.readouterr().out
    episode = Episode.load(tmp_path / "lift" / "episode_000.npz")
    assert episode.success and len(episode.frames) == len(episode.actions) > 5
    counts, actions = {}, []
    typestore = typestore_with_package_messages()
    with AnyReader([tmp_path / "lift" / "episode_000_bag"], default_typestore=typestore) as reader:
        for connection, _, raw in reader.messages():
            counts[connection.topic] = counts.get(connection.topic, 0) + 1
            if connection.topic == "/expert/action":
                actions.append(reader.deserialize(raw, connection.msgtype).delta_position.z)
    assert counts == {
        "/instruction": 1,
        "/camera/image_raw": len(episode.frames),
        "/expert/action": len(episode.actions),
        "/task_success": 1,
    }
    np.testing.assert_allclose(actions, episode.actions[:, 2], atol=1e-6)
