"""The public types of what the library hands out: report names, run statuses, and one
TypedDict per report for its records (fields as the v2 API writes them, ids as strings).

A record's fields are the API's own; the TypedDicts name the documented ones. A field the API
documents but does not always send is ``NotRequired``. ``Record`` is any of them.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, Iterable
from typing import Literal, NotRequired, TypedDict

#: What the calls take as ids: any iterable or async iterable of ``str`` or ``int`` ids.
Ids = Iterable[str | int] | AsyncIterable[str | int]

ReportName = Literal[
    "opens",
    "clicks",
    "forwards",
    "bounces",
    "unsubscribes",
    "sends",
    "all",
    "summary",
    "summary-by-campaign",
]
#: The activity reports a campaign has (``campaign_records``, ``export_campaigns``).
CampaignReportName = Literal[
    "opens", "clicks", "forwards", "bounces", "unsubscribes", "sends", "summary"
]
#: How a planned contact job is fetched (``--strategy``, ``strategy=``): see ``Client.plan``.
Strategy = Literal["auto", "contact", "campaign"]
STRATEGIES: tuple[Strategy, ...] = ("auto", "contact", "campaign")
#: ``export_campaigns(SENT, ...)``, ``--campaigns sent``: every campaign the account has sent.
SENT = "sent"

#: ``Summary.status``: how a call ended.
RunStatus = Literal[
    "complete",  # every contact (or campaign) done
    "incomplete",  # done, and some failed (errors.ndjson, stream.failures)
    "interrupted",  # cancelled; resumable
    "quota_exhausted",
    "auth_failed",
    "config_error",
    "service_unavailable",
    "output_error",  # the disk is full or failing (OutputError); resumable
    "failed",  # an iterator stopped by an error that is not a RunStopped (raised to you)
]


class _Activity(TypedDict):
    campaign_id: str
    contact_id: str
    email_address: str


class OpenRecord(_Activity):
    activity_type: Literal["EMAIL_OPEN"]
    open_date: str


class ClickRecord(_Activity):
    activity_type: Literal["EMAIL_CLICK"]
    click_date: str
    link_id: NotRequired[str]
    link_uri: NotRequired[str]


class ForwardRecord(_Activity):
    activity_type: Literal["EMAIL_FORWARD"]
    forward_date: str


class BounceRecord(_Activity):
    activity_type: Literal["EMAIL_BOUNCE"]
    bounce_date: str
    bounce_code: str  # B, S, D, F, V, Z or X
    bounce_description: NotRequired[str]
    bounce_message: NotRequired[str]


class UnsubscribeRecord(_Activity):
    activity_type: Literal["EMAIL_UNSUBSCRIBE"]
    unsubscribe_date: str
    unsubscribe_source: NotRequired[str]
    unsubscribe_reason: NotRequired[str]


class SendRecord(_Activity):
    activity_type: Literal["EMAIL_SEND"]
    send_date: str


#: A record of the ``all`` report: any activity, told apart by ``activity_type``.
ActivityRecord = (
    OpenRecord | ClickRecord | ForwardRecord | BounceRecord | UnsubscribeRecord | SendRecord
)


class _Counts(TypedDict):
    sends: int
    opens: int
    clicks: int
    forwards: int
    unsubscribes: int
    bounces: int


class ContactSummary(_Counts):
    """One line of the ``summary`` report of a contact."""

    contact_id: str


class CampaignSummary(_Counts):
    """One line of the ``summary`` report of a campaign (``campaign_id`` added by bulkopens)."""

    campaign_id: str


class CampaignActivitySummary(TypedDict):
    """One line of ``summary-by-campaign``: a contact's counts in one campaign."""

    campaign_id: str
    contact_id: str
    opens: int
    clicks: int
    forwards: int
    bounces: int


Record = ActivityRecord | ContactSummary | CampaignSummary | CampaignActivitySummary
