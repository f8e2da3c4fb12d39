"""Where the shipped artifacts live: the trained memory policy (and, beside it, its gate)."""

from __future__ import annotations

import sys
from pathlib import Path

PACKAGE = "kv_efficient_vla_ros"
TRAINED_POLICY = "openvla-tiny-delayed-cue-single-run"
TRAINED_POLICY_NORM_KEY = "sim_panda_delayed_cue"
TRAINED_GATE = "delayed_cue_single_run_gru_cue"


def shipped(relative: str) -> Path:
    """``relative`` in the source tree (editable installs, clones) or in the installed share directory."""
    candidates = [Path(__file__).resolve().parents[2] / relative, Path(sys.prefix) / "share" / PACKAGE / relative]
    try:  # a colcon / ROS install
        from ament_index_python.packages import get_package_share_directory

        candidates.append(Path(get_package_share_directory(PACKAGE)) / relative)
    except Exception:  # not a ROS install, or the package is not in its index
        pass
    for path in candidates:
        if path.exists():
            return path
    raise FileNotFoundError(f"{relative} is not in {[str(c) for c in candidates]}")


def trained_policy_checkpoint() -> Path:
    """The behaviour-cloned memory policy committed under ``checkpoints/`` (``make policy-single-run`` rebuilds it)."""
    return shipped(f"checkpoints/{TRAINED_POLICY}")


def trained_gate_checkpoint() -> Path:
    """The gate fitted to the trained policy, committed under ``gates/`` (``make gate-single-run`` rebuilds it)."""
    return shipped(f"gates/{TRAINED_GATE}")


def as_given(path: str | Path) -> str:
    """A path under the working directory relative to it: results name it as the command line would, not
    as this machine's absolute path."""
    resolved = Path(path).resolve()
    return str(resolved.relative_to(Path.cwd())) if resolved.is_relative_to(Path.cwd()) else str(path)
