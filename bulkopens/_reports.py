"""The tracking reports bulkopens can fetch: one table entry per report, for both scopes.

A report is asked of a contact or of a campaign; its records have the same shape either way
(docs/ctct-api.md §3.1, §4.1, §5.2). Where each report lives, and which field dates its
records, depends on the API version: see :mod:`bulkopens._api`. The mixed ``all`` report exists
for contacts only.

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


@dataclass(frozen=True, slots=True)
class Report:
    """One tracking report: whether campaigns have it, and what one request for it answers."""

    name: str
    for_campaigns: bool = True  # the campaign endpoint exists
    shape: Shape = "pages"

    @property
    def paged(self) -> bool:
        """An activity report: paged, dated records, ``--since`` applies."""
        return self.shape == "pages"

    @property
    def plannable(self) -> bool:
        """Whether the campaign path (``--strategy``) can give this contact report: its records
        are exactly the campaign reports' records, and the campaign summary counts ``name``."""
        return self.paged and self.for_campaigns


REPORTS: dict[str, Report] = {
    r.name: r
    for r in (
        Report("opens"),
        Report("clicks"),
        Report("forwards"),
        Report("bounces"),
        Report("unsubscribes"),
        Report("sends"),
        Report("all", for_campaigns=False),
        Report("summary", shape="object"),
        Report("summary-by-campaign", for_campaigns=False, shape="array"),
    )
}

#: The reports a campaign can be asked for.
CAMPAIGN_REPORTS = tuple(name for name, r in REPORTS.items() if r.for_campaigns)
#: The summary reports: not paged, no date filter, not for the planner.
SUMMARY_REPORTS = tuple(name for name, r in REPORTS.items() if not r.paged)
