"""Walking every page of one contact's (or campaign's) report, from page one or from a cursor."""

from __future__ import annotations

import operator
import re
from collections.abc import AsyncGenerator, Container, Sequence
from dataclasses import replace
from secrets import token_bytes
from typing import Any, Protocol, cast
from urllib.parse import unquote

import orjson
from yarl import URL

from bulkopens._config import api_url
from bulkopens._exceptions import BadAnswer, BadRequest, ContactError, ForeignNextLink
from bulkopens._http import Page
from bulkopens._reports import Report, Scope
from bulkopens._timefmt import canonical
from bulkopens._work import PageBatch, Work, line_hash, line_of, lines_of

_CREDENTIAL_PARAMS = ("api_key", "access_token")
# Every report lives under this path (below the base URL's own path, if any).
_API_ROOT = "/v2/"
# What no honest next_link holds, once percent-decoded: control characters and backslashes
# (a path or a host could be read two ways), and dot segments (they climb out of the API).
_UNSAFE = re.compile(r"[\x00-\x1f\x7f\\]")
_SEGMENTS = re.compile(r"[/\\]")
# The largest page the API sends (its maximum ``limit``).
MAX_PAGE_SIZE = 500
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


class Fetcher(Protocol):
    async def fetch(self, url: URL) -> Page: ...


_RESULTS_NAME = b'"results"'
_RESULTS_KEY = b'"results":['
# Bytes the text of a cut page must not hold: whitespace, and brackets (no array but results).
_NOT_IN_CUT = (b" ", b"\n", b"\r", b"\t", b"[", b"]")


def record_text(body: bytes, count: int) -> bytes | None:
    """The ``count`` records of a page as NDJSON lines cut from the answer's own text, or None
    when the text is not in the form this needs (then the records are serialised instead).

    Cutting skips serialising the records again, the largest cost of a 500-record page. The
    form is compact JSON ending in the results array, ``{...,"results":[{...},...,{...}]}``
    (the simulator's form; an answer in any other form is serialised), with flat records (no
    arrays in them; activity records have none). The checks run in C (each byte test is a
    ``memchr``), and together they make the cut exact. The slice between the first
    ``"results":[`` and the closing ``]}``:

    * holds no whitespace, so no token is split by any;
    * holds no ``[`` or ``]``: the first ``"results":[`` was the top-level key (a nested one
      would leave the real key's ``[`` in the slice), no top-level key follows the array (its
      ``]`` would be in the slice), and the only array is the results;
    * has exactly ``count - 1`` ``},{``. With no other array, a ``},{`` outside a string is a
      boundary between two records, and there are ``count - 1`` of those; so none was in a
      string.

    Any page that fails a check is serialised: slower, never wrong.
    """
    start = body.find(_RESULTS_KEY)
    end = len(body.rstrip())
    if count < 1 or start < 0 or body[end - 2 : end] != b"]}":
        return None
    text = body[start + len(_RESULTS_KEY) : end - 2]
    if text[:1] != b"{" or text[-1:] != b"}" or any(b in text for b in _NOT_IN_CUT):
        return None
    if text.count(b"},{") != count - 1:
        return None
    return text.replace(b"},{", b"}\n{") + b"\n"


def first_url(
    base: URL, report: Report, work: Work, page_size: int, scope: Scope = "contact"
) -> URL:
    query = {"limit": str(page_size)}
    if work.since is not None:
        query["created_since"] = work.since
    return api_url(base, report.path_for(scope, work.contact_id)).with_query(query)


def resolve_next(base: URL, next_link: str, secrets: Sequence[str] = ()) -> URL:
    """Join a next_link to the API base; ForeignNextLink unless it stays inside the API.

    The link is used as given (its ``next`` token is opaque); ``limit`` and ``created_since``
    are not sent again, and any credential parameter the link carried is dropped (ours is added
    later). A link is followed only when it is a valid URL on the base's scheme, host and port,
    with no user info, under the base's path, with no dot segment or backslash (after
    percent-decoding, so ``%2e%2e`` counts), and without any of ``secrets`` in it (a server
    that echoes the credentials into a link would have them stored in the state).
    """
    plain = _decoded(next_link)
    if any(secret and secret in plain for secret in secrets):
        raise ForeignNextLink("next_link carries a credential; not followed")
    if _UNSAFE.search(plain) or {".", ".."} & set(_SEGMENTS.split(plain.split("?")[0])):
        raise ForeignNextLink(
            "next_link has a control character, a dot segment or a backslash; not followed"
        )
    try:
        link = URL(next_link)
        prefix = base.path.rstrip("/")
        if (
            not link.scheme
            and link.host is None
            and prefix
            and not link.path.startswith(prefix + "/")
        ):
            query = f"?{link.raw_query_string}" if link.raw_query_string else ""
            link = URL(prefix + "/" + link.raw_path.lstrip("/") + query, encoded=True)
        url = base.join(link)
        where = (url.scheme, url.host, url.port)
    except (ValueError, TypeError, UnicodeError):
        raise ForeignNextLink("next_link is not a valid URL; not followed") from None
    if where != (base.scheme, base.host, base.port):
        raise ForeignNextLink(
            f"next_link points at another host ({_shown(url.host)}); not followed"
        )
    if url.raw_user is not None or url.raw_password is not None:
        raise ForeignNextLink("next_link carries user info; not followed")
    if not _decoded(url.raw_path).startswith(prefix + _API_ROOT):
        raise ForeignNextLink("next_link leaves the API's base path; not followed")
    if any(p in url.query for p in _CREDENTIAL_PARAMS):
        url = url.without_query_params(*_CREDENTIAL_PARAMS)
    return url


def _decoded(text: str) -> str:
    """``text`` percent-decoded until it no longer changes (``%252e`` is a dot, too)."""
    for _ in range(4):
        plain = unquote(text)
        if plain == text:
            break
        text = plain
    return text


def _shown(text: str | None, limit: int = 60) -> str:
    """Server-provided text as it may appear in a message: quoted, escaped, shortened."""
    return ascii((text or "")[:limit])


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
) -> AsyncGenerator[PageBatch, None]:
    """Yield each page of ``work``'s contact in order, ending with one whose next_link is None.

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
    url = (
        resolve_next(base, work.cursor, secrets)
        if work.cursor
        else first_url(base, report, work, page_size, scope)
    )
    # Resumed from a cursor, the first page may have been asked for with another page size.
    limit = page_size if not work.cursor else MAX_PAGE_SIZE
    visited = {url}
    contents: set[bytes] = set()  # what each page read held, to tell a loop under new URLs
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
            url = first_url(base, report, work, page_size, scope)
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
                yield PageBatch(work.contact_id, [], RESTART, work=work)
                raise _loop(pages)
            contents.add(content)
        cursor: str | None = None
        stop: ContactError | None = None
        if page.results and page.next_link:
            try:
                next_url = resolve_next(base, page.next_link, secrets)
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
        yield _batch(work, report, results, cursor, lines, body)
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


def _content_key(page: Page) -> bytes:
    """A fingerprint of a page's records: of its text from the results key on (the records, in
    the API's form, where ``meta`` comes first), or of the records themselves."""
    body = page.body
    if body is not None:
        at = body.rfind(_RESULTS_NAME)
        return line_hash(body[at:] if at >= 0 else body)
    try:
        return line_hash(orjson.dumps(page.results))
    except TypeError:  # nested deeper than orjson writes: never taken for another page
        return token_bytes(16)


def _batch(
    work: Work,
    report: Report,
    results: list[dict[str, Any]],
    next_link: str | None,
    as_lines: bool = False,
    body: bytes | None = None,
) -> PageBatch:
    """The batch of one page's ``results``: those not yet written, as dicts or (``as_lines``)
    as NDJSON lines. With the page's text (``body``), each line is the record's own text as the
    API sent it (cut in C when the page allows, else split out by :func:`split_results`), so
    no number, key order or duplicate key is ever changed; without it, the records are
    serialised (their ids were converted on purpose)."""
    stamps = _stamps(report, results)
    kept = results
    index: list[int] | None = None
    if work.seen_at_since or work.restart:
        index = [
            i
            for i, (r, s) in enumerate(zip(results, stamps, strict=True))
            if not _written(work, r, s)
        ]
        kept, stamps = [results[i] for i in index], [stamps[i] for i in index]
    if as_lines:
        text = None if kept else b""
        if body is not None and text is None:
            if index is None:
                text = record_text(body, len(kept))
            if text is None:
                raw = split_results(body, len(results))
                text = b"".join(raw if index is None else [raw[i] for i in index])
        if text is None:
            text = lines_of(kept)
        batch = PageBatch(work.contact_id, [], next_link, work=work, lines=text, count=len(kept))
    else:
        batch = PageBatch(work.contact_id, kept, next_link, work=work)
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


def split_results(body: bytes, count: int) -> list[bytes]:
    """The text of each record in the page's top-level ``results`` array, as NDJSON lines.

    The slow but exact way, for answers the C cut (:func:`record_text`) does not take:
    pretty-printed pages, other key orders, nested values. ``body`` is valid JSON (it was
    parsed), so a scan of its string tokens and brackets finds each element of the last
    top-level ``results`` array (the one a JSON parser keeps); whitespace outside strings is
    dropped so that each record is one line. Raises BadAnswer when the scan does not find
    ``count`` records (the key written with escapes, say): nothing is then written.
    """
    found: list[bytes] = []
    records: list[bytes] = []
    depth = 0  # 1 inside the top-level object, 2 inside its results array, 3+ in a record
    in_results = False
    key: bytes | None = None
    start = 0
    for match in _TOKENS.finditer(body):
        token = match.group()
        first = token[:1]
        if first == b"{" or first == b"[":
            depth += 1
            if depth == 2 and first == b"[" and key == b'"results"':
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
            key = token  # a key, or a string value (then the next key replaces it)
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


def _stamps(report: Report, results: list[dict[str, Any]]) -> list[str | None]:
    """Each record's activity time in canonical form (None where it has none).

    The fast path (a dict lookup per record; the checks run in C over the whole page) covers
    pages whose times are all in the API's own form, as in practice; anything else is parsed.
    """
    field = report.date_field
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
    return [_canonical_or_none(report.record_time(r)) for r in results]


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
