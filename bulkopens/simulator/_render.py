"""Records and summaries as the v2 API's JSON objects (docs/ctct-api.md §3.1, §3 C8/C9, §4 K7).

Contract: field names, order and types follow the SDK fixtures; ``campaign_id``,
``contact_id`` and ``link_id`` are strings (campaign-tracking records can have numeric ids:
:func:`with_numeric_ids`); every date is ``YYYY-MM-DDTHH:MM:SS.mmmZ``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from bulkopens.simulator._catalog import Catalog
from bulkopens.simulator._data import (
    BOUNCE,
    CLICK,
    FORWARD,
    OPEN,
    SEND,
    UNSUBSCRIBE,
    Record,
)
from bulkopens.simulator._timefmt import format_ms

ACTIVITY_TYPES = (
    "EMAIL_SEND",
    "EMAIL_OPEN",
    "EMAIL_CLICK",
    "EMAIL_FORWARD",
    "EMAIL_BOUNCE",
    "EMAIL_UNSUBSCRIBE",
)
_DATE_FIELDS = (
    "send_date",
    "open_date",
    "click_date",
    "forward_date",
    "bounce_date",
    "unsubscribe_date",
)
BOUNCE_CODES = (
    ("B", "Non-existent address"),
    ("D", "Undeliverable"),
    ("F", "Mailbox full"),
    ("S", "Suspended"),
    ("V", "Vacation or autoreply"),
    ("Z", "Blocked"),
    ("X", "Other"),
)
_UNSUB_SOURCES = ("ACTION_BY_CONTACT", "ACTION_BY_OWNER")
_UNSUB_REASONS = ("", "Too many emails", "No longer interested")


def render_record(record: Record, catalog: Catalog) -> dict[str, Any]:
    """One activity record as the API returns it."""
    ts, contact, kind, k, extra = record
    cid = str(contact)
    campaign_id = catalog.campaigns[k].id
    email = f"contact{cid}@example.com"
    date = format_ms(ts)
    if kind == OPEN:
        return {
            "activity_type": "EMAIL_OPEN",
            "campaign_id": campaign_id,
            "contact_id": cid,
            "email_address": email,
            "open_date": date,
        }
    if kind == CLICK:
        link_id, link_uri = catalog.campaigns[k].links[extra]
        return {
            "activity_type": "EMAIL_CLICK",
            "campaign_id": campaign_id,
            "contact_id": cid,
            "email_address": email,
            "link_id": link_id,
            "link_uri": link_uri,
            "click_date": date,
        }
    if kind == BOUNCE:
        code, description = BOUNCE_CODES[extra]
        return {
            "activity_type": "EMAIL_BOUNCE",
            "campaign_id": campaign_id,
            "contact_id": cid,
            "email_address": email,
            "bounce_code": code,
            "bounce_description": description,
            "bounce_message": "",
            "bounce_date": date,
        }
    if kind == UNSUBSCRIBE:
        return {
            "activity_type": "EMAIL_UNSUBSCRIBE",
            "campaign_id": campaign_id,
            "contact_id": cid,
            "email_address": email,
            "unsubscribe_date": date,
            "unsubscribe_source": _UNSUB_SOURCES[extra // 10],
            "unsubscribe_reason": _UNSUB_REASONS[extra % 10],
        }
    return {
        "activity_type": ACTIVITY_TYPES[kind],
        "campaign_id": campaign_id,
        "contact_id": cid,
        "email_address": email,
        _DATE_FIELDS[kind]: date,
    }


def with_numeric_ids(record: dict[str, Any], *, campaign: bool, contact: bool) -> dict[str, Any]:
    """``record`` with its ``campaign_id`` (if ``campaign``) and ``contact_id`` (if
    ``contact``) as JSON numbers, in place and in the same position (the campaign-tracking
    fixtures' form)."""
    if campaign:
        record["campaign_id"] = int(record["campaign_id"])
    if contact:
        record["contact_id"] = int(record["contact_id"])
    return record


def contact_summary(contact: int, records: Sequence[Record]) -> dict[str, Any]:
    """C8: counts of each activity kind for one contact."""
    counts = [0] * 6
    for record in records:
        counts[record[2]] += 1
    return {
        "sends": counts[SEND],
        "opens": counts[OPEN],
        "clicks": counts[CLICK],
        "forwards": counts[FORWARD],
        "unsubscribes": counts[UNSUBSCRIBE],
        "bounces": counts[BOUNCE],
        "contact_id": str(contact),
    }


def contact_summary_by_campaign(
    contact: int, records: Sequence[Record], catalog: Catalog
) -> list[dict[str, Any]]:
    """C9: per campaign the contact has activity in (newest campaign first): opens and
    forwards counted, clicks as distinct links, bounces; unsubscribes are left out."""
    per: dict[int, list[Any]] = {}
    for _, _, kind, k, extra in records:
        row = per.setdefault(k, [0, set(), 0, 0])
        if kind == OPEN:
            row[0] += 1
        elif kind == CLICK:
            row[1].add(extra)
        elif kind == FORWARD:
            row[2] += 1
        elif kind == BOUNCE:
            row[3] += 1
    return [
        {
            "campaign_id": catalog.campaigns[k].id,
            "contact_id": str(contact),
            "opens": row[0],
            "clicks": len(row[1]),
            "forwards": row[2],
            "bounces": row[3],
        }
        for k, row in sorted(per.items(), reverse=True)
    ]


def campaign_summary(records: Sequence[Record]) -> dict[str, int]:
    """K7: sends = recipients, opens/clicks/forwards = distinct contacts, plus counts of
    unsubscribes and bounced addresses."""
    people: list[set[int]] = [set() for _ in range(6)]
    for record in records:
        people[record[2]].add(record[1])
    return {
        "sends": len(people[SEND]),
        "opens": len(people[OPEN]),
        "clicks": len(people[CLICK]),
        "forwards": len(people[FORWARD]),
        "unsubscribes": len(people[UNSUBSCRIBE]),
        "bounces": len(people[BOUNCE]),
    }
