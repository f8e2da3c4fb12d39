"""Start the policy node and the diagnostics node with the package's YAML.

    ros2 launch kv_efficient_vla_ros policy.launch.py [checkpoint:=DIR] [params_file:=FILE]
        [namespace:=NS] [camera_topic:=TOPIC] [synthetic_camera:=true] [sim_task:=lift|cued_lift]

``checkpoint`` and ``camera_topic`` override the YAML only when given.
"""

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackageShare

PACKAGE = "kv_efficient_vla_ros"


def _nodes(context):
    params_file = LaunchConfiguration("params_file").perform(context)
    namespace = LaunchConfiguration("namespace").perform(context)
    checkpoint = LaunchConfiguration("checkpoint").perform(context)
    camera_topic = LaunchConfiguration("camera_topic").perform(context)
    camera = {"camera_topic": camera_topic} if camera_topic else {}
    policy_overrides = dict(camera, **({"checkpoint": checkpoint} if checkpoint else {}))
    nodes = [
        Node(
            package=PACKAGE,
            executable="policy_node",
            name="policy_node",
            namespace=namespace,
            parameters=[params_file, policy_overrides],
            output="screen",
            emulate_tty=True,
        ),
        Node(
            package=PACKAGE,
            executable="diagnostics_node",
            name="diagnostics_node",
            namespace=namespace,
            parameters=[params_file],
            output="screen",
        ),
    ]
    sim_task = LaunchConfiguration("sim_task").perform(context)
    if sim_task:
        nodes.append(
            Node(
                package=PACKAGE,
                executable="sim_node",
                name="sim_node",
                namespace=namespace,
                parameters=[params_file, dict(camera, task=sim_task)],
                output="screen",
            )
        )
    if LaunchConfiguration("synthetic_camera").perform(context).lower() == "true":
        nodes.append(
            Node(
                package=PACKAGE,
                executable="synthetic_camera",
                name="synthetic_camera",
                namespace=namespace,
                parameters=[params_file, camera],
                output="screen",
            )
        )
    return nodes


def generate_launch_description() -> LaunchDescription:
    default_params = PathJoinSubstitution([FindPackageShare(PACKAGE), "config", "policy.yaml"])
    return LaunchDescription(
        [
            DeclareLaunchArgument("params_file", default_value=default_params, description="YAML parameters"),
            DeclareLaunchArgument("checkpoint", default_value="", description="checkpoint dir (default: the YAML's)"),
            DeclareLaunchArgument("namespace", default_value="", description="namespace of all nodes"),
            DeclareLaunchArgument("camera_topic", default_value="", description="image topic (default: the YAML's)"),
            DeclareLaunchArgument("synthetic_camera", default_value="false", description="start the synthetic camera"),
            DeclareLaunchArgument("sim_task", default_value="", description="start the MuJoCo Panda: lift | cued_lift"),
            OpaqueFunction(function=_nodes),
        ]
    )
