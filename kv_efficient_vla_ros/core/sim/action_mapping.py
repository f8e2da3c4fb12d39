"""The policy's 7-D action <-> robosuite's OSC_POSE controller input.

Policy (OpenVLA convention, after un-normalization): ``[dx, dy, dz]`` meters and ``[droll, dpitch, dyaw]``
radians per control step, then the gripper with +1 = open, -1 = close. Controller: each delta in
[-1, 1], scaled by the controller to at most ``max_position_m`` / ``max_rotation_rad`` per step (robosuite's
OSC_POSE defaults: 0.05 m, 0.5 rad), and the gripper with -1 = open, +1 = close.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..options import option


@dataclass
class ActionMapping:
    max_position_m: float = option(0.05, "controller output for a +-1 position input, meters per step")
    max_rotation_rad: float = option(0.5, "controller output for a +-1 rotation input, radians per step")
    binarize_gripper: bool = option(True, "send the gripper as fully open or closed (sign of the policy's value)")

    def to_controller(self, action: np.ndarray) -> np.ndarray:
        action = np.asarray(action, dtype=np.float64)
        out = np.empty(7)
        out[:3] = np.clip(action[:3] / self.max_position_m, -1.0, 1.0)
        out[3:6] = np.clip(action[3:6] / self.max_rotation_rad, -1.0, 1.0)
        gripper = np.sign(action[6]) if self.binarize_gripper else np.clip(action[6], -1.0, 1.0)
        out[6] = -gripper  # policy +1 = open; robosuite -1 = open
        return out

    def to_policy(self, controller: np.ndarray) -> np.ndarray:
        controller = np.asarray(controller, dtype=np.float64)
        return np.concatenate(
            [controller[:3] * self.max_position_m, controller[3:6] * self.max_rotation_rad, [-controller[6]]]
        )
