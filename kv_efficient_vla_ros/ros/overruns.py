"""Counting the control periods that passed without a tick.

A ROS timer keeps a fixed schedule: when a callback runs late, the timer moves its next call to the
first deadline still ahead and drops the ones in between. So the deadline each tick leaves ahead of it
(now + ``time_until_next_call``) tells how many periods were skipped since the previous tick, however
long the ticks and wherever the schedule started. (Measuring the gap between the end of one tick and
the start of the next counts nothing when every tick overruns: the late timer fires at once.)
"""

from __future__ import annotations


class OverrunCounter:
    def __init__(self, period_ns: int):
        self.period_ns = period_ns
        self.skipped = 0
        self._next_deadline: int | None = None

    def tick(self, next_deadline_ns: int) -> int:
        """Record a tick that leaves ``next_deadline_ns`` as the timer's next call; the periods it skipped."""
        skipped = 0
        if self._next_deadline is not None:
            periods = round((next_deadline_ns - self._next_deadline) / self.period_ns)
            skipped = max(0, periods - 1)  # one period per tick is on time; each one more was skipped
        self._next_deadline = next_deadline_ns
        self.skipped += skipped
        return skipped
