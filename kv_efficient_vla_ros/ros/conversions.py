"""Message <-> core conversions. Every way an image can be wrong becomes an InvalidInputError."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from cv_bridge import CvBridge
from geometry_msgs.msg import TwistStamped
from sensor_msgs.msg import Image

from ..core.openvla.processor import InvalidInputError
from ..core.runner import StepResult, StepStats
from ..msg import CacheStats, EndEffectorAction


class _Layout(NamedTuple):
    channels: int
    sample_bytes: int
    rgb: tuple[int, int, int]  # which channels are R, G and B


SUPPORTED_ENCODINGS: dict[str, _Layout] = {
    "rgb8": _Layout(3, 1, (0, 1, 2)),
    "bgr8": _Layout(3, 1, (2, 1, 0)),
    "rgba8": _Layout(4, 1, (0, 1, 2)),
    "bgra8": _Layout(4, 1, (2, 1, 0)),
    "mono8": _Layout(1, 1, (0, 0, 0)),
    "rgb16": _Layout(3, 2, (0, 1, 2)),
    "bgr16": _Layout(3, 2, (2, 1, 0)),
    "rgba16": _Layout(4, 2, (0, 1, 2)),
    "bgra16": _Layout(4, 2, (2, 1, 0)),
    "mono16": _Layout(1, 2, (0, 0, 0)),
}
_bridge = CvBridge()


def image_to_rgb(msg: Image, min_side: int, max_pixels: int) -> np.ndarray:
    """``sensor_msgs/Image`` -> ``HxWx3`` uint8 RGB, or :class:`InvalidInputError` saying what is wrong.

    Decoded here rather than by cv_bridge's PyPI port, which ignores ``step`` (padded rows arrive shifted)
    and calls ``ndarray.newbyteorder()`` for ``is_bigendian`` frames, gone in NumPy 2 (FACTS.md).
    """
    if msg.encoding not in SUPPORTED_ENCODINGS:
        raise InvalidInputError(f"image encoding {msg.encoding!r} is not one of {sorted(SUPPORTED_ENCODINGS)}")
    layout = SUPPORTED_ENCODINGS[msg.encoding]
    if msg.height < min_side or msg.width < min_side:
        raise InvalidInputError(f"image is {msg.width}x{msg.height}, smaller than min_image_side={min_side}")
    if msg.height * msg.width > max_pixels:
        raise InvalidInputError(f"image is {msg.width}x{msg.height}, more than max_image_pixels={max_pixels}")
    row_bytes = msg.width * layout.channels * layout.sample_bytes
    _check_rows(msg, row_bytes)
    try:
        samples = _samples(_rows(msg, row_bytes), layout.sample_bytes, bool(msg.is_bigendian))
        pixels = samples.reshape(msg.height, msg.width, layout.channels)
        return np.ascontiguousarray(pixels[..., list(layout.rgb)])
    except Exception as err:  # a camera frame must never take the node down: whatever is left is a refusal
        raise InvalidInputError(f"cannot convert the {msg.width}x{msg.height} {msg.encoding} image: {err}") from err


def _check_rows(msg: Image, row_bytes: int) -> None:
    if msg.step < row_bytes:
        raise InvalidInputError(
            f"image step {msg.step} is shorter than a row of {msg.width} {msg.encoding} pixels ({row_bytes} bytes) "
            "(inconsistent)"
        )
    if len(msg.data) != msg.step * msg.height:
        raise InvalidInputError(
            f"image data is {len(msg.data)} bytes, but {msg.width}x{msg.height} {msg.encoding} with step {msg.step} "
            f"needs {msg.step * msg.height} (truncated or inconsistent)"
        )


def _rows(msg: Image, row_bytes: int) -> np.ndarray:
    """``height x row_bytes`` uint8: each row's pixels without the padding that ``step`` may add after them."""
    return np.frombuffer(msg.data, dtype=np.uint8).reshape(msg.height, msg.step)[:, :row_bytes]


def _samples(rows: np.ndarray, sample_bytes: int, big_endian: bool) -> np.ndarray:
    """8-bit samples as they are (a byte has no byte order); 16-bit ones read in the frame's byte order and
    scaled to 8 bits as ROS's C++ cv_bridge does (``convertTo`` with 255 / 65535, rounded)."""
    if sample_bytes == 1:
        return rows
    wide = np.ascontiguousarray(rows).view(np.dtype(">u2" if big_endian else "<u2")).astype(np.uint32)
    return ((wide + 128) // 257).astype(np.uint8)  # == round(v * 255 / 65535); no v lies exactly halfway


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
    for name in (
        "tick",
        "policy",
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
