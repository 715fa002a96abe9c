"""Walking one contact's pages, with a fake fetcher: no network."""

from __future__ import annotations

import json
import random
from typing import Any

import orjson
import pytest
from yarl import URL

from bulkopens._api import Page
from bulkopens._exceptions import BadAnswer, BadRequest, ForeignNextLink
from bulkopens._pagination import (
    RESTART,
    PageBatch,
    Work,
    first_url,
    line_hash,
    line_of,
    lines_of,
    record_text,
    resolve_next,
    split_results,
    walk,
)
from bulkopens._reports import REPORTS
from bulkopens._timefmt import canonical

BASE = URL("https://api.constantcontact.com")
OPENS = REPORTS["opens"]


def rec(cid: str, stamp: str, campaign: str = "1100394165287") -> dict[str, Any]:
    return {
        "activity_type": "EMAIL_OPEN",
        "campaign_id": campaign,
        "contact_id": cid,
        "email_address": f"c{cid}@example.com",
        "open_date": stamp,
    }


class FakeFetcher:
    def __init__(self, pages: dict[str, Page]) -> None:
        self.pages = pages
        self.urls: list[URL] = []

    async def fetch(self, url: URL) -> Page:
        self.urls.append(url)
        return self.pages[str(url.relative())]

    async def fetch_object(self, url: URL) -> dict[str, Any]:
        raise AssertionError(f"a walk asks for pages only, not {url}")

    async def fetch_list(self, url: URL) -> list[dict[str, Any]]:
        raise AssertionError(f"a walk asks for pages only, not {url}")


async def collect(fetcher: FakeFetcher, work: Work, page_size: int = 500) -> list[PageBatch]:
    return [b async for b in walk(fetcher, BASE, OPENS, work, page_size)]


def test_first_url_sends_limit_and_created_since() -> None:
    url = first_url(BASE, OPENS, Work("42", since="2024-01-01T00:00:00.000Z"), 500)
    assert url.path == "/v2/contacts/42/tracking/opens"
    assert url.query == {"limit": "500", "created_since": "2024-01-01T00:00:00.000Z"}
    assert "created_since" not in first_url(BASE, OPENS, Work("42"), 7).query


def test_all_report_path() -> None:
    url = first_url(BASE, REPORTS["all"], Work("42"), 500)
    assert url.path == "/v2/contacts/42/tracking"


def test_next_link_joined_to_base_without_limit_or_since() -> None:
    url = resolve_next(BASE, "/v2/contacts/1/tracking/opens?next=c3RhcnRBdD0zJmxpbWl0PTI")
    assert str(url) == (
        "https://api.constantcontact.com/v2/contacts/1/tracking/opens?next=c3RhcnRBdD0zJmxpbWl0PTI"
    )


def test_next_token_with_plus_and_slash_is_kept_verbatim() -> None:
    url = resolve_next(BASE, "/v2/contacts/1/tracking/opens?next=ab+c/d%2Be")
    assert url.raw_query_string == "next=ab+c/d%2Be"


def test_next_link_keeps_a_proxy_prefix() -> None:
    base = URL("http://proxy.local/ctct")
    assert resolve_next(base, "/v2/x?next=1").path == "/ctct/v2/x"
    assert resolve_next(base, "/ctct/v2/x?next=1").path == "/ctct/v2/x"


def test_credentials_in_a_next_link_are_dropped() -> None:
    url = resolve_next(BASE, "/v2/x?next=1&api_key=theirs")
    assert "api_key" not in url.query


@pytest.mark.parametrize(
    "link",
    [
        "https://evil.example.com/v2/contacts/1/tracking/opens?next=x",
        "//evil.example.com/v2/contacts/1/tracking/opens?next=x",
        "http://api.constantcontact.com/v2/x?next=1",  # same host, other scheme
        "https://api.constantcontact.com:8443/v2/x?next=1",
    ],
)
def test_next_link_to_another_origin_is_refused(link: str) -> None:
    with pytest.raises(ForeignNextLink):
        resolve_next(BASE, link)


def test_absolute_next_link_to_the_same_origin_is_followed() -> None:
    url = resolve_next(BASE, "https://api.constantcontact.com/v2/x?next=1")
    assert url.path == "/v2/x"


async def test_walk_follows_every_page_in_order() -> None:
    p1 = "/v2/contacts/7/tracking/opens?limit=2"
    p2 = "/v2/contacts/7/tracking/opens?next=A"
    p3 = "/v2/contacts/7/tracking/opens?next=B"
    fetcher = FakeFetcher(
        {
            p1: Page(
                [rec("7", "2024-01-03T00:00:00.000Z"), rec("7", "2024-01-02T00:00:00.000Z")], p2
            ),
            p2: Page([rec("7", "2024-01-01T00:00:00.000Z")], p3),
            p3: Page([rec("7", "2023-12-31T00:00:00.000Z")], None),
        }
    )
    batches = await collect(fetcher, Work("7"), page_size=2)
    assert [len(b.records) for b in batches] == [2, 1, 1]
    assert [b.next_link for b in batches] == [p2, p3, None]
    assert batches[0].newest == "2024-01-03T00:00:00.000Z"
    assert batches[0].oldest == "2024-01-02T00:00:00.000Z"
    assert [str(u.relative()) for u in fetcher.urls] == [p1, p2, p3]


async def test_walk_resumes_from_a_cursor() -> None:
    p2 = "/v2/contacts/7/tracking/opens?next=A"
    fetcher = FakeFetcher({p2: Page([rec("7", "2024-01-01T00:00:00.000Z")], None)})
    batches = await collect(fetcher, Work("7", cursor=p2))
    assert len(batches) == 1
    assert [str(u.relative()) for u in fetcher.urls] == [p2]


async def test_walk_stops_on_an_empty_page_and_fails_on_a_repeated_link() -> None:
    p1 = "/v2/contacts/7/tracking/opens?limit=500"
    loop = "/v2/contacts/7/tracking/opens?next=LOOP"
    fetcher = FakeFetcher(
        {
            p1: Page([rec("7", "2024-01-01T00:00:00.000Z")], loop),
            loop: Page([rec("7", "2023-01-01T00:00:00.000Z")], loop),
        }
    )
    batches, error = await _walk_all(fetcher, Work("7"))
    assert isinstance(error, BadAnswer)
    assert error.error_key == "bulkopens.page_loop"
    assert error.permanent
    # Both pages are kept once; the cursor makes a later attempt start over, deduplicated.
    assert [b.next_link for b in batches] == [loop, RESTART]
    assert len(fetcher.urls) == 2
    empty = FakeFetcher({p1: Page([], "/v2/contacts/7/tracking/opens?next=MORE")})
    assert [b.next_link for b in await collect(empty, Work("7"))] == [None]


async def test_foreign_next_link_fails_after_keeping_the_page() -> None:
    p1 = "/v2/contacts/7/tracking/opens?limit=500"
    fetcher = FakeFetcher(
        {p1: Page([rec("7", "2024-01-01T00:00:00.000Z")], "https://evil.test/x?next=1")}
    )
    seen: list[PageBatch] = []

    async def consume() -> None:
        async for batch in walk(fetcher, BASE, OPENS, Work("7"), 500):
            seen.append(batch)

    with pytest.raises(ForeignNextLink):
        await consume()
    assert len(seen) == 1
    assert len(fetcher.urls) == 1


async def test_records_already_written_at_the_since_boundary_are_dropped() -> None:
    boundary = "2024-01-01T00:00:00.000Z"
    old = rec("7", boundary, campaign="1")
    new_same_instant = rec("7", boundary, campaign="2")
    newer = rec("7", "2024-02-01T00:00:00.000Z")
    p1 = "/v2/contacts/7/tracking/opens?limit=500&created_since=2024-01-01T00:00:00.000Z"
    fetcher = FakeFetcher({p1: Page([newer, new_same_instant, old], None)})
    work = Work("7", since=boundary, seen_at_since=frozenset({line_hash(line_of(old))}))
    (batch,) = await collect(fetcher, work)
    assert batch.records == [newer, new_same_instant]
    assert batch.newest == "2024-02-01T00:00:00.000Z"
    assert batch.newest_lines == [line_of(newer)]


def test_line_keeps_fields_in_api_order() -> None:
    record = {"z": 1, "a": "x", "campaign_id": 1100394165287}
    assert line_of(record) == b'{"z":1,"a":"x","campaign_id":1100394165287}\n'


@pytest.mark.parametrize(
    "records",
    [
        [],
        [{}],
        [{}, {}, {}],
        [rec("1", "2024-01-01T00:00:00.000Z"), rec("2", "2024-01-02T00:00:00.000Z")],
        # the split pattern inside values: strings, nested objects and lists of objects
        [{"link_uri": "https://x.test/?q=},{"}, {"a": 1}],
        [{"a": [{"b": 1}, {"c": 2}]}, {"d": {"e": {}}}, {}],
        [{"a": "}"}, {"b": "{"}, {"c": ",{"}, {"d": "},"}],
        [{"a": '\u00e9\n"},{"'}, {"n": 1100394165287, "f": 1.5, "t": None, "l": []}],
    ],
)
def test_lines_of_is_one_line_per_record_exactly_as_line_of(records: list[dict[str, Any]]) -> None:
    assert lines_of(records) == b"".join(line_of(r) for r in records)


async def test_a_cursor_never_carries_a_credential() -> None:
    p1 = "/v2/contacts/7/tracking/opens?limit=500"
    leaky = "/v2/contacts/7/tracking/opens?next=Z&api_key=SECRET-KEY"
    fetcher = FakeFetcher(
        {
            p1: Page([rec("7", "2024-01-01T00:00:00.000Z")], leaky),
            "/v2/contacts/7/tracking/opens?next=Z": Page([], None),
        }
    )
    batches = await collect(fetcher, Work("7"))
    assert batches[0].next_link == "/v2/contacts/7/tracking/opens?next=Z"


async def test_a_foreign_cursor_is_kept_without_credentials() -> None:
    p1 = "/v2/contacts/7/tracking/opens?limit=500"
    page = Page([rec("7", "2024-01-01T00:00:00.000Z")], "https://evil.test/x?next=1&api_key=S")
    batches: list[PageBatch] = []

    async def consume() -> None:
        async for batch in walk(FakeFetcher({p1: page}), BASE, OPENS, Work("7"), 500):
            batches.append(batch)

    with pytest.raises(ForeignNextLink):
        await consume()
    # Nothing of the foreign link is stored: a later attempt starts over instead.
    assert batches[0].next_link == RESTART


class RefusingFetcher(FakeFetcher):
    """Answers 400 for one URL (a cursor the API no longer takes)."""

    def __init__(self, pages: dict[str, Page], refused: str) -> None:
        super().__init__(pages)
        self.refused = refused

    async def fetch(self, url: URL) -> Page:
        if str(url.relative()) == self.refused:
            self.urls.append(url)
            raise BadRequest("400 bad next")
        return await super().fetch(url)


async def test_a_refused_cursor_restarts_from_page_one_dropping_what_was_written() -> None:
    # Written before: 03-01 .. 02-01, where 02-01 holds two records and only "a" was written.
    new = rec("7", "2024-04-01T00:00:00.000Z")
    top = rec("7", "2024-03-01T00:00:00.000Z")
    middle = rec("7", "2024-02-15T00:00:00.000Z")
    edge_a = rec("7", "2024-02-01T00:00:00.000Z", campaign="a")
    edge_b = rec("7", "2024-02-01T00:00:00.000Z", campaign="b")
    older = rec("7", "2024-01-01T00:00:00.000Z")
    cursor = "/v2/contacts/7/tracking/opens?next=STALE"
    p1 = "/v2/contacts/7/tracking/opens?limit=500"
    fetcher = RefusingFetcher({p1: Page([new, top, middle, edge_a, edge_b, older], None)}, cursor)
    work = Work(
        "7",
        cursor=cursor,
        newest="2024-03-01T00:00:00.000Z",
        newest_seen=frozenset({line_hash(line_of(top))}),
        oldest="2024-02-01T00:00:00.000Z",
        oldest_seen=frozenset({line_hash(line_of(edge_a))}),
    )
    (batch,) = await collect(fetcher, work)
    assert batch.records == [new, edge_b, older]
    assert [str(u.relative()) for u in fetcher.urls] == [cursor, p1]


async def test_a_refused_first_page_is_a_configuration_error() -> None:
    p1 = "/v2/contacts/7/tracking/opens?limit=500"
    with pytest.raises(BadRequest):
        await collect(RefusingFetcher({}, p1), Work("7"))


def _stamp(day: int, ms: int = 0) -> str:
    return f"2024-01-{day:02d}T00:00:00.{ms:03d}Z"


@pytest.mark.parametrize(
    "stamps",
    [
        [_stamp(1)],
        [_stamp(9), _stamp(5), _stamp(1)],  # newest first, as the API sends them
        [_stamp(9), _stamp(9), _stamp(5), _stamp(1), _stamp(1)],  # ties at both ends
        [_stamp(3), _stamp(3), _stamp(3)],
        [_stamp(1), _stamp(5), _stamp(9)],  # oldest first
        [_stamp(5), _stamp(9), _stamp(1), _stamp(9), _stamp(1)],  # no order
        [_stamp(9), _stamp(5), _stamp(7), _stamp(1)],  # one out of order in the middle
        ["2024-01-09T00:00:00Z", _stamp(5), "2024-01-01T01:00:00+01:00"],  # other forms
        [_stamp(9), None, _stamp(1), None],  # records without a time
        [None],
    ],
)
async def test_a_page_knows_its_newest_and_oldest_records(stamps: list[str | None]) -> None:
    records = [{"n": i, "open_date": s} if s else {"n": i} for i, s in enumerate(stamps)]
    p1 = "/v2/contacts/7/tracking/opens?limit=500"
    (batch,) = await collect(FakeFetcher({p1: Page(records, None)}), Work("7"))
    times = {i: canonical(s) for i, s in enumerate(stamps) if s}
    if not times:
        assert (batch.newest, batch.oldest, batch.newest_lines) == (None, None, [])
        return
    newest, oldest = max(times.values()), min(times.values())
    assert (batch.newest, batch.oldest) == (newest, oldest)
    assert batch.newest_lines == [line_of(records[i]) for i in times if times[i] == newest]
    assert batch.oldest_lines == [line_of(records[i]) for i in times if times[i] == oldest]


@pytest.mark.parametrize(
    "stamp",
    [
        "2024-01-09 00:00:00.000Z",  # a space for the T: 24 long, not the API's form
        "2024-01-09T00:00:00.000+0",
        "2024/01/09T00:00:00.000Z",
        1704758400000,  # a number
    ],
)
async def test_a_time_not_in_the_apis_form_is_parsed_not_compared_as_text(stamp: Any) -> None:
    records = [{"open_date": _stamp(8)}, {"open_date": stamp}]
    p1 = "/v2/contacts/7/tracking/opens?limit=500"
    (batch,) = await collect(FakeFetcher({p1: Page(records, None)}), Work("7"))
    assert batch.oldest == _stamp(8)  # the odd one is either parsed or has no known time
    try:
        parsed = canonical(stamp) if isinstance(stamp, str) else None
    except ValueError:
        parsed = None
    assert batch.newest == max(_stamp(8), parsed or "")


async def test_a_walk_for_a_file_sink_hands_over_lines_not_dicts() -> None:
    records = [rec("7", _stamp(9)), rec("7", _stamp(9)), rec("7", _stamp(1))]
    p1 = "/v2/contacts/7/tracking/opens?limit=500"
    fetcher = FakeFetcher({p1: Page(records, None)})
    (batch,) = [b async for b in walk(fetcher, BASE, OPENS, Work("7"), 500, lines=True)]
    assert (batch.records, batch.count) == ([], 3)
    assert batch.lines == b"".join(line_of(r) for r in records)
    assert batch.newest_lines == [line_of(records[0]), line_of(records[1])]
    assert batch.oldest_lines == [line_of(records[2])]


# -- cutting the records' text out of the page ------------------------------------------------

_TRICKY = ["},{", '],"', '"results":[', "]}", " ", "\n", "é", "\\", '"', "{", "}", ",", "[", "]"]


def _random_record(rng: random.Random, i: int) -> dict[str, Any]:
    record: dict[str, Any] = rec(str(i), _stamp(1 + i % 28, i % 1000))
    for _ in range(rng.randrange(3)):
        kind = rng.randrange(5)
        key = rng.choice(["link_uri", "results", "x", "meta"])
        if kind == 0:
            record[key] = "".join(rng.choice([*_TRICKY, "a", "b"]) for _ in range(rng.randrange(6)))
        elif kind == 1:
            record[key] = [{"n": rng.randrange(3)} for _ in range(rng.randrange(3))]
        elif kind == 2:
            record[key] = {"y": rng.choice([None, 1, "z", []])}
        elif kind == 3:
            record[key] = rng.randrange(10**13)
        else:
            record[key] = [rng.randrange(3), "]"]
    return record


def _random_body(rng: random.Random, records: list[dict[str, Any]]) -> bytes:
    meta: dict[str, Any] = {"pagination": {"next_link": "/v2/contacts/1/tracking/opens?next=x"}}
    if rng.random() < 0.2:
        meta["results"] = [{"a": 1}]  # a nested key of the same name, before the real one
    parts: list[tuple[str, Any]] = [("meta", meta), ("results", records)]
    if rng.random() < 0.2:
        parts.reverse()
    if rng.random() < 0.1:
        parts.append(("extra", {"k": [1]}))
    document = dict(parts)
    style = rng.randrange(4)
    if style == 0:
        body = orjson.dumps(document)
    elif style == 1:
        body = json.dumps(document, ensure_ascii=rng.random() < 0.5).encode()  # ", " and ": "
    elif style == 2:
        body = json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode()
    else:
        body = orjson.dumps(document, option=orjson.OPT_INDENT_2)
    return body + rng.choice([b"", b"\n", b" \r\n"])


def test_record_text_is_exactly_the_records_or_nothing() -> None:
    rng = random.Random(20261129)
    cut = 0
    for _ in range(3000):
        records = [_random_record(rng, i) for i in range(rng.randrange(1, 6))]
        body = _random_body(rng, records)
        text = record_text(body, len(records))
        if text is None:
            continue
        cut += 1
        assert text.endswith(b"\n")
        assert [orjson.loads(line) for line in text.splitlines()] == records
    assert cut > 100, cut  # the usual form is cut, not serialised


def test_record_text_cuts_the_apis_own_form() -> None:
    records = [rec("7", _stamp(9)), rec("7", _stamp(1))]
    body = orjson.dumps({"meta": {"pagination": {"next_link": None}}, "results": records})
    assert record_text(body, 2) == lines_of(records)
    assert record_text(body, 3) is None  # not the records the parser saw
    assert record_text(body.replace(b"},{", b"}, {"), 2) is None
    # A raw newline between two records, where a boundary has no ``},{``: never cut.
    odd = b'{"meta":{},"results":[{"a":1}\n,{"b":2},{"c":3}]}'
    assert record_text(odd, 3) is None
    assert record_text(odd.replace(b"\n", b"\r"), 3) is None


async def test_a_walk_writes_the_records_cut_from_the_body_when_it_can() -> None:
    records = [rec("7", _stamp(28 - i)) for i in range(20)]  # a page big enough to cut
    body = b'{"meta":{},"results":[' + b",".join(map(orjson.dumps, records)) + b"]}"
    # A body whose text differs from orjson's (escaped é) shows which way the lines came.
    body = body.replace(b"c7@", b"\\u00e97@")
    records = orjson.loads(body)["results"]
    p1 = "/v2/contacts/7/tracking/opens?limit=500"
    fetcher = FakeFetcher({p1: Page(records, None, body)})
    (batch,) = [b async for b in walk(fetcher, BASE, OPENS, Work("7"), 500, lines=True)]
    assert batch.lines is not None
    assert b"\\u00e97@" in batch.lines
    assert [orjson.loads(line) for line in batch.lines.splitlines()] == records
    # Records dropped by the walk (already written at ``since``): the others still as sent.
    last = records[-1]
    since = Work("7", since=_stamp(9), seen_at_since=frozenset({line_hash(line_of(last))}))
    p2 = p1 + "&created_since=" + _stamp(9)
    fetcher = FakeFetcher({p2: Page(records, None, body)})
    (batch,) = [b async for b in walk(fetcher, BASE, OPENS, since, 500, lines=True)]
    assert batch.lines == b"".join(split_results(body, 20)[:-1])
    assert b"\\u00e97@" in batch.lines


# -- a server that lies: loops, floods, links out of the API ---------------------------------


async def _walk_all(fetcher: FakeFetcher, work: Work, **kw: Any) -> tuple[list[PageBatch], Any]:
    batches: list[PageBatch] = []
    try:
        async for batch in walk(fetcher, BASE, OPENS, work, kw.pop("page_size", 500), **kw):
            batches.append(batch)
    except (BadAnswer, ForeignNextLink) as exc:
        return batches, exc
    return batches, None


async def test_a_cycle_of_pages_is_read_once_and_fails_the_contact() -> None:
    p1 = "/v2/contacts/7/tracking/opens?limit=500"
    p2, p3 = (f"/v2/contacts/7/tracking/opens?next={n}" for n in ("P2", "P3"))
    fetcher = FakeFetcher(
        {
            p1: Page([rec("7", "2024-01-03T00:00:00.000Z")], p2),
            p2: Page([rec("7", "2024-01-02T00:00:00.000Z")], p3),
            p3: Page([rec("7", "2024-01-01T00:00:00.000Z")], p2),  # 2 -> 3 -> 2
        }
    )
    batches, error = await _walk_all(fetcher, Work("7"))
    assert isinstance(error, BadAnswer)
    assert error.error_key == "bulkopens.page_loop"
    assert len(fetcher.urls) == 3
    assert sum(len(b.records) for b in batches) == 3
    # A link back to page one is a loop too.
    fetcher = FakeFetcher(
        {
            p1: Page([rec("7", "2024-01-03T00:00:00.000Z")], p2),
            p2: Page([rec("7", "2024-01-02T00:00:00.000Z")], p1),
        }
    )
    _, error = await _walk_all(fetcher, Work("7"))
    assert isinstance(error, BadAnswer)
    assert len(fetcher.urls) == 2


async def test_a_walk_resumed_after_a_loop_starts_over_and_writes_nothing_twice() -> None:
    p1 = "/v2/contacts/7/tracking/opens?limit=500"
    p2 = "/v2/contacts/7/tracking/opens?next=P2"
    first, second = rec("7", "2024-01-03T00:00:00.000Z"), rec("7", "2024-01-02T00:00:00.000Z")
    # The earlier attempt wrote both pages, then met a loop: its cursor is RESTART.
    work = Work(
        "7",
        cursor=RESTART,
        newest="2024-01-03T00:00:00.000Z",
        newest_seen=frozenset({line_hash(line_of(first))}),
        oldest="2024-01-02T00:00:00.000Z",
        oldest_seen=frozenset({line_hash(line_of(second))}),
    )
    third = rec("7", "2024-01-01T00:00:00.000Z")
    fixed = FakeFetcher({p1: Page([first], p2), p2: Page([second, third], None)})
    batches, error = await _walk_all(fixed, work)
    assert error is None
    assert [r for b in batches for r in b.records] == [third]


async def test_more_records_than_the_limit_fail_the_contact_before_writing() -> None:
    p1 = "/v2/contacts/7/tracking/opens?limit=2"
    flood = [rec("7", "2024-01-01T00:00:00.000Z") for _ in range(3)]
    batches, error = await _walk_all(FakeFetcher({p1: Page(flood, None)}), Work("7"), page_size=2)
    assert batches == []
    assert isinstance(error, BadAnswer)
    assert error.error_key == "bulkopens.too_many_records"
    assert not error.permanent


async def test_the_page_budget_stops_a_walk_that_never_ends() -> None:
    class Endless(FakeFetcher):
        async def fetch(self, url: URL) -> Page:
            self.urls.append(url)
            n = len(self.urls)
            return Page([rec("7", f"2024-01-01T00:00:00.000Z{n}")], f"/v2/x/opens?next={n}")

    fetcher = Endless({})
    batches, error = await _walk_all(fetcher, Work("7"), max_pages=25)
    assert isinstance(error, BadAnswer)
    assert error.error_key == "bulkopens.page_budget"
    assert len(fetcher.urls) == 25
    assert len(batches) == 25
    assert batches[-1].next_link == "/v2/x/opens?next=25"  # a retry goes on from here


@pytest.mark.parametrize(
    "link",
    [
        "http://127.0.0.1:9\\@127.0.0.1:8/v2/x",
        "javascript:alert(1)",
        "https://api.constantcontact.com:1:1/v2/x",
        "https://user:pw@api.constantcontact.com/v2/x?next=1",
        "//evil.test/v2/x",
        "/v2/../../admin/steal",
        "/v2/%2e%2e/%2E%2E/admin",
        "/v2/%252e%252e/admin",
        "/v2/x\\..\\admin",
        "\x00\x1b[2J",
        "http://[::1/v2",
    ],
)
async def test_a_next_link_that_leaves_the_api_fails_the_contact_and_is_never_sent(
    link: str,
) -> None:
    p1 = "/v2/contacts/7/tracking/opens?limit=500"
    fetcher = FakeFetcher({p1: Page([rec("7", "2024-01-01T00:00:00.000Z")], link)})
    batches, error = await _walk_all(fetcher, Work("7"))
    assert isinstance(error, ForeignNextLink)
    assert len(fetcher.urls) == 1
    assert [b.next_link for b in batches] == [RESTART]
    assert "\x1b" not in str(error)


def test_a_next_link_must_stay_under_the_base_path() -> None:
    base = URL("https://proxy.example/ctct")
    assert resolve_next(base, "/v2/x?next=1").path == "/ctct/v2/x"
    for link in ("/ctct/../admin", "https://proxy.example/admin/steal", "/ctct/v2/../../x"):
        with pytest.raises(ForeignNextLink):
            resolve_next(base, link)


def test_a_next_link_that_echoes_a_credential_is_refused() -> None:
    secrets = ("the-api-key-123", "the-token-456")
    for link in ("/v2/x/the-api-key-123/y", "/v2/x?next=the%2Dtoken%2D456"):
        with pytest.raises(ForeignNextLink) as caught:
            resolve_next(BASE, link, secrets)
        assert "123" not in str(caught.value)
        assert "456" not in str(caught.value)


def test_split_results_keeps_every_record_byte_for_byte() -> None:
    body = (
        b'{ "meta": {"pagination": {"next_link": null}},\n "results": [\n'
        b'  {"contact_id": "1", "n": 123456789012345678901234567890, "s": "a },{ b"},\n'
        b'  {"contact_id": "2", "dup": 1, "dup": 2, "x": [1, {"y": "[\\"]"}], "f": 1.50}\n'
        b"]}"
    )
    lines = split_results(body, 2)
    assert lines == [
        b'{"contact_id":"1","n":123456789012345678901234567890,"s":"a },{ b"}\n',
        b'{"contact_id":"2","dup":1,"dup":2,"x":[1,{"y":"[\\"]"}],"f":1.50}\n',
    ]
    with pytest.raises(BadAnswer):
        split_results(body, 3)


async def test_pages_are_written_as_sent_never_re_serialised() -> None:
    p1 = "/v2/contacts/7/tracking/opens?limit=500"
    body = (
        b'{"meta":{"pagination":{"next_link":null}},"results":[{"contact_id":"7",'
        b'"open_date":"2024-01-01T00:00:00.000Z","big":123456789012345678901234567890,'
        b'"k":1,"k":2}]}'
    )
    page = Page(orjson.loads(body)["results"], None, body)
    fetcher = FakeFetcher({p1: page})
    (batch,) = [b async for b in walk(fetcher, BASE, OPENS, Work("7"), 500, lines=True)]
    assert batch.lines == (
        b'{"contact_id":"7","open_date":"2024-01-01T00:00:00.000Z",'
        b'"big":123456789012345678901234567890,"k":1,"k":2}\n'
    )


async def test_a_record_too_deep_to_re_serialise_is_still_written_as_sent() -> None:
    p1 = "/v2/contacts/7/tracking/opens?limit=500"
    deep = b"[" * 300 + b"]" * 300
    body = (
        b'{"meta":{"pagination":{"next_link":null}},"results":[{"contact_id":"7",'
        b'"open_date":"2024-01-01T00:00:00.000Z","d":' + deep + b"}]}"
    )
    page = Page(orjson.loads(body)["results"], None, body)
    (batch,) = [
        b async for b in walk(FakeFetcher({p1: page}), BASE, OPENS, Work("7"), 500, lines=True)
    ]
    assert batch.count == 1
    assert deep in (batch.lines or b"")


async def test_a_time_past_year_9999_is_no_crash() -> None:
    p1 = "/v2/contacts/7/tracking/opens?limit=500"
    page = Page([rec("7", "9999-12-31T23:59:59-10:00")], None)
    (batch,) = [b async for b in walk(FakeFetcher({p1: page}), BASE, OPENS, Work("7"), 500)]
    assert batch.count == 1
