"""The package's ROS 2 interface in one place: node executables, topic defaults, QoS profiles, diagnostic
status names, and packing / unpacking of the messages the nodes exchange.

Every node and tool imports these from here (never from another node), and nothing here loads torch:
the auxiliary nodes (camera, diagnostics, sim) start without it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from cv_bridge import CvBridge
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import TwistStamped
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image
from std_msgs.msg import Header

from ..msg import CacheStats, EndEffectorAction

if TYPE_CHECKING:
    from ..core.runner import StepStats

PACKAGE = "kv_efficient_vla_ros"

# The node executables (scripts/, CMakeLists.txt, launch/, setup.py are tested against this) -> module.
NODES = {
    "policy_node": "kv_efficient_vla_ros.ros.policy_node",
    "diagnostics_node": "kv_efficient_vla_ros.ros.diagnostics_node",
    "synthetic_camera": "kv_efficient_vla_ros.ros.camera_node",
    "sim_node": "kv_efficient_vla_ros.ros.sim_node",
}

# Default topic names, relative so that a namespace applies; every one is a node parameter.
CAMERA = "camera/image_raw"
INSTRUCTION = "instruction"
ACTION = "action"
TWIST = "delta_twist_cmds"
CACHE_STATS = "cache_stats"
JOINT_STATES = "joint_states"
TASK_SUCCESS = "task_success"
DIAGNOSTICS = "/diagnostics"

# Sensor data: drop rather than queue; only the newest frame matters.
CAMERA_QOS = QoSProfile(
    history=HistoryPolicy.KEEP_LAST,
    depth=1,
    reliability=ReliabilityPolicy.BEST_EFFORT,
    durability=DurabilityPolicy.VOLATILE,
)
# The instruction is state: a late-joining node must still get the current one.
INSTRUCTION_QOS = QoSProfile(
    history=HistoryPolicy.KEEP_LAST,
    depth=1,
    reliability=ReliabilityPolicy.RELIABLE,
    durability=DurabilityPolicy.TRANSIENT_LOCAL,
)
# Actions, twists, cache stats, joint states, task success.
OUTPUT_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=10, reliability=ReliabilityPolicy.RELIABLE)
DIAGNOSTICS_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=10)

# Diagnostic status names: diagnostic_updater's "<node name>: <task>", with the fully qualified node name
# so that two stacks in two namespaces never publish the same name on the shared /diagnostics.
INPUTS_TASK = "inputs"  # the policy node's input health
KV_MEMORY_TASK = "kv memory"  # the policy node's KV cache memory against its limits
CONTROL_LOOP_TASK = "control loop"  # the diagnostics node's measure of the control loop
CACHE_TASK = "kv cache"  # the diagnostics node's view of the cache statistics
EPISODE_TASK = "episode"  # the sim node's episode
LEVELS = {0: "OK", 1: "WARN", 2: "ERROR", 3: "STALE"}


def status_name(node_fqn: str, task: str) -> str:
    return f"{node_fqn}: {task}"


def node_fqn(namespace: str, node: str) -> str:
    """``/ns/node`` (``/node`` in the root namespace), as ``Node.get_fully_qualified_name`` gives it."""
    namespace = namespace.strip("/")
    return f"/{namespace}/{node}" if namespace else f"/{node}"


def status_level(status: DiagnosticStatus) -> int:
    """The level as an int (rclpy hands ``byte`` fields back as ``bytes``)."""
    return status.level if isinstance(status.level, int) else int.from_bytes(status.level, "little")


def key_values(**values) -> list[KeyValue]:
    return [KeyValue(key=k, value=str(v)) for k, v in values.items()]


def diagnostic_array(stamp, *statuses: DiagnosticStatus, frame_id: str = "") -> DiagnosticArray:
    return DiagnosticArray(header=Header(stamp=stamp, frame_id=frame_id), status=list(statuses))


_bridge = CvBridge()


def rgb_to_image(rgb: np.ndarray, encoding: str = "rgb8") -> Image:
    """For cameras we publish ourselves (synthetic, sim); ``encoding`` picks the wire format."""
    if encoding == "rgb8":
        return _bridge.cv2_to_imgmsg(np.ascontiguousarray(rgb), encoding="rgb8")
    import cv2

    code = {
        "bgr8": cv2.COLOR_RGB2BGR,
        "rgba8": cv2.COLOR_RGB2RGBA,
        "bgra8": cv2.COLOR_RGB2BGRA,
        "mono8": cv2.COLOR_RGB2GRAY,
    }[encoding]
    return _bridge.cv2_to_imgmsg(np.ascontiguousarray(cv2.cvtColor(rgb, code)), encoding=encoding)


def action_message(action: np.ndarray, header, tick: int, normalized: np.ndarray | None = None) -> EndEffectorAction:
    """A 7-D action (dx dy dz droll dpitch dyaw gripper) as EndEffectorAction; ``normalized`` is the raw vector."""
    msg = EndEffectorAction(header=header, tick=tick, gripper=float(action[6]))
    msg.delta_position.x, msg.delta_position.y, msg.delta_position.z = (float(v) for v in action[:3])
    msg.delta_orientation.x, msg.delta_orientation.y, msg.delta_orientation.z = (float(v) for v in action[3:6])
    if normalized is not None:
        msg.normalized = [float(v) for v in normalized]
    return msg


def action_vector(msg: EndEffectorAction) -> np.ndarray:
    """The inverse of :func:`action_message`: the 7-D action."""
    p, o = msg.delta_position, msg.delta_orientation
    return np.array([p.x, p.y, p.z, o.x, o.y, o.z, msg.gripper])


def twist_message(action: np.ndarray | None, period_s: float, header: Header | None = None) -> TwistStamped:
    """Deltas per control period as velocities; ``None`` holds still (zero twist)."""
    msg = TwistStamped()
    if header is not None:
        msg.header = header
    if action is not None:
        msg.twist.linear.x, msg.twist.linear.y, msg.twist.linear.z = (float(v / period_s) for v in action[:3])
        msg.twist.angular.x, msg.twist.angular.y, msg.twist.angular.z = (float(v / period_s) for v in action[3:6])
    return msg


def cache_stats_message(stats: StepStats, header, ros_ms: float, input_age_ms: float) -> CacheStats:
    msg = CacheStats()
    msg.header = header
    msg.policy = stats.strategy  # the message's name for the cache's eviction strategy
    for name in (
        "tick",
        "tokens",
        "history_tokens",
        "budget_tokens",
        "chunks_verbatim",
        "chunks_summarized",
        "kept",
        "summarized",
        "dropped",
        "kv_bytes",
        "kv_bytes_peak",
        "kv_bytes_allocated",
        "max_position",
    ):
        setattr(msg, name, getattr(stats, name))
    msg.utilities = [float(u) for u in stats.utilities]
    msg.reused_share = float(stats.reused_share)
    latency = stats.latency_ms
    msg.vision_ms, msg.prefill_ms, msg.decode_ms = latency["vision"], latency["prefill"], latency["decode"]
    msg.gate_ms, msg.evict_ms, msg.inference_ms = latency["gate"], latency["evict"], latency["total"]
    msg.ros_ms, msg.input_age_ms = float(ros_ms), float(input_age_ms)
    return msg
