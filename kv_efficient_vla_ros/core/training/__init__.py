"""Training (ROS-free): fitting learned parts of the system to teachers computed with the model."""
