"""Message conversions, the launch file's consistency with the installed executables, and bringup."""

import ast
import io
import os
import re
import shutil
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image as PILImage
from sensor_msgs.msg import CompressedImage, Image

from kv_efficient_vla_ros.core.cache import CacheConfig
from kv_efficient_vla_ros.core.openvla.processor import InvalidInputError
from kv_efficient_vla_ros.core.policy import OpenVLAPolicy
from kv_efficient_vla_ros.core.runner import PolicyRunner
from kv_efficient_vla_ros.ros.conversions import clip_action, compressed_to_rgb, image_to_rgb
from kv_efficient_vla_ros.ros.interfaces import NODES, rgb_to_image, twist_message
from kv_efficient_vla_ros.ros.params import node_parameters, package_path

ROOT = Path(__file__).resolve().parents[2]
RGB = np.random.default_rng(0).integers(0, 256, (24, 32, 3), dtype=np.uint8)


@pytest.mark.parametrize("encoding", ["rgb8", "bgr8", "rgba8", "bgra8"])
def test_color_encodings_arrive_as_the_same_rgb(encoding):
    np.testing.assert_array_equal(image_to_rgb(rgb_to_image(RGB, encoding), 16, 10**6), RGB)


def test_mono8_becomes_three_equal_channels():
    rgb = image_to_rgb(rgb_to_image(RGB, "mono8"), 16, 10**6)
    assert rgb.shape == (24, 32, 3) and np.array_equal(rgb[..., 0], rgb[..., 2])


@pytest.mark.parametrize("encoding", ["rgb8", "bgr8", "rgba8", "bgra8", "mono8"])
def test_big_endian_flag_does_not_change_8_bit_frames(encoding):
    """Bytes have no byte order: a well-formed frame with is_bigendian=1 is the same picture (cv_bridge's
    port calls ndarray.newbyteorder() here, which NumPy 2 removed, and the AttributeError escaped)."""
    little = rgb_to_image(RGB, encoding)
    big = rgb_to_image(RGB, encoding)
    big.is_bigendian = 1
    np.testing.assert_array_equal(image_to_rgb(big, 16, 10**6), image_to_rgb(little, 16, 10**6))


def _sixteen_bit(encoding: str, big_endian: bool) -> Image:
    """RGB as a 16-bit frame: each 8-bit value v becomes 257 v + d, |d| <= 127, so that it scales back to v
    while its two bytes differ (a swap would show)."""
    noise = np.random.default_rng(1).integers(-127, 128, RGB.shape)
    wide = np.clip(RGB.astype(np.int64) * 257 + noise, 0, 65535)
    if encoding == "mono16":
        wide = wide[..., 0]
    elif encoding.startswith("bgr"):
        wide = wide[..., ::-1]
    if encoding.endswith("a16"):
        wide = np.concatenate([wide, np.full_like(wide[..., :1], 65535)], axis=-1)
    channels = 1 if wide.ndim == 2 else wide.shape[-1]
    data = wide.astype(">u2" if big_endian else "<u2").tobytes()
    return Image(height=24, width=32, encoding=encoding, is_bigendian=int(big_endian), step=64 * channels, data=data)


@pytest.mark.parametrize("encoding", ["mono16", "rgb16", "bgr16", "rgba16", "bgra16"])
def test_16_bit_frames_honour_the_byte_order_flag(encoding):
    expected = RGB if encoding != "mono16" else np.repeat(RGB[..., :1], 3, axis=-1)
    for big_endian in (False, True):
        msg = _sixteen_bit(encoding, big_endian)
        np.testing.assert_array_equal(image_to_rgb(msg, 16, 10**6), expected)
        msg.is_bigendian = int(not big_endian)  # the same bytes read the other way are another picture
        assert not np.array_equal(image_to_rgb(msg, 16, 10**6), expected)


def _pad_rows(msg: Image, padding: int) -> Image:
    """The same frame with ``padding`` junk bytes after every row (legal: ``step`` > width x pixel bytes)."""
    rows = np.frombuffer(bytes(msg.data), np.uint8).reshape(msg.height, msg.step)
    junk = np.random.default_rng(2).integers(0, 256, (msg.height, padding), dtype=np.uint8)
    padded = np.concatenate([rows, junk], axis=1)
    return Image(
        height=msg.height,
        width=msg.width,
        encoding=msg.encoding,
        is_bigendian=msg.is_bigendian,
        step=msg.step + padding,
        data=padded.tobytes(),
    )


@pytest.mark.parametrize("encoding", ["mono8", "rgb8", "bgr8", "rgba8", "mono16", "rgb16"])
@pytest.mark.parametrize("padding", [1, 3, 32])
def test_padded_rows_give_the_unpadded_image(encoding, padding):
    plain = _sixteen_bit(encoding, True) if encoding.endswith("16") else rgb_to_image(RGB, encoding)
    padded = _pad_rows(plain, padding)
    np.testing.assert_array_equal(image_to_rgb(padded, 16, 10**6), image_to_rgb(plain, 16, 10**6))


@pytest.mark.parametrize(
    ("msg", "message"),
    [
        (Image(height=24, width=32, encoding="16UC1", step=64, data=bytes(24 * 64)), "encoding"),
        (Image(height=24, width=32, encoding="rgb8", step=96, data=bytes(100)), "truncated"),
        (Image(height=24, width=32, encoding="rgb8", step=100, data=bytes(100 * 23 + 96)), "truncated"),
        (Image(height=24, width=32, encoding="rgb8", step=10, data=bytes(240)), "inconsistent"),
        (Image(height=24, width=32, encoding="rgb8", step=95, data=bytes(95 * 24)), "step 95 is shorter"),
        (Image(height=24, width=32, encoding="rgb16", step=190, data=bytes(190 * 24)), "step 190 is shorter"),
        (Image(height=8, width=8, encoding="rgb8", step=24, data=bytes(192)), "min_image_side"),
        (Image(height=5000, width=5000, encoding="rgb8", step=15000, data=b""), "max_image_pixels"),
    ],
)
def test_bad_images_say_what_is_wrong(msg, message):
    with pytest.raises(InvalidInputError, match=message):
        image_to_rgb(msg, 16, 4096 * 4096)


def _compressed(picture: np.ndarray, kind: str, **save) -> CompressedImage:
    buffer = io.BytesIO()
    PILImage.fromarray(picture).save(buffer, format=kind, **save)
    return CompressedImage(format=f"rgb8; {kind.lower()} compressed bgr8", data=buffer.getvalue())


def test_compressed_png_is_exact_and_jpeg_decodes_as_pillow_does():
    png = _compressed(RGB, "PNG")
    np.testing.assert_array_equal(compressed_to_rgb(png, 16, 10**6), RGB)
    gray = _compressed(RGB[..., 0], "PNG")
    np.testing.assert_array_equal(compressed_to_rgb(gray, 16, 10**6), np.repeat(RGB[..., :1], 3, axis=-1))
    jpeg = _compressed(RGB, "JPEG", quality=90)
    expected = np.asarray(PILImage.open(io.BytesIO(bytes(jpeg.data))).convert("RGB"))
    np.testing.assert_array_equal(compressed_to_rgb(jpeg, 16, 10**6), expected)


def _png_header(width: int, height: int) -> bytes:
    """A 60-byte PNG that declares width x height (and holds almost no pixel data)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "cannot decode"),
        (b"not an image at all", "cannot decode"),
        (bytes(_compressed(RGB, "JPEG").data)[:200], "cannot decode"),  # truncated
        (bytes(_compressed(RGB, "PNG").data)[:-30], "cannot decode"),
        (bytes(_compressed(RGB, "BMP").data), "not one of"),
        (bytes(_compressed(RGB, "GIF").data), "not one of"),
        (_png_header(6000, 6000), "max_image_pixels"),  # refused before decoding 100 MB
        (_png_header(100_000, 100_000), "decompression bomb"),  # Pillow's own limit comes first
        (bytes(_compressed(RGB[:8, :8], "PNG").data), "min_image_side"),
    ],
    ids=["empty", "garbage", "truncated jpeg", "truncated png", "bmp", "gif", "enormous", "bomb", "tiny"],
)
def test_bad_compressed_images_say_what_is_wrong(data, message):
    with pytest.raises(InvalidInputError, match=message):
        compressed_to_rgb(CompressedImage(format="jpeg", data=data), 16, 4096 * 4096)


def test_clipping_and_twist():
    clipped = clip_action(np.array([0.2, -0.2, 0.01, 1.0, -1.0, 0.1, 3.0]), 0.05, 0.25, (-1.0, 1.0))
    np.testing.assert_allclose(clipped, [0.05, -0.05, 0.01, 0.25, -0.25, 0.1, 1.0])
    twist = twist_message(clipped, 0.2, None).twist
    assert twist.linear.x == pytest.approx(0.25) and twist.angular.y == pytest.approx(-1.25)
    assert twist_message(None, 0.2, None).twist.linear.x == 0.0


def _header_comment(msg_file: str) -> str:
    line = next(li for li in (ROOT / "msg" / msg_file).read_text().splitlines() if li.startswith("std_msgs/Header"))
    return line.partition("#")[2]


def test_message_comments_say_how_headers_are_stamped():
    """The policy node stamps an action with the image it answers (test_ros_nodes checks that over DDS) and
    cache statistics with the time it publishes them; the interface files must say the same."""
    action = _header_comment("EndEffectorAction.msg")
    assert "image" in action and "computed" not in action, action
    assert "published" in _header_comment("CacheStats.msg")


def test_launch_file_starts_the_installed_executables_of_the_one_node_list():
    tree = ast.parse((ROOT / "launch" / "policy.launch.py").read_text())
    executables = {c.args[0].value for c in _calls(tree, "node") if c.args and isinstance(c.args[0], ast.Constant)}
    cmake = (ROOT / "CMakeLists.txt").read_text()
    installed = set(re.search(r"set\(NODE_EXECUTABLES ([^)]*)\)", cmake).group(1).split())
    assert executables == installed == set(NODES) == {"policy_node", "diagnostics_node", "synthetic_camera", "sim_node"}
    assert {p.name for p in (ROOT / "scripts").iterdir()} == set(NODES)
    setup = (ROOT / "setup.py").read_text()
    for name in installed:
        assert (ROOT / "scripts" / name).stat().st_mode & 0o111
        assert f"from {NODES[name]} import main" in (ROOT / "scripts" / name).read_text()
        assert f'"kv-vla-{name.replace("_", "-")} = {NODES[name]}:main"' in setup
    imports = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert "launch_ros.actions" in imports


def _calls(tree: ast.AST, name: str) -> list[ast.Call]:
    return [c for c in ast.walk(tree) if isinstance(c, ast.Call) and getattr(c.func, "id", "") == name]


def _keywords(call: ast.Call) -> dict[str, ast.expr]:
    return {kw.arg: kw.value for kw in call.keywords}


def test_launch_file_arguments_and_nodes():
    """Booleans are checked by choices and read by IfCondition; every node prints the same way; overrides
    are ros_arguments, not a parameter dict (launch_ros writes a dict to a temporary file per run)."""
    tree = ast.parse((ROOT / "launch" / "policy.launch.py").read_text())
    arguments = {c.args[0].value: _keywords(c) for c in _calls(tree, "DeclareLaunchArgument")}
    assert ast.literal_eval(arguments["synthetic_camera"]["choices"]) == ["true", "false"]
    assert "choices" in arguments["sim_task"]
    (node,) = _calls(tree, "Node")
    keywords = _keywords(node)
    assert ast.literal_eval(keywords["emulate_tty"]) is True and ast.literal_eval(keywords["output"]) == "screen"
    assert "ros_arguments" in keywords and not any(isinstance(n, ast.Dict) for n in ast.walk(keywords["parameters"]))
    assert any(getattr(c.func, "id", "") == "IfCondition" for c in ast.walk(tree) if isinstance(c, ast.Call))


def test_launch_refuses_a_missing_params_file_and_two_camera_sources(tmp_path):
    from kv_efficient_vla_ros.core.sim.tasks import TASKS
    from kv_efficient_vla_ros.ros.launch_arguments import SIM_TASKS, launch_argument_problems

    assert SIM_TASKS == TASKS
    params = tmp_path / "policy.yaml"
    params.write_text("{}")
    assert launch_argument_problems(str(params), "", True) == []
    assert launch_argument_problems(str(params), "delayed_cue", False) == []
    (missing,) = launch_argument_problems(str(tmp_path / "nope.yaml"), "", False)
    assert "does not exist" in missing
    (both,) = launch_argument_problems(str(params), "lift", True)
    assert "both publish the camera" in both
    (unknown,) = launch_argument_problems(str(params), "stack", False)
    assert "not one of" in unknown


@pytest.mark.skipif(shutil.which("cmake") is None, reason="needs cmake")
def test_cmake_configures_with_the_venv_inside_the_source_tree(tmp_path):
    """As `make` lays it out (.venv in the source tree), and as colcon would configure it: rosidl exports
    numpy's include dir from the venv, which CMake refused ("prefixed in the source directory"). The node
    executables get this interpreter in their first line."""
    source = tmp_path / "src"
    source.mkdir()
    for name in ("CMakeLists.txt", "package.xml", "msg", "scripts"):
        copy = shutil.copytree if (ROOT / name).is_dir() else shutil.copy
        copy(ROOT / name, source / name)
    (source / ".venv").symlink_to(sys.prefix)
    venv = str(source / ".venv")
    env = dict(os.environ, AMENT_PREFIX_PATH=venv, CMAKE_PREFIX_PATH=venv)
    configure = [
        "cmake",
        "-S",
        str(source),
        "-B",
        str(tmp_path / "build"),
        "-DBUILD_TESTING=OFF",
        f"-DPython3_EXECUTABLE={venv}/bin/python",
    ]
    result = subprocess.run(configure, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    for name in NODES:
        first_line = (tmp_path / "build" / "scripts" / name).read_text().splitlines()[0]
        assert first_line == f"#!{venv}/bin/python"


def test_the_venv_in_the_source_tree_is_hidden_from_colcon():
    """colcon crawls the source tree for package.xml, and the ROS wheels put one per package into the venv."""
    recipe = (ROOT / "Makefile").read_text().split("$(STAMP):", 1)[1].split("\n\n", 1)[0]
    assert "touch $(VENV)/COLCON_IGNORE" in recipe
    venv = Path(sys.prefix)
    if not venv.is_relative_to(ROOT):
        pytest.skip(f"the venv {venv} is not inside this source tree")
    assert (venv / "COLCON_IGNORE").exists()


def _flat(params: dict, prefix: str = ""):
    for key, value in params.items():
        if isinstance(value, dict):
            yield from _flat(value, f"{prefix}{key}.")
        else:
            yield prefix + key, value


def test_yaml_holds_exactly_the_declared_defaults():
    """config/policy.yaml mirrors the parameter dataclasses key by key: same names, types and values."""
    params = yaml.safe_load((ROOT / "config" / "policy.yaml").read_text())
    assert set(params) == {f"/**/{node}" for node in NODES}
    for node in NODES:
        in_yaml = {k: (type(v), v) for k, v in _flat(params[f"/**/{node}"]["ros__parameters"])}
        declared = {name: (type(default), default) for name, default, _ in node_parameters(node)}
        assert in_yaml == declared, node


def test_no_node_imports_another_and_auxiliary_nodes_load_no_torch():
    package = ROOT / "kv_efficient_vla_ros"
    node_modules = {module.rsplit(".", 1)[1] for module in NODES.values()}
    for path in package.rglob("*.py"):
        tree = ast.parse(path.read_text())
        imported = {n.module.rsplit(".", 1)[-1] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
        imported |= {a.name.rsplit(".", 1)[-1] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        assert not imported & node_modules, f"{path.relative_to(ROOT)} imports a node module"
    # The auxiliary nodes never load torch; the policy and sim nodes only when they build the model or
    # the simulator, after run_node() handles signals (a node module's import must be quick).
    code = (
        "import sys\n"
        "import kv_efficient_vla_ros.ros.camera_node, kv_efficient_vla_ros.ros.diagnostics_node\n"
        "import kv_efficient_vla_ros.ros.policy_node, kv_efficient_vla_ros.ros.sim_node\n"
        "import kv_efficient_vla_ros.ros.bringup, kv_efficient_vla_ros.cli.bringup\n"
        "heavy = sorted(m for m in ('torch', 'transformers', 'mujoco', 'robosuite') if m in sys.modules)\n"
        "assert not heavy, f'a node module imports {heavy}'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
    auxiliary = [
        f"import rclpy, sys; rclpy.init(); from {NODES[name]} import {cls}; {cls}().destroy_node(); "
        "assert 'torch' not in sys.modules"
        for name, cls in (("diagnostics_node", "DiagnosticsNode"), ("synthetic_camera", "SyntheticCameraNode"))
    ]
    for code in auxiliary:  # built, they still have no torch
        subprocess.run([sys.executable, "-c", code], check=True)


def test_bringup_runs_the_default_checkpoint_and_stops_cleanly():
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "kv_efficient_vla_ros.cli.bringup",
            "--duration",
            "4",
            "--namespace",
            "/bringup_test",
            "--policy",
            "window",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    measured = re.search(r"measured: control ([\d.]+) Hz .* cache (\d+) tokens", result.stdout)
    assert measured and float(measured.group(1)) > 0 and int(measured.group(2)) > 0
    assert "(window)" in result.stdout
    assert "stopped: {'policy_node': 0, 'diagnostics_node': 0, 'synthetic_camera': 0}" in result.stdout


def test_the_default_gate_is_trained_and_fits_the_default_checkpoint(trained_checkpoint):
    gate = dict((n, d) for n, d, _ in node_parameters("policy_node"))["cache.gate_checkpoint"]
    assert gate and package_path(gate).is_dir()
    policy = OpenVLAPolicy.from_checkpoint(trained_checkpoint)
    runner = PolicyRunner(policy, CacheConfig(strategy="gated", options={"gate_checkpoint": str(package_path(gate))}))
    assert runner.cache.strategy.warnings == []


def test_an_untrained_gate_warns_through_the_node_logger(ros, tiny_checkpoint, capfd):
    from rclpy.parameter import Parameter

    from kv_efficient_vla_ros.ros.policy_node import PolicyNode

    overrides = [
        Parameter("checkpoint", value=str(tiny_checkpoint)),
        Parameter("unnorm_key", value="sim_panda_lift"),
        Parameter("cache.gate_checkpoint", value=""),
    ]
    node = PolicyNode(parameter_overrides=overrides)
    try:
        assert node.runner is not None
    finally:
        node.destroy_node()
    warnings = [line for line in capfd.readouterr().err.splitlines() if line.startswith("[WARN]")]
    assert any("[policy_node]" in line and "untrained gate" in line for line in warnings), warnings
