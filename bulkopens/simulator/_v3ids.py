"""The v3 face's identifiers: UUIDs derived from the v2 ids, and the v3 campaign model.

Contacts: the UUID of v2 contact ``n`` carries ``splitmix64(n ^ key)`` (a bijection, so the
UUID decodes back to ``n`` without a table, whatever the account's size) in 64 of its bits,
the version-4 and variant bits where a UUID has them, and a 58-bit keyed check in the rest,
so a UUID the simulator never issued is recognised as unknown. ``key`` comes from the seed:
two accounts (seeds) give the same contact different UUIDs.

Campaigns (docs/ctct-api.md §0a: "a v2 resend was a new campaign; in v3 it is a second
activity (role ``resend``) of the same campaign"): every SENT v2 campaign becomes exactly one
v3 campaign activity that holds the same tracking records. Most become the ``primary_email``
activity of a v3 campaign of their own; a SENT v2 campaign that the seed marks as a resend
(about one in five, never the oldest, never a resend of a resend) becomes the ``resend``
activity of the v3 campaign of the v2 campaign just before it. The DRAFT and SCHEDULED v2
campaigns become v3 campaigns whose ``primary_email`` activity was never sent. Every v3
campaign also has a ``permalink`` activity, which has no tracking reports.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass

from bulkopens.simulator._catalog import Catalog
from bulkopens.simulator._hashing import mix, splitmix64, unsplitmix64

_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")
_CHECK_BITS = (1 << 58) - 1
_DAY_MS = 86_400_000

#: v3 current_status of a campaign by its v2 status.
V3_STATUS = {"SENT": "Done", "DRAFT": "Draft", "SCHEDULED": "Scheduled"}


@dataclass(frozen=True, slots=True)
class Activity:
    """One v3 campaign activity; ``v2_index`` is the catalogue index of the v2 campaign
    whose tracking records it holds (None for a permalink)."""

    id: str
    role: str  # primary_email, permalink or resend
    v2_index: int | None
    campaign: int  # index into V3Ids.campaigns


@dataclass(frozen=True, slots=True)
class V3Campaign:
    """One v3 email campaign: its activities in the order ``GET /v3/emails/{id}`` lists them."""

    index: int
    id: str
    name: str
    status: str
    created_ms: int
    updated_ms: int
    sent_ms: int | None  # when its last activity was sent; None if never
    activities: tuple[Activity, ...]


class V3Ids:
    """Every v3 id of one simulated account (seed and catalogue)."""

    __slots__ = ("_contact_key", "activities", "by_v2_index", "campaigns", "campaigns_by_id")

    def __init__(self, seed: int, catalog: Catalog) -> None:
        self._contact_key = mix(seed, 0xC0A7AC7)
        sent = catalog.sent_count
        resend = [False] * sent
        for k in range(1, sent):
            resend[k] = not resend[k - 1] and mix(seed, k, 7) % 5 == 0
        groups: list[list[int]] = []
        for c in catalog.campaigns:
            if c.index < sent and resend[c.index]:
                groups[-1].append(c.index)
            else:
                groups.append([c.index])
        campaigns: list[V3Campaign] = []
        self.activities: dict[str, Activity] = {}
        self.by_v2_index: dict[int, Activity] = {}
        for number, members in enumerate(groups):
            first = catalog.campaigns[members[0]]
            campaign_id = _uuid(mix(seed, 0xCA, number), mix(seed, 0xCB, number))
            activities = []
            for position, v2_index in enumerate(members):
                role = "primary_email" if position == 0 else "resend"
                activity_id = _uuid(mix(seed, 0xAC, v2_index), mix(seed, 0xAD, v2_index))
                activities.append(Activity(activity_id, role, v2_index, number))
            permalink = _uuid(mix(seed, 0xAE, number), mix(seed, 0xAF, number))
            activities.insert(1, Activity(permalink, "permalink", None, number))
            modified = [catalog.campaigns[i].modified_ms for i in members]
            runs = [catalog.campaigns[i].run_ms or 0 for i in members]
            campaign = V3Campaign(
                index=number,
                id=campaign_id,
                name=first.name,
                status=V3_STATUS[first.status],
                created_ms=first.modified_ms - 2 * _DAY_MS - mix(seed, 0xCC, number) % _DAY_MS,
                updated_ms=max(*modified, *runs),
                sent_ms=catalog.campaigns[members[-1]].run_ms,
                activities=tuple(activities),
            )
            campaigns.append(campaign)
            for activity in activities:
                self.activities[activity.id] = activity
                if activity.v2_index is not None:
                    self.by_v2_index[activity.v2_index] = activity
        self.campaigns: tuple[V3Campaign, ...] = tuple(campaigns)
        self.campaigns_by_id = {c.id: c for c in campaigns}

    def contact_uuid(self, contact: int) -> str:
        """The v3 contact_id of v2 contact ``contact``."""
        value = splitmix64(contact ^ self._contact_key)
        check = mix(self._contact_key, value) & _CHECK_BITS
        high = (value >> 16) << 16 | 0x4000 | (value >> 4) & 0xFFF
        low = 0b10 << 62 | (value & 0xF) << 58 | check
        return _format(high, low)

    def contact_number(self, text: str) -> int | None:
        """The v2 contact id a v3 contact_id stands for, or None if it was never issued.

        Raises ValueError when ``text`` is not a lowercase canonical UUID at all."""
        if _UUID.fullmatch(text) is None:
            raise ValueError("not a canonical UUID")
        number = uuid.UUID(text).int
        high, low = number >> 64, number & ((1 << 64) - 1)
        value = (high >> 16) << 16 | (high & 0xFFF) << 4 | (low >> 58) & 0xF
        if low & _CHECK_BITS != mix(self._contact_key, value) & _CHECK_BITS:
            return None
        return unsplitmix64(value) ^ self._contact_key


def is_uuid(text: str) -> bool:
    """True for a lowercase canonical version-4 UUID (the form the simulator issues)."""
    return _UUID.fullmatch(text) is not None


def _uuid(a: int, b: int) -> str:
    """A version-4 UUID from two 64-bit hashes."""
    high = (a & ~0xF000) | 0x4000
    low = (b & ((1 << 62) - 1)) | 0b10 << 62
    return _format(high, low)


def _format(high: int, low: int) -> str:
    return str(uuid.UUID(int=high << 64 | low))
