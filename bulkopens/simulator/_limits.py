"""Per-api_key rate limit (sliding window) and daily quota (per UTC day).

Contract of :meth:`KeyLimits.admit`: a request is rejected with ``"quota"`` when the key
already had ``daily_quota`` requests accepted on the current UTC day, else with ``"rate"``
when ``ceil(rate)`` requests were accepted within the last ``ceil(rate) / rate`` seconds
(exactly "``rate`` in the last 1.0 s" for an integer rate); otherwise it is accepted and
counted. Rejections are never counted. Both clocks are injectable for tests.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from datetime import UTC, date, datetime
from typing import Literal

Verdict = Literal["rate", "quota"] | None


def utc_today() -> date:
    """Today's date in UTC (the quota's day)."""
    return datetime.now(UTC).date()


class KeyLimits:
    """Admission control for every api_key of one simulator."""

    __slots__ = ("_capacity", "_clock", "_day", "_quota", "_today", "_used", "_window", "_windows")

    def __init__(
        self,
        rate_per_second: float,
        daily_quota: int,
        *,
        clock: Callable[[], float],
        today: Callable[[], date] = utc_today,
    ) -> None:
        self._capacity = math.ceil(rate_per_second) if rate_per_second > 0 else 0
        self._window = self._capacity / rate_per_second if self._capacity else 0.0
        self._quota = daily_quota
        self._clock = clock
        self._today = today
        self._windows: dict[str, deque[float]] = {}
        self._day: date | None = None
        self._used: dict[str, int] = {}

    def admit(self, key: str) -> Verdict:
        """Decide one request of ``key`` now; count it if accepted."""
        if self._quota:
            day = self._today()
            if day != self._day:  # a new UTC day: every key's quota starts again
                self._day = day
                self._used.clear()
            if self._used.get(key, 0) >= self._quota:
                return "quota"
        if self._capacity:
            now = self._clock()
            window = self._windows.get(key)
            if window is None:
                window = self._windows[key] = deque()
            horizon = now - self._window
            while window and window[0] <= horizon:
                window.popleft()
            if len(window) >= self._capacity:
                return "rate"
            window.append(now)
        if self._quota:
            self._used[key] = self._used.get(key, 0) + 1
        return None

    def __repr__(self) -> str:
        return (
            f"<KeyLimits capacity={self._capacity}/{self._window:g}s quota={self._quota}"
            f" day={self._day} keys={len(self._windows) or len(self._used)}>"
        )
