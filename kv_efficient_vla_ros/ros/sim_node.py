"""The sim bridge: a MuJoCo Panda (robosuite, OSC_POSE) that the policy drives over ROS topics.

Each tick at ``control_hz``: apply the newest fresh action (mapped to the controller's input), or hold
still when none came (zero deltas, the last gripper command); step; render the camera upright; publish
the image, joint states and task success. The instruction is published transient-local at every reset.
"""

from __future__ import annotations

import time
from collections import Counter

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from rclpy.node import Node
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import Bool, String
from std_srvs.srv import Trigger

from ..core.sim.action_mapping import ActionMapping
from ..core.sim.tasks import PandaTask
from ..msg import EndEffectorAction
from .interfaces import (
    CAMERA_QOS,
    DIAGNOSTICS,
    DIAGNOSTICS_QOS,
    EPISODE_TASK,
    INSTRUCTION_QOS,
    OUTPUT_QOS,
    action_vector,
    diagnostic_array,
    key_values,
    rgb_to_image,
    status_name,
)
from .params import SimNodeConfig, declare
from .spin import spin_node


class SimNode(Node):
    def __init__(self, **kwargs):
        super().__init__("sim_node", **kwargs)
        self.cfg: SimNodeConfig = declare(self, SimNodeConfig)
        self.mapping: ActionMapping = declare(self, ActionMapping, prefix="action_mapping.")
        self.sim = PandaTask(self.cfg.task, self.cfg.seed, self.cfg.image_size, self.cfg.control_hz, self.cfg.horizon)
        self.counters: Counter[str] = Counter()
        self._action: tuple[EndEffectorAction, float] | None = None
        self._gripper = -1.0  # robosuite: open
        self.image_pub = self.create_publisher(Image, self.cfg.camera_topic, CAMERA_QOS)
        self.instruction_pub = self.create_publisher(String, self.cfg.instruction_topic, INSTRUCTION_QOS)
        self.joint_pub = self.create_publisher(JointState, self.cfg.joint_states_topic, OUTPUT_QOS)
        self.success_pub = self.create_publisher(Bool, self.cfg.success_topic, OUTPUT_QOS)
        self.diag_pub = self.create_publisher(DiagnosticArray, DIAGNOSTICS, DIAGNOSTICS_QOS)
        self.create_subscription(EndEffectorAction, self.cfg.action_topic, self._on_action, OUTPUT_QOS)
        self.create_service(Trigger, "~/reset", self._on_reset)
        self.create_timer(1.0 / self.cfg.control_hz, self._tick)
        self.create_timer(1.0, self._publish_status)
        self._start_episode(self.cfg.seed)

    def _start_episode(self, seed: int) -> None:
        self.seed = seed
        self.sim.reset(seed)
        self._action, self._gripper, self.done, self.succeeded = None, -1.0, False, False
        self.instruction_pub.publish(String(data=self.sim.instruction))
        self.get_logger().info(f"episode seed {seed}: {self.cfg.task} ({self.sim.instruction!r})")
        self._publish_observation()

    def _on_action(self, msg: EndEffectorAction) -> None:
        self._action = (msg, time.monotonic())

    def _on_reset(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        self._start_episode(self.seed + 1)
        self.counters["resets"] += 1
        response.success, response.message = True, f"new episode, seed {self.seed}"
        return response

    def _tick(self) -> None:
        fresh = self._action is not None and time.monotonic() - self._action[1] <= self.cfg.action_timeout_s
        # The episode's clock starts with the first action: a policy still loading must not miss the start
        # (or a mid-episode cue) while the arm holds still.
        waiting = self.sim.timestep == 0 and not fresh
        if self.done or waiting:
            self._publish_observation()  # keep the camera alive; the arm stays where it is
            return
        controller = np.zeros(7)
        controller[6] = self._gripper
        if fresh:
            controller = self.mapping.to_controller(action_vector(self._action[0]))
            self._gripper = controller[6]
            self._action = None  # each action is applied once
            self.counters["actions_applied"] += 1
        else:
            self.counters["held_steps"] += 1
        self.sim.step(controller)
        self.counters["steps"] += 1
        self.succeeded = self.succeeded or self.sim.success()
        if self.sim.decided() or self.sim.timestep >= self.cfg.horizon:
            self.done = True
            outcome = "success" if self.succeeded else "failure"
            self.counters[outcome] += 1
            self.get_logger().info(f"episode seed {self.seed}: {outcome} after {self.sim.timestep} steps")
        self._publish_observation()

    def _publish_observation(self) -> None:
        stamp = self.get_clock().now().to_msg()
        image = rgb_to_image(self.sim.render())
        image.header.stamp, image.header.frame_id = stamp, self.cfg.frame_id
        self.image_pub.publish(image)
        state = self.sim.state()
        joints = JointState(name=self.sim.joint_names, position=[float(q) for q in state.joint_pos])
        joints.header.stamp = stamp
        self.joint_pub.publish(joints)
        self.success_pub.publish(Bool(data=self.sim.success()))

    def _publish_status(self) -> None:
        status = DiagnosticStatus(
            name=status_name(self.get_name(), EPISODE_TASK), hardware_id=self.get_fully_qualified_name()
        )
        status.level = DiagnosticStatus.OK
        status.message = f"{self.cfg.task} seed {self.seed}: " + (
            ("success" if self.succeeded else "failure") if self.done else f"step {self.sim.timestep}"
        )
        keys = ("steps", "actions_applied", "held_steps", "success", "failure", "resets")
        status.values = key_values(
            **{k: self.counters[k] for k in keys}, timestep=self.sim.timestep, done=self.done, succeeded=self.succeeded
        )
        self.diag_pub.publish(diagnostic_array(self.get_clock().now().to_msg(), status))


def main(args: list[str] | None = None) -> None:
    rclpy.init(args=args)
    spin_node(SimNode(), threads=1)


if __name__ == "__main__":
    main()
