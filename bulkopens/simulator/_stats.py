"""What the simulator answered: counts by status and an ordered request log."""

from __future__ import annotations

from dataclasses import dataclass, field

#: The status recorded for an answer whose connection was reset mid-body.
RESET_STATUS = 0


@dataclass(frozen=True, slots=True)
class RequestRecord:
    """One answered API request (admin endpoints are never recorded).

    ``t`` is the simulator clock (``time.monotonic()`` by default) when the request reached
    the handler, before any injected latency. ``api_key`` is the configured key the request
    used, or None when it was missing or not a configured key (an unknown value is never
    stored). ``path`` never includes the query. ``status`` is 0 for a reset connection.
    """

    t: float
    api_key: str | None = field(repr=False)
    method: str
    path: str
    status: int


class Stats:
    """Answer counts by status and the request log, in answer order."""

    __slots__ = ("log", "status_counts")

    def __init__(self) -> None:
        self.status_counts: dict[int, int] = {}
        self.log: list[RequestRecord] = []

    def record(self, entry: RequestRecord) -> None:
        """Count one answered request."""
        self.log.append(entry)
        self.status_counts[entry.status] = self.status_counts.get(entry.status, 0) + 1

    def reset(self) -> None:
        """Forget every count and log entry."""
        self.status_counts.clear()
        self.log.clear()

    def __repr__(self) -> str:
        return f"<Stats requests={len(self.log)} status_counts={self.status_counts}>"
