"""The tracking reports bulkopens can fetch: one table entry per report, for both scopes.

A report lives under a contact (``/v2/contacts/{id}/tracking…``) or under a campaign
(``/v2/emailmarketing/campaigns/{id}/tracking…``); its records have the same shape either way
(ctct-api.md §3.1, §4.1). The mixed ``all`` report exists for contacts only: the campaign
counterpart is not in the API's documentation.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

#: Whose report a work item's id names: a contact's or a campaign's.
Scope = Literal["contact", "campaign"]

#: The date field of each activity type, for the mixed ``all`` report.
DATE_FIELD_BY_ACTIVITY = {
    "EMAIL_OPEN": "open_date",
    "EMAIL_CLICK": "click_date",
    "EMAIL_FORWARD": "forward_date",
    "EMAIL_BOUNCE": "bounce_date",
    "EMAIL_UNSUBSCRIBE": "unsubscribe_date",
    "EMAIL_SEND": "send_date",
}


@dataclass(frozen=True, slots=True)
class Report:
    """One tracking report: where it lives and which field dates its records."""

    name: str
    path: str  # appended to .../tracking, for a contact and (if for_campaigns) a campaign
    date_field: str | None  # None: look it up per record by activity_type
    for_campaigns: bool = True  # the campaign endpoint exists; its summary counts ``name``

    def contact_path(self, contact_id: str) -> str:
        return f"/v2/contacts/{contact_id}/tracking{self.path}"

    def campaign_path(self, campaign_id: str) -> str:
        return f"/v2/emailmarketing/campaigns/{campaign_id}/tracking{self.path}"

    def path_for(self, scope: Scope, item_id: str) -> str:
        """The report's path for a contact's or a campaign's id."""
        return self.campaign_path(item_id) if scope == "campaign" else self.contact_path(item_id)

    def record_time(self, record: dict[str, object]) -> str | None:
        """The record's activity time as the API wrote it, or None if it has none."""
        field = self.date_field
        if field is None:
            field = DATE_FIELD_BY_ACTIVITY.get(str(record.get("activity_type")), "")
        value = record.get(field)
        return value if isinstance(value, str) else None


REPORTS: dict[str, Report] = {
    r.name: r
    for r in (
        Report("opens", "/opens", "open_date"),
        Report("clicks", "/clicks", "click_date"),
        Report("forwards", "/forwards", "forward_date"),
        Report("bounces", "/bounces", "bounce_date"),
        Report("unsubscribes", "/unsubscribes", "unsubscribe_date"),
        Report("sends", "/sends", "send_date"),
        Report("all", "", None, for_campaigns=False),
    )
}

#: The reports a campaign can be asked for.
CAMPAIGN_REPORTS = tuple(name for name, r in REPORTS.items() if r.for_campaigns)
