"""Running a node until SIGINT/SIGTERM, then tearing it down cleanly."""

from __future__ import annotations

import rclpy
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor, SingleThreadedExecutor
from rclpy.node import Node


def spin_node(node: Node, threads: int = 3) -> None:
    executor = MultiThreadedExecutor(num_threads=threads) if threads > 1 else SingleThreadedExecutor()
    executor.add_node(node)
    try:
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        executor.shutdown(timeout_sec=2.0)
        # After a signal the context is already shut down and took the node's handles with it;
        # destroying the node again can hang in the middleware while peers shut down too.
        if node.context.ok():
            node.destroy_node()
        rclpy.try_shutdown()
