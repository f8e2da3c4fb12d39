"""Node parameters: one typed dataclass per node, mirrored by ``config/policy.yaml``.

Cache parameters (:class:`CacheConfig` and the eviction strategies' own) appear flat under ``cache.`` in the YAML.
"""

from __future__ import annotations

from dataclasses import dataclass

from rcl_interfaces.msg import ParameterDescriptor
from rclpy.node import Node

from ..core.cache.config import CacheConfig
from ..core.options import described_fields, option
from . import topics


@dataclass
class PolicyNodeConfig:
    checkpoint: str = option("", "OpenVLA-format checkpoint directory; empty = the embedded tiny checkpoint")
    unnorm_key: str = option("sim_panda_lift", "norm_stats key to un-normalize actions with (empty: the only one)")
    device: str = option("cpu", "torch device: cpu or cuda")
    dtype: str = option("float32", "float32 | bfloat16 | float16 (half precision needs cuda)")
    torch_threads: int = option(
        1,
        "CPU threads for inference; 0 = torch's default (all cores). Sharing cores with other processes, "
        "parallel ops stall on a descheduled thread: on a 2-core machine 1 thread gave steadier ticks",
    )
    control_hz: float = option(5.0, "control tick rate; an overrun skips ticks, never queues them")
    stale_image_timeout_s: float = option(1.0, "an image older than this gives no motion and a WARN")
    max_instruction_chars: int = option(512, "longer instructions are refused")
    min_image_side: int = option(16, "smaller images are refused")
    max_image_pixels: int = option(4096 * 4096, "larger images are refused")
    max_delta_position: float = option(0.05, "clip of each position delta, meters per tick")
    max_delta_orientation: float = option(0.25, "clip of each orientation delta, radians per tick")
    gripper_min: float = option(-1.0, "gripper command clip, low")
    gripper_max: float = option(1.0, "gripper command clip, high")
    frame_id: str = option("panda_link0", "frame of the action deltas and of delta_twist_cmds")
    camera_topic: str = option(topics.CAMERA, "sensor_msgs/Image input (sensor-data QoS, depth 1)")
    instruction_topic: str = option(topics.INSTRUCTION, "std_msgs/String input (reliable, transient local)")
    action_topic: str = option(topics.ACTION, "EndEffectorAction output")
    twist_topic: str = option(topics.TWIST, "geometry_msgs/TwistStamped output for MoveIt Servo")
    cache_stats_topic: str = option(topics.CACHE_STATS, "CacheStats output")
    error_log_period_s: float = option(5.0, "rate limit of repeated error and warning log lines")
    status_hz: float = option(1.0, "rate of this node's input-health status on /diagnostics")


@dataclass
class DiagnosticsConfig:
    target_hz: float = option(5.0, "control frequency the policy node should reach")
    window_s: float = option(5.0, "sliding window for frequency and latency")
    publish_hz: float = option(1.0, "rate of /diagnostics")
    min_hz_fraction: float = option(0.8, "WARN below this fraction of target_hz")
    no_action_timeout_s: float = option(3.0, "ERROR when no action arrived for this long")
    max_input_age_ms: float = option(500.0, "WARN when the image a tick used was older")
    action_topic: str = option(topics.ACTION, "EndEffectorAction input")
    cache_stats_topic: str = option(topics.CACHE_STATS, "CacheStats input")


def declare(node: Node, cls: type, prefix: str = "") -> object:
    """Declare every field of ``cls`` as a parameter (with its description) and read them back."""
    values = {}
    for name, default, help in described_fields(cls):
        descriptor = ParameterDescriptor(description=help)
        values[name] = node.declare_parameter(prefix + name, default, descriptor).value
    return cls(**values)


def declare_cache(node: Node) -> CacheConfig:
    values = {}
    for name, default, help in CacheConfig.parameters():
        descriptor = ParameterDescriptor(description=help)
        values[name] = node.declare_parameter("cache." + name, default, descriptor).value
    return CacheConfig.from_flat(values)
