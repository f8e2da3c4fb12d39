"""Run an OpenVLA-format policy on a ROS 2 arm with a gated, chunked KV cache kept across ticks."""

__version__ = "0.1.0"
