"""Node parameters: one typed dataclass per node, all here, mirrored by ``config/policy.yaml`` (tested).

Cache parameters (:class:`CacheConfig` and the eviction strategies' own) appear flat under ``cache.`` in the
YAML, the accelerators' under ``token_selection.``, ``token_reuse.`` and ``layer_pruning.``; the sim node's
action mapping under ``action_mapping.``. Nothing here loads torch: the cache parameters are imported only
when the policy node declares them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rcl_interfaces.msg import ParameterDescriptor
from rclpy.node import Node

from ..core.accelerators.config import LayerPruningConfig, TokenReuseConfig, TokenSelectionConfig
from ..core.defaults import TRAINED_GATE, shipped
from ..core.options import described_fields, option
from ..core.sim.action_mapping import ActionMapping
from . import interfaces

if TYPE_CHECKING:
    from ..core.cache.config import CacheConfig


@dataclass
class PolicyNodeConfig:
    checkpoint: str = option(
        "", "OpenVLA-format checkpoint directory; empty = the shipped trained policy (checkpoints/, delayed_cue task)"
    )
    unnorm_key: str = option("", "norm_stats key to un-normalize actions with (empty: the checkpoint's only one)")
    device: str = option("cpu", "torch device: cpu or cuda")
    dtype: str = option("float32", "float32 | bfloat16 | float16 (half precision needs cuda)")
    torch_threads: int = option(
        1,
        "CPU threads for inference; 0 = torch's default (all cores). Sharing cores with other processes, "
        "parallel ops stall on a descheduled thread: on a 2-core machine 1 thread gave steadier ticks",
    )
    decoding: str = option(
        "best_action_bin",
        "best_action_bin: argmax over the 256 action ids (always an action bin) | official: OpenVLA's "
        "predict_action exactly (argmax over the whole vocabulary; a non-action id becomes an edge bin)",
    )
    control_hz: float = option(5.0, "control tick rate; an overrun skips ticks (each counted), never queues them")
    stale_image_timeout_s: float = option(
        0.4,
        "an image older than this gives no motion and a WARN; about two control periods: longer rides out "
        "camera hiccups, but the arm keeps acting on a frozen frame for that long",
    )
    max_instruction_tokens: int = option(
        64, "longer instructions are refused (counted in tokens: they are what a tick costs and the cache holds)"
    )
    min_image_side: int = option(16, "smaller images are refused")
    max_image_pixels: int = option(4096 * 4096, "larger images are refused")
    max_delta_position: float = option(0.05, "clip of each position delta, meters per tick")
    max_delta_orientation: float = option(0.25, "clip of each orientation delta, radians per tick")
    gripper_min: float = option(-1.0, "gripper command clip, low")
    gripper_max: float = option(1.0, "gripper command clip, high")
    frame_id: str = option("panda_link0", "frame of the action deltas and of delta_twist_cmds")
    camera_topic: str = option(interfaces.CAMERA, "sensor_msgs/Image input (sensor-data QoS, depth 1)")
    camera_transport: str = option(
        "raw",
        "raw: sensor_msgs/Image on camera_topic | compressed: sensor_msgs/CompressedImage (jpeg, png) on "
        "camera_topic + '/compressed'",
    )
    instruction_topic: str = option(interfaces.INSTRUCTION, "std_msgs/String input (reliable, transient local)")
    action_topic: str = option(interfaces.ACTION, "EndEffectorAction output")
    twist_topic: str = option(interfaces.TWIST, "geometry_msgs/TwistStamped output for MoveIt Servo")
    servo_rate_hz: float = option(
        50.0,
        "delta_twist_cmds rate: the latest command re-published with fresh stamps between ticks (MoveIt Servo "
        "halts on a command older than ~0.1 s); 0 = only at ticks",
    )
    servo_hold_timeout_s: float = option(
        0.25,
        "a command is re-published this long, then a zero twist (the twist is a delta spread over one control "
        "period: holding it longer moves further than the policy asked)",
    )
    servo_command_type_service: str = option(
        "/servo_node/switch_command_type",
        "MoveIt Servo's ServoCommandType service, called once with TWIST when moveit_msgs is importable "
        "(else the node logs the call to make); '' = never",
    )
    cache_stats_topic: str = option(interfaces.CACHE_STATS, "CacheStats output")
    kv_warn_mib: float = option(
        1024.0, "KV cache memory (allocated) above this: WARN in the log and on /diagnostics; 0 = no limit"
    )
    kv_error_mib: float = option(
        4096.0, "KV cache memory (allocated) above this: ERROR in the log and on /diagnostics; 0 = no limit"
    )
    error_log_period_s: float = option(
        5.0, "rate limit of repeated log lines, per reason (each refusal kind, each warning, each instruction)"
    )
    status_hz: float = option(1.0, "rate of this node's input-health status on /diagnostics")


@dataclass
class DiagnosticsConfig:
    target_hz: float = option(5.0, "control frequency the policy node should reach")
    window_s: float = option(5.0, "sliding window for frequency and latency")
    publish_hz: float = option(1.0, "rate of /diagnostics")
    min_hz_fraction: float = option(0.8, "WARN below this fraction of target_hz")
    no_action_timeout_s: float = option(3.0, "ERROR when no action arrived for this long")
    max_input_age_ms: float = option(500.0, "WARN when the image a tick used was older")
    action_topic: str = option(interfaces.ACTION, "EndEffectorAction input")
    cache_stats_topic: str = option(interfaces.CACHE_STATS, "CacheStats input")


@dataclass
class CameraConfig:
    rate_hz: float = option(10.0, "frames per second")
    episode_frames: int = option(64, "frames of the synthetic episode, then it loops")
    encoding: str = option("rgb8", "rgb8 | bgr8 | rgba8 | bgra8 | mono8")
    frame_id: str = option("camera", "frame_id of the images")
    instruction: str = option("lift the red cube", "published once, transient-local")
    seed: int = option(0, "seed of the synthetic episode")
    camera_topic: str = option(interfaces.CAMERA, "sensor_msgs/Image output")
    instruction_topic: str = option(interfaces.INSTRUCTION, "std_msgs/String output")


@dataclass
class SimNodeConfig:
    task: str = option("lift", "lift | cued_lift | delayed_cue (the cue, shown mid-episode, must be remembered)")
    seed: int = option(0, "seed of the first episode; each reset uses the next one")
    control_hz: float = option(5.0, "simulation steps per second (the controller's control_freq)")
    lockstep: bool = option(
        True,
        "step only when an action answers the newest observation (deterministic, runs at the policy's pace); "
        "false: step at control_hz in real time, holding still without a fresh action",
    )
    horizon: int = option(60, "steps per episode; then the episode ends as a failure")
    image_size: int = option(0, "camera image side, pixels; 0 = the task's (224, delayed_cue 112)")
    action_timeout_s: float = option(
        0.5, "real time only: an action older than this is not applied, the arm holds still"
    )
    frame_id: str = option("agentview", "frame_id of the camera images")
    camera_topic: str = option(interfaces.CAMERA, "sensor_msgs/Image output")
    instruction_topic: str = option(interfaces.INSTRUCTION, "std_msgs/String output (transient local)")
    action_topic: str = option(interfaces.ACTION, "EndEffectorAction input")
    joint_states_topic: str = option(interfaces.JOINT_STATES, "sensor_msgs/JointState output")
    success_topic: str = option(interfaces.TASK_SUCCESS, "std_msgs/Bool output, every step")


# Where the policy node's defaults differ from the library's: the default path runs the gate trained for the
# shipped policy, never silently an untrained one, and keeps the RoPE positions that policy was trained on.
POLICY_NODE_CACHE_DEFAULTS = {"gate_checkpoint": f"gates/{TRAINED_GATE}", "rope_compact": False}


def cache_parameters() -> list[tuple[str, Any, str]]:
    """The policy node's ``cache.*`` parameters (imported here, on demand, because the cache loads torch)."""
    from ..core.cache.config import CacheConfig

    return [(n, POLICY_NODE_CACHE_DEFAULTS.get(n, d), h) for n, d, h in CacheConfig.parameters()]


def node_parameters(node: str) -> list[tuple[str, Any, str]]:
    """(name, default, description) of every parameter ``node`` declares, nested names dotted."""
    if node == "policy_node":
        cache = [("cache." + n, d, h) for n, d, h in cache_parameters()]
        selection = [("token_selection." + n, d, h) for n, d, h in described_fields(TokenSelectionConfig)]
        reuse = [("token_reuse." + n, d, h) for n, d, h in described_fields(TokenReuseConfig)]
        pruning = [("layer_pruning." + n, d, h) for n, d, h in described_fields(LayerPruningConfig)]
        return described_fields(PolicyNodeConfig) + cache + selection + reuse + pruning
    if node == "diagnostics_node":
        return described_fields(DiagnosticsConfig)
    if node == "synthetic_camera":
        return described_fields(CameraConfig)
    if node == "sim_node":
        mapping = [("action_mapping." + n, d, h) for n, d, h in described_fields(ActionMapping)]
        return described_fields(SimNodeConfig) + mapping
    raise KeyError(node)


def _declare_values(node: Node, parameters: list[tuple[str, Any, str]], prefix: str = "") -> dict[str, Any]:
    values = {}
    for name, default, help in parameters:
        descriptor = ParameterDescriptor(description=help)
        values[name] = node.declare_parameter(prefix + name, default, descriptor).value
    return values


def declare(node: Node, cls: type, prefix: str = "") -> Any:
    """Declare every field of ``cls`` as a parameter (with its description) and read them back."""
    return cls(**_declare_values(node, described_fields(cls), prefix))


def declare_cache(node: Node) -> CacheConfig:
    """The ``cache.*`` parameters; a relative ``gate_checkpoint`` not found from the working directory is
    looked up in the package (``gates/`` ships with it)."""
    from ..core.cache.config import CacheConfig

    values = _declare_values(node, cache_parameters(), "cache.")
    if values.get("gate_checkpoint"):
        values["gate_checkpoint"] = str(package_path(values["gate_checkpoint"]))
    return CacheConfig.from_flat(values)


def package_path(relative: str | Path) -> Path:
    """``relative`` from the working directory if it exists there (or is absolute), else in the package
    (:func:`core.defaults.shipped`); absolute either way, so that processes started elsewhere find it too."""
    path = Path(relative)
    if path.is_absolute() or path.exists():
        return path.resolve()
    try:
        return shipped(str(path))
    except FileNotFoundError:
        return path
