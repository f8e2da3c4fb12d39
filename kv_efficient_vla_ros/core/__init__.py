"""ROS-free core: model, action tokenizer, cache, eviction policies, gate, benchmarks.

Nothing under this package may import rclpy; the ROS adapters live beside it and stay thin.
"""
