"""Recording, writing and replaying rosbag2 bags with ``rosbags`` (``ros2 bag`` is not available everywhere).

Recorded and replayed messages travel as their raw CDR bytes both ways: a raw subscription hands them to
the writer, and a publisher accepts the bytes read back, so no message is converted by hand. Recorded
sim episodes are written as bags of this package's messages (:func:`write_episode_bag`).
"""

from __future__ import annotations

import importlib
import time
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING

from rclpy.node import Node
from rclpy.qos import QoSProfile
from rclpy.serialization import serialize_message
from rosbags.highlevel import AnyReader
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys import Stores, get_types_from_msg, get_typestore
from std_msgs.msg import Bool, Header, String

from .interfaces import (
    CAMERA,
    CAMERA_QOS,
    INSTRUCTION,
    INSTRUCTION_QOS,
    OUTPUT_QOS,
    TASK_SUCCESS,
    action_message,
    rgb_to_image,
)

if TYPE_CHECKING:
    from ..core.sim.episodes import Episode

STORAGES = {"sqlite3": StoragePlugin.SQLITE3, "mcap": StoragePlugin.MCAP}


def message_class(msgtype: str) -> type:
    """``'sensor_msgs/msg/Image'`` -> the rclpy message class."""
    package, _, name = msgtype.split("/")
    return getattr(importlib.import_module(f"{package}.msg"), name)


def qos_for(msgtype: str) -> QoSProfile:
    if msgtype in ("sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage"):
        return CAMERA_QOS
    if msgtype == "std_msgs/msg/String":
        return INSTRUCTION_QOS
    return OUTPUT_QOS


class BagRecorder:
    """Records the given topics (name -> message type string) as they arrive on ``node``."""

    def __init__(self, node: Node, path: str | Path, topics: dict[str, str], storage: str = "sqlite3"):
        self.writer = Writer(Path(path), version=9, storage_plugin=STORAGES[storage])
        self.writer.open()
        typestore = get_typestore(Stores.ROS2_KILTED)
        self.topic_counts: Counter[str] = Counter()
        self.subscriptions = []
        for topic, msgtype in topics.items():
            connection = self.writer.add_connection(topic, msgtype, typestore=typestore)
            self.subscriptions.append(
                node.create_subscription(
                    message_class(msgtype), topic, self._writer_for(topic, connection), qos_for(msgtype), raw=True
                )
            )
        self.node = node

    @property
    def count(self) -> int:
        return sum(self.topic_counts.values())

    def _writer_for(self, topic: str, connection):
        def write(raw: bytes) -> None:
            self.writer.write(connection, time.time_ns(), raw)
            self.topic_counts[topic] += 1

        return write

    def close(self) -> None:
        for subscription in self.subscriptions:
            self.node.destroy_subscription(subscription)
        self.writer.close()


# After every publisher sees a subscriber, the subscribers may not have matched the publishers yet.
MATCH_SETTLE_S = 0.3


def replay(
    node: Node,
    path: str | Path,
    rate: float = 1.0,
    topics: list[str] | None = None,
    wait_for_subscribers_s: float = 10.0,
) -> int:
    """Publish the bag's messages at their recorded spacing (scaled by ``rate``); returns the count.

    Waits (up to ``wait_for_subscribers_s``) until each topic has a subscriber: a new process's discovery
    took over 0.5 s on a loaded machine, and camera frames published before it completes are lost."""
    with AnyReader([Path(path)]) as reader:
        connections = [c for c in reader.connections if topics is None or c.topic in topics]
        publishers = {
            c.topic: node.create_publisher(message_class(c.msgtype), c.topic, qos_for(c.msgtype)) for c in connections
        }
        deadline = time.monotonic() + wait_for_subscribers_s
        while time.monotonic() < deadline and any(p.get_subscription_count() == 0 for p in publishers.values()):
            time.sleep(0.05)
        unheard = sorted(topic for topic, p in publishers.items() if p.get_subscription_count() == 0)
        if unheard:
            node.get_logger().warning(f"no subscriber after {wait_for_subscribers_s:g} s on {unheard}: playing anyway")
        time.sleep(MATCH_SETTLE_S)
        start_wall, start_bag, count = time.monotonic(), None, 0
        for connection, timestamp, raw in reader.messages(connections=connections):
            start_bag = timestamp if start_bag is None else start_bag
            delay = (timestamp - start_bag) / 1e9 / rate - (time.monotonic() - start_wall)
            if delay > 0:
                time.sleep(delay)
            publishers[connection.topic].publish(bytes(raw))
            count += 1
    return count


MSG_DIRS = (Path(__file__).resolve().parents[2] / "msg",)


def typestore_with_package_messages():
    """Kilted's standard types plus this package's messages, read from their .msg definitions."""
    typestore = get_typestore(Stores.ROS2_KILTED)
    for directory in MSG_DIRS:
        for path in sorted(directory.glob("*.msg")):
            typestore.register(get_types_from_msg(path.read_text(), f"kv_efficient_vla_ros/msg/{path.stem}"))
    return typestore


def write_episode_bag(episode: Episode, path: Path, control_hz: float, storage: str = "mcap") -> Path:
    """A recorded sim episode as a bag: camera, instruction, the expert's actions, the outcome."""
    typestore = typestore_with_package_messages()
    period_ns = int(1e9 / control_hz)
    with Writer(path, version=9, storage_plugin=STORAGES[storage]) as writer:
        add = lambda topic, msgtype: writer.add_connection(topic, msgtype, typestore=typestore)  # noqa: E731
        camera = add(f"/{CAMERA}", "sensor_msgs/msg/Image")
        instruction = add(f"/{INSTRUCTION}", "std_msgs/msg/String")
        action = add("/expert/action", "kv_efficient_vla_ros/msg/EndEffectorAction")
        success = add(f"/{TASK_SUCCESS}", "std_msgs/msg/Bool")
        writer.write(instruction, 0, serialize_message(String(data=episode.instruction)))
        for t, (frame, act) in enumerate(zip(episode.frames, episode.actions, strict=True)):
            stamp = t * period_ns
            image = rgb_to_image(frame)
            image.header.stamp.sec, image.header.stamp.nanosec = divmod(stamp, 10**9)
            image.header.frame_id = "agentview"
            writer.write(camera, stamp, serialize_message(image))
            msg = action_message(act, Header(stamp=image.header.stamp), t)
            writer.write(action, stamp + 1, serialize_message(msg))
        writer.write(success, len(episode.actions) * period_ns, serialize_message(Bool(data=episode.success)))
    return path
