"""Running a node until SIGINT/SIGTERM, then tearing it down cleanly."""

from __future__ import annotations

import threading

import rclpy
from rclpy._rclpy_pybind11 import RCLError
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor, SingleThreadedExecutor
from rclpy.node import Node


def spin_node(node: Node, threads: int = 3) -> None:
    executor = MultiThreadedExecutor(num_threads=threads) if threads > 1 else SingleThreadedExecutor()
    executor.add_node(node)
    try:
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except RCLError:
        # a signal can shut the context down between two waits: rclpy then fails to build its wait set
        if node.context.ok():
            raise
    finally:
        executor.shutdown(timeout_sec=2.0)
        # Destroy the node's handles before the interpreter finalizes them in arbitrary order (which
        # crashed a node once); bounded, because destroying can hang in the middleware while peers
        # shut down at the same moment.
        destroyer = threading.Thread(target=node.destroy_node, daemon=True)
        destroyer.start()
        destroyer.join(timeout=3.0)
        rclpy.try_shutdown()
