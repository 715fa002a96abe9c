"""The tracking reports bulkopens can fetch: one table entry per report, for both scopes.

A report lives under a contact (``/v2/contacts/{id}/tracking…``) or under a campaign
(``/v2/emailmarketing/campaigns/{id}/tracking…``); its records have the same shape either way
(docs/ctct-api.md §3.1, §4.1). The mixed ``all`` report exists for contacts only: the campaign
counterpart is not in the API's documentation.

The activity reports are paged. The summary reports are not: ``summary`` is one object per
contact (C8) or campaign (K7), ``summary-by-campaign`` a bare array per contact (C9); see
:mod:`bulkopens._summaries`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

#: Whose report a work item's id names: a contact's or a campaign's.
Scope = Literal["contact", "campaign"]
#: What one request for the report answers: a page of records (with a next_link), one
#: object, or a bare array of objects (the last two: the summaries, never paged).
Shape = Literal["pages", "object", "array"]

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
    date_field: str | None  # None: look it up per record by activity_type (summaries: none)
    for_campaigns: bool = True  # the campaign endpoint exists
    shape: Shape = "pages"

    @property
    def paged(self) -> bool:
        """An activity report: paged, dated records, ``created_since`` applies."""
        return self.shape == "pages"

    @property
    def plannable(self) -> bool:
        """Whether the campaign path (``--strategy``) can give this contact report: its records
        are exactly the campaign reports' records, and the campaign summary counts ``name``."""
        return self.paged and self.for_campaigns

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
        Report("summary", "/reports/summary", None, shape="object"),
        Report("summary-by-campaign", "/reports/summaryByCampaign", None, False, "array"),
    )
}

#: The reports a campaign can be asked for.
CAMPAIGN_REPORTS = tuple(name for name, r in REPORTS.items() if r.for_campaigns)
#: The summary reports: not paged, no date filter, not for the planner.
SUMMARY_REPORTS = tuple(name for name, r in REPORTS.items() if not r.paged)
