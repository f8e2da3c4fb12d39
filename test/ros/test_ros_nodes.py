"""The policy and diagnostics nodes as separate processes, driven over real DDS through their topics.

The tests of this module share one pair of nodes and run in order: no instruction yet, then control,
then each kind of bad input, repeated frames, logging, staleness, the reset service, and finally signals.
"""

import copy
import itertools
import signal
import time

import numpy as np
import pytest
from sensor_msgs.msg import Image
from std_msgs.msg import String
from std_srvs.srv import Trigger

from kv_efficient_vla_ros.core.synthetic import synthetic_frames
from kv_efficient_vla_ros.ros.interfaces import rgb_to_image
from rosutil import Probe, level, start, stop, write_params

NAMESPACE = "/nodes_test"
INPUTS = f"{NAMESPACE}/policy_node: inputs"
MEMORY = f"{NAMESPACE}/policy_node: kv memory"
LOOP = f"{NAMESPACE}/diagnostics_node: control loop"
CACHE = f"{NAMESPACE}/diagnostics_node: kv cache"
FRAMES = synthetic_frames(8, seed=5)
LOG_PERIOD_S = 3.0


class Log:
    """A node's output file, read from where the last look left off."""

    def __init__(self, path):
        self.path, self.offset = path, 0

    def new(self) -> str:
        text = self.path.read_text()
        fresh, self.offset = text[self.offset :], len(text)
        return fresh


@pytest.fixture(scope="module")
def nodes(ros, tiny_checkpoint, tmp_path_factory):
    params = write_params(
        tmp_path_factory.mktemp("params") / "policy.yaml",
        {
            "checkpoint": str(tiny_checkpoint),
            "unnorm_key": "sim_panda_lift",
            "error_log_period_s": LOG_PERIOD_S,
            "status_hz": 4.0,
            # the window cache below allocates a few MiB: over both limits
            "kv_warn_mib": 0.5,
            "kv_error_mib": 1.0,
            "cache": {"strategy": "window", "budget_tokens": 512, "recent_chunks": 1},
        },
        {"publish_hz": 4.0},
    )
    logs = tmp_path_factory.mktemp("logs")
    children = start(["policy_node", "diagnostics_node"], params, NAMESPACE, logs)
    probe = Probe(NAMESPACE)
    probe.log = Log(logs / "policy_node.log")
    probe.logs = logs
    try:
        assert probe.wait_for(lambda: INPUTS in probe.statuses, timeout=120), "the policy node did not come up"
        yield probe, children
    finally:
        probe.destroy_node()
        stop(children)
        for log in logs.iterdir():  # shown by pytest when a test failed
            print(f"----- {log.name}\n{log.read_text()[-4000:]}")


def _counter(probe, name, status=INPUTS):
    return int(probe.status_values(status)[name])


def test_without_instruction_it_holds_still_and_warns(nodes):
    probe, _ = nodes
    probe.spin(1.5, FRAMES)
    assert not probe.actions
    assert probe.twists and all(t.twist.linear.x == 0 and t.twist.angular.z == 0 for _, t in probe.twists)
    status = probe.statuses[INPUTS][1]
    assert level(status) == 1 and "instruction" in status.message
    assert _counter(probe, "no_instruction") > 0
    # MoveIt Servo's command type cannot be switched without moveit_msgs (not on PyPI): the log says how
    assert "moveit_msgs is not installed" in probe.log.new()


def test_actions_flow_at_the_control_rate(nodes):
    probe, _ = nodes
    probe.instruction_pub.publish(String(data="lift the red cube"))
    assert probe.wait_for(lambda: len(probe.actions) >= 2, timeout=30, images=FRAMES)
    first = len(probe.actions)
    probe.spin(4.0, FRAMES)
    window = probe.actions[first:]
    rate = (len(window) - 1) / (window[-1][0] - window[0][0])
    assert 1.5 < rate < 5.6, f"{rate:.2f} Hz"  # 5 Hz target, on a loaded 2-core machine
    for _, action in window:  # each action answers one of the images we sent
        assert (action.header.stamp.sec, action.header.stamp.nanosec) in probe.sent_stamps
        assert action.header.frame_id == "panda_link0"
        assert np.all(np.abs(action.normalized) <= 1.0)
        assert abs(action.delta_position.x) <= 0.05 + 1e-6
    _, stats = probe.stats[-1]
    assert stats.policy == "window" and stats.history_tokens <= 512 and stats.tokens == 513
    assert stats.inference_ms > 0 and stats.ros_ms >= 0
    moving = [t for _, t in probe.twists[-5:]]
    assert any(t.twist.linear.x != 0 or t.twist.linear.y != 0 or t.twist.linear.z != 0 for t in moving)


def test_twists_stream_at_the_servo_rate_holding_the_latest_command(nodes):
    """MoveIt Servo halts on a command older than ~0.1 s: between the 5 Hz ticks the latest twist is
    re-published at servo_rate_hz (50) with fresh stamps."""
    probe, _ = nodes
    probe.spin(1.0, FRAMES)
    first = len(probe.twists)
    probe.spin(3.0, FRAMES)
    twists = [t for _, t in probe.twists[first:]]
    stamps = np.array([t.header.stamp.sec + 1e-9 * t.header.stamp.nanosec for t in twists])
    assert len(twists) > 3.0 * 50 * 0.6, len(twists)
    gaps = np.diff(stamps)
    assert np.all(gaps > 0) and np.percentile(gaps, 95) < 0.1, np.percentile(gaps, [50, 95, 100])
    held = [b for a, b in itertools.pairwise(twists) if b.twist == a.twist and b.twist.linear.x != 0]
    assert len(held) > len(twists) / 2, "the moving command is held between ticks"


def test_diagnostics_report_frequency_latency_and_cache(nodes):
    probe, _ = nodes
    probe.spin(1.0, FRAMES)
    loop, cache = probe.status_values(LOOP), probe.status_values(CACHE)
    assert float(loop["control_hz"]) > 1.0 and float(loop["latency_p50_ms"]) > 0
    assert cache["policy"] == "window" and int(cache["tokens"]) == 513 and int(cache["budget_tokens"]) == 512
    assert level(probe.statuses[CACHE][1]) == 0


def _bad_images():
    base = Image(height=224, width=224, encoding="rgb8", step=224 * 3, data=bytes(224 * 224 * 3))
    yuv = copy.deepcopy(base)
    yuv.encoding = "yuv422"
    truncated = copy.deepcopy(base)
    truncated.data = bytes(1000)
    empty = Image(height=0, width=0, encoding="rgb8", step=0, data=b"")
    tiny = Image(height=4, width=4, encoding="rgb8", step=12, data=bytes(48))
    huge = Image(height=100_000, width=100_000, encoding="rgb8", step=300_000, data=bytes(30))
    nan = Image(height=16, width=16, encoding="32FC1", step=64, data=np.full((16, 16), np.nan, np.float32).tobytes())
    return {
        "wrong encoding": yuv,
        "truncated": truncated,
        "empty": empty,
        "too small": tiny,
        "enormous": huge,
        "NaN float image": nan,
    }


@pytest.mark.parametrize("case", list(_bad_images()))
def test_bad_image_is_refused_counted_and_leaves_the_cache_alone(nodes, case):
    probe, children = nodes
    probe.spin(1.0, FRAMES)
    refused_before = _counter(probe, "bad_image")
    n_actions, stamps_before = len(probe.actions), set(probe.sent_stamps)
    bad = [_bad_images()[case]]
    probe.spin(1.5, bad)  # the bad image is the newest for several ticks
    assert probe.wait_for(lambda: _counter(probe, "bad_image") > refused_before, timeout=5, images=bad)
    bad_stamps = probe.sent_stamps - stamps_before
    answered = {(a.header.stamp.sec, a.header.stamp.nanosec) for _, a in probe.actions[n_actions:]}
    assert not answered & bad_stamps, "an action answered a bad image"
    _, before = probe.stats[-1]  # ticks still in flight when the bad images came answered valid frames
    n_stats = len(probe.stats)
    assert all(c.poll() is None for c in children.values())
    assert probe.wait_for(lambda: len(probe.stats) > n_stats + 1, timeout=10, images=FRAMES)
    after = probe.stats[len(probe.stats) - 1][1]
    resumed = [s for _, s in probe.stats if s.tick == before.tick + 1]
    assert resumed and resumed[0].tokens == before.tokens  # window at budget: the cache went on as before
    assert after.tick > before.tick


def _unusual_but_valid_frames() -> list[Image]:
    """Frames a real camera driver may send: big-endian flag on 8-bit data, and rows padded past the pixels."""
    frames = []
    for i, frame in enumerate(FRAMES[:4]):
        msg = rgb_to_image(frame, "bgr8" if i % 2 else "rgb8")
        msg.is_bigendian = 1
        frames.append(msg)
    for frame in FRAMES[4:]:
        rows = np.frombuffer(bytes(rgb_to_image(frame).data), np.uint8).reshape(frame.shape[0], -1)
        padded = np.concatenate([rows, np.full((rows.shape[0], 64), 255, np.uint8)], axis=1)
        frames.append(
            Image(
                height=frame.shape[0],
                width=frame.shape[1],
                encoding="rgb8",
                step=padded.shape[1],
                data=padded.tobytes(),
            )
        )
    return frames


def test_big_endian_and_padded_frames_are_used(nodes):
    probe, children = nodes
    probe.instruction_pub.publish(String(data="lift the red cube"))  # the same one: the episode goes on
    probe.spin(1.0, FRAMES)
    refused, n_actions, stamps_before = _counter(probe, "bad_image"), len(probe.actions), set(probe.sent_stamps)
    probe.spin(3.0, _unusual_but_valid_frames())
    new_stamps = probe.sent_stamps - stamps_before
    answered = [a for _, a in probe.actions[n_actions:] if (a.header.stamp.sec, a.header.stamp.nanosec) in new_stamps]
    assert all(c.poll() is None for c in children.values()), "a valid frame took a node down"
    assert len(answered) >= 3, f"{len(answered)} actions answered the unusual frames"
    assert _counter(probe, "bad_image") == refused


def test_a_repeated_frame_is_answered_once(nodes):
    """A camera slower than control_hz (or a sim waiting for the action) repeats its newest frame: acting on
    it again would put the same frame twice into the cache."""
    probe, _ = nodes
    probe.spin(1.0, FRAMES)
    n_actions = len(probe.actions)
    frame = probe.send_image(FRAMES[3])
    stamp = (frame.header.stamp.sec, frame.header.stamp.nanosec)

    def answers() -> list:
        return [a for _, a in probe.actions[n_actions:] if (a.header.stamp.sec, a.header.stamp.nanosec) == stamp]

    deadline = time.monotonic() + 30
    while not answers() and time.monotonic() < deadline:
        probe.spin(0.5, [frame], restamp=False)  # the same frame, stamp and all, at 10 Hz
    repeated = _counter(probe, "repeated_image")
    probe.spin(2.0, [frame], restamp=False)
    probe.spin(0.5)
    assert len(answers()) == 1, f"{len(answers())} actions answered one frame"
    assert probe.actions[-1][1] is answers()[0]  # and nothing after it: every later tick saw the same frame
    assert _counter(probe, "repeated_image") > repeated  # later ticks saw it again; none logged
    assert "repeated" not in probe.log.new()


def test_each_refusal_reason_has_its_own_log_rate_limit(nodes):
    """rclpy's throttle is per call site: an empty instruction refused right after a bad image was counted
    but never logged."""
    probe, _ = nodes
    probe.spin(LOG_PERIOD_S + 0.5, FRAMES)  # no refusal logged in the last period
    probe.log.new()
    bad_images, bad_instructions = _counter(probe, "bad_image"), _counter(probe, "bad_instruction")
    bad = [_bad_images()["wrong encoding"]]
    assert probe.wait_for(lambda: _counter(probe, "bad_image") > bad_images, timeout=5, images=bad)
    probe.instruction_pub.publish(String(data=""))
    assert probe.wait_for(lambda: _counter(probe, "bad_instruction") > bad_instructions, timeout=5, images=FRAMES)
    probe.spin(0.5, FRAMES)
    log = probe.log.new()
    assert "[bad_image #" in log and "[bad_instruction #" in log, log


def test_episode_starts_are_logged_once_each(nodes):
    """Alternating instructions logged 49 INFO lines a second, 'a new episode starts' 481 times for ~40
    episodes: an episode start is logged when it happens, rate-limited per instruction."""
    probe, _ = nodes
    probe.spin(1.0, FRAMES)
    probe.log.new()
    texts, end, i = ["lift the red cube", "push the blue cube"], time.monotonic() + 3.0, 0
    while time.monotonic() < end:
        probe.instruction_pub.publish(String(data=texts[i % 2]))
        i += 1
        probe.spin(0.05, FRAMES)
    probe.instruction_pub.publish(String(data=texts[0]))
    probe.spin(1.0, FRAMES)
    info = [line for line in probe.log.new().splitlines() if "[INFO]" in line]
    assert i > 40 and 1 <= len(info) <= 6, info  # each instruction at most once per LOG_PERIOD_S, + 1


def test_kv_memory_over_its_limits_is_an_error_in_the_log_and_on_diagnostics(nodes):
    probe, _ = nodes
    probe.spin(1.0, FRAMES)
    status, values = probe.statuses[MEMORY][1], probe.status_values(MEMORY)
    assert level(status) == 2 and "MiB allocated" in status.message
    assert int(values["kv_bytes_allocated"]) > 1 << 20 and values["kv_error_mib"] == "1.0"
    assert "[ERROR]" in probe.log.path.read_text() and "over kv_error_mib=1" in probe.log.path.read_text()


def test_status_names_carry_the_node_namespace(nodes):
    """Two stacks in two namespaces must not publish the same status names on the shared /diagnostics."""
    probe, _ = nodes
    assert {INPUTS, MEMORY, LOOP, CACHE} <= set(probe.statuses)
    for name, (_, status) in probe.statuses.items():
        node = name.partition(": ")[0]
        assert node.startswith(NAMESPACE + "/") and status.hardware_id == node, name


@pytest.mark.parametrize("text", ["", "   ", "x" * 100_000])
def test_bad_instruction_is_refused_and_the_episode_goes_on(nodes, text):
    probe, _ = nodes
    probe.spin(1.0, FRAMES)
    refused = _counter(probe, "bad_instruction")
    tick = probe.stats[-1][1].tick
    probe.instruction_pub.publish(String(data=text))
    assert probe.wait_for(lambda: _counter(probe, "bad_instruction") == refused + 1, timeout=5, images=FRAMES)
    probe.spin(1.0, FRAMES)
    assert probe.stats[-1][1].tick > tick  # no reset: the previous instruction still drives the episode
    assert probe.status_values(INPUTS)["instruction"] == "lift the red cube"


def test_stale_image_stops_motion(nodes):
    probe, _ = nodes
    probe.spin(1.0, FRAMES)
    stale = _counter(probe, "stale_image")
    probe.spin(2.5)  # no images
    last_action = probe.actions[-1][0]
    assert time.monotonic() - last_action > 1.0
    assert probe.wait_for(lambda: _counter(probe, "stale_image") > stale, timeout=5)
    recent = [t for when, t in probe.twists if when > last_action + 0.5]
    assert recent and all(t.twist.linear.x == 0 and t.twist.linear.y == 0 for t in recent)
    assert level(probe.statuses[INPUTS][1]) == 1


def test_reset_service_starts_a_new_episode(nodes):
    probe, _ = nodes
    client = probe.create_client(Trigger, "policy_node/reset")
    assert client.wait_for_service(timeout_sec=10)
    future = client.call_async(Trigger.Request())
    assert probe.wait_for(future.done, timeout=10) and future.result().success
    n = len(probe.stats)
    assert probe.wait_for(lambda: len(probe.stats) > n, timeout=10, images=FRAMES)
    first = probe.stats[n][1]
    assert first.tick == 0 and first.tokens == 257


def test_repeated_signals_shut_both_nodes_down_quietly_within_2_s(nodes):
    """Ctrl-C under ros2 launch: the terminal's SIGINT, the one launch forwards, then SIGTERM."""
    probe, children = nodes
    probe.spin(1.0, FRAMES)  # a tick may be in flight
    start_s = time.monotonic()
    for sig in (signal.SIGINT, signal.SIGINT, signal.SIGTERM):
        for child in children.values():
            child.send_signal(sig)
        time.sleep(0.05)
    codes = {name: child.wait(timeout=20) for name, child in children.items()}
    elapsed = time.monotonic() - start_s
    assert codes == {"policy_node": 0, "diagnostics_node": 0}
    assert elapsed < 2.5, f"{elapsed:.1f} s"
    for log in probe.logs.iterdir():
        assert "Traceback" not in log.read_text(), log.read_text()[-3000:]


def test_mismatched_checkpoint_keeps_the_node_serving(ros, tiny_checkpoint, tmp_path):
    import json
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(tiny_checkpoint, bad)
    config = json.loads((bad / "config.json").read_text())
    config["text_config"]["hidden_size"] = 128
    (bad / "config.json").write_text(json.dumps(config))
    params = write_params(tmp_path / "policy.yaml", {"checkpoint": str(bad), "status_hz": 4.0})
    children = start(["policy_node"], params, "/bad_checkpoint")
    inputs = "/bad_checkpoint/policy_node: inputs"
    probe = Probe("/bad_checkpoint")
    try:
        probe.instruction_pub.publish(String(data="lift the red cube"))
        assert probe.wait_for(lambda: inputs in probe.statuses, timeout=120, images=FRAMES)
        probe.spin(1.0, FRAMES)
        status = probe.statuses[inputs][1]
        assert level(status) == 2 and "projector.fc2.weight" in status.message
        assert _counter(probe, "checkpoint_errors", inputs) == 1 and _counter(probe, "no_policy", inputs) > 0
        assert not probe.actions and probe.twists and all(t.twist.linear.x == 0 for _, t in probe.twists)
        assert children["policy_node"].poll() is None
    finally:
        probe.destroy_node()
        assert stop(children) == {"policy_node": 0}
