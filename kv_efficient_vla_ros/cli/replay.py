"""``kv-vla-replay``: play a rosbag2 bag into the running nodes at its recorded timing."""

from __future__ import annotations

import argparse

import rclpy
from rclpy.node import Node

from ..ros.bags import replay


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="kv-vla-replay",
        description="Replay a rosbag2 bag (sqlite3 or MCAP) into the running nodes at its recorded timing.",
    )
    parser.add_argument("bag", help="bag directory")
    parser.add_argument("--rate", type=float, default=1.0, help="playback speed factor")
    parser.add_argument("--topics", nargs="*", help="only these topics (default: all)")
    parser.add_argument("--loop", type=int, default=1, help="play this many times")
    parser.add_argument(
        "--wait-for-subscribers",
        type=float,
        default=10.0,
        metavar="S",
        help="wait up to S seconds for a subscriber on every topic before playing (frames sent earlier are lost)",
    )
    args, ros_args = parser.parse_known_args(argv)
    rclpy.init(args=ros_args)
    node = Node("bag_replay")
    try:
        for _ in range(args.loop):
            n = replay(node, args.bag, args.rate, args.topics, args.wait_for_subscribers)
            node.get_logger().info(f"replayed {n} messages from {args.bag}")
    except KeyboardInterrupt:
        pass
    finally:
        node.destroy_node()
        rclpy.try_shutdown()


if __name__ == "__main__":
    main()
