"""Message <-> core conversions. Every way an image can be wrong becomes an InvalidInputError."""

from __future__ import annotations

import numpy as np
from cv_bridge import CvBridge, CvBridgeError
from geometry_msgs.msg import TwistStamped
from sensor_msgs.msg import Image

from ..core.openvla.processor import InvalidInputError
from ..core.runner import StepResult, StepStats
from ..msg import CacheStats, EndEffectorAction

# encoding -> channels; cv_bridge converts each of them to rgb8
SUPPORTED_ENCODINGS = {
    "rgb8": 3,
    "bgr8": 3,
    "rgba8": 4,
    "bgra8": 4,
    "mono8": 1,
}
_bridge = CvBridge()


def image_to_rgb(msg: Image, min_side: int, max_pixels: int) -> np.ndarray:
    """``sensor_msgs/Image`` -> ``HxWx3`` uint8 RGB, or :class:`InvalidInputError` saying what is wrong."""
    if msg.encoding not in SUPPORTED_ENCODINGS:
        raise InvalidInputError(f"image encoding {msg.encoding!r} is not one of {sorted(SUPPORTED_ENCODINGS)}")
    channels = SUPPORTED_ENCODINGS[msg.encoding]
    if msg.height < min_side or msg.width < min_side:
        raise InvalidInputError(f"image is {msg.width}x{msg.height}, smaller than min_image_side={min_side}")
    if msg.height * msg.width > max_pixels:
        raise InvalidInputError(f"image is {msg.width}x{msg.height}, more than max_image_pixels={max_pixels}")
    if msg.step < msg.width * channels or len(msg.data) != msg.step * msg.height:
        raise InvalidInputError(
            f"image data is {len(msg.data)} bytes, but {msg.width}x{msg.height} {msg.encoding} with step {msg.step} "
            f"needs {msg.step * msg.height} (truncated or inconsistent)"
        )
    try:
        array = _bridge.imgmsg_to_cv2(msg, desired_encoding="rgb8")
    except (CvBridgeError, ValueError, TypeError) as err:
        raise InvalidInputError(f"cv_bridge cannot convert the {msg.encoding} image: {err}") from err
    return np.ascontiguousarray(array)


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


def clip_action(action: np.ndarray, max_position: float, max_orientation: float, gripper: tuple[float, float]):
    clipped = np.asarray(action, dtype=np.float64).copy()
    clipped[:3] = np.clip(clipped[:3], -max_position, max_position)
    clipped[3:6] = np.clip(clipped[3:6], -max_orientation, max_orientation)
    clipped[6] = np.clip(clipped[6], *gripper)
    return clipped


def action_message(result: StepResult, clipped: np.ndarray, header) -> EndEffectorAction:
    msg = EndEffectorAction()
    msg.header = header
    msg.tick = result.stats.tick
    msg.delta_position.x, msg.delta_position.y, msg.delta_position.z = (float(v) for v in clipped[:3])
    msg.delta_orientation.x, msg.delta_orientation.y, msg.delta_orientation.z = (float(v) for v in clipped[3:6])
    msg.gripper = float(clipped[6])
    msg.normalized = [float(v) for v in result.normalized]
    return msg


def twist_message(clipped: np.ndarray | None, period_s: float, header) -> TwistStamped:
    """Deltas per control period as velocities; ``None`` holds still (zero twist)."""
    msg = TwistStamped()
    msg.header = header
    if clipped is not None:
        msg.twist.linear.x, msg.twist.linear.y, msg.twist.linear.z = (float(v / period_s) for v in clipped[:3])
        msg.twist.angular.x, msg.twist.angular.y, msg.twist.angular.z = (float(v / period_s) for v in clipped[3:6])
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
    latency = stats.latency_ms
    msg.vision_ms, msg.prefill_ms, msg.decode_ms = latency["vision"], latency["prefill"], latency["decode"]
    msg.gate_ms, msg.evict_ms, msg.inference_ms = latency["gate"], latency["evict"], latency["total"]
    msg.ros_ms, msg.input_age_ms = float(ros_ms), float(input_age_ms)
    return msg
