"""Start the policy node and the diagnostics node with the package's YAML, and optionally a camera source.

    ros2 launch kv_efficient_vla_ros policy.launch.py [params_file:=FILE] [checkpoint:=DIR] [namespace:=NS]
        [camera_topic:=TOPIC] [synthetic_camera:=true|false] [sim_task:=lift|cued_lift|delayed_cue]

``checkpoint`` and ``camera_topic`` override the YAML only when given; overrides reach the nodes as
``--ros-args -p`` (no parameter file is written per run). A missing ``params_file``, or two camera
sources (``sim_task`` with ``synthetic_camera:=true``), is an error before any node starts.
"""

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.conditions import IfCondition
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution, PythonExpression
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackageShare

from kv_efficient_vla_ros.ros.launch_arguments import SIM_TASKS, launch_argument_problems

PACKAGE = "kv_efficient_vla_ros"


def _check(context):
    problems = launch_argument_problems(
        LaunchConfiguration("params_file").perform(context),
        LaunchConfiguration("sim_task").perform(context),
        IfCondition(LaunchConfiguration("synthetic_camera")).evaluate(context),
    )
    if problems:
        raise RuntimeError("; ".join(problems))
    return []


def _nodes(context):
    def overrides(**values) -> list[str]:
        return [arg for name, value in values.items() if value for arg in ("-p", f"{name}:={value}")]

    camera = overrides(camera_topic=LaunchConfiguration("camera_topic").perform(context))
    sim_task = LaunchConfiguration("sim_task").perform(context)
    checkpoint = LaunchConfiguration("checkpoint").perform(context)

    def node(executable: str, ros_arguments: list[str], condition=None) -> Node:
        # the same output handling for every node: line-buffered, colored, in launch's terminal
        return Node(
            package=PACKAGE,
            executable=executable,
            name=executable,
            namespace=LaunchConfiguration("namespace"),
            parameters=[LaunchConfiguration("params_file")],
            ros_arguments=ros_arguments,
            condition=condition,
            output="screen",
            emulate_tty=True,
        )

    return [
        node("policy_node", camera + overrides(checkpoint=checkpoint)),
        node("diagnostics_node", []),
        node(
            "sim_node",
            camera + overrides(task=sim_task),
            IfCondition(PythonExpression(["'", LaunchConfiguration("sim_task"), "' != ''"])),
        ),
        node("synthetic_camera", camera, IfCondition(LaunchConfiguration("synthetic_camera"))),
    ]


def generate_launch_description() -> LaunchDescription:
    default_params = PathJoinSubstitution([FindPackageShare(PACKAGE), "config", "policy.yaml"])
    return LaunchDescription(
        [
            DeclareLaunchArgument("params_file", default_value=default_params, description="YAML parameters"),
            DeclareLaunchArgument("checkpoint", default_value="", description="checkpoint dir (default: the YAML's)"),
            DeclareLaunchArgument("namespace", default_value="", description="namespace of all nodes"),
            DeclareLaunchArgument("camera_topic", default_value="", description="image topic (default: the YAML's)"),
            DeclareLaunchArgument(
                "synthetic_camera",
                default_value="false",
                choices=["true", "false"],
                description="start the synthetic camera",
            ),
            DeclareLaunchArgument(
                "sim_task",
                default_value="",
                choices=["", *SIM_TASKS],
                description="start the MuJoCo Panda on this task (the sim publishes the camera)",
            ),
            OpaqueFunction(function=_check),
            OpaqueFunction(function=_nodes),
        ]
    )
