"""The endpoint table: every simulated API path, in one place (docs/ctct-api.md §3, §4).

Adding an endpoint is adding one :class:`Endpoint` row. ``{id}`` marks the contact or
campaign id segment; every path also matches with one trailing slash (the old Java SDK calls
``/v2/contacts/{id}/tracking/``). All endpoints are ``GET`` only.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal

Scope = Literal["contact", "campaign", "account"]
#: records: a paged list of tracking records; campaign_list: the paged v2 campaign list;
#: the others are single, unpaged bodies.
Shape = Literal[
    "records", "contact_summary", "contact_by_campaign", "campaign_summary", "campaign_list"
]


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One API path: what it is about (scope), what it returns (shape, report) and its
    page-size limits (for paged shapes)."""

    pattern: str
    scope: Scope
    shape: Shape
    report: str = "all"  # records only: a key of _data.REPORT_KINDS
    default_limit: int = 500
    max_limit: int = 500
    regex: re.Pattern[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        body = re.escape(self.pattern).replace(r"\{id\}", "(?P<id>[^/]*)")
        object.__setattr__(self, "regex", re.compile(f"{body}/?"))


_C = "/v2/contacts/{id}/tracking"
_K = "/v2/emailmarketing/campaigns/{id}/tracking"

ENDPOINTS: tuple[Endpoint, ...] = (
    Endpoint(f"{_C}", "contact", "records", "all"),
    Endpoint(f"{_C}/opens", "contact", "records", "opens"),
    Endpoint(f"{_C}/clicks", "contact", "records", "clicks"),
    Endpoint(f"{_C}/forwards", "contact", "records", "forwards"),
    Endpoint(f"{_C}/bounces", "contact", "records", "bounces"),
    Endpoint(f"{_C}/unsubscribes", "contact", "records", "unsubscribes"),
    Endpoint(f"{_C}/sends", "contact", "records", "sends"),
    Endpoint(f"{_C}/reports/summary", "contact", "contact_summary"),
    Endpoint(f"{_C}/reports/summaryByCampaign", "contact", "contact_by_campaign"),
    Endpoint(f"{_K}/opens", "campaign", "records", "opens"),
    Endpoint(f"{_K}/clicks", "campaign", "records", "clicks"),
    Endpoint(f"{_K}/forwards", "campaign", "records", "forwards"),
    Endpoint(f"{_K}/bounces", "campaign", "records", "bounces"),
    Endpoint(f"{_K}/unsubscribes", "campaign", "records", "unsubscribes"),
    Endpoint(f"{_K}/sends", "campaign", "records", "sends"),
    Endpoint(f"{_K}/reports/summary", "campaign", "campaign_summary"),
    Endpoint(
        "/v2/emailmarketing/campaigns", "account", "campaign_list", default_limit=50, max_limit=50
    ),
)


def match(path: str) -> tuple[Endpoint, str | None] | None:
    """The endpoint serving ``path`` and its raw id segment (None for account scope)."""
    for endpoint in ENDPOINTS:
        m = endpoint.regex.fullmatch(path)
        if m is not None:
            return endpoint, m.groupdict().get("id")
    return None
