"""Build this package's ROS 2 messages (msg/*.msg) into the virtual environment, from the PyPI ROS wheels.

    .venv/bin/python tools/build_interfaces.py

Plain CMake, as a ROS install's colcon would run it, with three adjustments for pip-installed ROS:
the wheels' exported CMake files carry their build machine's Python and numpy include paths (rewritten
to this interpreter's), the prefix is the venv (whose ``lib/`` the wheels' bootstrapper already puts on
``LD_LIBRARY_PATH``), and the generated Python package goes to its own directory, put on ``sys.path``
by a ``.pth`` file, where ``kv_efficient_vla_ros/__init__.py`` finds it (``pkgutil.extend_path``).
"""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import numpy

ROOT = Path(__file__).resolve().parent.parent
BUILD = ROOT / "build" / "interfaces"
PREFIX = Path(sys.prefix)
PYTHON_DIR = "lib/kv_efficient_vla_ros_interfaces"  # relative to the prefix
WHEEL_BUILD_PATHS = {
    "/opt/python/cp311-cp311/lib/python3.11/site-packages/numpy/_core/include": numpy.get_include(),
    "/opt/python/cp311-cp311/include/python3.11": sysconfig.get_paths()["include"],
}


def rewrite_wheel_cmake_paths() -> int:
    changed = 0
    for path in (PREFIX / "share").rglob("*.cmake"):
        text = path.read_text(errors="surrogateescape")
        fixed = text
        for wrong, right in WHEEL_BUILD_PATHS.items():
            fixed = fixed.replace(wrong, right)
        if fixed != text:
            path.write_text(fixed, errors="surrogateescape")
            changed += 1
    return changed


def main() -> None:
    if sys.prefix == sys.base_prefix:
        sys.exit("run this with the project's virtual environment's python (.venv/bin/python)")
    print(f"rewrote build-machine paths in {rewrite_wheel_cmake_paths()} CMake files", flush=True)
    env = dict(os.environ, AMENT_PREFIX_PATH=str(PREFIX), CMAKE_PREFIX_PATH=str(PREFIX))
    configure = [
        "cmake",
        "-S",
        str(ROOT),
        "-B",
        str(BUILD),
        "-DKV_VLA_INTERFACES_ONLY=ON",
        "-DBUILD_TESTING=OFF",
        f"-DPython3_EXECUTABLE={sys.executable}",
        f"-DCMAKE_INSTALL_PREFIX={PREFIX}",
        f"-DPYTHON_INSTALL_DIR={PYTHON_DIR}",
        "-DCMAKE_BUILD_TYPE=Release",
    ]
    for command in (configure, ["cmake", "--build", str(BUILD), "-j", "2"], ["cmake", "--install", str(BUILD)]):
        subprocess.run(command, check=True, env=env, stdout=subprocess.DEVNULL if "--install" in command else None)
    site = sysconfig.get_paths()["purelib"]
    pth = Path(site) / "kv_efficient_vla_ros_interfaces.pth"
    pth.write_text(f"{PREFIX / PYTHON_DIR}\n")
    print(f"installed the messages into {PREFIX / PYTHON_DIR} (on sys.path through {pth.name})")


if __name__ == "__main__":
    main()
