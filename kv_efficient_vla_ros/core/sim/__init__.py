"""Simulation (ROS-free): robosuite Panda tasks, scripted experts, action mapping, demonstration recording."""
