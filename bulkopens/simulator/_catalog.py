"""The simulated account's campaigns: a small, eagerly built, deterministic catalogue.

Campaign *index* order is chronological for SENT campaigns (0 = oldest); three campaigns
without tracking data (two DRAFT, one SCHEDULED) follow them. Every SENT campaign has a run
time inside the fixed window [2024-01-01, 2026-07-01) minus the activity tail, so all seeded
activity lies in that window whatever the wall clock says.
"""

from __future__ import annotations

from bisect import insort
from dataclasses import dataclass

from bulkopens.simulator._hashing import mix
from bulkopens.simulator._timefmt import format_ms

WINDOW_START_MS = 1_704_067_200_000  # 2024-01-01T00:00:00Z
WINDOW_END_MS = 1_782_864_000_000  # 2026-07-01T00:00:00Z (exclusive)
ACTIVITY_MS = 30 * 86_400_000  # activity happens within 30 days after a send
SEND_SPREAD_MS = 2 * 3_600_000  # sends of one campaign spread over 2 hours
_DAY_MS = 86_400_000
_FIRST_CAMPAIGN_ID = 1_100_400_000_000
_FIRST_LINK_ID = 1_100_500_000_000

#: Statuses the v2 campaign list accepts; DELETED and RUNNING simply list nothing here.
LIST_STATUSES = ("ALL", "DRAFT", "RUNNING", "SENT", "SCHEDULED", "DELETED")

#: A campaign-list row position: (sort key ms, campaign id as int, campaign index).
ListRow = tuple[int, int, int]


@dataclass(frozen=True, slots=True)
class Campaign:
    """One campaign. ``run_ms`` is set for SENT, ``next_run_ms`` for SCHEDULED ones."""

    index: int
    id: str
    name: str
    status: str
    modified_ms: int
    run_ms: int | None
    next_run_ms: int | None
    links: tuple[tuple[str, str], ...]  # (link_id, link_uri); clicks pick one by index

    def list_row(self) -> dict[str, str]:
        """The campaign-list JSON row: ``{id, name, status, modified_date}``."""
        return {
            "id": self.id,
            "name": self.name,
            "status": self.status,
            "modified_date": format_ms(self.modified_ms),
        }


class Catalog:
    """All campaigns of the account, with lookups and the campaign-list orderings."""

    __slots__ = ("_lists", "by_id", "campaigns", "sent_count")

    def __init__(self, seed: int, sent_count: int) -> None:
        self.sent_count = sent_count
        campaigns = [_sent_campaign(seed, k, sent_count) for k in range(sent_count)]
        extras = (("DRAFT", 20), ("DRAFT", 5), ("SCHEDULED", 2))
        for offset, (status, days_before_end) in enumerate(extras):
            index = sent_count + offset
            modified = WINDOW_END_MS - days_before_end * _DAY_MS + mix(seed, index, 3) % _DAY_MS
            campaigns.append(
                Campaign(
                    index=index,
                    id=str(_campaign_id(seed, index)),
                    name=f"{status.title()} campaign {offset + 1}",
                    status=status,
                    modified_ms=modified,
                    run_ms=None,
                    next_run_ms=WINDOW_END_MS + 14 * _DAY_MS if status == "SCHEDULED" else None,
                    links=(),
                )
            )
        self.campaigns: tuple[Campaign, ...] = tuple(campaigns)
        self.by_id: dict[str, Campaign] = {c.id: c for c in campaigns}
        # Each list is sorted ascending by (sort key, id); pages walk it from the end.
        self._lists: dict[str, list[ListRow]] = {status: [] for status in LIST_STATUSES}
        for c in campaigns:
            key = {"SENT": c.run_ms, "SCHEDULED": c.next_run_ms}.get(c.status) or c.modified_ms
            insort(self._lists[c.status], (key, int(c.id), c.index))
            insort(self._lists["ALL"], (c.modified_ms, int(c.id), c.index))

    def list_rows(self, status: str) -> list[ListRow]:
        """Rows for ``status`` (one of LIST_STATUSES), ascending; newest is last."""
        return self._lists[status]


def _campaign_id(seed: int, index: int) -> int:
    # Strictly increasing 13-digit ids: a 10,000-wide slot per campaign index.
    return _FIRST_CAMPAIGN_ID + index * 10_000 + mix(seed, index, 1) % 10_000


def _sent_campaign(seed: int, k: int, sent_count: int) -> Campaign:
    span = WINDOW_END_MS - WINDOW_START_MS - ACTIVITY_MS - SEND_SPREAD_MS - _DAY_MS
    # One equal slot per campaign; the run time falls in the middle 80% of the slot.
    jitter = 0.1 + 0.8 * ((mix(seed, k, 2) >> 11) / 2.0**53)
    run_ms = WINDOW_START_MS + int((k + jitter) * span / sent_count)
    n_links = 1 + mix(seed, k, 4) % 4
    links = tuple(
        (str(_FIRST_LINK_ID + k * 10 + j), f"https://example.com/campaign-{k + 1}/link-{j + 1}")
        for j in range(n_links)
    )
    return Campaign(
        index=k,
        id=str(_campaign_id(seed, k)),
        name=f"Campaign {k + 1} ({format_ms(run_ms)[:10]})",
        status="SENT",
        modified_ms=run_ms - 3_600_000 - mix(seed, k, 5) % 86_400_000,
        run_ms=run_ms,
        next_run_ms=None,
        links=links,
    )
