"""The checks ``launch/policy.launch.py`` makes on its arguments, here so that they are tested without
``launch`` (not installable from PyPI) and imported by the launch file from the installed package."""

from __future__ import annotations

from pathlib import Path

# The sim node's tasks (core/sim/tasks.py TASKS, tested equal; that module loads MuJoCo).
SIM_TASKS = ("lift", "cued_lift", "delayed_cue")


def launch_argument_problems(params_file: str, sim_task: str, synthetic_camera: bool) -> list[str]:
    """What is wrong with a launch's arguments; empty when nothing is."""
    problems = []
    if not Path(params_file).is_file():
        problems.append(f"params_file {params_file!r} does not exist (the nodes would run on built-in defaults)")
    if sim_task and sim_task not in SIM_TASKS:
        problems.append(f"sim_task {sim_task!r} is not one of {SIM_TASKS}")
    if sim_task and synthetic_camera:
        problems.append("sim_task and synthetic_camera:=true would both publish the camera topic: choose one")
    return problems
