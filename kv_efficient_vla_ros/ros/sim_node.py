"""The sim bridge: a MuJoCo Panda (robosuite, OSC_POSE) that the policy drives over ROS topics.

A step applies an action (mapped to the controller's input) or holds still (zero deltas, the last
gripper command), renders the camera upright and publishes the observation: image, joint states, task
success. The instruction is published transient-local at every reset.

Two paces. Lockstep (default): one step per action that answers the newest observation (the policy
stamps an action with its image's stamp), so every observation gets exactly one action and the episode
is the same as in-process, whatever the machine's load; actions answering an older observation are
counted and ignored. An observation nobody answers is re-published every ``REPUBLISH_S`` with a new
stamp: the policy answers a stamp only once, so an answer lost on the way (the first action, published
before DDS matched the sim's subscription, was lost once: both nodes then waited for ever) must not
leave the same stamp standing. An answer to any stamp of the current observation steps the sim.
Real time: a step every 1 / ``control_hz`` s with the newest fresh action, or holding still without one.
"""

from __future__ import annotations

import time
from collections import Counter

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from rclpy.node import Node
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import Bool, String
from std_srvs.srv import Trigger

from ..core.sim.action_mapping import ActionMapping
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
from .spin import run_node

# Lockstep: how long the sim waits for an answer before re-publishing the observation under a new stamp
# (a policy that starts late, a frame or an action lost on the way); longer than a slow tick, so a policy
# that is merely slow never sees the same state twice.
REPUBLISH_S = 2.0


class SimNode(Node):
    def __init__(self, **kwargs):
        super().__init__("sim_node", **kwargs)
        self.cfg: SimNodeConfig = declare(self, SimNodeConfig)
        self.mapping: ActionMapping = declare(self, ActionMapping, prefix="action_mapping.")
        from ..core.sim.tasks import PandaTask  # here: MuJoCo and robosuite take seconds, signals must not wait

        self.sim = PandaTask(self.cfg.task, self.cfg.seed, self.cfg.image_size, self.cfg.control_hz, self.cfg.horizon)
        self.counters: Counter[str] = Counter()
        self._action: tuple[EndEffectorAction, float] | None = None
        self._gripper = -1.0  # robosuite: open
        self._observation: tuple[Image, JointState, Bool] | None = None  # the last published
        self._observation_stamps: set[tuple[int, int]] = set()  # every stamp the current state went out under
        self._published_at = 0.0
        self.image_pub = self.create_publisher(Image, self.cfg.camera_topic, CAMERA_QOS)
        self.instruction_pub = self.create_publisher(String, self.cfg.instruction_topic, INSTRUCTION_QOS)
        self.joint_pub = self.create_publisher(JointState, self.cfg.joint_states_topic, OUTPUT_QOS)
        self.success_pub = self.create_publisher(Bool, self.cfg.success_topic, OUTPUT_QOS)
        self.diag_pub = self.create_publisher(DiagnosticArray, DIAGNOSTICS, DIAGNOSTICS_QOS)
        self.create_subscription(EndEffectorAction, self.cfg.action_topic, self._on_action, OUTPUT_QOS)
        self.create_service(Trigger, "~/reset", self._on_reset)
        if self.cfg.lockstep:
            self.create_timer(REPUBLISH_S / 4, self._republish)
        else:
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
        if not self.cfg.lockstep:
            self._action = (msg, time.monotonic())
            return
        # Lockstep: nothing moves until an action answers what the sim shows, so the episode's clock starts
        # with the first action, and an action that answers an older frame would act on what is gone.
        if (msg.header.stamp.sec, msg.header.stamp.nanosec) not in self._observation_stamps:
            self.counters["stale_actions"] += 1
            return
        if not self.done:
            self._step(msg)

    def _republish(self) -> None:
        if self.done or time.monotonic() - self._published_at < REPUBLISH_S:
            return
        image, joints, success = self._observation
        image.header.stamp = joints.header.stamp = self._new_stamp()
        self.counters["republished"] += 1
        self._publish(image, joints, success)

    def _new_stamp(self):
        stamp = self.get_clock().now().to_msg()
        self._observation_stamps.add((stamp.sec, stamp.nanosec))
        return stamp

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
        action = self._action[0] if fresh else None
        self._action = None  # each action is applied once
        self._step(action)

    def _step(self, action: EndEffectorAction | None) -> None:
        """One simulation step with ``action``, or holding still; then the new observation."""
        controller = np.zeros(7)
        controller[6] = self._gripper
        if action is not None:
            controller = self.mapping.to_controller(action_vector(action))
            self._gripper = controller[6]
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
        """Render and publish the current state with a fresh stamp (the one an action must answer)."""
        self._observation_stamps.clear()
        stamp = self._new_stamp()
        image = rgb_to_image(self.sim.render())
        image.header.stamp, image.header.frame_id = stamp, self.cfg.frame_id
        state = self.sim.state()
        joints = JointState(name=self.sim.joint_names, position=[float(q) for q in state.joint_pos])
        joints.header.stamp = stamp
        self._observation = (image, joints, Bool(data=self.sim.success()))
        self._publish(*self._observation)

    def _publish(self, image: Image, joints: JointState, success: Bool) -> None:
        self.image_pub.publish(image)
        self.joint_pub.publish(joints)
        self.success_pub.publish(success)
        self._published_at = time.monotonic()

    def _publish_status(self) -> None:
        status = DiagnosticStatus(
            name=status_name(self.get_fully_qualified_name(), EPISODE_TASK), hardware_id=self.get_fully_qualified_name()
        )
        status.level = DiagnosticStatus.OK
        status.message = f"{self.cfg.task} seed {self.seed}: " + (
            ("success" if self.succeeded else "failure") if self.done else f"step {self.sim.timestep}"
        )
        keys = ("steps", "actions_applied", "held_steps", "stale_actions", "republished")
        keys += ("success", "failure", "resets")
        status.values = key_values(
            **{k: self.counters[k] for k in keys},
            timestep=self.sim.timestep,
            done=self.done,
            succeeded=self.succeeded,
            lockstep=self.cfg.lockstep,
        )
        self.diag_pub.publish(diagnostic_array(self.get_clock().now().to_msg(), status))


def main(args: list[str] | None = None) -> None:
    run_node(SimNode, args, threads=1)


if __name__ == "__main__":
    main()
