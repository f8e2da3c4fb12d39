"""The policy node: newest camera image + instruction -> one end-effector action per control tick.

Images and instructions arrive on one callback group and are only stored; the control timer runs on
another, so a long inference never blocks incoming images (multi-threaded executor). Each tick uses
the newest image only; an overrun skips ticks (counted), it never queues them.
"""

from __future__ import annotations

import threading
import time
from collections import Counter

import numpy as np
import rclpy
import torch
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from geometry_msgs.msg import TwistStamped
from rclpy._rclpy_pybind11 import RCLError
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.node import Node
from sensor_msgs.msg import Image
from std_msgs.msg import Header, String
from std_srvs.srv import Trigger

from ..core.cache.gate import GateCheckpointError
from ..core.defaults import trained_policy_checkpoint
from ..core.openvla.action_tokenizer import UnnormKeyError
from ..core.openvla.config import CheckpointError
from ..core.openvla.processor import InvalidInputError
from ..core.policy import OpenVLAPolicy
from ..core.runner import PolicyRunner
from ..msg import CacheStats, EndEffectorAction
from .conversions import clip_action, image_to_rgb
from .interfaces import (
    CAMERA_QOS,
    DIAGNOSTICS,
    DIAGNOSTICS_QOS,
    INPUTS_TASK,
    INSTRUCTION_QOS,
    OUTPUT_QOS,
    action_message,
    cache_stats_message,
    diagnostic_array,
    key_values,
    status_name,
    twist_message,
)
from .params import PolicyNodeConfig, declare, declare_cache
from .spin import spin_node

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class PolicyNode(Node):
    def __init__(self, **kwargs):
        super().__init__("policy_node", **kwargs)
        self.cfg: PolicyNodeConfig = declare(self, PolicyNodeConfig)
        self.cache_cfg = declare_cache(self)
        self.period_s = 1.0 / self.cfg.control_hz
        self.counters: Counter[str] = Counter()
        self.runner: PolicyRunner | None = None
        self.load_error = ""
        self._load_policy()

        self._input_lock = threading.Lock()
        self._runner_lock = threading.Lock()
        self._latest_image: tuple[Image, float] | None = None
        self._instruction: str | None = None
        self._last_tick_end: float | None = None

        inputs, control = MutuallyExclusiveCallbackGroup(), MutuallyExclusiveCallbackGroup()
        self.create_subscription(Image, self.cfg.camera_topic, self._on_image, CAMERA_QOS, callback_group=inputs)
        self.create_subscription(
            String, self.cfg.instruction_topic, self._on_instruction, INSTRUCTION_QOS, callback_group=inputs
        )
        self.action_pub = self.create_publisher(EndEffectorAction, self.cfg.action_topic, OUTPUT_QOS)
        self.twist_pub = self.create_publisher(TwistStamped, self.cfg.twist_topic, OUTPUT_QOS)
        self.stats_pub = self.create_publisher(CacheStats, self.cfg.cache_stats_topic, OUTPUT_QOS)
        self.diag_pub = self.create_publisher(DiagnosticArray, DIAGNOSTICS, DIAGNOSTICS_QOS)
        self.create_service(Trigger, "~/reset", self._on_reset, callback_group=control)
        self.create_timer(self.period_s, self._on_tick, callback_group=control)
        self.create_timer(1.0 / self.cfg.status_hz, self._publish_status, callback_group=inputs)

    def _load_policy(self) -> None:
        if self.cfg.torch_threads > 0:
            torch.set_num_threads(self.cfg.torch_threads)
        checkpoint = self.cfg.checkpoint or str(trained_policy_checkpoint())
        try:
            policy = OpenVLAPolicy.from_checkpoint(
                checkpoint,
                self.cfg.unnorm_key or None,
                self.cfg.device,
                DTYPES[self.cfg.dtype],
                self.cfg.max_instruction_chars,
            )
            self.runner = PolicyRunner(policy, self.cache_cfg)
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
            f"{self.cfg.control_hz:g} Hz on {self.resolve_topic_name(self.cfg.camera_topic)} "
            f"(warm-up tick {warm_ms:.0f} ms)"
        )

    def _on_image(self, msg: Image) -> None:
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
            changed = text != self._instruction
            self._instruction = text
        if changed:
            self.get_logger().info(f"instruction: {text!r} (a new episode starts at the next tick)")

    def _on_reset(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        with self._runner_lock:
            if self.runner is not None:
                self.runner.reset()
        self.counters["resets"] += 1
        response.success, response.message = (
            self.runner is not None,
            "cache cleared" if self.runner else self.load_error,
        )
        self.get_logger().info("reset: cache cleared, new episode")
        return response

    def _on_tick(self) -> None:
        start = time.monotonic()
        if self._last_tick_end is not None:
            late = start - self._last_tick_end
            skipped = int(late // self.period_s)  # whole periods that passed without a tick
            self.counters["overruns"] += skipped
        try:
            self._tick(start)
        finally:
            self._last_tick_end = max(time.monotonic(), start)

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
        try:
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
        clipped = clip_action(
            result.action,
            self.cfg.max_delta_position,
            self.cfg.max_delta_orientation,
            (self.cfg.gripper_min, self.cfg.gripper_max),
        )
        # The action carries the stamp of the image it answers: replay and logs can pair them exactly.
        action_header = Header(stamp=image_msg.header.stamp, frame_id=self.cfg.frame_id)
        self._publish(self.action_pub, action_message(clipped, action_header, result.stats.tick, result.normalized))
        self._publish(self.twist_pub, twist_message(clipped, self.period_s, self._header()))
        ros_ms = 1e3 * ((converted - start) + (time.monotonic() - inferred))
        stats = cache_stats_message(result.stats, self._header(), ros_ms, 1e3 * (start - received))
        self._publish(self.stats_pub, stats)
        self.counters["ticks"] += 1

    def _header(self) -> Header:
        return Header(stamp=self.get_clock().now().to_msg(), frame_id=self.cfg.frame_id)

    def _hold(self, reason: str, text: str) -> None:
        self.counters[reason] += 1
        self.get_logger().warning(text, throttle_duration_sec=self.cfg.error_log_period_s)
        self._publish(self.twist_pub, twist_message(None, self.period_s, self._header()))

    def _refuse(self, reason: str, text: str, hold: bool = False) -> None:
        self.counters[reason] += 1
        self.get_logger().error(
            f"{text} [{reason} #{self.counters[reason]}]", throttle_duration_sec=self.cfg.error_log_period_s
        )
        if hold:
            self._publish(self.twist_pub, twist_message(None, self.period_s, self._header()))

    def _publish(self, publisher, msg) -> None:
        try:
            publisher.publish(msg)
        except RCLError:  # the context is shutting down (SIGINT/SIGTERM) while a tick was in flight
            pass

    def _publish_status(self) -> None:
        status = DiagnosticStatus(
            name=status_name(self.get_name(), INPUTS_TASK), hardware_id=self.get_fully_qualified_name()
        )
        if self.runner is None:
            status.level, status.message = DiagnosticStatus.ERROR, f"no policy: {self.load_error}"
        elif self._instruction is None:
            status.level, status.message = DiagnosticStatus.WARN, "waiting for an instruction"
        elif self._latest_image is None or time.monotonic() - self._latest_image[1] > self.cfg.stale_image_timeout_s:
            status.level, status.message = DiagnosticStatus.WARN, "camera image stale or missing"
        else:
            status.level, status.message = DiagnosticStatus.OK, "receiving"
        counted = (
            "ticks",
            "overruns",
            "bad_image",
            "bad_instruction",
            "stale_image",
            "no_instruction",
            "no_policy",
            "checkpoint_errors",
            "resets",
        )
        status.values = key_values(**{k: self.counters[k] for k in counted}, instruction=self._instruction or "")
        header = self._header()
        self._publish(self.diag_pub, diagnostic_array(header.stamp, status, frame_id=header.frame_id))


def main(args: list[str] | None = None) -> None:
    rclpy.init(args=args)
    spin_node(PolicyNode())


if __name__ == "__main__":
    main()
