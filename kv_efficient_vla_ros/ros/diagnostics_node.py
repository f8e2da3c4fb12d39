"""The diagnostics node: measures the control loop from what the policy node publishes.

Control frequency over a sliding window of action arrivals, tick latency p50/p95 and input age from
``cache_stats``, and cache tokens / bytes against the budget; published on ``/diagnostics`` as
OK / WARN / ERROR with key-values, at ``publish_hz``.
"""

from __future__ import annotations

import time
from collections import deque

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from rclpy.node import Node

from ..msg import CacheStats, EndEffectorAction
from .interfaces import (
    CACHE_TASK,
    CONTROL_LOOP_TASK,
    DIAGNOSTICS,
    DIAGNOSTICS_QOS,
    OUTPUT_QOS,
    diagnostic_array,
    key_values,
    status_name,
)
from .params import DiagnosticsConfig, declare
from .spin import run_node


class DiagnosticsNode(Node):
    def __init__(self, **kwargs):
        super().__init__("diagnostics_node", **kwargs)
        self.cfg: DiagnosticsConfig = declare(self, DiagnosticsConfig)
        self.actions: deque[float] = deque()
        self.last_action: float | None = None
        self.stats: deque[tuple[float, CacheStats]] = deque()
        self.create_subscription(EndEffectorAction, self.cfg.action_topic, self._on_action, OUTPUT_QOS)
        self.create_subscription(CacheStats, self.cfg.cache_stats_topic, self._on_stats, OUTPUT_QOS)
        self.pub = self.create_publisher(DiagnosticArray, DIAGNOSTICS, DIAGNOSTICS_QOS)
        self.create_timer(1.0 / self.cfg.publish_hz, self._publish)

    def _on_action(self, msg: EndEffectorAction) -> None:
        self.last_action = time.monotonic()
        self.actions.append(self.last_action)

    def _on_stats(self, msg: CacheStats) -> None:
        self.stats.append((time.monotonic(), msg))

    def _trim(self, now: float) -> None:
        while self.actions and now - self.actions[0] > self.cfg.window_s:
            self.actions.popleft()
        while self.stats and now - self.stats[0][0] > self.cfg.window_s:
            self.stats.popleft()

    def control_loop_status(self, now: float) -> DiagnosticStatus:
        status = self._status(CONTROL_LOOP_TASK)
        n = len(self.actions)
        hz = (n - 1) / (self.actions[-1] - self.actions[0]) if n >= 2 and self.actions[-1] > self.actions[0] else 0.0
        latencies = np.array([s.inference_ms + s.ros_ms for _, s in self.stats]) if self.stats else np.zeros(0)
        ros = np.array([s.ros_ms for _, s in self.stats]) if self.stats else np.zeros(0)
        ages = np.array([s.input_age_ms for _, s in self.stats]) if self.stats else np.zeros(0)
        p50, p95 = np.percentile(latencies, [50, 95]) if len(latencies) else (0.0, 0.0)
        age = float(ages.max()) if len(ages) else 0.0
        period_ms = 1e3 / self.cfg.target_hz
        silent = now - self.last_action if self.last_action is not None else None
        if silent is None or silent > self.cfg.no_action_timeout_s:
            status.level = DiagnosticStatus.ERROR
            status.message = "no action yet" if silent is None else f"no action for {silent:.1f} s"
        elif hz < self.cfg.min_hz_fraction * self.cfg.target_hz:
            status.level = DiagnosticStatus.WARN
            status.message = (
                f"control at {hz:.2f} Hz, below {self.cfg.min_hz_fraction:.0%} of {self.cfg.target_hz:g} Hz"
            )
        elif p95 > period_ms:
            status.level = DiagnosticStatus.WARN
            status.message = f"tick latency p95 {p95:.0f} ms exceeds the {period_ms:.0f} ms period"
        elif age > self.cfg.max_input_age_ms:
            status.level = DiagnosticStatus.WARN
            status.message = f"input images up to {age:.0f} ms old"
        else:
            status.level = DiagnosticStatus.OK
            status.message = f"{hz:.2f} Hz"
        ros_share = float(ros.sum() / latencies.sum()) if len(latencies) and latencies.sum() > 0 else 0.0
        status.values = key_values(
            control_hz=f"{hz:.3f}",
            target_hz=self.cfg.target_hz,
            latency_p50_ms=f"{p50:.1f}",
            latency_p95_ms=f"{p95:.1f}",
            ros_overhead_share=f"{ros_share:.4f}",
            input_age_max_ms=f"{age:.1f}",
            actions_in_window=n,
        )
        return status

    def cache_status(self) -> DiagnosticStatus:
        status = self._status(CACHE_TASK)
        if not self.stats:
            status.level, status.message = DiagnosticStatus.WARN, "no cache_stats yet"
            return status
        s = self.stats[-1][1]
        over = s.budget_tokens > 0 and s.history_tokens > s.budget_tokens  # 0: the strategy keeps no budget
        status.level = DiagnosticStatus.ERROR if over else DiagnosticStatus.OK
        status.message = (
            f"history {s.history_tokens} tokens over budget {s.budget_tokens}"
            if over
            else f"{s.tokens} tokens, {s.kv_bytes / 1e6:.2f} MB ({s.policy})"
        )
        status.values = key_values(
            policy=s.policy,
            tick=s.tick,
            tokens=s.tokens,
            history_tokens=s.history_tokens,
            budget_tokens=s.budget_tokens,
            kv_bytes=s.kv_bytes,
            kv_bytes_peak=s.kv_bytes_peak,
            chunks_verbatim=s.chunks_verbatim,
            chunks_summarized=s.chunks_summarized,
            max_position=s.max_position,
            reused_share=f"{s.reused_share:.2f}",
            gate_ms=f"{s.gate_ms:.2f}",
            evict_ms=f"{s.evict_ms:.2f}",
        )
        return status

    def _status(self, task: str) -> DiagnosticStatus:
        fqn = self.get_fully_qualified_name()
        return DiagnosticStatus(name=status_name(fqn, task), hardware_id=fqn)

    def _publish(self) -> None:
        now = time.monotonic()
        self._trim(now)
        stamp = self.get_clock().now().to_msg()
        self.pub.publish(diagnostic_array(stamp, self.control_loop_status(now), self.cache_status()))


def main(args: list[str] | None = None) -> None:
    run_node(DiagnosticsNode, args, threads=1)


if __name__ == "__main__":
    main()
