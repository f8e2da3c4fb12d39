"""Start the policy node and the diagnostics node with the package's YAML.

ros2 launch kv_efficient_vla_ros policy.launch.py [checkpoint:=DIR] [params_file:=FILE]
    [namespace:=NS] [camera_topic:=TOPIC]
"""

from launch.actions import DeclareLaunchArgument
from launch.conditions import IfCondition
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackageShare

from launch import LaunchDescription


def generate_launch_description() -> LaunchDescription:
    params_file = LaunchConfiguration("params_file")
    checkpoint = LaunchConfiguration("checkpoint")
    namespace = LaunchConfiguration("namespace")
    camera_topic = LaunchConfiguration("camera_topic")
    default_params = PathJoinSubstitution([FindPackageShare("kv_efficient_vla_ros"), "config", "policy.yaml"])
    return LaunchDescription(
        [
            DeclareLaunchArgument("params_file", default_value=default_params, description="YAML parameters"),
            DeclareLaunchArgument(
                "checkpoint", default_value="", description="OpenVLA-format checkpoint dir ('' = tiny default)"
            ),
            DeclareLaunchArgument("namespace", default_value="", description="namespace of both nodes"),
            DeclareLaunchArgument("camera_topic", default_value="camera/image_raw", description="sensor_msgs/Image"),
            DeclareLaunchArgument(
                "synthetic_camera", default_value="false", description="also start the synthetic camera node"
            ),
            Node(
                package="kv_efficient_vla_ros",
                executable="policy_node",
                name="policy_node",
                namespace=namespace,
                parameters=[params_file, {"checkpoint": checkpoint, "camera_topic": camera_topic}],
                output="screen",
                emulate_tty=True,
            ),
            Node(
                package="kv_efficient_vla_ros",
                executable="diagnostics_node",
                name="diagnostics_node",
                namespace=namespace,
                parameters=[params_file],
                output="screen",
            ),
            Node(
                package="kv_efficient_vla_ros",
                executable="synthetic_camera",
                name="synthetic_camera",
                namespace=namespace,
                parameters=[params_file, {"camera_topic": camera_topic}],
                condition=IfCondition(LaunchConfiguration("synthetic_camera")),
                output="screen",
            ),
        ]
    )
