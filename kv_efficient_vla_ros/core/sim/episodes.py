"""Running expert episodes and storing them compactly (``.npz``: frames, actions, instruction, success)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .action_mapping import ActionMapping
from .expert import DelayedCueExpert, ScriptedExpert
from .tasks import PandaTask


def make_expert(task: str, mapping: ActionMapping) -> ScriptedExpert | DelayedCueExpert:
    if task == "delayed_cue":
        return DelayedCueExpert(mapping.max_position_m)
    return ScriptedExpert(mapping.max_position_m)


@dataclass
class Episode:
    task: str
    seed: int
    instruction: str
    frames: np.ndarray  # [T, H, W, 3] uint8, upright, the frame each action was chosen on
    actions: np.ndarray  # [T, 7] policy space: meters, radians, gripper +1 open
    success: bool
    cue_side: int
    cue_step: int = -1  # delayed_cue: first step the cue is visible on
    timing_s: dict[str, float] = field(default_factory=dict)

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(
            path,
            frames=self.frames,
            actions=self.actions.astype(np.float32),
            task=self.task,
            seed=self.seed,
            instruction=self.instruction,
            success=self.success,
            cue_side=self.cue_side,
            cue_step=self.cue_step,
        )
        return path

    @classmethod
    def load(cls, path: str | Path) -> Episode:
        with np.load(path) as data:
            return cls(
                task=str(data["task"]),
                seed=int(data["seed"]),
                instruction=str(data["instruction"]),
                frames=data["frames"],
                actions=data["actions"],
                success=bool(data["success"]),
                cue_side=int(data["cue_side"]),
                cue_step=int(data["cue_step"]) if "cue_step" in data else -1,
            )


def run_expert_episode(
    sim: PandaTask, seed: int, max_steps: int, mapping: ActionMapping, render: bool = True
) -> Episode:
    """One seeded episode of the scripted expert; stops once the outcome is decided (lift tasks: at success,
    plus two settling steps) or at ``max_steps``."""
    t0 = time.perf_counter()
    state = sim.reset(seed)
    reset_s = time.perf_counter() - t0
    expert = make_expert(sim.task, mapping)
    frames, actions, render_s, step_s, after_success = [], [], 0.0, 0.0, 0
    for _ in range(max_steps):
        if render:
            t = time.perf_counter()
            frames.append(sim.render())
            render_s += time.perf_counter() - t
        controller = expert.act(state)
        actions.append(mapping.to_policy(controller))
        t = time.perf_counter()
        state = sim.step(controller)
        step_s += time.perf_counter() - t
        if sim.task == "delayed_cue":
            if sim.decided():
                break
        elif sim.success():
            after_success += 1
            if after_success > 2:
                break
    n = len(actions)
    empty = np.zeros((0, sim.image_size, sim.image_size, 3), np.uint8)
    return Episode(
        task=sim.task,
        seed=seed,
        instruction=sim.instruction,
        frames=np.stack(frames) if frames else empty,
        actions=np.stack(actions),
        success=sim.success(),
        cue_side=state.cue_side,
        cue_step=state.cue_step,
        timing_s={"reset": reset_s, "step": step_s / n, "render": render_s / max(1, len(frames)), "steps": n},
    )


def recorded_stream(directory: str | Path) -> tuple[list[np.ndarray], str, int]:
    """Every frame of the ``episode_*.npz`` in ``directory``, episodes back to back, the first episode's
    instruction, and how many episodes there were. Raises ``FileNotFoundError`` when there are none."""
    paths = sorted(Path(directory).glob("episode_*.npz"))
    if not paths:
        raise FileNotFoundError(f"no episode_*.npz in {directory}: record some with kv-vla-record-demos")
    episodes = [Episode.load(path) for path in paths]
    return [frame for e in episodes for frame in e.frames], episodes[0].instruction, len(episodes)
