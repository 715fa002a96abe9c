"""The API's answers, independent of HTTP plumbing: validation, paging, bodies, ground truth.

Contract of :meth:`Api.answer`: returns the exact 200 body bytes for a matched endpoint, or
raises :class:`ApiError` -- 400 for a malformed id, ``limit``, ``created_since``, ``status`` or
``next`` token (checked in that order), then 404 for an unknown contact or campaign. When
``next`` is present, ``limit``/``created_since``/``status`` are ignored. Bodies are
serialised once and cached until :meth:`Api.add_activity` changes the data.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import orjson

from bulkopens.simulator._catalog import LIST_STATUSES
from bulkopens.simulator._config import SimConfig
from bulkopens.simulator._data import REPORT_KINDS, Dataset, Record
from bulkopens.simulator._endpoints import Endpoint
from bulkopens.simulator._hashing import digest
from bulkopens.simulator._lru import WeightedLRU
from bulkopens.simulator._paging import Cursor, TokenCodec, TokenError, take_page
from bulkopens.simulator._render import (
    campaign_summary,
    contact_summary,
    contact_summary_by_campaign,
    render_record,
    with_numeric_ids,
)
from bulkopens.simulator._timefmt import parse_since_ms

_ID = re.compile(r"[0-9]{1,18}")
_LIMIT = re.compile(r"[0-9]{1,6}")
PAGE_CACHE_BYTES = 64 * 1024 * 1024


class ApiError(Exception):
    """An answer other than 200: HTTP status plus the v2 error-array body."""

    def __init__(self, status: int, error_key: str, message: str) -> None:
        super().__init__(status, error_key, message)
        self.status = status
        self.body = error_body(error_key, message)


def error_body(error_key: str, message: str) -> bytes:
    """The v2 error body: a JSON array of one ``{error_key, error_message}`` object."""
    return orjson.dumps([{"error_key": error_key, "error_message": message}])


class Api:
    """Serves one simulated account: a dataset, its page cache and its token codec."""

    __slots__ = ("_codec", "_numeric", "_pages", "dataset")

    def __init__(self, config: SimConfig, *, page_cache_bytes: int = PAGE_CACHE_BYTES) -> None:
        self.dataset = Dataset(config)
        # campaign-tracking records: (campaign_id, contact_id) written as JSON numbers
        self._numeric = (config.numeric_campaign_ids, config.numeric_contact_ids)
        self._codec = TokenCodec(digest(b"bulkopens-simulator-token", str(config.seed).encode()))
        self._pages: WeightedLRU[tuple[Any, ...], bytes] = WeightedLRU(page_cache_bytes)

    def answer(
        self, endpoint: Endpoint, raw_id: str | None, path: str, query: Mapping[str, str]
    ) -> bytes:
        """The 200 body for ``endpoint`` at ``path``; raises ApiError (see module docstring)."""
        if raw_id is not None and _ID.fullmatch(raw_id) is None:
            noun = "contactId" if endpoint.scope == "contact" else "campaignId"
            raise ApiError(400, "http.status.bad_request", f"The path parameter {noun} is invalid.")
        cursor = None
        if endpoint.shape in ("records", "campaign_list"):
            cursor = self._cursor(endpoint, path, query)
        index = self._resolve(endpoint, raw_id)
        key: tuple[Any, ...] = (path, cursor) if cursor is not None else (endpoint.shape, index)
        body = self._pages.get(key)
        if body is None:
            body = self._render(endpoint, index, path, cursor)
            self._pages.put(key, body, len(body) + 200)
        return body

    def add_activity(self, contact_id: str, report: str, count: int) -> list[dict[str, Any]]:
        """Add ``count`` records of ``report`` for a contact (newest of all); return them.

        Raises ValueError for an unknown contact, a report other than the six record types,
        or a count below 1.
        """
        contact = self._contact_number(contact_id)
        kind = REPORT_KINDS.get(report)
        if kind is None:
            raise ValueError(f"report must be one of {sorted(set(REPORT_KINDS) - {'all'})}")
        if count < 1:
            raise ValueError("count must be >= 1")
        added = self.dataset.add_activity(contact, kind, count, time.time_ns() // 1_000_000)
        self._pages.clear()
        catalog = self.dataset.catalog
        return [render_record(record, catalog) for record in added]

    def truth(
        self, report: str, contact_ids: Iterable[str] | None, since: str | None
    ) -> Iterator[dict[str, Any]]:
        """Every record the contact endpoint for ``report`` returns over all pages, per contact
        (all contacts in id order when ``contact_ids`` is None), newest first.

        Raises ValueError for an unknown report or contact, or a malformed ``since``.
        """
        if report not in REPORT_KINDS:
            raise ValueError(f"report must be one of {sorted(REPORT_KINDS)}")
        kind = REPORT_KINDS[report]
        since_ms = parse_since_ms(since) if since is not None else None
        if contact_ids is None:
            numbers: Iterable[int] = range(1, self.dataset.contact_count + 1)
        else:
            numbers = [self._contact_number(cid) for cid in contact_ids]
        return self._truth(numbers, kind, since_ms)

    def _truth(
        self, numbers: Iterable[int], kind: int | None, since_ms: int | None
    ) -> Iterator[dict[str, Any]]:
        catalog = self.dataset.catalog
        for contact in numbers:
            for record in reversed(self.dataset.contact_view(contact).records(kind)):
                if since_ms is not None and record[0] < since_ms:
                    break
                yield render_record(record, catalog)

    def _contact_number(self, contact_id: str) -> int:
        if _ID.fullmatch(contact_id) is None or not self.dataset.has_contact(int(contact_id)):
            raise ValueError(f"no contact {contact_id!r}")
        if str(int(contact_id)) != contact_id:
            raise ValueError(f"no contact {contact_id!r}")
        return int(contact_id)

    def _cursor(self, endpoint: Endpoint, path: str, query: Mapping[str, str]) -> Cursor:
        token = query.get("next")
        if token is not None:
            try:
                cursor = self._codec.decode(path.rstrip("/"), token)
            except TokenError as exc:
                raise ApiError(400, "query.param.invalid", "The next token is invalid.") from exc
            return cursor
        raw_limit = query.get("limit")
        limit = endpoint.default_limit
        if raw_limit is not None:
            if _LIMIT.fullmatch(raw_limit) is None or not 1 <= int(raw_limit) <= endpoint.max_limit:
                raise ApiError(
                    400,
                    "query.param.invalid",
                    f"The limit must be an integer from 1 to {endpoint.max_limit}.",
                )
            limit = int(raw_limit)
        if endpoint.shape == "campaign_list":
            status = query.get("status", "ALL")
            if status not in LIST_STATUSES:
                raise ApiError(400, "query.param.invalid", "The status is not a campaign status.")
            return Cursor(limit=limit, status=status)
        since = query.get("created_since")
        since_ms = None
        if since is not None:
            try:
                since_ms = parse_since_ms(since)
            except ValueError as exc:
                raise ApiError(
                    400,
                    "query.param.invalid",
                    "The created_since must be an ISO-8601 date-time with Z or an offset.",
                ) from exc
        return Cursor(limit=limit, since_ms=since_ms)

    def _resolve(self, endpoint: Endpoint, raw_id: str | None) -> int:
        """Contact number or campaign index; -1 for account scope. Raises 404 ApiError."""
        if raw_id is None:
            return -1
        if endpoint.scope == "contact":
            number = int(raw_id)
            if not self.dataset.has_contact(number) or str(number) != raw_id:
                raise ApiError(404, "http.status.not_found", "The contact id was not found.")
            return number
        campaign = self.dataset.catalog.by_id.get(raw_id)
        if campaign is None:
            raise ApiError(404, "http.status.not_found", "The campaign id was not found.")
        return campaign.index

    def _render(self, endpoint: Endpoint, index: int, path: str, cursor: Cursor | None) -> bytes:
        data = self.dataset
        catalog = data.catalog
        if cursor is None:
            if endpoint.shape == "contact_summary":
                return orjson.dumps(contact_summary(index, data.contact_view(index).all))
            if endpoint.shape == "contact_by_campaign":
                records = data.contact_view(index).all
                return orjson.dumps(contact_summary_by_campaign(index, records, catalog))
            return orjson.dumps(campaign_summary(data.campaign_view(index).all))
        results: list[dict[str, Any]]
        if endpoint.shape == "campaign_list":
            assert cursor.status is not None
            rows, after = take_page(catalog.list_rows(cursor.status), cursor)
            results = [catalog.campaigns[row[2]].list_row() for row in rows]
        else:
            kind = REPORT_KINDS[endpoint.report]
            view = (
                data.contact_view(index)
                if endpoint.scope == "contact"
                else data.campaign_view(index)
            )
            page: list[Record]
            page, after = take_page(view.records(kind), cursor)
            results = [render_record(record, catalog) for record in page]
            campaign, contact = self._numeric
            if endpoint.scope == "campaign" and (campaign or contact):
                results = [with_numeric_ids(r, campaign=campaign, contact=contact) for r in results]
        pagination: dict[str, str] = {}
        if after is not None:
            token = self._codec.encode(
                path.rstrip("/"),
                Cursor(
                    limit=cursor.limit, since_ms=cursor.since_ms, status=cursor.status, after=after
                ),
            )
            pagination["next_link"] = f"{path}?next={token}"
        return orjson.dumps({"meta": {"pagination": pagination}, "results": results})
