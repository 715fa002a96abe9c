"""Walking every page of one contact's (or campaign's) report, from page one or from a cursor."""

from __future__ import annotations

import operator
import re
from collections.abc import AsyncGenerator, Container, Sequence
from dataclasses import replace
from secrets import token_bytes
from typing import Any, cast

import orjson
from yarl import URL

from bulkopens._api import Api, Fetcher, Page
from bulkopens._api._links import resolve_next
from bulkopens._api._v2 import V2
from bulkopens._exceptions import BadAnswer, BadRequest, ContactError, ForeignNextLink
from bulkopens._reports import Report, Scope
from bulkopens._timefmt import canonical
from bulkopens._work import PageBatch, Work, line_hash, line_of, lines_of

# Pages one walk may read: 5 million records at 500 a page, far past any honest contact's or
# campaign's report, yet a bound on a server that hands out fresh next_links for ever.
MAX_PAGES = 10_000
# The cursor kept when a walk stops on a next_link it refuses (another host, a loop): a later
# attempt (retry_failed) starts the item over from page one and drops what this run already
# wrote for it, as for a cursor the API no longer takes.
RESTART = "bulkopens:restart"
# The API's own time form, YYYY-MM-DDTHH:MM:SS.mmmZ (24 characters), sorts as time does.
_STAMP_LENGTH = 24
_STAMP_PUNCTUATION = ((4, "-"), (7, "-"), (10, "T"), (13, ":"), (16, ":"), (19, "."), (23, "Z"))


# Bytes the text of a cut page must not hold: whitespace, and brackets (no array but results).
_NOT_IN_CUT = (b" ", b"\n", b"\r", b"\t", b"[", b"]")


def record_text(body: bytes, count: int, key: str = "results") -> bytes | None:
    """The ``count`` records of a page as NDJSON lines cut from the answer's own text, or None
    when the text is not in the form this needs (then the records are serialised instead).

    Cutting skips serialising the records again, the largest cost of a 500-record page. The
    form is compact JSON with the records' array under ``key`` (``results`` on v2,
    ``tracking_activities`` on v3), ``{...,"results":[{...},...,{...}]...}`` (the simulator's
    form; an answer in any other form is serialised), with flat records (no arrays in them;
    activity records have none). The checks run in C (each byte test is a ``memchr``), and
    together they make the cut exact. Let the slice run from the first ``"results":[`` (which
    no JSON string can hold: its quotes would be escaped) to the first ``]`` after it:

    * the answer holds no other ``[`` or ``]`` after the key, so that ``]`` closes the array,
      the key was not nested in another value (the outer array's ``]`` would follow), and the
      records hold no array;
    * what follows the ``]`` is the object's end (``}``) or more keys (``,"`` ... ``}``: v3's
      ``_links``), never more records;
    * the slice holds no whitespace, so no token is split by any;
    * the slice splits at ``},{`` into exactly ``count`` pieces. With no other array, a
      ``},{`` outside a string is a boundary between two records, and there are ``count - 1``
      of those; so none was in a string.

    Any page that fails a check is serialised: slower, never wrong.
    """
    opening = b'"' + key.encode() + b'":['
    start = body.find(opening)
    if count < 1 or start < 0:
        return None
    start += len(opening)
    end = body.find(b"]", start)
    if end < 0 or body.find(b"[", start) >= 0 or body.find(b"]", end + 1) >= 0:
        return None
    rest = body[end + 1 :].rstrip()
    if rest != b"}" and (rest[:2] != b',"' or rest[-1:] != b"}"):
        return None
    text = body[start:end]
    if text[:1] != b"{" or text[-1:] != b"}" or any(b in text for b in _NOT_IN_CUT):
        return None
    # One pass to find the boundaries and one to copy (a count and a replace would search
    # twice: the three-byte search is the slow part, ~45 us for a 500-record page).
    parts = text.split(b"},{")
    if len(parts) != count:
        return None
    return b"}\n{".join(parts) + b"\n"


def first_url(
    base: URL,
    report: Report,
    work: Work,
    page_size: int,
    scope: Scope = "contact",
    api: Api = V2,
) -> URL:
    """The item's first page: ``since`` goes to the API when it takes a date filter (v2)."""
    since = work.since if api.date_filter else None
    return api.report_url(base, report, scope, work.item_id, page_size, since)


async def walk(
    fetcher: Fetcher,
    base: URL,
    report: Report,
    work: Work,
    page_size: int,
    *,
    scope: Scope = "contact",
    keep: Container[str] | None = None,
    lines: bool = False,
    max_pages: int = MAX_PAGES,
    secrets: Sequence[str] = (),
    api: Api = V2,
) -> AsyncGenerator[PageBatch, None]:
    """Yield each page of ``work``'s contact in order, ending with one whose next_link is None.

    ``api`` says where the report lives and how its pages link. When the API takes no date
    filter (v3), ``work.since`` is applied here: records older than it are dropped, and the
    walk ends with the first page that holds one (pages come newest first), so an item with
    nothing new costs one request.

    ``scope`` says whose report ``work`` names. With ``keep``, a page holds only the records
    whose ``contact_id`` is in it (a campaign's records of the requested contacts); the walk
    and its cursor still go over every page. With ``lines``, each batch carries its records
    as NDJSON lines instead of dicts.

    Stops on a page without next_link, or on an empty page. A server cannot make the walk
    write a record twice or run for ever: a page with more records than asked for, a next_link
    to a page this walk already read (a loop), and more than ``max_pages`` pages raise
    BadAnswer; a next_link that leaves the API (see :func:`resolve_next`) raises
    ForeignNextLink. Each of these comes after yielding the pages read before it, so their
    records and the cursor are kept. Also raises whatever ``fetcher`` raises.
    """
    if work.cursor == RESTART:
        work = replace(work, cursor=None, restart=True)
    root = api.root
    below = None if api.date_filter else work.since
    url = (
        resolve_next(base, work.cursor, secrets, root)
        if work.cursor
        else first_url(base, report, work, page_size, scope, api)
    )
    # Resumed from a cursor, the first page may have been asked for with another page size.
    limit = page_size if not work.cursor else api.max_page_size(scope)
    visited = {url}
    # What each page read held, to tell a loop under new URLs.
    contents: set[tuple[int, bytes, bytes] | bytes] = set()
    pages = 0
    while True:
        try:
            page = await fetcher.fetch(url)
        except BadRequest:
            if not work.cursor or work.restart:
                raise
            # The API no longer takes our committed cursor (it may have expired): start the
            # contact over from page one, dropping what this run already wrote for it.
            work = replace(work, cursor=None, restart=True)
            url = first_url(base, report, work, page_size, scope, api)
            limit, visited, contents = page_size, {url}, set()
            continue
        pages += 1
        if len(page.results) > limit:
            raise BadAnswer(
                f"a page of {len(page.results)} records answered a request for at most {limit}",
                error_key="bulkopens.too_many_records",
                permanent=False,
            )
        if pages > 1 or page.next_link:  # a one-page walk (most contacts) cannot loop
            content = _content_key(page)
            if content in contents:
                # The same records again under another URL: a loop. Keep nothing of this page,
                # and leave the cursor so that a later attempt starts over (deduplicated).
                yield PageBatch(work.item_id, [], RESTART, work=work)
                raise _loop(pages)
            contents.add(content)
        cursor: str | None = None
        stop: ContactError | None = None
        reached = below is not None and _reaches(api, report, page.results, below)
        if page.results and page.next_link and not reached:
            try:
                next_url = resolve_next(base, page.next_link, secrets, root)
            except ForeignNextLink as exc:
                stop, cursor = exc, RESTART  # keep the page, never follow the link
            else:
                cursor = str(next_url.relative())
                if next_url in visited:
                    stop, cursor = _loop(pages), RESTART
                elif pages >= max_pages:
                    stop = BadAnswer(
                        f"more than {max_pages:,} pages; stopped (a later run with "
                        "retry_failed goes on from here)",
                        error_key="bulkopens.page_budget",
                        permanent=True,
                    )
                visited.add(next_url)
        results = page.results
        body = page.body if lines else None
        if keep is not None:
            results, body = [r for r in results if _contact_of(r) in keep], None
        yield _batch(work, report, results, cursor, lines, body, api, below, page.key)
        if stop is not None:
            raise stop
        if cursor is None:
            return
        url = next_url


def _loop(pages: int) -> BadAnswer:
    return BadAnswer(
        f"page {pages} leads back to a page already read (a loop); not followed",
        error_key="bulkopens.page_loop",
        permanent=True,
    )


def _content_key(page: Page) -> tuple[int, bytes, bytes] | bytes:
    """A fingerprint of a page's records, to tell a loop under new URLs within one walk: how
    many, and the first and the last (serialised). An honest walk's pages are disjoint runs of
    one newest-first list, so no two of them agree on all three (a page served again does);
    a server that serves other records under new URLs is bounded by ``max_pages``. Two
    records' worth of work, where a hash of the page's text cost a pass over 78 KB."""
    results = page.results
    try:
        return len(results), orjson.dumps(results[0]), orjson.dumps(results[-1])
    except (IndexError, TypeError):  # empty, or nested deeper than orjson writes
        return token_bytes(16)  # never taken for another page


def _batch(
    work: Work,
    report: Report,
    results: list[dict[str, Any]],
    next_link: str | None,
    as_lines: bool = False,
    body: bytes | None = None,
    api: Api = V2,
    below: str | None = None,
    key: str = "results",
) -> PageBatch:
    """The batch of one page's ``results``: those not yet written, as dicts or (``as_lines``)
    as NDJSON lines. With the page's text (``body``), each line is the record's own text as the
    API sent it (cut in C when the page allows, else split out by :func:`split_results`), so
    no number, key order or duplicate key is ever changed; without it, the records are
    serialised (their ids were converted on purpose). With ``below``, records dated before it
    are dropped too (the API took no date filter)."""
    stamps = _stamps(api, report, results)
    kept = results
    index: list[int] | None = None
    if work.seen_at_since or work.restart or below is not None:
        index = [
            i
            for i, (r, s) in enumerate(zip(results, stamps, strict=True))
            if not _written(work, r, s) and (below is None or s is None or s >= below)
        ]
        if len(index) == len(results):
            index = None  # nothing dropped: the page's text can be cut whole
        else:
            kept, stamps = [results[i] for i in index], [stamps[i] for i in index]
    if as_lines:
        text = None if kept else b""
        if body is not None and text is None:
            if index is None:
                text = record_text(body, len(kept), key)
            if text is None:
                raw = split_results(body, len(results), key)
                text = b"".join(raw if index is None else [raw[i] for i in index])
        if text is None:
            text = lines_of(kept)
        batch = PageBatch(work.item_id, [], next_link, work=work, lines=text, count=len(kept))
    else:
        batch = PageBatch(work.item_id, kept, next_link, work=work)
    if None not in stamps:
        if stamps:
            _set_ends_ordered(batch, kept, cast("list[str]", stamps))
    else:
        known = [s for s in stamps if s is not None]
        if known:
            _set_ends(batch, kept, stamps, max(known), min(known))
    return batch


# A JSON string token (escapes included), or one of the structural characters.
_TOKENS = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{}:,]')
# A string (kept) or a run of insignificant whitespace (dropped).
_STRING_OR_SPACE = re.compile(rb'("[^"\\]*(?:\\.[^"\\]*)*")|[ \t\r\n]+')
_SPACE = (b" ", b"\t", b"\r", b"\n")


def split_results(body: bytes, count: int, key: str = "results") -> list[bytes]:
    """The text of each record in the page's top-level ``key`` array, as NDJSON lines.

    The slow but exact way, for answers the C cut (:func:`record_text`) does not take:
    pretty-printed pages, other key orders, nested values. ``body`` is valid JSON (it was
    parsed), so a scan of its string tokens and brackets finds each element of the last
    top-level ``key`` array (the one a JSON parser keeps); whitespace outside strings is
    dropped so that each record is one line. Raises BadAnswer when the scan does not find
    ``count`` records (the key written with escapes, say): nothing is then written.
    """
    wanted = b'"' + key.encode() + b'"'
    found: list[bytes] = []
    records: list[bytes] = []
    depth = 0  # 1 inside the top-level object, 2 inside its results array, 3+ in a record
    in_results = False
    name: bytes | None = None
    start = 0
    for match in _TOKENS.finditer(body):
        token = match.group()
        first = token[:1]
        if first == b"{" or first == b"[":
            depth += 1
            if depth == 2 and first == b"[" and name == wanted:
                in_results, records = True, []
            elif depth == 3 and in_results:
                start = match.start()
        elif first == b"}" or first == b"]":
            depth -= 1
            if depth == 2 and in_results:
                records.append(_one_line(body[start : match.end()]))
            elif depth == 1 and in_results:
                in_results, found = False, records
        elif depth == 1 and first == b'"':
            name = token  # a key, or a string value (then the next key replaces it)
    if len(found) != count:
        raise BadAnswer(
            "the page's records could not be read exactly as sent",
            error_key="bulkopens.unreadable_page",
            permanent=False,
        )
    return found


def _one_line(text: bytes) -> bytes:
    """A record's text with the whitespace between its tokens dropped, and a newline."""
    if any(space in text for space in _SPACE):
        text = _STRING_OR_SPACE.sub(lambda m: m.group(1) or b"", text)
    return text + b"\n"


def _set_ends_ordered(batch: PageBatch, records: list[dict[str, Any]], stamps: list[str]) -> None:
    """Set the page's newest and oldest times and their lines, every record being dated.

    The API sends records newest first: then the ends are the first and last records, and a
    check of the order (one C pass) is all it costs. Other orders take the general way.
    """
    first, last = stamps[0], stamps[-1]
    if first < last or not all(map(operator.ge, stamps, stamps[1:])):
        _set_ends(batch, records, stamps, max(stamps), min(stamps))
        return
    batch.newest, batch.oldest = first, last
    n = len(stamps)
    batch.newest_lines = (
        [_hash_line(records[0])]
        if n == 1 or stamps[1] != first
        else _lines_dated(records, stamps, first)
    )
    batch.oldest_lines = (
        [_hash_line(records[-1])]
        if n == 1 or stamps[-2] != last
        else _lines_dated(records, stamps, last)
    )


def _set_ends(
    batch: PageBatch,
    records: list[dict[str, Any]],
    stamps: Sequence[str | None],
    newest: str,
    oldest: str,
) -> None:
    batch.newest, batch.oldest = newest, oldest
    batch.newest_lines = _lines_dated(records, stamps, newest)
    batch.oldest_lines = _lines_dated(records, stamps, oldest)


def _lines_dated(
    records: list[dict[str, Any]], stamps: Sequence[str | None], stamp: str
) -> list[bytes]:
    """The lines of the records dated ``stamp`` (usually one: found in C, without a loop)."""
    if stamps.count(stamp) == 1:
        return [_hash_line(records[stamps.index(stamp)])]
    return [_hash_line(r) for r, s in zip(records, stamps, strict=True) if s == stamp]


def _hash_line(record: dict[str, Any]) -> bytes:
    """The line a record is recognised by (hashed): its NDJSON line, or, for a record orjson
    cannot write back (nested deeper than it allows), its repr."""
    try:
        return line_of(record)
    except TypeError:  # orjson.JSONEncodeError
        try:
            return repr(record).encode()
        except RecursionError:
            return b"\x00too deep to tell apart"


def _contact_of(record: dict[str, Any]) -> str:
    """A record's contact id as text (the API writes it as a string; a number is tolerated)."""
    value = record.get("contact_id")
    return value if isinstance(value, str) else str(value)


def _reaches(api: Api, report: Report, results: list[dict[str, Any]], below: str) -> bool:
    """Whether a page holds a record dated before ``below``: the walk has then reached what
    an earlier run wrote (or ``--since``), and pages after it are older still."""
    return any(s is not None and s < below for s in _stamps(api, report, results))


def _stamps(api: Api, report: Report, results: list[dict[str, Any]]) -> list[str | None]:
    """Each record's activity time in canonical form (None where it has none).

    The fast path (a dict lookup per record; the checks run in C over the whole page) covers
    pages whose times are all in the API's own form, as in practice; anything else is parsed.
    """
    field = api.date_field(report)
    if field is not None and results:
        try:
            raw: list[Any] = list(map(operator.itemgetter(field), results))
            joined = "".join(raw)  # TypeError unless every stamp is text
        except (KeyError, TypeError):
            joined = ""  # a record without a time, or with a number: take the slow path
        n = len(results)
        # Every stamp 24 long, with the punctuation at each position (a slice at a time).
        if (
            len(joined) == _STAMP_LENGTH * n
            and set(map(len, raw)) == {_STAMP_LENGTH}
            and all(joined[i::_STAMP_LENGTH] == c * n for i, c in _STAMP_PUNCTUATION)
        ):
            return raw
    return [_canonical_or_none(api.record_time(report, r)) for r in results]


def _written(work: Work, record: dict[str, Any], stamp: str | None) -> bool:
    """Whether an earlier run (at ``since``) or this run (restarting) already wrote ``record``."""
    if stamp is None:
        return False
    if stamp == work.since and line_hash(_hash_line(record)) in work.seen_at_since:
        return True
    if work.restart and work.oldest is not None and work.newest is not None:
        if work.oldest < stamp < work.newest:
            return True
        if stamp == work.oldest:
            return line_hash(_hash_line(record)) in work.oldest_seen
        if stamp == work.newest:
            return line_hash(_hash_line(record)) in work.newest_seen
    return False


def _canonical_or_none(stamp: str | None) -> str | None:
    if stamp is None:
        return None
    try:
        return canonical(stamp)
    except (ValueError, OverflowError):  # not a time, or one past year 9999 in UTC
        return None


__all__ = [  # the work types are re-exported: they lived here before bulkopens._work
    "MAX_PAGES",
    "RESTART",
    "Fetcher",
    "PageBatch",
    "Work",
    "first_url",
    "line_hash",
    "line_of",
    "lines_of",
    "record_text",
    "resolve_next",
    "split_results",
    "walk",
]
