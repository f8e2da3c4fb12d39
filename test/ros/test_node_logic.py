"""The nodes' bookkeeping on its own: log rate limits, overrun counting, memory levels, status names, and
the bridge from the core's Python logging to a node's ROS logger."""

import logging

import pytest

from kv_efficient_vla_ros.ros.interfaces import node_fqn, status_name
from kv_efficient_vla_ros.ros.log_throttle import LogThrottle
from kv_efficient_vla_ros.ros.overruns import OverrunCounter


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_log_throttle_limits_each_key_on_its_own():
    clock = FakeClock()
    throttle = LogThrottle(5.0, clock)
    assert throttle.text("bad_image", "image refused") == "image refused"
    clock.now = 1.5
    assert throttle.text("bad_image", "image refused") is None  # the same reason, too soon
    assert throttle.text("bad_instruction", "instruction refused") == "instruction refused"  # another reason
    clock.now = 3.0
    assert throttle.text("bad_image", "image refused") is None
    clock.now = 5.0
    assert throttle.text("bad_image", "image refused") == "image refused (2 more like this since the last one)"
    assert throttle.text(("episode", "lift"), "a new episode starts") == "a new episode starts"


def _timer(period: int, durations: list[int]) -> tuple[list[int], list[int]]:
    """A ROS timer (fixed schedule, rcl's rules) whose callbacks take ``durations``: when each tick starts,
    and the next deadline each leaves ahead (a late timer drops the deadlines it missed)."""
    starts, deadlines, next_call, now = [], [], 0, 0
    for duration in durations:
        start = max(now, next_call)
        next_call = (start // period + 1) * period
        starts.append(start)
        deadlines.append(next_call)
        now = start + duration
    return starts, deadlines


@pytest.mark.parametrize(
    ("durations", "skipped"),
    [
        ([50] * 10, 0),  # every tick within its period
        ([250] * 10, 2),  # 1.25 periods each: one deadline in five is missed
        ([1000] * 5, 16),  # 5 periods each: 4 skipped after each of the first 4
        ([50, 450, 50, 50], 1),  # one long tick
    ],
)
def test_every_skipped_period_is_counted(durations, skipped):
    period = 200
    starts, deadlines = _timer(period, durations)
    counter = OverrunCounter(period)
    for deadline in deadlines:
        counter.tick(deadline)
    # every deadline up to the last tick's had a tick or was skipped
    assert counter.skipped == starts[-1] // period + 1 - len(starts) == skipped


def test_overruns_are_counted_when_every_tick_is_late():
    """The old count (the gap between one tick's end and the next one's start) is 0 here, since the late
    timer fires at once: 261 ticks in 300 s at 5 Hz were reported as 1 overrun."""
    starts, deadlines = _timer(200, [1149] * 261)
    counter = OverrunCounter(200)
    for deadline in deadlines:
        counter.tick(deadline)
    assert counter.skipped == starts[-1] // 200 + 1 - 261 > 1200


def test_memory_level_by_limits():
    from kv_efficient_vla_ros.ros.policy_node import ERROR, OK, WARN, memory_level

    mib = 1 << 20
    assert memory_level(100 * mib, 0, 0) == OK  # no limits
    assert memory_level(100 * mib, 200, 400) == OK
    assert memory_level(300 * mib, 200, 400) == WARN
    assert memory_level(500 * mib, 200, 400) == ERROR
    assert memory_level(500 * mib, 0, 400) == ERROR


def test_status_names_differ_between_namespaces():
    names = {status_name(node_fqn(ns, "policy_node"), "inputs") for ns in ("", "/", "/arm", "arm2", "/a/b/")}
    assert names == {
        "/policy_node: inputs",
        "/arm/policy_node: inputs",
        "/arm2/policy_node: inputs",
        "/a/b/policy_node: inputs",
    }


def test_the_core_logs_through_the_node_logger(ros, capfd):
    """The runner warns through Python logging when cache positions pass max_position_embeddings; that must
    reach the node's ROS logger, not only stderr."""
    from rclpy.node import Node

    from kv_efficient_vla_ros.ros.log_bridge import bridge_core_logging

    node = Node("bridge_test")
    try:
        bridge_core_logging(node.get_logger())
        logging.getLogger("kv_efficient_vla_ros.core.runner").warning("cache positions reached %d", 40000)
        logging.getLogger("kv_efficient_vla_ros.core.cache").error("a cache error")
    finally:
        node.destroy_node()
    err = capfd.readouterr().err
    assert "[WARN]" in err and "[bridge_test]: cache positions reached 40000" in err, err
    assert "[ERROR]" in err and "[bridge_test]: a cache error" in err


def test_the_stale_image_timeout_is_about_two_control_periods():
    """After the camera stops, the node keeps acting on the last frame for this long (1 s = 5 actions, up
    to 25 cm at the clip)."""
    from kv_efficient_vla_ros.ros.params import PolicyNodeConfig

    config = PolicyNodeConfig()
    assert config.stale_image_timeout_s <= 2.5 / config.control_hz


def test_cache_stats_carry_the_reused_share_of_a_real_tick(tiny_policy):
    from std_msgs.msg import Header

    from kv_efficient_vla_ros.core.accelerators.config import TokenReuseConfig
    from kv_efficient_vla_ros.core.cache import CacheConfig
    from kv_efficient_vla_ros.core.runner import PolicyRunner
    from kv_efficient_vla_ros.core.synthetic import synthetic_frames
    from kv_efficient_vla_ros.ros.interfaces import cache_stats_message

    reuse = TokenReuseConfig(enabled=True, layer_adaptive=False)
    runner = PolicyRunner(tiny_policy, CacheConfig(strategy="window"), token_reuse=reuse)
    frame = synthetic_frames(1, seed=11)[0]
    stats = [runner.step(frame, "lift the red cube").stats for _ in range(2)]
    messages = [cache_stats_message(s, Header(), ros_ms=1.0, input_age_ms=2.0) for s in stats]
    assert messages[0].reused_share == 0.0 and messages[1].reused_share == pytest.approx(stats[1].reused_share)
    assert messages[1].reused_share > 0.0
