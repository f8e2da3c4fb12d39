"""Franka Panda tasks in MuJoCo through robosuite, with OSC_POSE end-effector delta control.

``lift``: lift the cube. ``cued_lift``: a green square lights up on the left or the right of the table
for the first ``cue_steps`` steps, then disappears; the cube must be lifted and carried to that side.
``delayed_cue``: the memory task. The arm touches the cube and climbs to a decision point (about 21
steps); meanwhile a green square flashes on one side for ``cue_duration`` steps at a seeded step in
the middle of that work; at the decision point the gripper must move to the side that flashed. The cue
is neither among the first frames (a sink) nor among the last few (a recent window) when it is needed.
Success needs memory of a frame the policy saw long before, which is what the cache is for.
"""

from __future__ import annotations

import logging
import os
import xml.etree.ElementTree as ET
from dataclasses import dataclass

import numpy as np

os.environ.setdefault("MUJOCO_GL", "egl")  # offscreen rendering on the CPU, no display needed
# robosuite JIT-compiles a few quaternion helpers with numba; numba's LLVM compiling in the same process
# as Mesa's llvmpipe (which JIT-compiles the renderer) made every later frame garbage (reproduced with a
# cold numba cache). The helpers are tiny: run them as plain Python.
os.environ.setdefault("NUMBA_DISABLE_JIT", "1")

import mujoco
import robosuite
from robosuite.controllers import load_composite_controller_config
from robosuite.environments.manipulation.lift import Lift

# robosuite warns at every reset that the Panda has no torso, head, base or legs to control
logging.getLogger("robosuite_logs").setLevel(logging.ERROR)

TASKS = ("lift", "cued_lift", "delayed_cue")
INSTRUCTIONS = {
    "lift": "lift the red cube",
    "cued_lift": "lift the red cube and carry it to the side where the green light was",
    "delayed_cue": "touch the red cube then move to the side where the green light flashed",
}
# delayed_cue is seen at 112 px (64 patches): its trained policy's input; the lift tasks at OpenVLA's 224
IMAGE_SIZES = {"lift": 224, "cued_lift": 224, "delayed_cue": 112}
CUE_Y = 0.2  # table coordinates of the cue squares (left: +y)
CARRY_Y = 0.15  # how far to the side the cube must be carried
COMMIT_Y = 0.10  # delayed_cue: the gripper past this |y| has chosen a side (success if it is the cued one)
# delayed_cue's camera: in front of the table, above it, looking back at the arm's whole work space
# (the default agentview sees the table but not the gripper once it climbs). Image right is +y (left).
WORKVIEW = {"name": "workview", "pos": "0.55 0 1.55", "xyaxes": "0 1 0 -1 0 1", "fovy": "55"}


def add_cue_squares(worldbody: ET.Element, table_z: float, x: float, y: float, half_side: float) -> None:
    """Two green squares lying on the table at (x, +-y), invisible (alpha 0) until a task lights one."""
    for name, side in (("cue_left", 1), ("cue_right", -1)):
        ET.SubElement(
            worldbody,
            "geom",
            name=name,
            type="box",
            size=f"{half_side} {half_side} 0.001",
            pos=f"{x} {side * y} {table_z + 0.001}",
            rgba="0 1 0 0",
            contype="0",
            conaffinity="0",
            group="1",
        )


class CuedLift(Lift):
    """Lift with a cue square that is visible only at the start of the episode."""

    def __init__(self, *args, cue_steps: int = 4, **kwargs):
        self.cue_steps = cue_steps
        self.cue_side = 1
        super().__init__(*args, **kwargs)

    def _load_model(self) -> None:
        super()._load_model()
        add_cue_squares(self.model.worldbody, self.table_offset[2], x=0.05, y=CUE_Y, half_side=0.05)

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


class DelayedCue(Lift):
    """Lift's table and cube; a cue flashes on one side for a few steps at a seeded step mid-episode.

    There is nothing to grasp: the expert touches the cube and climbs, which keeps the arm busy while the
    cue comes and goes. The episode is decided when the gripper first passes ``COMMIT_Y`` on either side.
    """

    def __init__(self, *args, cue_window: tuple[int, int] = (6, 14), cue_duration: int = 2, **kwargs):
        self.cue_window, self.cue_duration = cue_window, cue_duration
        self.cue_side, self.cue_step = 1, cue_window[0]
        super().__init__(*args, **kwargs)

    def _load_model(self) -> None:
        super()._load_model()
        add_cue_squares(self.model.worldbody, self.table_offset[2], x=0.0, y=CUE_Y + 0.05, half_side=0.09)
        ET.SubElement(self.model.worldbody, "camera", mode="fixed", **WORKVIEW)

    def _reset_internal(self) -> None:
        super()._reset_internal()
        self.cue_side = 1 if self.rng.random() < 0.5 else -1
        self.cue_step = int(self.rng.integers(self.cue_window[0], self.cue_window[1] + 1))
        self._update_cue()

    def _update_cue(self) -> None:
        # the frame rendered after `timestep` steps is frame `timestep`: visible on the cue's frames only
        visible = self.cue_step <= self.timestep < self.cue_step + self.cue_duration
        for name, side in (("cue_left", 1), ("cue_right", -1)):
            geom = self.sim.model.geom_name2id(name)
            self.sim.model.geom_rgba[geom, 3] = 1.0 if visible and side == self.cue_side else 0.0

    def _post_action(self, action):
        reward, done, info = super()._post_action(action)
        self._update_cue()
        return reward, done, info

    def chosen_side(self) -> int:
        """+1 / -1 once the gripper has passed ``COMMIT_Y`` on that side, else 0."""
        y = float(self.sim.data.site_xpos[self.robots[0].eef_site_id["right"]][1])
        return int(np.sign(y)) if abs(y) > COMMIT_Y else 0

    def _check_success(self) -> bool:
        return self.chosen_side() == self.cue_side


@dataclass
class SimState:
    eef_pos: np.ndarray
    cube_pos: np.ndarray
    gripper_qpos: np.ndarray
    joint_pos: np.ndarray
    table_height: float
    cue_side: int  # +1 left, -1 right, 0 when the task has no cue
    cue_step: int = -1  # delayed_cue: the first step the cue is visible on


class PandaTask:
    """One robosuite environment; images rendered only when asked for, upright."""

    def __init__(
        self,
        task: str = "lift",
        seed: int = 0,
        image_size: int | None = None,
        control_hz: float = 5.0,
        horizon: int = 80,
        cue_steps: int = 4,
    ):
        if task not in TASKS:
            raise ValueError(f"task {task!r}: expected one of {TASKS}")
        self.task, self.image_size = task, image_size or IMAGE_SIZES[task]
        self.instruction = INSTRUCTIONS[task]
        self.camera = WORKVIEW["name"] if task == "delayed_cue" else "agentview"
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
            # a hard reset rebuilds the whole MuJoCo model (~2 s); a soft one re-places the cube (~2 ms)
            hard_reset=False,
        )
        if task == "cued_lift":
            self.env = CuedLift(cue_steps=cue_steps, **kwargs)
        elif task == "delayed_cue":
            self.env = DelayedCue(**kwargs)
        else:
            self.env = robosuite.make("Lift", **kwargs)
        self.joint_names = list(self.env.robots[0].robot_joints)
        self.reset()
        self._disable_shadows()

    def _disable_shadows(self) -> None:
        # Shadows and reflections are most of llvmpipe's render time (86 -> 26 ms at 112 px) and carry
        # nothing the tasks need.
        scene = self.env.sim._render_context_offscreen.scn
        scene.flags[mujoco.mjtRndFlag.mjRND_SHADOW] = 0
        scene.flags[mujoco.mjtRndFlag.mjRND_REFLECTION] = 0

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
            cue_step=getattr(self.env, "cue_step", -1),
        )

    def render(self) -> np.ndarray:
        """``agentview`` as HxWx3 uint8, upright (MuJoCo's offscreen images come bottom row first)."""
        # robosuite's offscreen render does not make its GL context current: with two environments in one
        # process the other one's context would be drawn into (garbage pixels), so do it here.
        self.env.sim._render_context_offscreen.gl_ctx.make_current()
        image = self.env.sim.render(camera_name=self.camera, width=self.image_size, height=self.image_size)
        return np.ascontiguousarray(image[::-1])

    def success(self) -> bool:
        return bool(self.env._check_success())

    def decided(self) -> bool:
        """The episode's outcome can no longer change (delayed_cue: a side was chosen)."""
        if isinstance(self.env, DelayedCue):
            return self.env.chosen_side() != 0
        return self.success()

    @property
    def timestep(self) -> int:
        return int(self.env.timestep)

    def close(self) -> None:
        self.env.close()
