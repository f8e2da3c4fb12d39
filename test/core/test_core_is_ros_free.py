import subprocess
import sys


def test_core_imports_without_rclpy():
    code = (
        "import sys, importlib, pkgutil, kv_efficient_vla_ros.core as core\n"
        "for m in pkgutil.walk_packages(core.__path__, core.__name__ + '.'):\n"
        "    importlib.import_module(m.name)\n"
        "assert not any(n == 'rclpy' or n.startswith('rclpy.') for n in sys.modules), 'core imported rclpy'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
