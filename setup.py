import runpy
from glob import glob

from setuptools import find_packages, setup

package_name = "kv_efficient_vla_ros"
# The shipped policy and gate are named in one place; that module imports nothing of the package.
defaults = runpy.run_path(f"{package_name}/core/defaults.py")
TRAINED, TRAINED_GATE = defaults["TRAINED_POLICY"], defaults["TRAINED_GATE"]

setup(
    name=package_name,
    version="0.1.0",
    packages=find_packages(exclude=["test", "test.*"]),
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{package_name}"]),
        (f"share/{package_name}", ["package.xml"]),
        (f"share/{package_name}/launch", glob("launch/*.launch.py")),
        (f"share/{package_name}/config", glob("config/*.yaml")),
        (f"share/{package_name}/gates/tiny_gru", glob("gates/tiny_gru/*")),
        (f"share/{package_name}/gates/{TRAINED_GATE}", glob(f"gates/{TRAINED_GATE}/*")),
        (f"share/{package_name}/checkpoints/{TRAINED}", glob(f"checkpoints/{TRAINED}/*")),
    ],
    # Python dependencies are installed from requirements/ with constraints (see the Makefile), not
    # here: a bare `torch` requirement would pull several GB of CUDA wheels.
    install_requires=["setuptools"],
    zip_safe=True,
    maintainer="kv_efficient_vla_ros developers",
    maintainer_email="kv-efficient-vla-ros@users.noreply.github.com",
    description="OpenVLA-format VLA policy for ROS 2 with a gated, chunked KV cache kept across control ticks.",
    license="MIT",
    tests_require=["pytest"],
    entry_points={
        "console_scripts": [
            "kv-vla-demo = kv_efficient_vla_ros.cli.demo:main",
            "kv-vla-make-tiny = kv_efficient_vla_ros.cli.make_tiny:main",
            "kv-vla-bench-single-frame = kv_efficient_vla_ros.cli.bench_single_frame:main",
            "kv-vla-bench-cache = kv_efficient_vla_ros.cli.bench_cache:main",
            "kv-vla-train-gate = kv_efficient_vla_ros.cli.train_gate:main",
            "kv-vla-train-policy = kv_efficient_vla_ros.cli.train_policy:main",
            "kv-vla-eval = kv_efficient_vla_ros.cli.eval:main",
            "kv-vla-bringup = kv_efficient_vla_ros.cli.bringup:main",
            "kv-vla-replay = kv_efficient_vla_ros.cli.replay:main",
            "kv-vla-policy-node = kv_efficient_vla_ros.ros.policy_node:main",
            "kv-vla-diagnostics-node = kv_efficient_vla_ros.ros.diagnostics_node:main",
            "kv-vla-synthetic-camera = kv_efficient_vla_ros.ros.camera_node:main",
            "kv-vla-sim-node = kv_efficient_vla_ros.ros.sim_node:main",
            "kv-vla-record-demos = kv_efficient_vla_ros.cli.record_demos:main",
            "kv-vla-calibrate-layers = kv_efficient_vla_ros.cli.calibrate_layers:main",
        ],
    },
)
