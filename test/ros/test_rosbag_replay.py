"""Record real camera + instruction traffic into rosbag2 bags (sqlite3 and MCAP), replay them at their
recorded timing into the running nodes (separate processes), and check the actions against an offline
run of the runner on the very frames each action answered."""

import subprocess
import sys
import time

import numpy as np
import pytest
import rclpy
from rclpy.node import Node
from rclpy.serialization import deserialize_message
from rosbags.highlevel import AnyReader
from sensor_msgs.msg import Image
from std_srvs.srv import Trigger

from kv_efficient_vla_ros.core.cache import CacheConfig
from kv_efficient_vla_ros.core.policy import OpenVLAPolicy
from kv_efficient_vla_ros.core.runner import PolicyRunner
from kv_efficient_vla_ros.ros.bags import BagRecorder
from kv_efficient_vla_ros.ros.conversions import image_to_rgb
from rosutil import Probe, start, stop, write_params

NS = "/replay"
CAMERA_HZ, CONTROL_HZ, FRAMES = 5.0, 5.0, 16
CACHE = {"strategy": "window", "budget_tokens": 512, "recent_chunks": 1, "rope_compact": True}


@pytest.fixture(scope="module")
def params(tiny_checkpoint, tmp_path_factory):
    return write_params(
        tmp_path_factory.mktemp("replay") / "policy.yaml",
        {
            "checkpoint": str(tiny_checkpoint),
            "unnorm_key": "sim_panda_lift",
            "control_hz": CONTROL_HZ,
            "status_hz": 4.0,
            # about determinism, not staleness: a replay process that starts slowly on a loaded machine
            # must not have its frames held as stale (0.4 s by default; tested in test_ros_nodes)
            "stale_image_timeout_s": 1.0,
            "cache": CACHE,
        },
        {"target_hz": CONTROL_HZ, "publish_hz": 4.0},
        {"rate_hz": CAMERA_HZ, "episode_frames": FRAMES, "seed": 11},
    )


@pytest.fixture(scope="module")
def bags(ros, params, tmp_path_factory):
    """The synthetic camera's traffic, recorded once into both storage formats."""
    out = tmp_path_factory.mktemp("bags")
    camera_topic, instruction_topic = f"{NS}/camera/image_raw", f"{NS}/instruction"
    topics = {camera_topic: "sensor_msgs/msg/Image", instruction_topic: "std_msgs/msg/String"}
    node = Node("bag_recorder")
    recorders = {storage: BagRecorder(node, out / storage, topics, storage) for storage in ("sqlite3", "mcap")}
    # The policy acts only once it has the instruction, which (transient local) may be recorded after the
    # first frames: each bag needs FRAMES frames after its instruction. Best-effort camera QoS: each
    # subscription may drop a frame under load, so wait for both.
    frames_before_instruction: dict[str, int] = {}

    def frames_after_instruction(storage: str) -> int:
        recorder = recorders[storage]
        if storage not in frames_before_instruction and recorder.topic_counts[instruction_topic]:
            frames_before_instruction[storage] = recorder.topic_counts[camera_topic]
        if storage not in frames_before_instruction:
            return 0
        return recorder.topic_counts[camera_topic] - frames_before_instruction[storage]

    camera = start(["synthetic_camera"], params, NS)
    try:
        deadline = time.monotonic() + 60
        while min(map(frames_after_instruction, recorders)) < FRAMES and time.monotonic() < deadline:
            rclpy.spin_once(node, timeout_sec=0.1)
    finally:
        assert stop(camera) == {"synthetic_camera": 0}
        for recorder in recorders.values():
            recorder.close()
        node.destroy_node()
    assert min(map(frames_after_instruction, recorders)) >= FRAMES
    return {storage: out / storage for storage in recorders}


@pytest.fixture(scope="module")
def nodes(ros, params):
    children = start(["policy_node", "diagnostics_node"], params, NS)
    probe = Probe(NS)
    try:
        assert probe.wait_for(lambda: probe.status_key("policy_node", "inputs") in probe.statuses, timeout=120)
        yield probe, children
    finally:
        probe.destroy_node()
        assert stop(children) == {"policy_node": 0, "diagnostics_node": 0}


def _bag_frames(bag):
    """(stamp -> RGB frame) of every recorded image, and the recorded instruction."""
    frames, instruction = {}, None
    with AnyReader([bag]) as reader:
        for connection, _, raw in reader.messages():
            if connection.msgtype == "sensor_msgs/msg/Image":
                msg = deserialize_message(bytes(raw), Image)
                frames[(msg.header.stamp.sec, msg.header.stamp.nanosec)] = image_to_rgb(msg, 16, 10**8)
            else:
                instruction = reader.deserialize(raw, connection.msgtype).data
    return frames, instruction


@pytest.mark.parametrize("storage", ["sqlite3", "mcap"])
def test_replayed_bag_drives_the_nodes_deterministically(bags, nodes, tiny_checkpoint, storage):
    probe, _ = nodes
    reset = probe.create_client(Trigger, "policy_node/reset")
    assert reset.wait_for_service(timeout_sec=10)
    probe.spin(1.5)  # let earlier images go stale
    done = reset.call_async(Trigger.Request())
    assert probe.wait_for(done.done, timeout=10)
    first_action = len(probe.actions)

    replay = subprocess.Popen([sys.executable, "-m", "kv_efficient_vla_ros.cli.replay", str(bags[storage])])
    started = time.monotonic()
    while replay.poll() is None:
        probe.spin(0.2)
    replay_s = time.monotonic() - started
    assert replay.returncode == 0
    probe.spin(1.5)  # the last ticks, then the image goes stale and control stops
    actions = [m for _, m in probe.actions[first_action:]]
    times = [t for t, _ in probe.actions[first_action:]]

    # count and rate: about CONTROL_HZ for as long as the recorded images last
    recorded_s = (FRAMES) / CAMERA_HZ
    assert 0.5 * recorded_s * CONTROL_HZ <= len(actions) <= (recorded_s + 1.5) * CONTROL_HZ, (len(actions), replay_s)
    rate = (len(times) - 1) / (times[-1] - times[0])
    assert 1.5 < rate < 5.6, f"{rate:.2f} Hz"
    assert actions[0].tick == 0 and [a.tick for a in actions] == list(range(len(actions)))

    # determinism: the runner offline, on the frames the actions answered, in the same order
    frames, instruction = _bag_frames(bags[storage])
    runner = PolicyRunner(OpenVLAPolicy.from_checkpoint(tiny_checkpoint, "sim_panda_lift"), CacheConfig(**CACHE))
    for action in actions:
        frame = frames[(action.header.stamp.sec, action.header.stamp.nanosec)]
        offline = runner.step(frame, instruction)
        np.testing.assert_allclose(np.asarray(action.normalized), offline.normalized, rtol=0, atol=1e-6)

    # and the diagnostics saw it
    loop = probe.status_values(probe.status_key("diagnostics_node", "control loop"))
    cache = probe.status_values(probe.status_key("diagnostics_node", "kv cache"))
    assert float(loop["control_hz"]) > 1.0  # the 5 s window still holds the replay's actions
    assert cache["policy"] == "window" and int(cache["history_tokens"]) <= 512
