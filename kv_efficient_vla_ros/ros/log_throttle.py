"""Rate limits for log lines, one per key.

rclpy's ``throttle_duration_sec`` keeps one limit per call site, so every reason logged through one
helper shared a single limit: an empty instruction refused 1.5 s after a bad image was counted but never
logged. Here each reason (or message) has its own limit, and a line that comes back after a quiet period
says how many like it were held back.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable


class LogThrottle:
    def __init__(self, period_s: float, clock: Callable[[], float] = time.monotonic):
        self.period_s = period_s
        self._clock = clock
        self._last: dict[Hashable, float] = {}
        self._held: dict[Hashable, int] = {}

    def admit(self, key: Hashable) -> int | None:
        """``None`` when a line of ``key`` was let through less than ``period_s`` ago (this one is held
        back); else how many lines of ``key`` were held back since the last one let through."""
        now = self._clock()
        last = self._last.get(key)
        if last is not None and now - last < self.period_s:
            self._held[key] = self._held.get(key, 0) + 1
            return None
        self._last[key] = now
        return self._held.pop(key, 0)

    def text(self, key: Hashable, text: str) -> str | None:
        """``text`` (noting the lines held back) when ``key`` may log now, else ``None``."""
        held = self.admit(key)
        if held is None:
            return None
        return text + (f" ({held} more like this since the last one)" if held else "")
