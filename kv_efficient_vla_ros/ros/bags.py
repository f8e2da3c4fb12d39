"""Recording and replaying rosbag2 bags with ``rosbags`` (``ros2 bag`` is not available everywhere).

Messages travel as their raw CDR bytes both ways: a raw subscription hands them to the writer, and a
publisher accepts the bytes read back, so no message is converted by hand.
"""

from __future__ import annotations

import argparse
import importlib
import time
from pathlib import Path

import rclpy
from rclpy.node import Node
from rclpy.qos import QoSProfile
from rosbags.highlevel import AnyReader
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys import Stores, get_typestore

from .interfaces import CAMERA_QOS, INSTRUCTION_QOS, OUTPUT_QOS

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
        self.count = 0
        self.subscriptions = []
        for topic, msgtype in topics.items():
            connection = self.writer.add_connection(topic, msgtype, typestore=typestore)
            self.subscriptions.append(
                node.create_subscription(
                    message_class(msgtype), topic, self._writer_for(connection), qos_for(msgtype), raw=True
                )
            )
        self.node = node

    def _writer_for(self, connection):
        def write(raw: bytes) -> None:
            self.writer.write(connection, time.time_ns(), raw)
            self.count += 1

        return write

    def close(self) -> None:
        for subscription in self.subscriptions:
            self.node.destroy_subscription(subscription)
        self.writer.close()


def replay(node: Node, path: str | Path, rate: float = 1.0, topics: list[str] | None = None) -> int:
    """Publish the bag's messages at their recorded spacing (scaled by ``rate``); returns the count."""
    with AnyReader([Path(path)]) as reader:
        connections = [c for c in reader.connections if topics is None or c.topic in topics]
        publishers = {
            c.topic: node.create_publisher(message_class(c.msgtype), c.topic, qos_for(c.msgtype)) for c in connections
        }
        time.sleep(0.5)  # discovery: messages published before it completes are lost
        start_wall, start_bag, count = time.monotonic(), None, 0
        for connection, timestamp, raw in reader.messages(connections=connections):
            start_bag = timestamp if start_bag is None else start_bag
            delay = (timestamp - start_bag) / 1e9 / rate - (time.monotonic() - start_wall)
            if delay > 0:
                time.sleep(delay)
            publishers[connection.topic].publish(bytes(raw))
            count += 1
    return count


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="kv-vla-replay",
        description="Replay a rosbag2 bag (sqlite3 or MCAP) into the running nodes at its recorded timing.",
    )
    parser.add_argument("bag", help="bag directory")
    parser.add_argument("--rate", type=float, default=1.0, help="playback speed factor")
    parser.add_argument("--topics", nargs="*", help="only these topics (default: all)")
    parser.add_argument("--loop", type=int, default=1, help="play this many times")
    args, ros_args = parser.parse_known_args(argv)
    rclpy.init(args=ros_args)
    node = Node("bag_replay")
    try:
        for _ in range(args.loop):
            n = replay(node, args.bag, args.rate, args.topics)
            node.get_logger().info(f"replayed {n} messages from {args.bag}")
    except KeyboardInterrupt:
        pass
    finally:
        node.destroy_node()
        rclpy.try_shutdown()


if __name__ == "__main__":
    main()
