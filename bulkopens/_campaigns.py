"""Campaigns: the list of sent campaigns, and the planner that picks the cheaper path.

A contact report can be had two ways, and both give the same records for the same contacts
and the same ``created_since`` (a contact's records are exactly its records in each campaign):

* the contact path asks each requested contact for its report (``/v2/contacts/{id}/tracking``);
* the campaign path asks each sent campaign for its report
  (``/v2/emailmarketing/campaigns/{id}/tracking``) and keeps the requested contacts' records.

The planner estimates the requests of each path before fetching any record, and picks the
cheaper one (the contact path on a tie). Both estimates are floors:

* contact path: one request per distinct contact (how many pages each needs is unknown);
* campaign path: the campaign-list pages, one summary request per sent campaign, and per
  campaign ``max(1, ceil(its summary count for the report / page size))`` report pages. The
  summary counts opens, clicks and forwards once per contact, so repeat activity makes the
  real count higher.

When even the cheapest campaign path (a summary and one page per campaign) costs no less than
the contact path, the summaries are not fetched at all.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
from collections.abc import AsyncIterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from yarl import URL

from bulkopens._config import api_url, parse_contact_id
from bulkopens._exceptions import ConfigurationError, ContactError, ForeignNextLink
from bulkopens._http import Page
from bulkopens._pagination import MAX_PAGES, resolve_next
from bulkopens._pipeline import IdBatches, IdSource, map_concurrently, shorten_input
from bulkopens._reports import Report, Scope
from bulkopens._types import Strategy

#: ``--campaigns sent``: every campaign the account has sent, from the campaign list.
#: The campaign list's largest (and default) page (docs/ctct-api.md §4.2).
LIST_PAGE_SIZE = 50


class Fetcher(Protocol):
    async def fetch(self, url: URL) -> Page: ...

    async def fetch_object(self, url: URL) -> dict[str, Any]: ...


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
        for cid in sorted(self.ids, key=int):
            h.update(cid.encode() + b"\n")
        return h.hexdigest()[:32]


async def read_contacts(source: IdSource) -> ContactSet:
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
        cid = parse_contact_id(item) if isinstance(item, str) else None
        if cid is None:
            invalid.append(shorten_input(item))
        elif cid in ids:
            duplicates += 1
        else:
            ids.add(cid)
    return ContactSet(raw, frozenset(ids), invalid, duplicates)


# -- the campaign list and the summaries -------------------------------------------------------


async def sent_campaigns(fetcher: Fetcher, base: URL) -> tuple[list[str], int]:
    """The ids of every SENT campaign, in the API's order, and the list pages that took.

    Pages through ``GET /v2/emailmarketing/campaigns?status=SENT&limit=50`` by next_link.
    Raises ConfigurationError when the list cannot be had (404, a foreign next_link, retries
    exhausted), and the run-stopping errors of the fetcher.
    """
    url = api_url(base, "/v2/emailmarketing/campaigns").with_query(
        status="SENT", limit=str(LIST_PAGE_SIZE)
    )
    ids: list[str] = []
    seen: set[str] = set()
    visited = {url}
    pages = 0
    try:
        while True:
            page = await fetcher.fetch(url)
            pages += 1
            for row in page.results:
                cid = parse_contact_id(str(row.get("id", "")))
                if cid is not None and cid not in seen and row.get("status", "SENT") == "SENT":
                    seen.add(cid)
                    ids.append(cid)
            if not page.results or not page.next_link:
                return ids, pages
            next_url = resolve_next(base, page.next_link)
            if next_url in visited or pages >= MAX_PAGES:
                raise ConfigurationError(
                    "the campaign list's pages link back to a page already read (a loop)"
                    if next_url in visited
                    else f"the campaign list runs past {MAX_PAGES:,} pages"
                )
            visited.add(next_url)
            url = next_url
    except ForeignNextLink as exc:
        raise ConfigurationError(f"the campaign list's {exc}") from None
    except ContactError as exc:
        raise ConfigurationError(f"cannot list the sent campaigns: {exc}") from None


async def summary_count(fetcher: Fetcher, base: URL, report: Report, campaign_id: str) -> int:
    """A campaign's summary count for ``report`` (0 if the summary lacks it or is gone)."""
    url = api_url(base, f"/v2/emailmarketing/campaigns/{campaign_id}/tracking/reports/summary")
    try:
        summary = await fetcher.fetch_object(url)
    except ContactError:  # gone since it was listed: its report will say so
        return 0
    value = summary.get(report.name)
    return value if isinstance(value, int) and value > 0 else 0


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
        ids, pages = await sent_campaigns(fetcher, base)
        return dataclasses.replace(plan, path="campaign", **_listed(ids, pages))
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
    ids, pages = await sent_campaigns(fetcher, base)
    listed = _listed(ids, pages)
    if strategy == "campaign":
        return dataclasses.replace(
            plan, path="campaign", reason="as asked", report_pages=len(ids), **listed
        )
    floor = pages + 2 * len(ids)  # a summary and at least one page per campaign
    if floor >= contacts:
        return dataclasses.replace(
            plan,
            summaries=len(ids),
            report_pages=len(ids),
            reason="cheaper even against the campaign path's floor",
            **listed,
        )

    async def count(campaign_id: str) -> int:
        return await summary_count(fetcher, base, report, campaign_id)

    counts = await map_concurrently(count, ids, concurrency)
    plan = dataclasses.replace(
        plan,
        summaries=len(ids),
        report_pages=estimate_campaign_pages(counts, page_size),
        counted=True,
        **listed,
    )
    cost = plan.campaign_cost
    assert cost is not None
    if cost < contacts:
        return dataclasses.replace(plan, path="campaign", reason="the cheaper")
    return dataclasses.replace(plan, reason="the cheaper, or as cheap")


def _listed(ids: list[str], pages: int) -> dict[str, Any]:
    return {"campaigns": len(ids), "list_pages": pages, "campaign_ids": tuple(ids)}
