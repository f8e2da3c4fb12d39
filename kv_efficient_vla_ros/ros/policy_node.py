"""The policy node: newest camera image + instruction -> one end-effector action per control tick.

Images and instructions arrive on one callback group and are only stored; the control timer runs on
another, so a long inference never blocks incoming images (multi-threaded executor). Each tick uses
the newest image only, and never one it already answered (a camera slower than ``control_hz``, or a
simulator waiting for the action, repeats frames: a frame cached twice is a history the policy was not
trained on); an overrun skips ticks (each counted), it never queues them. The twist for MoveIt Servo
is re-published between ticks on a third group (``servo.py``).

torch and the model code are imported when the node loads its policy, not with this module: the process
handles SIGINT and SIGTERM from its first moments (``spin.py``), and loading takes seconds.
"""

from __future__ import annotations

import sys
import threading
import time
from collections import Counter
from typing import TYPE_CHECKING

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from rclpy._rclpy_pybind11 import RCLError
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.node import Node
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header, String
from std_srvs.srv import Trigger

from ..core.accelerators.config import LayerPruningConfig, TokenReuseConfig, TokenSelectionConfig
from ..core.openvla.errors import InvalidInputError
from ..msg import CacheStats, EndEffectorAction
from .conversions import clip_action, compressed_to_rgb, image_to_rgb
from .interfaces import (
    CAMERA_QOS,
    DIAGNOSTICS,
    DIAGNOSTICS_QOS,
    INPUTS_TASK,
    INSTRUCTION_QOS,
    KV_MEMORY_TASK,
    OUTPUT_QOS,
    action_message,
    cache_stats_message,
    diagnostic_array,
    key_values,
    status_name,
    twist_message,
)
from .log_bridge import bridge_core_logging
from .log_throttle import LogThrottle
from .overruns import OverrunCounter
from .params import PolicyNodeConfig, declare, declare_cache, package_path
from .servo import TwistStream, switch_servo_to_twist
from .spin import run_node

if TYPE_CHECKING:
    from ..core.runner import PolicyRunner, StepStats

# Counters on the node's input status, in this order.
COUNTERS = (
    "ticks",
    "repeated_image",
    "overruns",
    "bad_image",
    "bad_instruction",
    "stale_image",
    "no_instruction",
    "no_policy",
    "checkpoint_errors",
    "resets",
)
# camera_transport -> the message and the topic suffix (image_transport's convention)
CAMERA_TRANSPORTS = {"raw": (Image, ""), "compressed": (CompressedImage, "/compressed")}
MIB = 1 << 20
OK, WARN, ERROR = 0, 1, 2  # DiagnosticStatus levels as ints (the message's constants are bytes)


def memory_level(allocated_bytes: int, warn_mib: float, error_mib: float) -> int:
    """OK / WARN / ERROR of the KV cache's memory against the limits (0 = no limit)."""
    if error_mib > 0 and allocated_bytes > error_mib * MIB:
        return ERROR
    if warn_mib > 0 and allocated_bytes > warn_mib * MIB:
        return WARN
    return OK


class PolicyNode(Node):
    def __init__(self, **kwargs):
        super().__init__("policy_node", **kwargs)
        self.cfg: PolicyNodeConfig = declare(self, PolicyNodeConfig)
        self.cache_cfg = declare_cache(self)
        self.token_selection = declare(self, TokenSelectionConfig, "token_selection.")
        self.token_reuse = declare(self, TokenReuseConfig, "token_reuse.")
        self.layer_pruning = declare(self, LayerPruningConfig, "layer_pruning.")
        self.period_s = 1.0 / self.cfg.control_hz
        self.counters: Counter[str] = Counter()
        self.log_throttle = LogThrottle(self.cfg.error_log_period_s)
        self.runner: PolicyRunner | None = None
        self.load_error = ""
        if self.cfg.camera_transport not in CAMERA_TRANSPORTS:
            raise ValueError(
                f"camera_transport must be one of {sorted(CAMERA_TRANSPORTS)}, not {self.cfg.camera_transport!r}"
            )
        image_type, suffix = CAMERA_TRANSPORTS[self.cfg.camera_transport]
        self.camera_topic = self.cfg.camera_topic.rstrip("/") + suffix
        bridge_core_logging(self.get_logger())  # the core's warnings (cache positions) through this logger
        self._load_policy()

        self._input_lock = threading.Lock()
        self._runner_lock = threading.Lock()
        self._latest_image: tuple[Image | CompressedImage, float] | None = None
        self._instruction: str | None = None
        self._answered: tuple[int, int, str] | None = None  # the image the last action answered
        self._last_stats: StepStats | None = None
        self._overruns = OverrunCounter(round(1e9 * self.period_s))

        inputs, control = MutuallyExclusiveCallbackGroup(), MutuallyExclusiveCallbackGroup()
        self.create_subscription(image_type, self.camera_topic, self._on_image, CAMERA_QOS, callback_group=inputs)
        self.create_subscription(
            String, self.cfg.instruction_topic, self._on_instruction, INSTRUCTION_QOS, callback_group=inputs
        )
        self.action_pub = self.create_publisher(EndEffectorAction, self.cfg.action_topic, OUTPUT_QOS)
        self.twist = TwistStream(
            self,
            self.cfg.twist_topic,
            OUTPUT_QOS,
            self.cfg.frame_id,
            self.cfg.servo_rate_hz,
            self.cfg.servo_hold_timeout_s,
        )
        self.stats_pub = self.create_publisher(CacheStats, self.cfg.cache_stats_topic, OUTPUT_QOS)
        self.diag_pub = self.create_publisher(DiagnosticArray, DIAGNOSTICS, DIAGNOSTICS_QOS)
        self.create_service(Trigger, "~/reset", self._on_reset, callback_group=control)
        self._control_timer = self.create_timer(self.period_s, self._on_tick, callback_group=control)
        self.create_timer(1.0 / self.cfg.status_hz, self._publish_status, callback_group=inputs)
        switch_servo_to_twist(self, self.cfg.servo_command_type_service, self.twist.group)
        # The twist stream must not wait for the inference thread: Python hands the GIL to a waiting thread
        # only every switch interval (5 ms by default), and the stream's timer needs it several times per
        # message. Measured on 2 cores during inference: at 5 ms the 50 Hz stream came at 12-45 Hz with gaps
        # up to 1.1 s; at 1 ms at 40-53 Hz, 95 % of the gaps under 80 ms (a thread yields only when asked).
        sys.setswitchinterval(0.001)

    def _load_policy(self) -> None:
        import torch

        from ..core.accelerators.layer_pruning import layers_to_drop, pruned_policy
        from ..core.cache.gate import GateCheckpointError
        from ..core.defaults import trained_policy_checkpoint
        from ..core.openvla.action_tokenizer import UnnormKeyError
        from ..core.openvla.config import CheckpointError
        from ..core.policy import OpenVLAPolicy
        from ..core.runner import PolicyRunner

        if self.cfg.torch_threads > 0:
            torch.set_num_threads(self.cfg.torch_threads)
        checkpoint = self.cfg.checkpoint or str(trained_policy_checkpoint())
        dtypes = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
        try:
            if self.cfg.dtype not in dtypes:
                raise ValueError(f"dtype must be one of {sorted(dtypes)}, not {self.cfg.dtype!r}")
            policy = OpenVLAPolicy.from_checkpoint(
                checkpoint,
                self.cfg.unnorm_key or None,
                self.cfg.device,
                dtypes[self.cfg.dtype],
                self.cfg.max_instruction_tokens,
            )
            pruning = self.layer_pruning
            pruning.validate()
            if pruning.prune_layers:
                layers = policy.config.text_config.num_hidden_layers
                drop = layers_to_drop(package_path(pruning.layer_importance), pruning.prune_layers, layers)
                policy = pruned_policy(policy, drop)
                self.get_logger().info(f"layer pruning: LLM layers {drop} of {layers} dropped")
            self.runner = PolicyRunner(
                policy,
                self.cache_cfg,
                decoding=self.cfg.decoding,
                token_selection=self.token_selection,
                token_reuse=self.token_reuse,
            )
            for warning in self.runner.cache.strategy.warnings:
                self.get_logger().warning(warning)
            # One throw-away tick: the first inference pays for allocations, not the first real action.
            size = policy.image_processor.size
            warm_start = time.monotonic()
            self.runner.step(np.zeros((size, size, 3), np.uint8), "warm up")
            self.runner.reset()
            warm_ms = 1e3 * (time.monotonic() - warm_start)
        except (CheckpointError, UnnormKeyError, GateCheckpointError, ValueError, KeyError, OSError) as err:
            # Keep serving: hold still, report ERROR on /diagnostics, say why.
            self.load_error = f"{type(err).__name__}: {err}"
            self.counters["checkpoint_errors"] += 1
            self.get_logger().error(f"cannot load the policy from {checkpoint}: {self.load_error}")
            return
        c = self.cache_cfg
        self.get_logger().info(
            f"policy ready: {checkpoint} ({policy.config.vision_backbone_id}, LLM {policy.config.llm_dim} x "
            f"{policy.config.text_config.num_hidden_layers}), cache {c.strategy} budget {c.budget_tokens} tokens, "
            f"{self.runner.frame_tokens} of {policy.config.num_patches} patch tokens per frame, "
            f"token reuse {'on' if self.token_reuse.enabled else 'off'}, "
            f"{self.cfg.decoding} decoding, {self.cfg.control_hz:g} Hz on "
            f"{self.resolve_topic_name(self.camera_topic)} "
            f"(warm-up tick {warm_ms:.0f} ms)"
        )

    def _on_image(self, msg: Image | CompressedImage) -> None:
        with self._input_lock:
            self._latest_image = (msg, time.monotonic())

    def _on_instruction(self, msg: String) -> None:
        if self.runner is None:
            return
        try:
            text = self.runner.policy.prompt_tokenizer.validate(msg.data)
        except InvalidInputError as err:
            self._refuse("bad_instruction", f"instruction refused, keeping the previous one: {err}")
            return
        with self._input_lock:
            self._instruction = text  # a new one starts a new episode at the next tick (logged there, once)

    def _on_reset(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        with self._runner_lock:
            if self.runner is not None:
                self.runner.reset()
        # The empty cache may start from the image the last action answered (a sim in lockstep waits for
        # an answer to it). A new instruction does not clear this: the sim's next frame may still be on its way.
        self._answered = None
        self.counters["resets"] += 1
        response.success, response.message = (
            self.runner is not None,
            "cache cleared" if self.runner else self.load_error,
        )
        self._log("info", "reset", "reset: cache cleared, new episode")
        return response

    def _on_tick(self) -> None:
        next_call_ns = self._control_timer.time_until_next_call()
        if next_call_ns is not None:
            self._overruns.tick(self.get_clock().now().nanoseconds + next_call_ns)
            self.counters["overruns"] = self._overruns.skipped
        self._tick(time.monotonic())

    def _tick(self, start: float) -> None:
        if self.runner is None:
            self._hold("no_policy", f"no policy loaded ({self.load_error}): holding still")
            return
        with self._input_lock:
            latest, instruction = self._latest_image, self._instruction
        if instruction is None:
            self._hold("no_instruction", f"no instruction on {self.resolve_topic_name(self.cfg.instruction_topic)}")
            return
        if latest is None or start - latest[1] > self.cfg.stale_image_timeout_s:
            age = "no image yet" if latest is None else f"newest image is {start - latest[1]:.2f} s old"
            self._hold("stale_image", f"{age} (stale_image_timeout_s={self.cfg.stale_image_timeout_s}): holding still")
            return
        image_msg, received = latest
        image_id = (image_msg.header.stamp.sec, image_msg.header.stamp.nanosec, image_msg.header.frame_id)
        if image_id == self._answered:
            self.counters["repeated_image"] += 1  # normal with a slow camera: no log, no output
            return
        try:
            if isinstance(image_msg, CompressedImage):
                rgb = compressed_to_rgb(image_msg, self.cfg.min_image_side, self.cfg.max_image_pixels)
            else:
                rgb = image_to_rgb(image_msg, self.cfg.min_image_side, self.cfg.max_image_pixels)
        except InvalidInputError as err:
            self._refuse("bad_image", f"image refused: {err}", hold=True)
            return
        converted = time.monotonic()
        with self._runner_lock:
            try:
                result = self.runner.step(rgb, instruction)
            except InvalidInputError as err:
                self._refuse("bad_image", f"image refused: {err}", hold=True)
                return
        inferred = time.monotonic()
        if result.stats.tick == 0:
            self._log("info", ("episode", instruction), f"a new episode starts: {instruction!r}")
        clipped = clip_action(
            result.action,
            self.cfg.max_delta_position,
            self.cfg.max_delta_orientation,
            (self.cfg.gripper_min, self.cfg.gripper_max),
        )
        # The action carries the stamp of the image it answers: replay and logs can pair them exactly.
        action_header = Header(stamp=image_msg.header.stamp, frame_id=self.cfg.frame_id)
        self._publish(self.action_pub, action_message(clipped, action_header, result.stats.tick, result.normalized))
        self.twist.command(twist_message(clipped, self.period_s))
        ros_ms = 1e3 * ((converted - start) + (time.monotonic() - inferred))
        stats = cache_stats_message(result.stats, self._header(), ros_ms, 1e3 * (start - received))
        self._publish(self.stats_pub, stats)
        self._answered = image_id
        self._last_stats = result.stats
        self.counters["ticks"] += 1
        self._check_memory(result.stats)

    def _check_memory(self, stats: StepStats) -> None:
        level = memory_level(stats.kv_bytes_allocated, self.cfg.kv_warn_mib, self.cfg.kv_error_mib)
        if level == OK:
            return
        log, limit = ("error", "kv_error_mib") if level == ERROR else ("warning", "kv_warn_mib")
        self._log(
            log,
            ("kv_memory", level),
            f"KV cache holds {stats.kv_bytes_allocated / MIB:.1f} MiB, over {limit}={getattr(self.cfg, limit):g} "
            f"({stats.tokens} tokens, strategy {stats.strategy})",
        )

    def _header(self) -> Header:
        return Header(stamp=self.get_clock().now().to_msg(), frame_id=self.cfg.frame_id)

    def _log(self, level: str, key, text: str) -> None:
        """A log line rate-limited on its own ``key`` (a reason, or a message), not with every other line."""
        admitted = self.log_throttle.text(key, text)
        if admitted is None:
            return
        # one call per severity: rclpy's logger refuses a call site whose severity changes between calls
        if level == "error":
            self.get_logger().error(admitted)
        elif level == "warning":
            self.get_logger().warning(admitted)
        else:
            self.get_logger().info(admitted)

    def _hold(self, reason: str, text: str) -> None:
        self.counters[reason] += 1
        self._log("warning", reason, text)
        self.twist.hold_still()

    def _refuse(self, reason: str, text: str, hold: bool = False) -> None:
        self.counters[reason] += 1
        self._log("error", reason, f"{text} [{reason} #{self.counters[reason]}]")
        if hold:
            self.twist.hold_still()

    def _publish(self, publisher, msg) -> None:
        try:
            publisher.publish(msg)
        except RCLError:  # the context is shutting down (SIGINT/SIGTERM) while a tick was in flight
            pass

    def _publish_status(self) -> None:
        header = self._header()
        statuses = [self._inputs_status()]
        if self.runner is not None:
            statuses.append(self._memory_status())
        self._publish(self.diag_pub, diagnostic_array(header.stamp, *statuses, frame_id=header.frame_id))

    def _inputs_status(self) -> DiagnosticStatus:
        status = DiagnosticStatus(
            name=status_name(self.get_fully_qualified_name(), INPUTS_TASK), hardware_id=self.get_fully_qualified_name()
        )
        if self.runner is None:
            status.level, status.message = DiagnosticStatus.ERROR, f"no policy: {self.load_error}"
        elif self._instruction is None:
            status.level, status.message = DiagnosticStatus.WARN, "waiting for an instruction"
        elif self._latest_image is None or time.monotonic() - self._latest_image[1] > self.cfg.stale_image_timeout_s:
            status.level, status.message = DiagnosticStatus.WARN, "camera image stale or missing"
        else:
            status.level, status.message = DiagnosticStatus.OK, "receiving"
        status.values = key_values(**{k: self.counters[k] for k in COUNTERS}, instruction=self._instruction or "")
        return status

    def _memory_status(self) -> DiagnosticStatus:
        """The KV cache's memory against kv_warn_mib / kv_error_mib, and its positions against the model's."""
        status = DiagnosticStatus(
            name=status_name(self.get_fully_qualified_name(), KV_MEMORY_TASK),
            hardware_id=self.get_fully_qualified_name(),
        )
        stats, limit = self._last_stats, self.runner.position_limit
        allocated = stats.kv_bytes_allocated if stats else 0
        level = memory_level(allocated, self.cfg.kv_warn_mib, self.cfg.kv_error_mib)
        status.message = (
            f"{allocated / MIB:.1f} MiB allocated (warn {self.cfg.kv_warn_mib:g}, error {self.cfg.kv_error_mib:g})"
        )
        if stats and stats.max_position >= limit:
            level = max(level, WARN)
            status.message += f"; positions reached {stats.max_position}, past max_position_embeddings={limit}"
        status.level = bytes([level])  # a byte field: an int is serialized wrongly (64 came out for 2)
        status.values = key_values(
            kv_bytes=stats.kv_bytes if stats else 0,
            kv_bytes_allocated=allocated,
            kv_warn_mib=self.cfg.kv_warn_mib,
            kv_error_mib=self.cfg.kv_error_mib,
            max_position=stats.max_position if stats else 0,
            max_position_embeddings=limit,
        )
        return status


def main(args: list[str] | None = None) -> None:
    run_node(PolicyNode, args)


if __name__ == "__main__":
    main()
