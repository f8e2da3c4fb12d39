"""Incoming messages -> what the policy node's runner takes, and its action -> what the robot may do.

Every way an image can be wrong becomes an InvalidInputError. Outgoing messages are packed in ``interfaces``.
"""

from __future__ import annotations

import io
from typing import NamedTuple

import numpy as np
from PIL import Image as PILImage
from sensor_msgs.msg import CompressedImage, Image

from ..core.openvla.errors import InvalidInputError


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

# What sensor_msgs/CompressedImage carries in practice (image_transport's compressed plugin), as PIL names them.
COMPRESSED_FORMATS = ("JPEG", "PNG")


def image_to_rgb(msg: Image, min_side: int, max_pixels: int) -> np.ndarray:
    """``sensor_msgs/Image`` -> ``HxWx3`` uint8 RGB, or :class:`InvalidInputError` saying what is wrong.

    Decoded here rather than by cv_bridge's PyPI port, which ignores ``step`` (padded rows arrive shifted)
    and calls ``ndarray.newbyteorder()`` for ``is_bigendian`` frames, gone in NumPy 2.
    """
    if msg.encoding not in SUPPORTED_ENCODINGS:
        raise InvalidInputError(f"image encoding {msg.encoding!r} is not one of {sorted(SUPPORTED_ENCODINGS)}")
    layout = SUPPORTED_ENCODINGS[msg.encoding]
    _check_size(msg.width, msg.height, min_side, max_pixels)
    row_bytes = msg.width * layout.channels * layout.sample_bytes
    _check_rows(msg, row_bytes)
    try:
        samples = _samples(_rows(msg, row_bytes), layout.sample_bytes, bool(msg.is_bigendian))
        pixels = samples.reshape(msg.height, msg.width, layout.channels)
        return np.ascontiguousarray(pixels[..., list(layout.rgb)])
    except Exception as err:  # a camera frame must never take the node down: whatever is left is a refusal
        raise InvalidInputError(f"cannot convert the {msg.width}x{msg.height} {msg.encoding} image: {err}") from err


def compressed_to_rgb(msg: CompressedImage, min_side: int, max_pixels: int) -> np.ndarray:
    """``sensor_msgs/CompressedImage`` (JPEG or PNG, whatever ``format`` claims) -> ``HxWx3`` uint8 RGB, or
    :class:`InvalidInputError`. The size is checked from the header before decoding: a few bytes of PNG
    can declare an enormous image."""
    try:
        with PILImage.open(io.BytesIO(bytes(msg.data))) as picture:
            if picture.format not in COMPRESSED_FORMATS:
                raise InvalidInputError(
                    f"compressed image is {picture.format or 'of an unknown format'} (format field {msg.format!r}), "
                    f"not one of {COMPRESSED_FORMATS}"
                )
            _check_size(*picture.size, min_side, max_pixels)
            return np.asarray(picture.convert("RGB"))
    except InvalidInputError:
        raise
    except Exception as err:  # PIL's errors vary by format and damage: every one of them is a refusal
        raise InvalidInputError(
            f"cannot decode the compressed image (format field {msg.format!r}, {len(msg.data)} bytes): {err}"
        ) from err


def _check_size(width: int, height: int, min_side: int, max_pixels: int) -> None:
    if height < min_side or width < min_side:
        raise InvalidInputError(f"image is {width}x{height}, smaller than min_image_side={min_side}")
    if height * width > max_pixels:
        raise InvalidInputError(f"image is {width}x{height}, more than max_image_pixels={max_pixels}")


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


def clip_action(action: np.ndarray, max_position: float, max_orientation: float, gripper: tuple[float, float]):
    clipped = np.asarray(action, dtype=np.float64).copy()
    clipped[:3] = np.clip(clipped[:3], -max_position, max_position)
    clipped[3:6] = np.clip(clipped[3:6], -max_orientation, max_orientation)
    clipped[6] = np.clip(clipped[6], *gripper)
    return clipped
