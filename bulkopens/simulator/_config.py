"""The simulator's settings: one frozen, validated dataclass.

Contract: constructing a :class:`SimConfig` with an out-of-range value raises ``ValueError``
naming the field, so a running simulator never sees an invalid setting. The secrets
(``api_keys``, ``tokens``) are kept out of ``repr``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

#: Largest dataset the simulator is designed for (contact ids are "1".."contacts").
MAX_CONTACTS = 100_000_000
#: Largest number of SENT campaigns (timestamps reserve one residue per campaign, see _data).
MAX_CAMPAIGNS = 10_000

_FRACTIONS = (
    "heavy_fraction",
    "empty_fraction",
    "slow_rate",
    "error_rate",
    "reset_rate",
    "truncate_rate",
)
_NON_NEGATIVE = (
    "rate_per_second",
    "latency_ms",
    "jitter_ms",
    "slow_seconds",
    "access_token_seconds",
    "refresh_idle_seconds",
    "token_rate_per_second",
)


@dataclass(frozen=True, slots=True)
class SimConfig:
    """How the simulated Constant Contact v2 tracking API behaves.

    Dataset: ``seed``, ``contacts`` (ids "1".."contacts"), ``campaigns`` (SENT ones; three
    more DRAFT/SCHEDULED campaigns without tracking data are always added),
    ``heavy_fraction`` (contacts with 1,000-3,000 opens) and ``empty_fraction`` (contacts
    with no activity at all).

    Access: ``api_keys`` and ``tokens`` accepted; per api_key ``rate_per_second`` (sliding
    1-second window, 0 = unlimited) and ``daily_quota`` (per UTC day, 0 = unlimited),
    rejected in ``limit_style`` "429" (v3 style) or "403" (v2 Mashery style), with a
    ``Retry-After`` header only when ``retry_after`` is set.

    Faults (each a share of answers in 0..1, drawn per request from a seeded hash):
    ``slow_rate`` (+``slow_seconds``), ``error_rate`` (5xx), ``reset_rate`` (connection reset
    mid-body), ``truncate_rate`` (200 with a cut JSON body); plus ``latency_ms`` ±
    ``jitter_ms`` on every answer.

    Id types: ``numeric_campaign_ids`` writes ``campaign_id`` as a JSON number in the records
    of the campaign-tracking reports, as the API's campaign fixtures do (docs/ctct-api.md §3.1);
    ``numeric_contact_ids`` does the same for their ``contact_id`` (not seen in the API: a
    harder test of a client's tolerance). Contact-tracking answers keep strings.

    v3 (docs/simulator-v3.md): the OAuth2 app ``client_id``/``client_secret`` (the v3 "API
    key": its rate limit and quota are counted on the client id); access tokens live
    ``access_token_seconds``; refresh tokens are ``refresh_tokens`` "rotating" (single use)
    or "long-lived", and die after ``refresh_idle_seconds`` unused; ``device_refresh`` makes
    the device flow issue a refresh token too (with ``offline_access``); ``device_interval``
    is the polling interval it announces; the token endpoint admits
    ``token_rate_per_second`` requests per client id (0 = unlimited); ``xref`` "404" or
    "410" makes the v2-id cross-reference endpoints answer as if they had been removed.
    The configured ``tokens`` are also accepted on v3, as never-expiring access tokens of
    ``client_id`` with every scope.
    """

    seed: int = 1
    contacts: int = 1000
    campaigns: int = 30
    heavy_fraction: float = 0.01
    empty_fraction: float = 0.0
    api_keys: tuple[str, ...] = field(default=("demo-key",), repr=False)
    tokens: tuple[str, ...] = field(default=("demo-token",), repr=False)
    rate_per_second: float = 4.0
    daily_quota: int = 10_000
    limit_style: Literal["429", "403"] = "429"
    retry_after: float | None = None
    latency_ms: float = 0.0
    jitter_ms: float = 0.0
    slow_rate: float = 0.0
    slow_seconds: float = 5.0
    error_rate: float = 0.0
    reset_rate: float = 0.0
    truncate_rate: float = 0.0
    numeric_campaign_ids: bool = False
    numeric_contact_ids: bool = False
    client_id: str = "demo-client"
    client_secret: str = field(default="demo-secret", repr=False)
    access_token_seconds: float = 86_400.0
    refresh_tokens: Literal["rotating", "long-lived"] = "rotating"
    refresh_idle_seconds: float = 180 * 86_400.0
    device_refresh: bool = True
    device_interval: int = 5
    token_rate_per_second: float = 1.0
    xref: Literal["ok", "404", "410"] = "ok"

    def __post_init__(self) -> None:
        if not 1 <= self.contacts <= MAX_CONTACTS:
            raise ValueError(f"contacts must be in 1..{MAX_CONTACTS}")
        if not 0 <= self.campaigns <= MAX_CAMPAIGNS:
            raise ValueError(f"campaigns must be in 0..{MAX_CAMPAIGNS}")
        for name in _FRACTIONS:
            value = getattr(self, name)
            if not (math.isfinite(value) and 0.0 <= value <= 1.0):
                raise ValueError(f"{name} must be a number in 0..1")
        for name in _NON_NEGATIVE:
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0.0):
                raise ValueError(f"{name} must be a finite number >= 0")
        if self.daily_quota < 0:
            raise ValueError("daily_quota must be >= 0")
        if self.limit_style not in ("429", "403"):
            raise ValueError("limit_style must be '429' or '403'")
        if self.retry_after is not None and not (
            math.isfinite(self.retry_after) and self.retry_after >= 0
        ):
            raise ValueError("retry_after must be a finite number >= 0 or None")
        for name in ("api_keys", "tokens"):
            values = getattr(self, name)
            if not values or not all(isinstance(v, str) and v for v in values):
                raise ValueError(f"{name} must hold at least one non-empty string")
        if not (isinstance(self.client_id, str) and self.client_id and ":" not in self.client_id):
            raise ValueError("client_id must be a non-empty string without ':'")
        if not (isinstance(self.client_secret, str) and self.client_secret):
            raise ValueError("client_secret must be a non-empty string")
        if self.refresh_tokens not in ("rotating", "long-lived"):
            raise ValueError("refresh_tokens must be 'rotating' or 'long-lived'")
        if self.xref not in ("ok", "404", "410"):
            raise ValueError("xref must be 'ok', '404' or '410'")
        if not 1 <= self.device_interval <= 3600:
            raise ValueError("device_interval must be in 1..3600")

    @property
    def has_faults(self) -> bool:
        """True when any answer may be delayed at random, failed, reset or truncated."""
        return (
            self.jitter_ms > 0
            or self.slow_rate > 0
            or self.error_rate > 0
            or self.reset_rate > 0
            or self.truncate_rate > 0
        )
