"""ROS-free core: model, action tokenizer, cache, eviction strategies, gate, runner, benchmarks, training, sim.

Nothing under this package may import rclpy; the ROS adapters live beside it and stay thin.
"""
