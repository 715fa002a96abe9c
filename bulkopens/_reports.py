"""The tracking reports bulkopens can fetch: one table entry per report."""

from __future__ import annotations

from dataclasses import dataclass

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
    """One contact tracking report: where it lives and which field dates its records."""

    name: str
    path: str  # appended to /v2/contacts/{id}/tracking
    date_field: str | None  # None: look it up per record by activity_type

    def contact_path(self, contact_id: str) -> str:
        return f"/v2/contacts/{contact_id}/tracking{self.path}"

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
        Report("all", "", None),
    )
}
