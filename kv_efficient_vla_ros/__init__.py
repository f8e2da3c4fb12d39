"""Run an OpenVLA-format policy on a ROS 2 arm with a gated, chunked KV cache kept across ticks."""

__version__ = "0.1.0"

# The generated ROS message modules (kv_efficient_vla_ros.msg) may be installed in another directory
# than this source (tools/build_interfaces.py does so for pip installs); join them into one package.
__path__ = __import__("pkgutil").extend_path(__path__, __name__)
