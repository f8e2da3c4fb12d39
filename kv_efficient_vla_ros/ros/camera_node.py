"""A synthetic camera: publishes the core's synthetic frames and the task instruction.

Stands in for a real camera or the simulator when only the nodes are to be exercised.
"""

from __future__ import annotations

from rclpy.node import Node
from sensor_msgs.msg import Image
from std_msgs.msg import String

from ..core.synthetic import synthetic_frames
from .interfaces import CAMERA_QOS, INSTRUCTION_QOS, rgb_to_image
from .params import CameraConfig, declare
from .spin import run_node


class SyntheticCameraNode(Node):
    def __init__(self, **kwargs):
        super().__init__("synthetic_camera", **kwargs)
        self.cfg: CameraConfig = declare(self, CameraConfig)
        self.frames = [
            rgb_to_image(f, self.cfg.encoding) for f in synthetic_frames(self.cfg.episode_frames, seed=self.cfg.seed)
        ]
        self.index = 0
        self.image_pub = self.create_publisher(Image, self.cfg.camera_topic, CAMERA_QOS)
        self.instruction_pub = self.create_publisher(String, self.cfg.instruction_topic, INSTRUCTION_QOS)
        self.instruction_pub.publish(String(data=self.cfg.instruction))
        self.create_timer(1.0 / self.cfg.rate_hz, self._publish)

    def _publish(self) -> None:
        msg = self.frames[self.index % len(self.frames)]
        msg.header.stamp = self.get_clock().now().to_msg()
        msg.header.frame_id = self.cfg.frame_id
        self.image_pub.publish(msg)
        self.index += 1


def main(args: list[str] | None = None) -> None:
    run_node(SyntheticCameraNode, args, threads=1)


if __name__ == "__main__":
    main()
