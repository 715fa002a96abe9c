"""The v2 API (docs/ctct-api.md §1-4): ``api_key`` plus Bearer, integer ids, ``created_since``,
``results`` and ``meta.pagination.next_link``."""

from __future__ import annotations

from typing import Any

from yarl import URL

from bulkopens._api._base import Api, CampaignList, Fetcher, Mapper
from bulkopens._api._lists import list_rows
from bulkopens._config import MAX_PAGE_SIZE, api_url, parse_contact_id
from bulkopens._exceptions import ContactError
from bulkopens._reports import Report, Scope

#: Each report's path below ``.../tracking`` and the field that dates its records (None: the
#: mixed ``all`` report, dated per record by its ``activity_type``; the summaries: undated).
_PATHS: dict[str, tuple[str, str | None]] = {
    "opens": ("/opens", "open_date"),
    "clicks": ("/clicks", "click_date"),
    "forwards": ("/forwards", "forward_date"),
    "bounces": ("/bounces", "bounce_date"),
    "unsubscribes": ("/unsubscribes", "unsubscribe_date"),
    "sends": ("/sends", "send_date"),
    "all": ("", None),
    "summary": ("/reports/summary", None),
    "summary-by-campaign": ("/reports/summaryByCampaign", None),
}
#: The date field of each activity type, for the mixed ``all`` report.
_DATE_FIELD_BY_ACTIVITY = {
    "EMAIL_OPEN": "open_date",
    "EMAIL_CLICK": "click_date",
    "EMAIL_FORWARD": "forward_date",
    "EMAIL_BOUNCE": "bounce_date",
    "EMAIL_UNSUBSCRIBE": "unsubscribe_date",
    "EMAIL_SEND": "send_date",
}
_CAMPAIGNS = "/v2/emailmarketing/campaigns"


class _V2(Api):
    name = "v2"
    default_base_url = "https://api.constantcontact.com"
    root = "/v2/"
    results_key = "results"
    list_keys = ("results",)
    date_filter = True
    sends_api_key = True
    list_page_size = 50  # the campaign list's largest (and default) page (§4.2)
    id_form = "a v2 {noun} id (a positive integer)"
    text_ids = False
    numeric_ids_in_campaign_reports = True
    maps_older_ids = False

    def max_page_size(self, scope: Scope) -> int:
        return MAX_PAGE_SIZE

    def parse_id(self, raw: str, scope: Scope = "contact") -> str | None:
        return parse_contact_id(raw)

    def id_example(self, scope: Scope = "contact") -> str:
        return "a positive integer like 1234"

    def _path(self, report: Report, scope: Scope, item_id: str) -> str:
        tail = _PATHS[report.name][0]
        if scope == "campaign":
            return f"{_CAMPAIGNS}/{item_id}/tracking{tail}"
        return f"/v2/contacts/{item_id}/tracking{tail}"

    def report_url(
        self,
        base: URL,
        report: Report,
        scope: Scope,
        item_id: str,
        page_size: int,
        since: str | None = None,
    ) -> URL:
        query = {"limit": str(page_size)}
        if since is not None:
            query["created_since"] = since
        return api_url(base, self._path(report, scope, item_id)).with_query(query)

    def summary_url(self, base: URL, report: Report, scope: Scope, item_id: str) -> URL:
        return api_url(base, self._path(report, scope, item_id))

    def next_link(self, data: dict[str, Any]) -> Any:
        meta = data.get("meta")
        pagination = meta.get("pagination") if isinstance(meta, dict) else None
        return pagination.get("next_link") if isinstance(pagination, dict) else None

    def date_field(self, report: Report) -> str | None:
        return _PATHS[report.name][1]

    def record_time(self, report: Report, record: dict[str, Any]) -> str | None:
        field = _PATHS[report.name][1]
        if field is None:
            field = _DATE_FIELD_BY_ACTIVITY.get(str(record.get("activity_type")), "")
        value = record.get(field)
        return value if isinstance(value, str) else None

    def check_url(self, base: URL) -> URL:
        return api_url(base, _CAMPAIGNS).with_query(status="SENT", limit="1")

    async def sent_campaigns(self, fetcher: Fetcher, base: URL, each: Mapper) -> CampaignList:
        """``GET /v2/emailmarketing/campaigns?status=SENT&limit=50``, every page."""
        url = api_url(base, _CAMPAIGNS).with_query(status="SENT", limit=str(self.list_page_size))
        ids: list[str] = []
        seen: set[str] = set()
        pages = 0
        async for rows in list_rows(self, fetcher, base, url, "campaign list"):
            pages += 1
            for row in rows:
                if not isinstance(row, dict):
                    continue
                cid = parse_contact_id(str(row.get("id", "")))
                if cid is not None and cid not in seen and row.get("status", "SENT") == "SENT":
                    seen.add(cid)
                    ids.append(cid)
        return CampaignList(ids, pages)

    def count_requests(self, listed: CampaignList) -> int:
        return len(listed.items)  # one summary per campaign

    async def campaign_counts(
        self,
        fetcher: Fetcher,
        base: URL,
        report: Report,
        listed: CampaignList,
        each: Mapper,
    ) -> tuple[list[int], int]:
        """One summary per campaign (K7): its count for ``report``."""

        async def count(campaign_id: str) -> int:
            url = api_url(base, f"{_CAMPAIGNS}/{campaign_id}/tracking/reports/summary")
            try:
                summary = await fetcher.fetch_object(url)
            except ContactError:  # gone since it was listed: its report will say so
                return 0
            value = summary.get(report.name)
            return value if isinstance(value, int) and value > 0 else 0

        return await each(count, listed.items), len(listed.items)


V2 = _V2()
