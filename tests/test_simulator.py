"""bulkopens.simulator over a real loopback connection: one test per documented behaviour."""

from __future__ import annotations

import argparse
import asyncio
import re
import signal
import sys
from collections import Counter
from collections.abc import AsyncIterator
from datetime import date, datetime, timedelta
from typing import Any, Literal

import aiohttp
import orjson
import pytest
from yarl import URL

import bulkopens.simulator as simulator
from bulkopens.simulator import SimConfig, Simulator, _cli
from bulkopens.simulator._paging import Cursor, TokenCodec, TokenError
from bulkopens.simulator._timefmt import format_ms, parse_since_ms

# A small dataset with exactly one heavy contact and every activity type (checked below).
BASE = SimConfig(seed=15, contacts=200, campaigns=8, rate_per_second=0, daily_quota=0)
SIM_CONFIG = BASE  # the sim fixture's (conftest.py)
OPENS = "/v2/contacts/{}/tracking/opens"
TS = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")
TOKEN = re.compile(r"[A-Za-z0-9+/]+")
DATE_FIELD = {
    "EMAIL_SEND": "send_date",
    "EMAIL_OPEN": "open_date",
    "EMAIL_CLICK": "click_date",
    "EMAIL_FORWARD": "forward_date",
    "EMAIL_BOUNCE": "bounce_date",
    "EMAIL_UNSUBSCRIBE": "unsubscribe_date",
}
BASE_FIELDS = {"activity_type", "campaign_id", "contact_id", "email_address"}
EXTRA_FIELDS = {
    "EMAIL_SEND": {"send_date"},
    "EMAIL_OPEN": {"open_date"},
    "EMAIL_CLICK": {"click_date", "link_id", "link_uri"},
    "EMAIL_FORWARD": {"forward_date"},
    "EMAIL_BOUNCE": {"bounce_code", "bounce_description", "bounce_message", "bounce_date"},
    "EMAIL_UNSUBSCRIBE": {"unsubscribe_date", "unsubscribe_source", "unsubscribe_reason"},
}


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


class Answer:
    """A fully read response."""

    def __init__(self, status: int, headers: Any, body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body

    def json(self) -> Any:
        return orjson.loads(self.body)


async def call(
    http: aiohttp.ClientSession,
    sim: Simulator,
    path: str,
    params: dict[str, str] | None = None,
    *,
    key: str | None = "default",
    token: str | None = "default",
    headers: dict[str, str] | None = None,
    method: str = "GET",
) -> Answer:
    """One API call; api_key and Bearer default to the simulator's."""
    query = dict(params or {})
    if key is not None:
        query["api_key"] = sim.api_key if key == "default" else key
    sent = dict(headers or {})
    if token is not None:
        sent["Authorization"] = f"Bearer {sim.token if token == 'default' else token}"
    async with http.request(method, sim.url + path, params=query, headers=sent) as response:
        return Answer(response.status, response.headers, await response.read())


async def follow(http: aiohttp.ClientSession, sim: Simulator, next_link: str) -> Answer:
    """Request a next_link exactly as given (raw) with the api_key re-added."""
    url = URL(f"{sim.url}{next_link}&api_key={sim.api_key}", encoded=True)
    headers = {"Authorization": f"Bearer {sim.token}"}
    async with http.get(url, headers=headers) as response:
        return Answer(response.status, response.headers, await response.read())


async def walk(
    http: aiohttp.ClientSession, sim: Simulator, path: str, params: dict[str, str] | None = None
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """All records of a paged endpoint and every page body."""
    answer = await call(http, sim, path, params)
    pages = []
    records: list[dict[str, Any]] = []
    while True:
        assert answer.status == 200, answer.body
        page = answer.json()
        pages.append(page)
        records.extend(page["results"])
        link = page["meta"]["pagination"].get("next_link")
        if link is None:
            return records, pages
        answer = await follow(http, sim, link)


def heaviest(sim: Simulator) -> str:
    counts = Counter(r["contact_id"] for r in sim.truth("opens"))
    contact, opens = counts.most_common(1)[0]
    assert opens >= 1000  # the fixture's dataset has a heavy contact
    return str(contact)


def error_keys(answer: Answer) -> list[str]:
    body = answer.json()
    assert isinstance(body, list)
    assert all(set(item) == {"error_key", "error_message"} for item in body)
    return [item["error_key"] for item in body]


def freeze(records: list[dict[str, Any]]) -> set[tuple[tuple[str, Any], ...]]:
    return {tuple(sorted(r.items())) for r in records}


# -- public surface and configuration ---------------------------------------------------------


def test_public_names_are_small_and_sorted() -> None:
    assert simulator.__all__ == ["RequestRecord", "SimConfig", "Simulator", "make_app"]


@pytest.mark.parametrize(
    "change",
    [
        {"error_rate": 1.5},
        {"heavy_fraction": -0.1},
        {"rate_per_second": -1.0},
        {"contacts": 0},
        {"api_keys": ()},
        {"daily_quota": -1},
        {"latency_ms": float("nan")},
    ],
)
def test_config_rejects_bad_values(change: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        SimConfig(**change)


def test_config_repr_hides_secrets() -> None:
    text = repr(SimConfig(api_keys=("k-secret-1",), tokens=("t-secret-2",)))
    assert "k-secret-1" not in text
    assert "t-secret-2" not in text


def test_timestamp_helpers() -> None:
    assert format_ms(1354817210430) == "2012-12-06T18:06:50.430Z"
    assert parse_since_ms("2012-12-06T18:06:50.430Z") == 1354817210430
    assert parse_since_ms("2012-12-06T13:06:50.43-05:00") == 1354817210430
    assert parse_since_ms("2012-12-06T18:06:50.4295Z") == 1354817210430  # rounds up
    assert parse_since_ms("2012-12-06T18:06:50Z") == 1354817210000


# -- dataset --------------------------------------------------------------------------------


def test_dataset_is_deterministic_unique_and_in_window() -> None:
    first = Simulator(BASE).truth("all")
    assert first == Simulator(BASE).truth("all")
    assert first != Simulator(SimConfig(seed=16, contacts=200, campaigns=8)).truth("all")
    assert set(Counter(r["activity_type"] for r in first)) == set(DATE_FIELD)
    dates: dict[str, list[str]] = {}
    for r in first:
        dates.setdefault(r["contact_id"], []).append(r[DATE_FIELD[r["activity_type"]]])
    for stamps in dates.values():
        assert len(set(stamps)) == len(stamps)  # unique within a contact
        assert all("2024-01-01" <= s < "2026-07-01" for s in stamps)


def test_empty_fraction_and_large_contact_counts_stay_lazy() -> None:
    sim = Simulator(SimConfig(contacts=1_000_000, empty_fraction=0.99))
    records = sim.truth("all", contact_ids=[str(c) for c in range(999_000, 1_000_001)])
    per_contact = Counter(r["contact_id"] for r in records)
    assert 1 <= len(per_contact) <= 40  # about 1% of 1,001 contacts have any activity
    with pytest.raises(ValueError):
        sim.truth("opens", contact_ids=["1000001"])


# -- auth, Accept, routing, validation ----------------------------------------------------------


async def test_bad_or_missing_api_key_is_401_without_echo(
    sim: Simulator, http: aiohttp.ClientSession
) -> None:
    for key in ("wrong-key-s3cr3t", None):
        answer = await call(http, sim, OPENS.format(1), key=key)
        assert answer.status == 401
        assert error_keys(answer) == ["http.status.authentication.invalid_api_key"]
        assert b"s3cr3t" not in answer.body
        assert sim.api_key.encode() not in answer.body
    assert [r.api_key for r in sim.request_log] == [None, None]


async def test_bad_or_missing_token_is_401_without_echo(
    sim: Simulator, http: aiohttp.ClientSession
) -> None:
    for token in ("wrong-token-s3cr3t", None):
        answer = await call(http, sim, OPENS.format(1), token=token)
        assert answer.status == 401
        assert error_keys(answer) == ["http.status.authentication.invalid_token"]
        assert b"s3cr3t" not in answer.body
        assert sim.token.encode() not in answer.body
    assert [r.api_key for r in sim.request_log] == [sim.api_key] * 2


@pytest.mark.parametrize(
    ("accept", "status"),
    [
        (None, 200),
        ("application/json", 200),
        ("application/json; charset=utf-8", 200),
        ("text/html, application/*;q=0.5", 200),
        ("text/plain, */*;q=0.1", 200),
        ("text/html", 406),
        ("application/xml, text/*", 406),
        ("application/json;q=0", 406),
    ],
)
async def test_accept_header(sim: Simulator, accept: str | None, status: int) -> None:
    skip = () if accept else ("Accept",)
    async with aiohttp.ClientSession(skip_auto_headers=skip) as http:
        headers = {"Accept": accept} if accept else None
        answer = await call(http, sim, OPENS.format(1), headers=headers)
    assert answer.status == status
    if status == 406:
        assert error_keys(answer) == ["http.status.not_acceptable"]


@pytest.mark.parametrize(
    ("path", "params"),
    [
        ("/v2/contacts/abc/tracking/opens", {}),
        ("/v2/contacts/1234567890123456789/tracking/opens", {}),
        ("/v2/contacts//tracking", {}),
        ("/v2/emailmarketing/campaigns/x1/tracking/opens", {}),
        (OPENS.format(1), {"limit": "0"}),
        (OPENS.format(1), {"limit": "501"}),
        (OPENS.format(1), {"limit": "ten"}),
        (OPENS.format(1), {"limit": "1.5"}),
        (OPENS.format(1), {"limit": ""}),
        (OPENS.format(1), {"created_since": "yesterday"}),
        (OPENS.format(1), {"created_since": "2012-13-06T08:06:30Z"}),
        (OPENS.format(1), {"created_since": "2012-12-06T08:06:30"}),
        (OPENS.format(1), {"created_since": "2012-12-06T08:06:30.1234567Z"}),
        (OPENS.format(1), {"next": "not a token!"}),
        (OPENS.format(1), {"next": "bGltaXQ9NTAwJm5leHQ9MTcwMDAwMDAwMDAwMCZ0Yj0x"}),
        ("/v2/emailmarketing/campaigns", {"limit": "51"}),
        ("/v2/emailmarketing/campaigns", {"status": "BOGUS"}),
    ],
)
async def test_validation_errors_are_400(
    sim: Simulator, http: aiohttp.ClientSession, path: str, params: dict[str, str]
) -> None:
    answer = await call(http, sim, path, params)
    assert answer.status == 400
    assert len(error_keys(answer)) == 1


@pytest.mark.parametrize(
    "since",
    [
        "2012-12-06T08:06:30.641Z",
        "2012-12-06T08:06:30Z",
        "2012-12-06T03:06:30-05:00",
        "2012-12-06T13:36:30+05:30",
        "2012-12-06T08:06:30.05Z",
    ],
)
async def test_created_since_forms_accepted(
    sim: Simulator, http: aiohttp.ClientSession, since: str
) -> None:
    answer = await call(http, sim, OPENS.format(1), {"created_since": since})
    assert answer.status == 200


async def test_tampered_or_foreign_next_token_is_400(
    sim: Simulator, http: aiohttp.ClientSession
) -> None:
    contact = heaviest(sim)
    page = (await call(http, sim, OPENS.format(contact), {"limit": "5"})).json()
    link = page["meta"]["pagination"]["next_link"]
    token = link.split("next=", 1)[1]
    flipped = token[:10] + ("A" if token[10] != "A" else "B") + token[11:]
    answer = await call(http, sim, OPENS.format(contact), {"next": flipped})
    assert answer.status == 400
    other = "1" if contact != "1" else "2"
    answer = await call(http, sim, OPENS.format(other), {"next": token})
    assert answer.status == 400


async def test_unknown_ids_and_paths_are_404(sim: Simulator, http: aiohttp.ClientSession) -> None:
    for path in (
        OPENS.format(201),
        OPENS.format(0),
        OPENS.format("007"),
        "/v2/contacts/201/tracking/reports/summary",
        "/v2/emailmarketing/campaigns/1234567890123/tracking/opens",
        "/v2/emailmarketing/campaigns/1234567890123/tracking/reports/summary",
        "/v2/no/such/thing",
    ):
        answer = await call(http, sim, path)
        assert answer.status == 404, path
        assert error_keys(answer) == ["http.status.not_found"]


async def test_only_get_is_allowed(sim: Simulator, http: aiohttp.ClientSession) -> None:
    answer = await call(http, sim, OPENS.format(1), method="POST")
    assert answer.status == 405


# -- paging -----------------------------------------------------------------------------------


async def test_walking_next_links_reproduces_truth(
    sim: Simulator, http: aiohttp.ClientSession
) -> None:
    contact = heaviest(sim)
    path = OPENS.format(contact)
    records, pages = await walk(http, sim, path, {"limit": "250"})
    assert records == sim.truth("opens", [contact])
    assert len(pages) > 2
    for page in pages[:-1]:
        assert len(page["results"]) == 250  # the limit travels inside the token
        link = page["meta"]["pagination"]["next_link"]
        assert link.startswith(f"{path}?next=")  # relative, only next=
        assert "&" not in link
        assert "api_key" not in link
        assert TOKEN.fullmatch(link.split("next=", 1)[1])  # unpadded standard base64
    assert pages[-1]["meta"] == {"pagination": {}}


async def test_default_limit_is_500(sim: Simulator, http: aiohttp.ClientSession) -> None:
    contact = heaviest(sim)
    records, pages = await walk(http, sim, OPENS.format(contact))
    assert [len(p["results"]) for p in pages[:-1]] == [500] * (len(pages) - 1)
    assert records == sim.truth("opens", [contact])


async def test_token_survives_plus_as_space_and_percent_encoding(
    sim: Simulator, http: aiohttp.ClientSession
) -> None:
    contact = heaviest(sim)
    answer = await call(http, sim, OPENS.format(contact), {"limit": "1"})
    links: list[str] = []
    while len(links) < 300:
        link = answer.json()["meta"]["pagination"]["next_link"]
        links.append(link)
        answer = await follow(http, sim, link)
    plus = next(x for x in links if "+" in x.split("?next=")[1])
    slash = next(x for x in links if "/" in x.split("?next=")[1])
    for link in (plus, slash):
        expected = (await follow(http, sim, link)).body  # raw: the server sees '+' as a space
        assert expected.startswith(b'{"meta"')
        path, token = link.split("?next=")
        percent = token.replace("+", "%2B").replace("/", "%2F")
        for variant in (percent, token.replace("+", "%20")):
            assert (await follow(http, sim, f"{path}?next={variant}")).body == expected
        assert (await call(http, sim, path, {"next": token})).body == expected


def test_token_codec_is_lenient_but_rejects_edits() -> None:
    codec = TokenCodec(b"secret")
    scope = "/v2/contacts/500/tracking/opens"
    cursors = [Cursor(limit=7, after=(1_700_000_000_000 + i, 500)) for i in range(2000)]
    tokens = [codec.encode(scope, cursor) for cursor in cursors]
    # A trailing '+' arrives as a trailing space when the client leaves it unencoded.
    i = next(i for i, token in enumerate(tokens) if token.endswith("+"))
    token = tokens[i]
    assert "=" not in token
    assert codec.decode(scope, token) == cursors[i]
    assert codec.decode(scope, token.replace("+", " ")) == cursors[i]
    assert codec.decode(scope, token + "=" * (-len(token) % 4)) == cursors[i]
    assert codec.decode(scope, token.replace("+", "-").replace("/", "_")) == cursors[i]
    with pytest.raises(TokenError):
        codec.decode("/v2/contacts/6/tracking/opens", token)
    with pytest.raises(TokenError):
        codec.decode(scope, token[:-2])
    with pytest.raises(TokenError):
        TokenCodec(b"other").decode(scope, token)


async def test_created_since_is_inclusive(sim: Simulator, http: aiohttp.ClientSession) -> None:
    contact = heaviest(sim)
    truth = sim.truth("opens", [contact])
    pivot = truth[len(truth) // 2]["open_date"]
    records, _ = await walk(http, sim, OPENS.format(contact), {"created_since": pivot})
    assert records == truth[: len(truth) // 2 + 1]
    assert records[-1]["open_date"] == pivot
    assert records == sim.truth("opens", [contact], since=pivot)
    later = format_ms(parse_since_ms(pivot) + 1)
    records, _ = await walk(http, sim, OPENS.format(contact), {"created_since": later})
    assert records == truth[: len(truth) // 2]
    moment = datetime.fromisoformat(pivot.replace("Z", "+00:00")) - timedelta(hours=5)
    offset = moment.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "-05:00"
    records, _ = await walk(http, sim, OPENS.format(contact), {"created_since": offset})
    assert records == truth[: len(truth) // 2 + 1]


async def test_next_ignores_limit_and_since_sent_alongside(
    sim: Simulator, http: aiohttp.ClientSession
) -> None:
    contact = heaviest(sim)
    truth = sim.truth("opens", [contact])
    since = truth[100]["open_date"]
    first = await call(http, sim, OPENS.format(contact), {"limit": "7", "created_since": since})
    link = first.json()["meta"]["pagination"]["next_link"]
    plain = await follow(http, sim, link)
    noisy = await follow(http, sim, f"{link}&limit=500&created_since=2020-01-01T00:00:00Z")
    assert plain.body == noisy.body
    assert len(plain.json()["results"]) == 7
    records, _ = await walk(
        http, sim, OPENS.format(contact), {"limit": "7", "created_since": since}
    )
    assert records == truth[:101]


async def test_newest_first_shapes_and_timestamp_format(
    sim: Simulator, http: aiohttp.ClientSession
) -> None:
    records: list[dict[str, Any]] = []
    for contact in range(1, 201):
        page = (await call(http, sim, f"/v2/contacts/{contact}/tracking/")).json()
        results = page["results"]
        assert page["meta"] == {"pagination": {}} or len(results) == 500
        dates = [r[DATE_FIELD[r["activity_type"]]] for r in results]
        assert dates == sorted(dates, reverse=True)
        assert len(set(dates)) == len(dates)
        records.extend(results)
    kinds = Counter(r["activity_type"] for r in records)
    assert set(kinds) == set(DATE_FIELD)
    for r in records:
        kind = r["activity_type"]
        assert set(r) == BASE_FIELDS | EXTRA_FIELDS[kind]
        assert TS.fullmatch(r[DATE_FIELD[kind]])
        assert re.fullmatch(r"\d{13}", r["campaign_id"])
        assert r["email_address"] == f"contact{r['contact_id']}@example.com"
        if kind == "EMAIL_CLICK":
            assert isinstance(r["link_id"], str)
            assert r["link_uri"].startswith("https://")
        if kind == "EMAIL_BOUNCE":
            assert r["bounce_code"] in set("BDFSVZX")


@pytest.mark.parametrize(
    "report", ["opens", "clicks", "forwards", "bounces", "unsubscribes", "sends"]
)
async def test_each_contact_report_serves_one_type(
    sim: Simulator, http: aiohttp.ClientSession, report: str
) -> None:
    truth = sim.truth(report)
    contact = Counter(r["contact_id"] for r in truth).most_common(1)[0][0]
    records, _ = await walk(http, sim, f"/v2/contacts/{contact}/tracking/{report}")
    assert records == sim.truth(report, [contact])
    assert {r["activity_type"] for r in records} == {f"EMAIL_{report[:-1].upper()}"}


async def test_campaign_reports_agree_with_contact_reports(
    sim: Simulator, http: aiohttp.ClientSession
) -> None:
    campaigns, _ = await walk(http, sim, "/v2/emailmarketing/campaigns", {"status": "SENT"})
    truth = {report: sim.truth(report) for report in ("opens", "clicks", "sends", "bounces")}
    for campaign in campaigns:
        for report, records_of_all in truth.items():
            path = f"/v2/emailmarketing/campaigns/{campaign['id']}/tracking/{report}"
            records, _ = await walk(http, sim, path, {"limit": "300"})
            expected = [r for r in records_of_all if r["campaign_id"] == campaign["id"]]
            assert len(records) == len(expected)
            assert freeze(records) == freeze(expected)
            dates = [r[DATE_FIELD[r["activity_type"]]] for r in records]
            assert dates == sorted(dates, reverse=True)


async def test_campaign_list_paging_and_status_filter(
    sim: Simulator, http: aiohttp.ClientSession
) -> None:
    path = "/v2/emailmarketing/campaigns"
    sent, pages = await walk(http, sim, path, {"status": "SENT", "limit": "3"})
    assert [len(p["results"]) for p in pages] == [3, 3, 2]
    assert len({c["id"] for c in sent}) == 8
    assert all(set(c) == {"id", "name", "status", "modified_date"} for c in sent)
    assert {c["status"] for c in sent} == {"SENT"}
    assert all(TS.fullmatch(c["modified_date"]) for c in sent)
    # SENT is ordered by last run, newest first: here the ids grow with the run date.
    assert [c["id"] for c in sent] == sorted((c["id"] for c in sent), reverse=True)
    everything, pages = await walk(http, sim, path)
    assert len(pages) == 1
    assert Counter(c["status"] for c in everything) == {"SENT": 8, "DRAFT": 2, "SCHEDULED": 1}
    drafts, _ = await walk(http, sim, path, {"status": "DRAFT"})
    assert {c["status"] for c in drafts} == {"DRAFT"}
    assert len(drafts) == 2
    answer = await call(http, sim, f"{path}/{drafts[0]['id']}/tracking/opens")
    assert answer.json() == {"meta": {"pagination": {}}, "results": []}


async def test_summaries(sim: Simulator, http: aiohttp.ClientSession) -> None:
    contact = heaviest(sim)
    summary = (await call(http, sim, f"/v2/contacts/{contact}/tracking/reports/summary")).json()
    counts = Counter(r["activity_type"] for r in sim.truth("all", [contact]))
    assert summary == {
        "sends": counts["EMAIL_SEND"],
        "opens": counts["EMAIL_OPEN"],
        "clicks": counts["EMAIL_CLICK"],
        "forwards": counts["EMAIL_FORWARD"],
        "unsubscribes": counts["EMAIL_UNSUBSCRIBE"],
        "bounces": counts["EMAIL_BOUNCE"],
        "contact_id": contact,
    }
    path = f"/v2/contacts/{contact}/tracking/reports/summaryByCampaign"
    by_campaign = (await call(http, sim, path)).json()
    assert isinstance(by_campaign, list)  # a bare array: no meta, no paging
    assert sum(row["opens"] for row in by_campaign) == counts["EMAIL_OPEN"]
    assert all(
        set(row) == {"campaign_id", "contact_id", "opens", "clicks", "forwards", "bounces"}
        for row in by_campaign
    )
    campaign_id = by_campaign[0]["campaign_id"]
    path = f"/v2/emailmarketing/campaigns/{campaign_id}/tracking/reports/summary"
    totals = (await call(http, sim, path)).json()
    sends = [r for r in sim.truth("sends") if r["campaign_id"] == campaign_id]
    openers = {r["contact_id"] for r in sim.truth("opens") if r["campaign_id"] == campaign_id}
    assert totals["sends"] == len(sends)
    assert totals["opens"] == len(openers)
    assert set(totals) == {"sends", "opens", "clicks", "forwards", "unsubscribes", "bounces"}


# -- rate limits ------------------------------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0
        self.day = date(2026, 1, 1)

    def __call__(self) -> float:
        return self.now

    def today(self) -> date:
        return self.day


@pytest.mark.parametrize(
    ("style", "status", "key"),
    [("429", 429, "throttled"), ("403", 403, "mashery.not.authorized.over.qps")],
)
async def test_rate_limit_is_a_sliding_window_per_key(
    http: aiohttp.ClientSession, style: Literal["429", "403"], status: int, key: str
) -> None:
    clock = FakeClock()
    config = SimConfig(
        contacts=5, campaigns=2, rate_per_second=4, daily_quota=0, limit_style=style,
        api_keys=("key-a", "key-b"),
    )  # fmt: skip
    async with Simulator(config, clock=clock.__call__, today=clock.today) as sim:
        outcomes = []
        for at in (0.0, 0.25, 0.5, 0.75, 0.9, 0.99, 1.0, 1.1, 1.25):
            clock.now = 100.0 + at
            answer = await call(http, sim, OPENS.format(1))
            outcomes.append(answer.status)
            if answer.status != 200:
                assert error_keys(answer) == [key]
                assert "Retry-After" not in answer.headers
        assert outcomes == [200, 200, 200, 200, status, status, 200, status, 200]
        assert (await call(http, sim, OPENS.format(1), key="key-b")).status == 200


async def test_retry_after_only_when_configured(http: aiohttp.ClientSession) -> None:
    config = SimConfig(contacts=5, campaigns=2, rate_per_second=1, daily_quota=0, retry_after=1.5)
    clock = FakeClock()
    async with Simulator(config, clock=clock.__call__) as sim:
        assert (await call(http, sim, OPENS.format(1))).status == 200
        answer = await call(http, sim, OPENS.format(1))
        assert answer.status == 429
        assert answer.headers["Retry-After"] == "2"


@pytest.mark.parametrize(
    ("style", "status", "key"),
    [("429", 429, "quota_exceeded"), ("403", 403, "mashery.not.authorized.over.ratelimit")],
)
async def test_daily_quota_counts_accepted_requests_and_resets_at_utc_midnight(
    http: aiohttp.ClientSession, style: Literal["429", "403"], status: int, key: str
) -> None:
    clock = FakeClock()
    config = SimConfig(
        contacts=5, campaigns=2, rate_per_second=2, daily_quota=3, limit_style=style
    )  # fmt: skip
    async with Simulator(config, clock=clock.__call__, today=clock.today) as sim:
        statuses = []
        for _ in range(3):  # the third is throttled (2/s) and so does not use quota
            statuses.append((await call(http, sim, OPENS.format(1))).status)
        clock.now += 1.0
        statuses.append((await call(http, sim, OPENS.format(1))).status)
        clock.now += 1.0
        answer = await call(http, sim, OPENS.format(1))
        assert error_keys(answer) == [key]
        statuses.append(answer.status)
        assert statuses[0:2] == [200, 200]
        assert statuses[2] != 200
        assert statuses[3:] == [200, status]
        clock.day += timedelta(days=1)
        clock.now += 1.0
        assert (await call(http, sim, OPENS.format(1))).status == 200


# -- faults -----------------------------------------------------------------------------------


async def outcome(http: aiohttp.ClientSession, sim: Simulator, path: str, limit: str) -> str:
    try:
        answer = await call(http, sim, path, {"limit": limit})
    except aiohttp.ClientError:
        return "reset"
    if answer.status != 200:
        return str(answer.status)
    try:
        orjson.loads(answer.body)
    except orjson.JSONDecodeError:
        assert int(answer.headers["Content-Length"]) == len(answer.body)
        return "truncated"
    return "200"


FAULTY = SimConfig(
    seed=3, contacts=50, campaigns=3, rate_per_second=0, daily_quota=0,
    error_rate=0.25, reset_rate=0.1, truncate_rate=0.1,
)  # fmt: skip
REQUESTS = [(OPENS.format(c), str(limit)) for c in range(1, 11) for limit in (5, 6)] * 3


async def run_sequence(config: SimConfig, order: list[int]) -> dict[tuple[int, int], str]:
    """Outcome of each (request index, occurrence) when REQUESTS are sent in ``order``."""
    seen: Counter[int] = Counter()
    results = {}
    async with Simulator(config) as sim, aiohttp.ClientSession() as http:
        for i in order:
            path, limit = REQUESTS[i]
            base = REQUESTS.index((path, limit))
            results[(base, seen[base])] = await outcome(http, sim, path, limit)
            seen[base] += 1
    return results


async def test_faults_are_reproducible_regardless_of_order() -> None:
    forward = list(range(len(REQUESTS)))
    first = await run_sequence(FAULTY, forward)
    assert first == await run_sequence(FAULTY, forward)
    assert first == await run_sequence(FAULTY, forward[::-1])  # another interleaving
    kinds = Counter(first.values())
    assert {"200", "reset", "truncated"} <= set(kinds)
    assert any(k.startswith("5") for k in kinds)
    other = await run_sequence(SimConfig(**{**_fields(FAULTY), "seed": 4}), forward)
    assert other != first
    # A retry of one request gets a fresh draw: not every request fails on every attempt.
    per_request: dict[int, set[str]] = {}
    for (base, _), result in first.items():
        per_request.setdefault(base, set()).add(result)
    assert any(len(v) > 1 for v in per_request.values())


def _fields(config: SimConfig) -> dict[str, Any]:
    return {name: getattr(config, name) for name in config.__dataclass_fields__}


async def test_rejected_requests_never_draw_faults(http: aiohttp.ClientSession) -> None:
    config = SimConfig(
        contacts=5, campaigns=2, rate_per_second=1, daily_quota=0, error_rate=1, reset_rate=1
    )
    clock = FakeClock()
    async with Simulator(config, clock=clock.__call__) as sim:
        assert (await call(http, sim, OPENS.format(1), key="bad")).status == 401
        assert (await call(http, sim, OPENS.format(99))).status == 404
        assert (await call(http, sim, OPENS.format(1))).status == 429
        clock.now += 1.0
        assert (await call(http, sim, OPENS.format(1), {"limit": "x"})).status == 400
        clock.now += 1.0
        assert (await call(http, sim, OPENS.format(1))).status in {500, 502, 503, 504}


async def test_reset_surfaces_as_a_client_error(http: aiohttp.ClientSession) -> None:
    config = SimConfig(contacts=5, campaigns=2, rate_per_second=0, daily_quota=0, reset_rate=1)
    async with Simulator(config) as sim:
        with pytest.raises(aiohttp.ClientPayloadError):
            await call(http, sim, OPENS.format(1))
        assert sim.status_counts() == {0: 1}
        assert sim.request_log[0].status == 0


async def test_truncated_body_has_honest_length_and_invalid_json(
    http: aiohttp.ClientSession,
) -> None:
    config = SimConfig(contacts=5, campaigns=2, rate_per_second=0, daily_quota=0, truncate_rate=1)
    async with Simulator(config) as sim:
        for path in (OPENS.format(1), "/v2/contacts/1/tracking/reports/summaryByCampaign"):
            answer = await call(http, sim, path)
            assert answer.status == 200
            assert int(answer.headers["Content-Length"]) == len(answer.body)
            with pytest.raises(orjson.JSONDecodeError):
                orjson.loads(answer.body)


async def test_error_faults_are_5xx_json_or_html(http: aiohttp.ClientSession) -> None:
    config = SimConfig(contacts=40, campaigns=2, rate_per_second=0, daily_quota=0, error_rate=1)
    async with Simulator(config) as sim:
        kinds = set()
        for contact in range(1, 41):
            answer = await call(http, sim, OPENS.format(contact))
            assert answer.status in {500, 502, 503, 504}
            content_type = answer.headers["Content-Type"]
            if content_type.startswith("text/html"):
                assert answer.body.lstrip().startswith(b"<!DOCTYPE html>")
            else:
                assert error_keys(answer)
            kinds.add((answer.status, content_type.split(";")[0]))
        assert len({status for status, _ in kinds}) == 4
        assert {ctype for _, ctype in kinds} == {"application/json", "text/html"}


async def test_fault_rates_are_roughly_honoured(http: aiohttp.ClientSession) -> None:
    config = SimConfig(
        contacts=100, campaigns=2, rate_per_second=0, daily_quota=0,
        error_rate=0.2, truncate_rate=0.1, latency_ms=1, jitter_ms=1, slow_rate=0.02,
        slow_seconds=0.01,
    )  # fmt: skip
    async with Simulator(config) as sim:
        results: Counter[str] = Counter()
        for contact in range(1, 101):
            for limit in ("1", "2", "3"):
                results[await outcome(http, sim, OPENS.format(contact), limit)] += 1
        errors = sum(v for k, v in results.items() if k.startswith("5"))
        assert 0.13 * 300 <= errors <= 0.27 * 300
        assert 0.04 * 300 <= results["truncated"] <= 0.14 * 300
        assert sum(sim.status_counts().values()) == 300


# -- add_activity and live data ---------------------------------------------------------------


async def test_add_activity_shows_on_page_one_without_shifting_a_walk(
    sim: Simulator, http: aiohttp.ClientSession
) -> None:
    contact = heaviest(sim)
    before = sim.truth("opens", [contact])
    first = (await call(http, sim, OPENS.format(contact), {"limit": "100"})).json()
    assert first["results"] == before[:100]
    added = sim.add_activity(contact, "opens", count=2)
    assert len(added) == 2
    assert added[0]["open_date"] < added[1]["open_date"]
    assert added[0]["open_date"] > before[0]["open_date"]
    assert added[0]["open_date"] >= format_ms(int(datetime.now().timestamp() * 1000) - 60_000)
    # The walk under way continues where it was: nothing shifted, nothing repeated.
    rest, _ = await walk_from(http, sim, first["meta"]["pagination"]["next_link"])
    assert rest == before[100:]
    # A new walk starts with the new records, newest first (cached pages were dropped).
    again = (await call(http, sim, OPENS.format(contact), {"limit": "100"})).json()
    assert again["results"][:2] == [added[1], added[0]]
    assert sim.truth("opens", [contact]) == [added[1], added[0], *before]
    campaign_id = added[0]["campaign_id"]
    path = f"/v2/emailmarketing/campaigns/{campaign_id}/tracking/opens"
    page = (await call(http, sim, path, {"limit": "2"})).json()
    assert page["results"] == [added[1], added[0]]
    with pytest.raises(ValueError):
        sim.add_activity("9999", "opens")
    with pytest.raises(ValueError):
        sim.add_activity(contact, "all")


async def walk_from(
    http: aiohttp.ClientSession, sim: Simulator, link: str
) -> tuple[list[dict[str, Any]], int]:
    records: list[dict[str, Any]] = []
    pages = 0
    while link:
        page = (await follow(http, sim, link)).json()
        records.extend(page["results"])
        pages += 1
        link = page["meta"]["pagination"].get("next_link")
    return records, pages


# -- statistics and admin endpoints -----------------------------------------------------------


async def test_request_log_and_status_counts(sim: Simulator, http: aiohttp.ClientSession) -> None:
    await call(http, sim, OPENS.format(1), {"limit": "3"})
    await call(http, sim, OPENS.format(999))
    await call(http, sim, OPENS.format(1), key="nope")
    assert sim.status_counts() == {200: 1, 404: 1, 401: 1}
    log = sim.request_log
    assert [(r.method, r.path, r.status) for r in log] == [
        ("GET", OPENS.format(1), 200),
        ("GET", OPENS.format(999), 404),
        ("GET", OPENS.format(1), 401),
    ]
    assert [r.api_key for r in log] == [sim.api_key, sim.api_key, None]
    assert log[0].t <= log[1].t <= log[2].t
    assert sim.api_key not in repr(log[0])
    sim.reset_stats()
    assert sim.status_counts() == {}
    assert sim.request_log == []


async def test_admin_endpoints(sim: Simulator, http: aiohttp.ClientSession) -> None:
    await call(http, sim, OPENS.format(1))
    await call(http, sim, OPENS.format(1), token="bad")
    async with http.get(f"{sim.url}/_sim/stats") as response:
        stats = await response.json()
    assert stats["status_counts"] == {"200": 1, "401": 1}
    assert stats["requests"] == 2
    assert stats["request_times"] == [r.t for r in sim.request_log]
    async with http.get(f"{sim.url}/_sim/truth", params={"report": "clicks"}) as response:
        assert response.headers["Content-Type"].startswith("application/x-ndjson")
        lines = (await response.read()).splitlines()
    assert [orjson.loads(line) for line in lines] == sim.truth("clicks")
    since = sim.truth("opens")[0]["open_date"]
    params = {"report": "opens", "since": since}
    async with http.get(f"{sim.url}/_sim/truth", params=params) as response:
        lines = (await response.read()).splitlines()
    assert [orjson.loads(line) for line in lines] == sim.truth("opens", since=since)
    params = {"contact_id": "5", "report": "clicks", "count": "2"}
    async with http.post(f"{sim.url}/_sim/activity", params=params) as response:
        added = await response.json()
    assert [r["activity_type"] for r in added] == ["EMAIL_CLICK"] * 2
    assert sim.truth("clicks", ["5"])[:2] == [added[1], added[0]]
    async with http.post(f"{sim.url}/_sim/activity", params={"contact_id": "x"}) as response:
        assert response.status == 400
    async with http.get(f"{sim.url}/_sim/truth", params={"report": "nope"}) as response:
        assert response.status == 400
    async with http.post(f"{sim.url}/_sim/reset-stats") as response:
        assert response.status == 200
    assert sim.status_counts() == {}  # admin calls are never counted
    async with http.get(f"{sim.url}/_sim/stats") as response:
        assert (await response.json())["requests"] == 0


# -- CLI --------------------------------------------------------------------------------------

CLI = (
    "import argparse, sys\n"
    "from bulkopens.simulator import _cli\n"
    "parser = argparse.ArgumentParser()\n"
    "_cli.add_arguments(parser)\n"
    "sys.exit(_cli.run(parser.parse_args(sys.argv[1:])))\n"
)


async def test_cli_serves_until_sigint(http: aiohttp.ClientSession) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", CLI, "--port", "0", "--contacts", "10", "--api-key", "cli-key",
        stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        first = (await asyncio.wait_for(proc.stdout.readline(), 20)).decode()
        match = re.fullmatch(r"serving (http://127\.0\.0\.1:(\d+))\n", first)
        assert match is not None, first
        second = (await asyncio.wait_for(proc.stdout.readline(), 5)).decode()
        assert "cli-key" in second
        assert "demo-token" in second
        url = f"{match.group(1)}/v2/contacts/1/tracking/opens"
        headers = {"Authorization": "Bearer demo-token"}
        async with http.get(url, params={"api_key": "cli-key"}, headers=headers) as response:
            assert response.status == 200
        proc.send_signal(signal.SIGINT)
        assert await asyncio.wait_for(proc.wait(), 20) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


@pytest.mark.parametrize(
    "args",
    [["--error-rate", "2"], ["--rate", "-1"], ["--port", "70000"], ["--limit-style", "500"],
     ["--contacts", "0"], ["--slow-seconds", "nan"]],
)  # fmt: skip
def test_cli_rejects_bad_options(args: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparse.ArgumentParser()
    _cli.add_arguments(parser)
    with pytest.raises(SystemExit) as exit_info:
        parser.parse_args(args)
    assert exit_info.value.code == 2
    assert "error" in capsys.readouterr().err


def test_cli_options_build_the_config() -> None:
    parser = argparse.ArgumentParser()
    _cli.add_arguments(parser)
    args = parser.parse_args(
        ["--api-key", "a", "--api-key", "b", "--rate", "10", "--daily-quota", "250000",
         "--limit-style", "403", "--retry-after", "1", "--error-rate", "0.1", "--seed", "9"]
    )  # fmt: skip
    config = _cli.config_from_args(args)
    assert config.api_keys == ("a", "b")
    assert config.tokens == ("demo-token",)
    assert (config.rate_per_second, config.daily_quota, config.limit_style) == (10, 250000, "403")
    assert (config.retry_after, config.error_rate, config.seed) == (1, 0.1, 9)
    assert (config.numeric_campaign_ids, config.numeric_contact_ids) == (False, False)
    assert args.port == 8080
    assert args.host == "127.0.0.1"
    numeric = parser.parse_args(["--numeric-campaign-ids", "--numeric-contact-ids"])
    config = _cli.config_from_args(numeric)
    assert (config.numeric_campaign_ids, config.numeric_contact_ids) == (True, True)
