"""A policy node ticking faster than it can infer (every skipped period counted) and reading compressed
images (sensor_msgs/CompressedImage on <camera_topic>/compressed), over real DDS."""

import io

import numpy as np
import pytest
from PIL import Image as PILImage
from sensor_msgs.msg import CompressedImage
from std_msgs.msg import String

from kv_efficient_vla_ros.core.synthetic import synthetic_frames
from kv_efficient_vla_ros.ros.interfaces import CAMERA_QOS
from rosutil import Probe, start, stop, write_params

NAMESPACE = "/fast_compressed"
CONTROL_HZ = 25.0  # a 40 ms period: every tick of the tiny model (50-100 ms here) overruns
INPUTS = f"{NAMESPACE}/policy_node: inputs"
FRAMES = synthetic_frames(6, seed=9)


def _compressed(frame: np.ndarray, kind: str) -> CompressedImage:
    buffer = io.BytesIO()
    PILImage.fromarray(frame).save(buffer, format=kind)
    return CompressedImage(format=f"rgb8; {kind.lower()} compressed bgr8", data=buffer.getvalue())


class CompressedProbe(Probe):
    def __init__(self, namespace: str):
        super().__init__(namespace)
        self.compressed_pub = self.create_publisher(CompressedImage, "camera/image_raw/compressed", CAMERA_QOS)

    def send_image(self, image, restamp: bool = True):
        image.header.stamp = self.get_clock().now().to_msg()
        self.compressed_pub.publish(image)
        self.sent_stamps.add((image.header.stamp.sec, image.header.stamp.nanosec))
        return image


@pytest.fixture(scope="module")
def node(ros, tiny_checkpoint, tmp_path_factory):
    params = write_params(
        tmp_path_factory.mktemp("params") / "policy.yaml",
        {
            "checkpoint": str(tiny_checkpoint),
            "unnorm_key": "sim_panda_lift",
            "control_hz": CONTROL_HZ,
            "stale_image_timeout_s": 0.5,
            "camera_transport": "compressed",
            "status_hz": 4.0,
            "cache": {"strategy": "window", "budget_tokens": 512, "recent_chunks": 1},
        },
    )
    children = start(["policy_node"], params, NAMESPACE)
    probe = CompressedProbe(NAMESPACE)
    try:
        assert probe.wait_for(lambda: INPUTS in probe.statuses, timeout=120), "the policy node did not come up"
        probe.instruction_pub.publish(String(data="lift the red cube"))
        yield probe, children
    finally:
        probe.destroy_node()
        assert stop(children) == {"policy_node": 0}


def _counters(probe) -> dict[str, int]:
    return {k: int(v) for k, v in probe.status_values(INPUTS).items() if k != "instruction"}


def test_jpeg_and_png_frames_drive_the_policy(node):
    probe, _ = node
    frames = [_compressed(f, "JPEG" if i % 2 else "PNG") for i, f in enumerate(FRAMES)]
    assert probe.wait_for(lambda: len(probe.actions) >= 3, timeout=60, images=frames)
    probe.spin(2.0, frames)
    assert all((a.header.stamp.sec, a.header.stamp.nanosec) in probe.sent_stamps for _, a in probe.actions)
    assert _counters(probe)["bad_image"] == 0


def test_bad_compressed_data_is_refused_and_counted(node):
    probe, children = node
    probe.spin(0.5)
    refused = _counters(probe)["bad_image"]
    bad = [CompressedImage(format="jpeg", data=b"\xff\xd8 not a jpeg"), CompressedImage(format="png", data=b"")]
    assert probe.wait_for(lambda: _counters(probe)["bad_image"] >= refused + 2, timeout=10, images=bad)
    assert children["policy_node"].poll() is None
    n = len(probe.actions)
    good = [_compressed(FRAMES[0], "PNG")]
    assert probe.wait_for(lambda: len(probe.actions) > n, timeout=10, images=good)  # and it goes on


def test_every_skipped_control_period_is_counted(node):
    """At 25 Hz with ticks longer than 40 ms, the periods with a tick (any outcome) plus the skipped ones
    add up to the time elapsed. The old count saw nearly none: the late timer fires right away."""
    probe, _ = node
    frames = [_compressed(f, "PNG") for f in FRAMES]
    probe.spin(1.0, frames)
    samples = []
    for _ in range(2):
        probe.spin(3.0, frames)
        when, _ = probe.statuses[INPUTS]
        samples.append((when, _counters(probe)))
    (t0, c0), (t1, c1) = samples
    outcomes = ("ticks", "repeated_image", "bad_image", "stale_image", "no_instruction", "no_policy", "overruns")
    counted = sum(c1[k] - c0[k] for k in outcomes)  # each timer call counts one outcome; overruns the rest
    ticks, overruns = c1["ticks"] - c0["ticks"], c1["overruns"] - c0["overruns"]
    assert ticks > 0 and overruns >= ticks, (ticks, overruns)
    assert counted == pytest.approx((t1 - t0) * CONTROL_HZ, rel=0.25), (counted, t1 - t0)
