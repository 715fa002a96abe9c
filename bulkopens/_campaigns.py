"""Campaigns: the list of sent campaigns, and the planner that picks the cheaper path.

A contact report can be had two ways, and both give the same records for the same contacts
and the same ``--since`` (a contact's records are exactly its records in each campaign):

* the contact path asks each requested contact for its report;
* the campaign path asks each sent campaign (v3: each of its primary and resend activities)
  for its report and keeps the requested contacts' records.

The planner estimates the requests of each path before fetching any record, and picks the
cheaper one (the contact path on a tie). Both estimates are floors:

* contact path: one request per distinct contact (how many pages each needs is unknown);
* campaign path: listing the campaigns (v3: and their activities), the summaries (v2: one per
  campaign; v3: one per 500 campaigns), and per item ``max(1, ceil(its summary count for the
  report / page size))`` report pages. The summary counts opens, clicks and forwards once per
  contact, so repeat activity makes the real count higher.

When even the cheapest campaign path (the summaries and one page per item) costs no less than
the contact path, the summaries are not fetched at all. Where each request goes is the API
seam's business (:mod:`bulkopens._api`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
from collections.abc import AsyncIterable, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from yarl import URL

from bulkopens._api import Api, CampaignList, Fetcher, Mapper
from bulkopens._api._v2 import V2
from bulkopens._exceptions import ConfigurationError
from bulkopens._pipeline import IdBatches, IdSource, map_concurrently, shorten_input
from bulkopens._reports import Report, Scope
from bulkopens._types import Strategy

# -- the requested contacts ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ContactSet:
    """The requested contacts, read whole: the planner counts them, the campaign path keeps
    their records. ``raw`` is the input as given, for the contact path."""

    raw: list[str] = field(repr=False)
    ids: frozenset[str] = field(repr=False)  # distinct canonical contact ids
    invalid: list[str] = field(repr=False)  # input lines that are not contact ids (shortened)
    duplicates: int = 0

    def digest(self) -> str:
        """A fingerprint of the set (not of its order or spelling), for the state store."""
        h = hashlib.sha256()
        for cid in sorted(self.ids, key=lambda c: (len(c), c)):  # v2: as numbers
            h.update(cid.encode() + b"\n")
        return h.hexdigest()[:32]


async def read_contacts(source: IdSource, api: Api = V2) -> ContactSet:
    """Read every id of ``source`` (lists, sync or async iterables, the CLI's reader)."""
    raw: list[str] = []
    if isinstance(source, IdBatches):
        async for chunk in source.batches():
            raw += chunk
    elif isinstance(source, AsyncIterable):
        raw = [item async for item in source]
    else:
        raw = list(source)
    ids: set[str] = set()
    invalid: list[str] = []
    duplicates = 0
    for item in raw:
        cid = api.parse_id(item) if isinstance(item, str) else None
        if cid is None:
            invalid.append(shorten_input(item))
        elif cid in ids:
            duplicates += 1
        else:
            ids.add(cid)
    return ContactSet(raw, frozenset(ids), invalid, duplicates)


# -- the campaign list and the summaries -------------------------------------------------------


def _each(concurrency: int) -> Mapper:
    """The API layer's bounded map (it starts no task of its own)."""

    async def each(fn: Callable[[str], Awaitable[Any]], items: Sequence[str]) -> list[Any]:
        return await map_concurrently(fn, items, concurrency)

    return each


async def sent_campaigns(
    fetcher: Fetcher, base: URL, api: Api = V2, concurrency: int = 4
) -> CampaignList:
    """The work items of every sent campaign (v2: the campaigns; v3: their primary and resend
    activities), in the API's order, and the requests that took. ConfigurationError when the
    list cannot be had; the run-stopping errors of the fetcher."""
    return await api.sent_campaigns(fetcher, base, _each(concurrency))


async def campaign_items(
    fetcher: Fetcher, base: URL, ids: Sequence[str], api: Api = V2, concurrency: int = 4
) -> CampaignList:
    """The work items of the campaigns ``ids`` (``--campaigns FILE``)."""
    return await api.campaign_items(fetcher, base, ids, _each(concurrency))


# -- the plan -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Plan:
    """What the planner found and chose. Request counts are estimates (floors)."""

    strategy: str  # what was asked: auto, contact or campaign
    path: Scope  # what runs: the contact path or the campaign path
    report: str
    contacts: int  # distinct valid contact ids requested
    contact_cost: int  # estimated requests of the contact path
    campaigns: int | None = None  # sent campaigns listed (None: the list was not needed)
    list_pages: int = 0
    summaries: int = 0  # summary requests in the campaign path's estimate
    report_pages: int | None = None  # campaign report pages in its estimate; None: no estimate
    counted: bool = False  # report_pages come from the summaries' counts (else one a campaign)
    spent: int = 0  # requests made while planning
    resumed: bool = False  # the path was chosen by an earlier attempt on this --out
    reason: str = ""
    campaign_ids: tuple[str, ...] = field(default=(), repr=False)

    @property
    def campaign_cost(self) -> int | None:
        """Estimated requests of the campaign path (list, summaries, pages), if estimated."""
        if self.report_pages is None:
            return None
        return self.list_pages + self.summaries + self.report_pages

    def to_json(self) -> dict[str, Any]:
        return {
            "strategy": self.strategy,
            "path": self.path,
            "report": self.report,
            "contacts": self.contacts,
            "campaigns": self.campaigns,
            "contact_cost": self.contact_cost,
            "campaign_cost": self.campaign_cost,
            "campaign_cost_parts": {
                "list_pages": self.list_pages,
                "summaries": self.summaries,
                "report_pages": self.report_pages,
                "from_summary_counts": self.counted,
            },
            "planning_requests": self.spent,
            "resumed": self.resumed,
            "reason": self.reason,
        }

    def describe(self) -> str:
        """The plan for people, a few lines, printed before the run starts."""
        lines = [
            f"bulkopens: plan for the {self.report} of {self.contacts:,} contacts "
            f"(--strategy {self.strategy}):",
            f"  contact path:  >= {self.contact_cost:,} requests (one per contact, "
            "more for contacts with more records than a page)",
        ]
        cost = self.campaign_cost
        if cost is not None and self.campaigns is not None and self.report_pages is not None:
            pages = _count(self.report_pages, "report page")
            pages = (
                f"{pages} from the summaries"
                if self.counted
                else f"at least {pages} (summaries not fetched)"
            )
            lines.append(
                f"  campaign path: >= {cost:,} requests ({_count(self.list_pages, 'list page')}, "
                f"{_count(self.summaries, 'summary', 'summaries')}, {pages}; "
                f"{_count(self.campaigns, 'sent campaign')})"
            )
        elif self.campaigns is not None:
            lines.append(f"  campaign path: {_count(self.campaigns, 'sent campaign')}")
        chosen = f"  chosen: the {self.path} path"
        if self.reason:
            chosen += f" ({self.reason})"
        lines.append(chosen + f"; {_count(self.spent, 'request')} spent planning")
        return "\n".join(lines)


def _count(n: int, one: str, many: str | None = None) -> str:
    return f"{n:,} {one if n == 1 else many or one + 's'}"


def estimate_campaign_pages(counts: Sequence[int], page_size: int) -> int:
    """Report pages for campaigns with these summary counts: an empty report is one page."""
    return sum(max(1, math.ceil(count / page_size)) for count in counts)


async def make_plan(
    fetcher: Fetcher,
    base: URL,
    report: Report,
    contacts: int,
    strategy: Strategy,
    *,
    page_size: int,
    concurrency: int,
    kept_path: Scope | None = None,
    api: Api = V2,
) -> Plan:
    """Decide the path for ``contacts`` distinct contacts and list the campaigns it needs.

    ``kept_path`` is the path an earlier attempt on the same ``--out`` chose: it is taken as
    is (only the campaign list is read again). Raises ConfigurationError when the campaign
    path is asked for a report that has none (``all``), or when the list cannot be read.
    """
    plan = Plan(strategy, "contact", report.name, contacts, contacts)
    if kept_path is not None:
        plan = dataclasses.replace(
            plan, resumed=True, reason="chosen by the first attempt on this --out"
        )
        if kept_path == "contact":
            return plan
        kept = await sent_campaigns(fetcher, base, api, concurrency)
        return dataclasses.replace(plan, path="campaign", **_listed(kept))
    if strategy == "contact":
        return dataclasses.replace(plan, reason="as asked")
    if not report.plannable:
        gap = (
            "has no campaign endpoint"
            if report.paged
            else "is not in the campaign reports"  # a contact's summary
        )
        if strategy == "campaign":
            raise ConfigurationError(f"the {report.name} report {gap}; use --strategy contact")
        return dataclasses.replace(plan, reason=f"the {report.name} report {gap}")
    if strategy == "auto" and contacts == 0:
        return dataclasses.replace(plan, reason="no contacts to fetch")
    found = await sent_campaigns(fetcher, base, api, concurrency)
    ids, listed = found.items, _listed(found)
    if strategy == "campaign":
        return dataclasses.replace(
            plan, path="campaign", reason="as asked", report_pages=len(ids), **listed
        )
    summaries = api.count_requests(found)
    floor = found.requests + summaries + len(ids)  # the summaries, a page per campaign
    if floor >= contacts:
        return dataclasses.replace(
            plan,
            summaries=summaries,
            report_pages=len(ids),
            reason="cheaper even against the campaign path's floor",
            **listed,
        )
    counts, summaries = await api.campaign_counts(fetcher, base, report, found, _each(concurrency))
    plan = dataclasses.replace(
        plan,
        summaries=summaries,
        report_pages=estimate_campaign_pages(counts, api.page_size("campaign", page_size)),
        counted=True,
        **listed,
    )
    cost = plan.campaign_cost
    assert cost is not None
    if cost < contacts:
        return dataclasses.replace(plan, path="campaign", reason="the cheaper")
    return dataclasses.replace(plan, reason="the cheaper, or as cheap")


def _listed(found: CampaignList) -> dict[str, Any]:
    return {
        "campaigns": len(found.items),
        "list_pages": found.requests,
        "campaign_ids": tuple(found.items),
    }
