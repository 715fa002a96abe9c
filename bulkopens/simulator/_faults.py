"""Injected faults and latency, reproducible regardless of how requests interleave.

Each decision is a hash of (seed, request key, n), where the request key is the path plus the
query without ``api_key`` and n is how many times that exact request already reached the
fault stage. No RNG is shared between requests, so a given request sequence always sees the
same faults, and a retry of a request gets a fresh (but still deterministic) draw.

Precedence when several shares hit: 5xx error, then connection reset, then truncated body.
The delay (latency ± jitter, plus ``slow_seconds`` for slow answers) applies to every answer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from bulkopens.simulator._config import SimConfig
from bulkopens.simulator._hashing import digest, digest_units

FaultKind = Literal["none", "error", "reset", "truncate"]
ERROR_STATUSES = (500, 502, 503, 504)


@dataclass(frozen=True, slots=True)
class Fault:
    """What to do to one answer: its kind, the delay before it, and for errors the status
    and whether the body is an HTML page rather than the JSON error array."""

    kind: FaultKind
    delay: float
    status: int = 200
    html: bool = False


class FaultPlan:
    """Draws a :class:`Fault` per request; keeps only a seen-count per request key."""

    __slots__ = ("_config", "_plain", "_seed", "_seen")

    def __init__(self, config: SimConfig) -> None:
        self._config = config
        self._seed = str(config.seed).encode()
        self._plain = Fault("none", config.latency_ms / 1000.0)
        self._seen: dict[bytes, int] = {}

    def draw(self, request_key: str, *, count: bool = True) -> Fault:
        """The fault for this occurrence of ``request_key``.

        With ``count`` the occurrence is recorded (requests that reach the fault stage);
        without it (requests rejected earlier) only the delay of the result is meaningful.
        """
        config = self._config
        if not config.has_faults:
            return self._plain
        key_hash = digest(self._seed, request_key.encode())[:16]
        n = self._seen.get(key_hash, 0)
        if count:
            self._seen[key_hash] = n + 1
        u = digest_units(digest(key_hash, n.to_bytes(8, "big")))
        delay_ms = max(0.0, config.latency_ms + config.jitter_ms * (2.0 * u[0] - 1.0))
        delay = delay_ms / 1000.0 + (config.slow_seconds if u[1] < config.slow_rate else 0.0)
        if u[2] < config.error_rate:
            status = ERROR_STATUSES[int(u[5] * len(ERROR_STATUSES))]
            return Fault("error", delay, status=status, html=u[6] < 0.5)
        if u[3] < config.reset_rate:
            return Fault("reset", delay)
        if u[4] < config.truncate_rate:
            return Fault("truncate", delay)
        return Fault("none", delay)
