"""The v3 API (docs/ctct-api.md §5): Bearer only, UUIDs, no date filter, ``_links.next.href``.

* By contact: ``/v3/reports/contact_reports/{contact_id}/activity_details`` with one
  ``tracking_activity_type`` per kind (``all``: the six, repeated), ``limit`` up to 100 and
  ``include_campaign_activity_names=false`` (the docs call it cheaper), newest first (§5.1).
* By campaign: the campaign's ``primary_email`` and ``resend`` activities
  (``/v3/emails/{campaign_id}``), each asked ``/v3/reports/email_reports/{activity}/tracking/
  {opens|clicks|forwards|optouts|bounces|sends}`` at ``limit`` up to 500 (§5.2). A work item of
  the campaign path is therefore a campaign *activity*.
* No report takes a date filter: the walk filters by ``created_time`` and stops at the first
  page that reaches ``--since`` or the stored high-water mark (see bulkopens._pagination).
* The summaries have no per-item equivalent that bulkopens writes yet: refused with one line.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from yarl import URL

from bulkopens._api._base import Api, CampaignList, Fetcher, Mapper
from bulkopens._api._lists import list_rows
from bulkopens._config import api_url, parse_contact_id
from bulkopens._exceptions import ConfigurationError, ContactError
from bulkopens._reports import Report, Scope

#: Each activity report's kind (activity_details) and email-report path (§5.1, §5.2), and the
#: key of the campaign summaries' ``unique_counts`` that counts it.
_KINDS: dict[str, tuple[str, str, str]] = {
    "opens": ("em_opens", "opens", "opens"),
    "clicks": ("em_clicks", "clicks", "clicks"),
    "forwards": ("em_forwards", "forwards", "forwards"),
    "bounces": ("em_bounces", "bounces", "bounces"),
    "unsubscribes": ("em_optouts", "optouts", "optouts"),
    "sends": ("em_sends", "sends", "sends"),
}
#: ``all``: every kind in one request (the API takes no ``all`` value: each is repeated).
_ALL_KINDS = tuple(kind for kind, _, _ in _KINDS.values())
_REPORTED_ROLES = ("primary_email", "resend")  # the activities with email reports (§5.2)
_SENT_STATUSES = {"done", "sent"}  # current_status of a campaign that has gone out
CONTACT_PAGE = 100  # activity_details: limit 1-100
CAMPAIGN_PAGE = 500  # email reports: limit 1-500
LIST_PAGE = 500  # /v3/emails and the campaign summaries: limit 1-500
CONTACT_XREF_BATCH = 500  # sequence_ids per contact_id_xrefs request
CAMPAIGN_XREF_BATCH = 50  # v2_email_campaign_ids per campaign_id_xrefs request


class _V3(Api):
    name = "v3"
    default_base_url = "https://api.cc.email"
    root = "/v3/"
    results_key = "tracking_activities"
    list_keys = ("tracking_activities", "campaigns", "bulk_email_campaign_summaries")
    date_filter = False
    sends_api_key = False
    list_page_size = LIST_PAGE
    id_form = "a v3 {noun} id (a UUID) or a v2 one that maps to one"
    text_ids = True
    numeric_ids_in_campaign_reports = False
    maps_older_ids = True

    def max_page_size(self, scope: Scope) -> int:
        return CAMPAIGN_PAGE if scope == "campaign" else CONTACT_PAGE

    def parse_id(self, raw: str, scope: Scope = "contact") -> str | None:
        text = raw.strip()
        if len(text) != 36:  # the hyphenated form only (as the API writes them)
            return None
        try:
            return str(uuid.UUID(text))
        except ValueError:
            return None

    def id_example(self, scope: Scope = "contact") -> str:
        return "a UUID like 2a1d4e3c-5b6f-4a7e-8c9d-0e1f2a3b4c5d"

    @property
    def items_are_campaigns(self) -> bool:
        return False

    def check_report(self, report: Report, scope: Scope) -> None:
        if not report.paged:
            raise ConfigurationError(
                f"the {report.name} report is not offered on --api v3 (the v3 summaries are "
                "not per contact in the same form); use --api v2, or an activity report"
            )

    def report_url(
        self,
        base: URL,
        report: Report,
        scope: Scope,
        item_id: str,
        page_size: int,
        since: str | None = None,
    ) -> URL:
        if scope == "campaign":
            tail = _KINDS[report.name][1]
            path = f"/v3/reports/email_reports/{item_id}/tracking/{tail}"
            return api_url(base, path).with_query(limit=str(page_size))
        kinds = _ALL_KINDS if report.name == "all" else (_KINDS[report.name][0],)
        path = f"/v3/reports/contact_reports/{item_id}/activity_details"
        query: list[tuple[str, str]] = [("tracking_activity_type", k) for k in kinds]
        query += [("limit", str(page_size)), ("include_campaign_activity_names", "false")]
        return api_url(base, path).with_query(query)

    def summary_url(self, base: URL, report: Report, scope: Scope, item_id: str) -> URL:
        self.check_report(report, scope)
        raise AssertionError("unreachable")

    def next_link(self, data: dict[str, Any]) -> Any:
        links = data.get("_links")
        following = links.get("next") if isinstance(links, dict) else None
        return following.get("href") if isinstance(following, dict) else None

    def date_field(self, report: Report) -> str | None:
        return "created_time"

    def record_time(self, report: Report, record: dict[str, Any]) -> str | None:
        value = record.get("created_time")
        return value if isinstance(value, str) else None

    def check_url(self, base: URL) -> URL:
        return api_url(base, "/v3/emails").with_query(limit="1")

    async def sent_campaigns(self, fetcher: Fetcher, base: URL, each: Mapper) -> CampaignList:
        """``GET /v3/emails`` (every page), then each sent campaign's activities."""
        url = api_url(base, "/v3/emails").with_query(limit=str(LIST_PAGE))
        ids: list[str] = []
        seen: set[str] = set()
        pages = 0
        async for rows in list_rows(self, fetcher, base, url, "campaign list"):
            pages += 1
            for row in rows:
                if not isinstance(row, dict):
                    continue
                cid = self.parse_id(str(row.get("campaign_id", "")))
                status = str(row.get("current_status", "")).lower()
                if cid is not None and cid not in seen and status in _SENT_STATUSES:
                    seen.add(cid)
                    ids.append(cid)
        listed = await self.campaign_items(fetcher, base, ids, each)
        return CampaignList(listed.items, pages + listed.requests, listed.owner)

    async def campaign_items(
        self, fetcher: Fetcher, base: URL, campaign_ids: Sequence[str], each: Mapper
    ) -> CampaignList:
        """Each campaign's ``primary_email`` and ``resend`` activities (one request each)."""

        async def activities(campaign_id: str) -> list[str]:
            try:
                row = await fetcher.fetch_object(api_url(base, f"/v3/emails/{campaign_id}"))
            except ContactError as exc:
                raise ConfigurationError(
                    f"cannot read the campaign {campaign_id}'s activities: {exc}"
                ) from None
            found = row.get("campaign_activities")
            out: list[str] = []
            for activity in found if isinstance(found, list) else []:
                if isinstance(activity, dict) and activity.get("role") in _REPORTED_ROLES:
                    aid = self.parse_id(str(activity.get("campaign_activity_id", "")))
                    if aid is not None and aid not in out:
                        out.append(aid)
            return out

        unique = list(dict.fromkeys(campaign_ids))
        found: list[list[str]] = await each(activities, unique)
        items: list[str] = []
        owner: dict[str, str] = {}
        for campaign_id, activity_ids in zip(unique, found, strict=True):
            for aid in activity_ids:
                if aid not in owner:
                    owner[aid] = campaign_id
                    items.append(aid)
        return CampaignList(items, len(unique), owner)

    def count_requests(self, listed: CampaignList) -> int:
        campaigns = len(set(listed.owner.values())) or len(listed.items)
        return max(1, -(-campaigns // LIST_PAGE))  # the summaries, 500 campaigns a page

    async def campaign_counts(
        self,
        fetcher: Fetcher,
        base: URL,
        report: Report,
        listed: CampaignList,
        each: Mapper,
    ) -> tuple[list[int], int]:
        """The campaign summaries' unique counts (up to 500 campaigns a request), each given
        to the campaign's first activity (its others count as one page each)."""
        key = _KINDS[report.name][2]
        path = "/v3/reports/summary_reports/email_campaign_summaries"
        url = api_url(base, path).with_query(limit=str(LIST_PAGE))
        by_campaign: dict[str, int] = {}
        pages = 0
        async for rows in list_rows(self, fetcher, base, url, "campaign summaries"):
            pages += 1
            for row in rows:
                counts = row.get("unique_counts") if isinstance(row, dict) else None
                value = counts.get(key) if isinstance(counts, dict) else None
                if isinstance(value, int) and value > 0:
                    by_campaign[str(row.get("campaign_id"))] = value
        out: list[int] = []
        given: set[str] = set()
        for item in listed.items:
            campaign = listed.owner.get(item, item)
            out.append(0 if campaign in given else by_campaign.get(campaign, 0))
            given.add(campaign)
        return out, pages

    # -- v2 ids (docs/ctct-api.md §5: the xref endpoints, for migration) -------------------

    def foreign_id(self, raw: str) -> str | None:
        return parse_contact_id(raw)

    def xref_batch(self, scope: Scope) -> int:
        return CAMPAIGN_XREF_BATCH if scope == "campaign" else CONTACT_XREF_BATCH

    def xref_url(self, base: URL, scope: Scope, ids: Sequence[str]) -> URL:
        if scope == "campaign":
            url = api_url(base, "/v3/emails/campaign_id_xrefs")
            return url.with_query(v2_email_campaign_ids=",".join(ids))
        return api_url(base, "/v3/contacts/contact_id_xrefs").with_query(sequence_ids=",".join(ids))

    def xref_pairs(self, data: dict[str, Any], scope: Scope) -> dict[str, str]:
        """Contacts: ``sequence_id`` -> ``contact_id``. Campaigns: ``v2_email_campaign_id`` ->
        ``campaign_activity_id`` (a v2 campaign is one activity of a v3 campaign: its report)."""
        old, new = (
            ("v2_email_campaign_id", "campaign_activity_id")
            if scope == "campaign"
            else ("sequence_id", "contact_id")
        )
        rows = data.get("xrefs")
        out: dict[str, str] = {}
        for row in rows if isinstance(rows, list) else []:
            if not isinstance(row, dict):
                continue
            v2 = parse_contact_id(str(row.get(old, "")))
            v3 = self.parse_id(str(row.get(new, "")))
            if v2 is not None and v3 is not None:
                out[v2] = v3
        return out


V3 = _V3()
