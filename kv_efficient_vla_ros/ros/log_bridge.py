"""Python logging -> a node's ROS logger.

The core logs through Python's ``logging`` (it must not import rclpy). Without a bridge its warnings, such
as the runner's "cache positions reached ... past max_position_embeddings", went to stderr only, never
through the node's logger (its format, ``/rosout``, log files).
"""

from __future__ import annotations

import logging

CORE_LOGGER = "kv_efficient_vla_ros.core"


class RosLogHandler(logging.Handler):
    def __init__(self, ros_logger):
        super().__init__()
        self.ros_logger = ros_logger

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = self.format(record)
            if record.levelno >= logging.ERROR:
                self.ros_logger.error(text)
            elif record.levelno >= logging.WARNING:
                self.ros_logger.warning(text)
            elif record.levelno >= logging.INFO:
                self.ros_logger.info(text)
            else:
                self.ros_logger.debug(text)
        except Exception:  # logging must never take a callback down
            self.handleError(record)


def bridge_core_logging(ros_logger) -> RosLogHandler:
    """Send the core's log records (INFO and up) to ``ros_logger`` instead of Python's default stderr output."""
    handler = RosLogHandler(ros_logger)
    core = logging.getLogger(CORE_LOGGER)
    for old in [h for h in core.handlers if isinstance(h, RosLogHandler)]:
        core.removeHandler(old)  # one node per process in practice; in tests, the newest node's logger wins
    core.addHandler(handler)
    core.setLevel(logging.INFO)
    core.propagate = False  # once through the node's logger, not twice
    return handler
