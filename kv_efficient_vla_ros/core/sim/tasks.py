"""Franka Panda tasks in MuJoCo through robosuite, with OSC_POSE end-effector delta control.

``lift``: lift the cube. ``cued_lift``: a green square lights up on the left or the right of the table
for the first ``cue_steps`` steps, then disappears; the cube must be lifted and carried to that side.
Success needs memory of a frame the policy saw long before, which is what the cache is for.
"""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from dataclasses import dataclass

import numpy as np

os.environ.setdefault("MUJOCO_GL", "egl")  # offscreen rendering on the CPU, no display needed
# robosuite JIT-compiles a few quaternion helpers with numba; numba's LLVM compiling in the same process
# as Mesa's llvmpipe (which JIT-compiles the renderer) made every later frame garbage (reproduced with a
# cold numba cache). The helpers are tiny: run them as plain Python.
os.environ.setdefault("NUMBA_DISABLE_JIT", "1")

import robosuite
from robosuite.controllers import load_composite_controller_config
from robosuite.environments.manipulation.lift import Lift

TASKS = ("lift", "cued_lift")
INSTRUCTIONS = {
    "lift": "lift the red cube",
    "cued_lift": "lift the red cube and carry it to the side where the green light was",
}
CUE_Y = 0.2  # table coordinates of the cue squares (left: +y)
CARRY_Y = 0.15  # how far to the side the cube must be carried


class CuedLift(Lift):
    """Lift with a cue square that is visible only at the start of the episode."""

    def __init__(self, *args, cue_steps: int = 4, **kwargs):
        self.cue_steps = cue_steps
        self.cue_side = 1
        super().__init__(*args, **kwargs)

    def _load_model(self) -> None:
        super()._load_model()
        height = self.table_offset[2] + 0.001
        for name, y in (("cue_left", CUE_Y), ("cue_right", -CUE_Y)):
            ET.SubElement(
                self.model.worldbody,
                "geom",
                name=name,
                type="box",
                size="0.05 0.05 0.001",
                pos=f"0.05 {y} {height}",
                rgba="0 1 0 0",
                contype="0",
                conaffinity="0",
                group="1",
            )

    def _reset_internal(self) -> None:
        super()._reset_internal()
        self.cue_side = 1 if self.rng.random() < 0.5 else -1
        self._show_cue(True)

    def _show_cue(self, visible: bool) -> None:
        for name, side in (("cue_left", 1), ("cue_right", -1)):
            geom = self.sim.model.geom_name2id(name)
            self.sim.model.geom_rgba[geom, 3] = 1.0 if visible and side == self.cue_side else 0.0

    def _post_action(self, action):
        reward, done, info = super()._post_action(action)
        if self.timestep >= self.cue_steps:
            self._show_cue(False)
        return reward, done, info

    def _check_success(self) -> bool:
        cube = self.sim.data.body_xpos[self.cube_body_id]
        carried = cube[1] * self.cue_side > CARRY_Y
        return bool(super()._check_success() and carried)


@dataclass
class SimState:
    eef_pos: np.ndarray
    cube_pos: np.ndarray
    gripper_qpos: np.ndarray
    joint_pos: np.ndarray
    table_height: float
    cue_side: int  # +1 left, -1 right, 0 when the task has no cue


class PandaTask:
    """One robosuite environment; images rendered only when asked for, upright."""

    def __init__(
        self,
        task: str = "lift",
        seed: int = 0,
        image_size: int = 224,
        control_hz: float = 5.0,
        horizon: int = 80,
        cue_steps: int = 4,
    ):
        if task not in TASKS:
            raise ValueError(f"task {task!r}: expected one of {TASKS}")
        self.task, self.image_size = task, image_size
        self.instruction = INSTRUCTIONS[task]
        config = load_composite_controller_config(controller="BASIC", robot="Panda")
        kwargs = dict(
            robots="Panda",
            controller_configs=config,
            has_renderer=False,
            has_offscreen_renderer=True,
            use_camera_obs=False,
            control_freq=control_hz,
            horizon=horizon,
            ignore_done=True,
            seed=seed,
            reward_shaping=False,
        )
        self.env = CuedLift(cue_steps=cue_steps, **kwargs) if task == "cued_lift" else robosuite.make("Lift", **kwargs)
        self.joint_names = list(self.env.robots[0].robot_joints)
        self.reset()

    def reset(self, seed: int | None = None) -> SimState:
        """A new episode; with ``seed``, the cube placement and the cue side are that seed's."""
        if seed is not None:
            # robosuite draws placements from the sampler's generator and the cue from the env's
            rng = np.random.default_rng(seed)
            self.env.rng = rng
            self.env.placement_initializer.rng = rng
        self.obs = self.env.reset()
        return self.state()

    def step(self, controller_action: np.ndarray) -> SimState:
        self.obs, _, _, _ = self.env.step(np.asarray(controller_action, dtype=np.float64))
        return self.state()

    def state(self) -> SimState:
        return SimState(
            eef_pos=np.array(self.obs["robot0_eef_pos"]),
            cube_pos=np.array(self.obs["cube_pos"]),
            gripper_qpos=np.array(self.obs["robot0_gripper_qpos"]),
            joint_pos=np.array(self.obs["robot0_joint_pos"]),
            table_height=float(self.env.table_offset[2]),
            cue_side=getattr(self.env, "cue_side", 0),
        )

    def render(self) -> np.ndarray:
        """``agentview`` as HxWx3 uint8, upright (MuJoCo's offscreen images come bottom row first)."""
        # robosuite's offscreen render does not make its GL context current: with two environments in one
        # process the other one's context would be drawn into (garbage pixels), so do it here.
        self.env.sim._render_context_offscreen.gl_ctx.make_current()
        image = self.env.sim.render(camera_name="agentview", width=self.image_size, height=self.image_size)
        return np.ascontiguousarray(image[::-1])

    def success(self) -> bool:
        return bool(self.env._check_success())

    @property
    def timestep(self) -> int:
        return int(self.env.timestep)

    def close(self) -> None:
        self.env.close()
