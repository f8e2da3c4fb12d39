"""The twist stream for MoveIt Servo: the latest command, re-published between control ticks.

Servo halts on a command older than its ``incoming_command_timeout`` (~0.1 s), while the policy decides
at ``control_hz`` (5 Hz: every gap 0.2 s). So the latest twist is re-published at ``servo_rate_hz`` with
fresh stamps until the next tick replaces it, or until ``servo_hold_timeout_s`` has passed: then a zero
twist, because the twist is the policy's delta spread over one control period, and holding it longer
moves the arm further than the policy asked.
"""

from __future__ import annotations

import threading
import time

from geometry_msgs.msg import Twist, TwistStamped
from rclpy._rclpy_pybind11 import RCLError
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.node import Node
from std_msgs.msg import Header

# moveit_msgs/srv/ServoCommandType: command_type 1 = TWIST
SERVO_TWIST = 1


class TwistStream:
    def __init__(self, node: Node, topic: str, qos, frame_id: str, rate_hz: float, hold_timeout_s: float):
        self.node = node
        self.frame_id = frame_id
        self.hold_timeout_s = hold_timeout_s
        self.publisher = node.create_publisher(TwistStamped, topic, qos)
        self._lock = threading.Lock()
        self._latest: tuple[TwistStamped, float] | None = None
        self.group = MutuallyExclusiveCallbackGroup()
        if rate_hz > 0:
            node.create_timer(1.0 / rate_hz, self._republish, callback_group=self.group)

    def command(self, twist: TwistStamped) -> None:
        """A tick's command: published now, and held for the re-publishing."""
        with self._lock:
            self._latest = (twist, time.monotonic())
            self._send(twist.twist)

    def hold_still(self) -> None:
        """A zero twist now, and held (the tick decided not to move)."""
        self.command(TwistStamped())

    def _republish(self) -> None:
        with self._lock:
            held = self._latest is not None and time.monotonic() - self._latest[1] <= self.hold_timeout_s
            self._send(self._latest[0].twist if held else Twist())

    def _send(self, twist: Twist) -> None:
        """Stamped and published under the lock: stamps never go backwards between the two threads."""
        msg = TwistStamped(header=Header(stamp=self.node.get_clock().now().to_msg(), frame_id=self.frame_id))
        msg.twist = twist
        try:
            self.publisher.publish(msg)
        except RCLError:  # the context is shutting down (SIGINT/SIGTERM)
            pass


def switch_servo_to_twist(node: Node, service: str, callback_group) -> None:
    """Ask MoveIt Servo (``service``: its ``~/switch_command_type``) to take twist commands, once it is up.

    moveit_msgs is not on PyPI: without it the node says what to call instead."""
    if not service:
        return
    try:
        from moveit_msgs.srv import ServoCommandType
    except ImportError:
        node.get_logger().info(
            f"moveit_msgs is not installed, so {service} is not called: switch MoveIt Servo to twist commands "
            f"yourself (ros2 service call {service} moveit_msgs/srv/ServoCommandType '{{command_type: 1}}')"
        )
        return
    client = node.create_client(ServoCommandType, service, callback_group=callback_group)

    def done(future) -> None:
        result = future.result()
        if result is not None and result.success:
            node.get_logger().info(f"MoveIt Servo takes twist commands ({service})")
        else:
            node.get_logger().error(f"{service} refused the switch to twist commands")

    def try_call() -> None:
        if client.service_is_ready():
            timer.cancel()
            client.call_async(ServoCommandType.Request(command_type=SERVO_TWIST)).add_done_callback(done)

    timer = node.create_timer(1.0, try_call, callback_group=callback_group)
