"""Incoming messages -> what the policy node's runner takes, and its action -> what the robot may do.

Every way an image can be wrong becomes an InvalidInputError. Outgoing messages are packed in ``interfaces``.
"""

from __future__ import annotations

import numpy as np
from cv_bridge import CvBridge, CvBridgeError
from sensor_msgs.msg import Image

from ..core.openvla.processor import InvalidInputError

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


def clip_action(action: np.ndarray, max_position: float, max_orientation: float, gripper: tuple[float, float]):
    clipped = np.asarray(action, dtype=np.float64).copy()
    clipped[:3] = np.clip(clipped[:3], -max_position, max_position)
    clipped[3:6] = np.clip(clipped[3:6], -max_orientation, max_orientation)
    clipped[6] = np.clip(clipped[6], *gripper)
    return clipped
