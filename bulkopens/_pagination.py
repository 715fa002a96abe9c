"""Walking every page of one contact's (or campaign's) report, from page one or from a cursor."""

from __future__ import annotations

import functools
import hashlib
import operator
from collections.abc import AsyncGenerator, Container
from dataclasses import dataclass, field, replace
from typing import Any, Protocol, cast

import orjson
from yarl import URL

from bulkopens._exceptions import BadRequest, ForeignNextLink
from bulkopens._http import Page
from bulkopens._reports import Report, Scope
from bulkopens._timefmt import canonical

_CREDENTIAL_PARAMS = ("api_key", "access_token")
# The API's own time form, YYYY-MM-DDTHH:MM:SS.mmmZ (24 characters), sorts as time does.
_CANONICAL_PUNCTUATION = (("-", 2), ("T", 1), (":", 2), (".", 1), ("Z", 1))


class Fetcher(Protocol):
    async def fetch(self, url: URL) -> Page: ...


@dataclass(frozen=True, slots=True)
class Work:
    """One contact to fetch, and where to start. In campaign scope, ``contact_id`` holds the
    campaign's id: a work item is whatever the report is asked about.

    ``cursor`` is a committed next_link to resume from (None = page one). ``since`` is sent as
    ``created_since``; records dated exactly ``since`` whose line hash is in ``seen_at_since``
    were written by an earlier run and are dropped (``created_since`` is inclusive).

    ``oldest`` .. ``newest`` is the span this run already wrote for the contact, walking down
    from the top. If the API refuses a resumed cursor, the walk restarts from page one
    (``restart``) and drops the records inside that span, so nothing is written twice.
    """

    contact_id: str
    cursor: str | None = None
    since: str | None = None
    seen_at_since: frozenset[bytes] = frozenset()
    newest: str | None = None  # newest activity time already written for this contact
    newest_seen: frozenset[bytes] = frozenset()  # line hashes of the records dated ``newest``
    oldest: str | None = None  # oldest activity time written for this contact in this run
    oldest_seen: frozenset[bytes] = frozenset()  # line hashes of the records dated ``oldest``
    restart: bool = False


@dataclass(slots=True)
class PageBatch:
    """The records of one page of one contact, and where the walk goes next."""

    contact_id: str
    records: list[dict[str, Any]]
    # The cursor after this page: the next page's path and query, without credentials, so it
    # is safe to store; None when the contact is complete.
    next_link: str | None
    newest: str | None = None  # newest canonical activity time on this page
    oldest: str | None = None  # oldest canonical activity time on this page
    newest_lines: list[bytes] = field(default_factory=list)  # the records dated ``newest``
    oldest_lines: list[bytes] = field(default_factory=list)  # the records dated ``oldest``
    work: Work | None = None  # the work item this page belongs to


def line_of(record: dict[str, Any]) -> bytes:
    """A record as one NDJSON line: its fields exactly as the API sent them, in order."""
    return orjson.dumps(record, option=orjson.OPT_APPEND_NEWLINE)


def lines_of(records: list[dict[str, Any]]) -> bytes:
    """Records as NDJSON lines, joined (the writer's hot path: no Python call per record)."""
    return b"".join(map(_dumps_line, records))


_dumps_line = functools.partial(orjson.dumps, option=orjson.OPT_APPEND_NEWLINE)


def line_hash(line: bytes) -> bytes:
    """A short, stable fingerprint of one output line (to recognise a record already written)."""
    return hashlib.blake2b(line, digest_size=8).digest()


def first_url(
    base: URL, report: Report, work: Work, page_size: int, scope: Scope = "contact"
) -> URL:
    path = base.path.rstrip("/") + report.path_for(scope, work.contact_id)
    query = {"limit": str(page_size)}
    if work.since is not None:
        query["created_since"] = work.since
    return base.with_path(path).with_query(query)


def resolve_next(base: URL, next_link: str) -> URL:
    """Join a next_link to the API base. ForeignNextLink if it points at another host.

    The link is used as given (its ``next`` token is opaque); ``limit`` and ``created_since``
    are not sent again, and any credential the link carried is dropped (ours is added later).
    """
    link = URL(next_link)
    prefix = base.path.rstrip("/")
    if link.host is None and prefix and not link.path.startswith(prefix + "/"):
        query = f"?{link.raw_query_string}" if link.raw_query_string else ""
        link = URL(prefix + "/" + link.raw_path.lstrip("/") + query, encoded=True)
    url = base.join(link)
    if url.origin() != base.origin():
        raise ForeignNextLink(f"next_link points at another host ({url.host}); not followed")
    if any(p in url.query for p in _CREDENTIAL_PARAMS):
        url = url.without_query_params(*_CREDENTIAL_PARAMS)
    return url


async def walk(
    fetcher: Fetcher,
    base: URL,
    report: Report,
    work: Work,
    page_size: int,
    *,
    scope: Scope = "contact",
    keep: Container[str] | None = None,
) -> AsyncGenerator[PageBatch, None]:
    """Yield each page of ``work``'s contact in order, ending with one whose next_link is None.

    ``scope`` says whose report ``work`` names. With ``keep``, a page holds only the records
    whose ``contact_id`` is in it (a campaign's records of the requested contacts); the walk
    and its cursor still go over every page.

    Stops on a page without next_link, on an empty page, or on a next_link that repeats the
    current one (so a faulty server cannot loop us). Raises ForeignNextLink after yielding the
    page that carried it, and whatever ``fetcher`` raises.
    """
    url = (
        resolve_next(base, work.cursor)
        if work.cursor
        else first_url(base, report, work, page_size, scope)
    )
    while True:
        try:
            page = await fetcher.fetch(url)
        except BadRequest:
            if not work.cursor or work.restart:
                raise
            # The API no longer takes our committed cursor (it may have expired): start the
            # contact over from page one, dropping what this run already wrote for it.
            work = replace(work, cursor=None, restart=True)
            url = first_url(base, report, work, page_size, scope)
            continue
        cursor: str | None = None
        foreign: ForeignNextLink | None = None
        if page.results and page.next_link:
            try:
                next_url = resolve_next(base, page.next_link)
            except ForeignNextLink as exc:
                # Keep the page, remember where it pointed (minus any credential), then fail.
                foreign = exc
                cursor = str(URL(page.next_link).without_query_params(*_CREDENTIAL_PARAMS))
            else:
                if next_url != url:  # a link to the page we just read would loop forever
                    cursor = str(next_url.relative())
        results = page.results
        if keep is not None:
            results = [r for r in results if _contact_of(r) in keep]
        yield _batch(work, report, results, cursor)
        if foreign is not None:
            raise foreign
        if cursor is None:
            return
        url = next_url


def _batch(
    work: Work, report: Report, results: list[dict[str, Any]], next_link: str | None
) -> PageBatch:
    stamps = _stamps(report, results)
    kept = results
    if work.seen_at_since or work.restart:
        pairs = [(r, s) for r, s in zip(results, stamps, strict=True) if not _written(work, r, s)]
        kept, stamps = [r for r, _ in pairs], [s for _, s in pairs]
    known = cast("list[str]", [s for s in stamps if s is not None] if None in stamps else stamps)
    if not known:
        return PageBatch(work.contact_id, kept, next_link, work=work)
    newest, oldest = max(known), min(known)
    newest_lines = _lines_dated(kept, stamps, newest)
    oldest_lines = _lines_dated(kept, stamps, oldest)
    return PageBatch(
        work.contact_id, kept, next_link, newest, oldest, newest_lines, oldest_lines, work
    )


def _lines_dated(
    records: list[dict[str, Any]], stamps: list[str | None], stamp: str
) -> list[bytes]:
    """The lines of the records dated ``stamp`` (usually one: found in C, without a loop)."""
    if stamps.count(stamp) == 1:
        return [line_of(records[stamps.index(stamp)])]
    return [line_of(r) for r, s in zip(records, stamps, strict=True) if s == stamp]


def _contact_of(record: dict[str, Any]) -> str:
    """A record's contact id as text (the API writes it as a string; a number is tolerated)."""
    value = record.get("contact_id")
    return value if isinstance(value, str) else str(value)


def _stamps(report: Report, results: list[dict[str, Any]]) -> list[str | None]:
    """Each record's activity time in canonical form (None where it has none).

    The fast path (a dict lookup per record; the checks run in C over the whole page) covers
    pages whose times are all in the API's own form, as in practice; anything else is parsed.
    """
    field = report.date_field
    if field is not None:
        try:
            raw: list[Any] = list(map(operator.itemgetter(field), results))
        except KeyError:
            raw = [None]  # a record without a time: take the slow path
        if set(map(type, raw)) == {str} and set(map(len, raw)) == {24}:
            joined = "".join(raw)  # every stamp 24 long; now check their punctuation, in C
            n = len(raw)
            if all(joined.count(c) == k * n for c, k in _CANONICAL_PUNCTUATION):
                return raw
    return [_canonical_or_none(report.record_time(r)) for r in results]


def _written(work: Work, record: dict[str, Any], stamp: str | None) -> bool:
    """Whether an earlier run (at ``since``) or this run (restarting) already wrote ``record``."""
    if stamp is None:
        return False
    if stamp == work.since and line_hash(line_of(record)) in work.seen_at_since:
        return True
    if work.restart and work.oldest is not None and work.newest is not None:
        if work.oldest < stamp < work.newest:
            return True
        if stamp == work.oldest:
            return line_hash(line_of(record)) in work.oldest_seen
        if stamp == work.newest:
            return line_hash(line_of(record)) in work.newest_seen
    return False


def _canonical_or_none(stamp: str | None) -> str | None:
    if stamp is None:
        return None
    try:
        return canonical(stamp)
    except ValueError:
        return None
