"""Scripted experts that solve the tasks from simulator state (for demonstrations, not for the robot)."""

from __future__ import annotations

import numpy as np

from .tasks import CARRY_Y, CUE_Y, SimState

OPEN, CLOSE = -1.0, 1.0  # robosuite gripper commands


class ScriptedExpert:
    """Reach above the cube, descend, grasp, lift; for ``cued_lift`` then carry it to the cued side.

    Outputs controller inputs (OSC_POSE deltas in [-1, 1], gripper -1 open / +1 close). The cue side is
    read from the simulator at the start, as a demonstrator who saw the cue would remember it.
    """

    def __init__(self, max_position_m: float = 0.05, gain: float = 1.5):
        self.step_size = max_position_m
        self.gain = gain
        self.reset()

    def reset(self) -> None:
        self.phase = "reach"
        self.grasp_steps = 0
        self.finger_gap = np.inf
        self.cue_side = 0

    def _toward(self, eef: np.ndarray, target: np.ndarray, gripper: float) -> np.ndarray:
        delta = np.clip(self.gain * (target - eef) / self.step_size, -1.0, 1.0)
        return np.concatenate([delta, np.zeros(3), [gripper]])

    def act(self, s: SimState) -> np.ndarray:
        if self.cue_side == 0:
            self.cue_side = s.cue_side
        above = s.cube_pos + np.array([0.0, 0.0, 0.08])
        at = s.cube_pos + np.array([0.0, 0.0, 0.0])
        if self.phase == "reach":
            if np.linalg.norm(s.eef_pos - above) < 0.015:
                self.phase = "descend"
            return self._toward(s.eef_pos, above, OPEN)
        if self.phase == "descend":
            if np.linalg.norm(s.eef_pos - at) < 0.01:
                self.phase = "grasp"
            return self._toward(s.eef_pos, at, OPEN)
        if self.phase == "grasp":
            # the fingers close slowly: lift once they have stopped closing (on the cube)
            gap = float(s.gripper_qpos[0] - s.gripper_qpos[1])
            self.grasp_steps += 1
            if self.grasp_steps >= 12 or (self.grasp_steps >= 3 and self.finger_gap - gap < 5e-4):
                self.phase = "lift"
            self.finger_gap = gap
            return self._toward(s.eef_pos, at, CLOSE)
        lift_z = s.table_height + 0.15
        if self.phase == "lift":
            target = np.array([s.eef_pos[0], s.eef_pos[1], lift_z])
            if s.eef_pos[2] > lift_z - 0.02 and self.cue_side != 0:
                self.phase = "carry"
            return self._toward(s.eef_pos, target, CLOSE)
        target = np.array([s.eef_pos[0], self.cue_side * (CARRY_Y + 0.05), lift_z])
        return self._toward(s.eef_pos, target, CLOSE)


class DelayedCueExpert:
    """``delayed_cue``: touch the cube, climb back and up, come forward to the decision point, then go to
    the side the cue flashed on.

    Constant-speed moves between waypoints keep the phase readable from the arm's pose in the current
    frame, so that the only thing a policy must remember is the cue. The side is read from the simulator
    only at the decision point, as a demonstrator who watched the cue would remember it.
    """

    # offsets from the cube (x, y, z), then the decision point and the side target (absolute y, z above table)
    TOUCH_PATH = ((0.0, 0.0, 0.10), (0.0, 0.0, 0.035), (0.0, 0.0, 0.12), (-0.12, 0.0, 0.30))
    DECISION = (0.03, 0.30)  # x offset from the cube, height above the table
    SIDE_Y = CUE_Y + 0.05

    def __init__(self, max_position_m: float = 0.05, speed_m: float = 0.045, reached_m: float = 0.015):
        self.step_size, self.speed, self.reached = max_position_m, speed_m, reached_m
        self.reset()

    def reset(self) -> None:
        self.waypoint = 0
        self.decision_step: int | None = None
        self.steps = 0

    def _targets(self, s: SimState) -> list[np.ndarray]:
        cube = s.cube_pos
        path = [cube + np.array(offset) for offset in self.TOUCH_PATH]
        decision = np.array([cube[0] + self.DECISION[0], 0.0, s.table_height + self.DECISION[1]])
        side = np.array([decision[0], s.cue_side * self.SIDE_Y, decision[2]])
        return [*path, decision, side]

    def act(self, s: SimState) -> np.ndarray:
        targets = self._targets(s)
        while self.waypoint < len(targets) - 1 and np.linalg.norm(targets[self.waypoint] - s.eef_pos) < self.reached:
            self.waypoint += 1
        if self.waypoint == len(targets) - 1 and self.decision_step is None:
            self.decision_step = self.steps
        self.steps += 1
        offset = targets[self.waypoint] - s.eef_pos
        distance = float(np.linalg.norm(offset))
        move = offset * min(1.0, self.speed / distance) if distance > 0 else offset
        return np.concatenate([np.clip(move / self.step_size, -1.0, 1.0), np.zeros(3), [OPEN]])
