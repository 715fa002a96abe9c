"""The v3 API through the library (``Client(api="v3", ...)``) against the in-process simulator
over loopback: every guarantee the v2 engine is tested for, on v3 (issue 15, "Tests").

Records are compared with the simulator's v3 truth (``Simulator.v3_truth``) byte for byte: a
record file's line is the record as the API sent it. The campaign path's records carry other
fields than activity_details (§5.2: email, names, device), so the two paths are compared on
what both carry: (contact, campaign activity, type, time).
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from simkit import unlimited_config
from v3kit import activities, assert_exact, max_in_window, record_lines

import bulkopens
from bulkopens._tokens import TokenFile, TokenSet, read_tokens, write_tokens
from bulkopens.simulator import Simulator

KEY, TOKEN = "v3lib-key-4c1d9e", "v3lib-token-7a2f6b"
CLIENT_ID = "v3lib-client-3e8a"
CONTACTS = 60

SIM_CONFIG = unlimited_config(
    KEY,
    TOKEN,
    seed=11,
    contacts=CONTACTS,
    campaigns=8,
    heavy_fraction=0.05,
    empty_fraction=0.05,
    client_id=CLIENT_ID,
    token_rate_per_second=0,
)


# -- helpers --------------------------------------------------------------------------------


def v3_client(sim: Simulator, **kw: Any) -> bulkopens.Client:
    """A v3 client of ``sim``: the static token unless ``tokens=`` is given; no pacing."""
    kw.setdefault("rate", 0)
    kw.setdefault("concurrency", 8)
    token = "" if "tokens" in kw else kw.pop("token", TOKEN)
    return bulkopens.Client(api="v3", token=token, base_url=sim.url, **kw)


def uuids(sim: Simulator, numbers: Iterable[int]) -> list[str]:
    return [sim.contact_uuid(str(n)) for n in numbers]


def line(record: Mapping[str, Any]) -> bytes:
    """A record as the simulator writes it on the wire (compact JSON, its own key order)."""
    return json.dumps(record, separators=(",", ":"), ensure_ascii=False).encode()


def lines(records: Iterable[Mapping[str, Any]]) -> list[bytes]:
    return [line(r) for r in records]


def truth(sim: Simulator, contacts: Sequence[str], types: str | None = "em_opens") -> Any:
    return sim.v3_truth(types, contacts, names=False)


def paths_asked(sim: Simulator) -> Counter[str]:
    """Requests by endpoint: the path with the ids taken out."""
    out: Counter[str] = Counter()
    for r in sim.request_log:
        parts = r.path.split("/")
        out["/".join("{id}" if len(p) == 36 else p for p in parts)] += 1
    return out


async def sim_get(sim: Simulator, path: str) -> Any:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with aiohttp.ClientSession() as http, http.get(sim.url + path, headers=headers) as r:
        assert r.status == 200, await r.text()
        return await r.json()


async def sent_campaigns(sim: Simulator) -> dict[str, list[str]]:
    """Every sent v3 campaign and its reported activities (primary and resend)."""
    listed = await sim_get(sim, "/v3/emails?limit=500")
    out: dict[str, list[str]] = {}
    for row in listed["campaigns"]:
        if row["current_status"] != "Done":
            continue
        detail = await sim_get(sim, f"/v3/emails/{row['campaign_id']}")
        out[row["campaign_id"]] = [
            a["campaign_activity_id"]
            for a in detail["campaign_activities"]
            if a["role"] in ("primary_email", "resend")
        ]
    return out


# -- 1. by contact: every record exactly once, byte-exact, under faults -----------------------


@pytest.mark.sim(error_rate=0.1, reset_rate=0.05, truncate_rate=0.05)
async def test_by_contact_every_record_exactly_once_byte_exact_under_faults(
    sim: Simulator, tmp_path: Path
) -> None:
    contacts = uuids(sim, range(1, CONTACTS + 1))
    want = truth(sim, contacts)
    per_contact = Counter(r["contact_id"] for r in want)
    assert max(per_contact.values()) > 300, "a contact of several 100-record pages"
    async with v3_client(sim) as c:
        summary = await c.export(contacts, tmp_path)
    assert_exact(record_lines(tmp_path), lines(want))
    assert summary.status == "complete"
    assert summary.records == len(want)
    assert summary.contacts_done == CONTACTS
    assert summary.retries > 0  # the faults were met, and retried
    # Every request was activity_details (no v2 path, no api_key); pages of 100.
    assert set(paths_asked(sim)) == {"/v3/reports/contact_reports/{id}/activity_details"}
    assert all(r.api_key is None or r.api_key == CLIENT_ID for r in sim.request_log)
    assert summary.pages >= sum(-(-n // 100) for n in per_contact.values())


async def test_the_iterator_and_report_all_on_v3(sim: Simulator) -> None:
    contacts = uuids(sim, range(1, 21))
    async with v3_client(sim) as c:
        stream = c.records([*contacts, contacts[0].upper(), "junk"], report="all")
        # The stream's records are typed as v2's (OpenRecord, ...): v3's are plain dicts here.
        got: list[dict[str, Any]] = [dict(r) async for r in stream]
    assert_exact([line(r) for r in got], lines(truth(sim, contacts, None)))
    assert {r["tracking_activity_type"] for r in got} >= {"em_sends", "em_opens", "em_clicks"}
    assert [f.id for f in stream.failures] == ["junk"]
    assert stream.summary is not None
    assert stream.summary.duplicates == 1  # the same UUID in capitals


async def test_an_unknown_uuid_fails_for_good_and_the_rest_is_exact(
    sim: Simulator, tmp_path: Path
) -> None:
    contacts = uuids(sim, range(1, 11))
    unknown = "6f1c2b7e-0d3a-4b5c-8e9f-a0b1c2d3e4f5"
    async with v3_client(sim) as c:
        summary = await c.export([*contacts, unknown], tmp_path)
    assert_exact(record_lines(tmp_path), lines(truth(sim, contacts)))
    errors = [json.loads(x) for x in (tmp_path / "errors.ndjson").read_text().splitlines()]
    assert [(e["contact_id"], e["status"], e["retryable"]) for e in errors] == [
        (unknown, 404, False)
    ]
    assert summary.totals["failed_for_good"] == 1


# -- 2. the campaign path gives the same records; auto and plan() --------------------------


async def test_campaign_path_gives_the_contact_paths_records(
    sim: Simulator, tmp_path: Path
) -> None:
    contacts = uuids(sim, range(1, 31))
    by_contact = truth(sim, contacts)
    async with v3_client(sim) as c:
        summary = await c.export(contacts, tmp_path, strategy="campaign")
    got = [json.loads(x) for x in record_lines(tmp_path)]
    assert activities(got) == activities(by_contact)
    assert len(got) == len(by_contact)
    assert summary.status == "complete"
    assert summary.strategy == "campaign"
    asked = paths_asked(sim)
    assert not any("contact_reports" in p for p in asked)
    assert asked["/v3/reports/email_reports/{id}/tracking/opens"] > 0


async def test_export_campaigns_sent_and_a_file_of_v3_campaign_ids(
    sim: Simulator, tmp_path: Path
) -> None:
    campaigns = await sent_campaigns(sim)
    assert any(len(a) > 1 for a in campaigns.values()), "a campaign with a resend"
    everyone = truth(sim, uuids(sim, range(1, CONTACTS + 1)))
    sim.reset_stats()
    async with v3_client(sim) as c:
        summary = await c.export_campaigns(bulkopens.SENT, tmp_path / "sent", report="opens")
    assert summary.status == "complete"
    got = [json.loads(x) for x in record_lines(tmp_path / "sent")]
    assert activities(got) == activities(everyone)

    # Two campaigns by id (one with a resend): exactly their activities' records.
    chosen = [next(c for c, a in campaigns.items() if len(a) > 1)]
    chosen.append(next(c for c, a in campaigns.items() if len(a) == 1))
    wanted = {a for c in chosen for a in campaigns[c]}
    async with v3_client(sim) as c:
        summary = await c.export_campaigns(chosen, tmp_path / "two")
    got = [json.loads(x) for x in record_lines(tmp_path / "two")]
    expected = [r for r in everyone if r["campaign_activity_id"] in wanted]
    assert expected
    assert activities(got) == activities(expected)
    assert summary.status == "complete"


async def test_auto_takes_the_cheaper_path_and_plan_says_so(sim: Simulator, tmp_path: Path) -> None:
    many = uuids(sim, range(1, CONTACTS + 1))
    few = many[:2]
    async with v3_client(sim) as c:
        plan_many = await c.plan(many)
        plan_few = await c.plan(few)
    # 60 contacts cost 60 requests or more; 8 campaigns' reports at 500 a page far fewer.
    assert plan_many.path == "campaign", plan_many
    assert plan_few.path == "contact", plan_few
    assert plan_many.contact_cost >= len(many)
    assert plan_few.contact_cost >= len(few)
    for name, ids, plan in (("many", many, plan_many), ("few", few, plan_few)):
        out = tmp_path / name
        async with v3_client(sim) as c:
            summary = await c.export(ids, out, strategy="auto")
        assert summary.plan is not None
        assert summary.plan["path"] == plan.path
        got = [json.loads(x) for x in record_lines(out)]
        assert activities(got) == activities(truth(sim, ids))


# -- 4. --since and incremental: client-side, with the early stop ---------------------------


async def test_since_keeps_exactly_the_records_at_or_after_it(
    sim: Simulator, tmp_path: Path
) -> None:
    contacts = uuids(sim, range(1, CONTACTS + 1))
    everything = truth(sim, contacts)
    stamps = sorted(r["created_time"] for r in everything)
    since = stamps[len(stamps) * 3 // 4]  # an instant a record sits on exactly
    want = [r for r in everything if r["created_time"] >= since]
    assert any(r["created_time"] == since for r in want)
    async with v3_client(sim) as c:
        summary = await c.export(contacts, tmp_path, since=since)
    assert_exact(record_lines(tmp_path), lines(want))
    # The walk stops at the first page that holds an older record: one page per contact
    # whose records at or after --since fit in a page (newest first).
    per_contact = Counter(r["contact_id"] for r in want)
    needed = sum(max(1, -(-per_contact[c] // 100) + (per_contact[c] % 100 == 0)) for c in contacts)
    assert summary.requests <= needed
    assert summary.requests < sum(
        max(1, -(-n // 100)) for n in Counter(r["contact_id"] for r in everything).values()
    )


async def test_incremental_writes_exactly_the_new_records(sim: Simulator, tmp_path: Path) -> None:
    numbers = list(range(1, CONTACTS + 1))
    contacts = uuids(sim, numbers)
    async with v3_client(sim) as c:
        await c.export(contacts, tmp_path)
    first = truth(sim, contacts)
    assert_exact(record_lines(tmp_path), lines(first))

    per_contact = Counter(r["contact_id"] for r in first)
    heavy = max(numbers, key=lambda n: per_contact[contacts[n - 1]])
    empty = next(n for n in numbers if per_contact[contacts[n - 1]] == 0)
    for number, count in ((heavy, 3), (empty, 2), (numbers[-1], 105)):
        sim.add_activity(str(number), "opens", count)
    second = truth(sim, contacts)
    added = list((Counter(line(r) for r in second) - Counter(line(r) for r in first)).elements())
    assert len(added) == 110

    sim.reset_stats()
    async with v3_client(sim) as c:
        summary = await c.export(contacts, tmp_path, incremental=True)
    assert summary.status == "complete"
    assert summary.run == 2
    assert_exact(record_lines(tmp_path, names=summary.files), added)
    assert_exact(record_lines(tmp_path), lines(second))
    # A contact without news costs its one page; the 105 new ones take two pages.
    assert summary.requests == len(contacts) + 1

    # Nothing new since: exactly one request per contact, no record, no file.
    sim.reset_stats()
    async with v3_client(sim) as c:
        summary = await c.export(contacts, tmp_path, incremental=True)
    assert (summary.run, summary.records, summary.files) == (3, 0, [])
    assert summary.requests == len(contacts)
    assert len(sim.request_log) == len(contacts)
    assert_exact(record_lines(tmp_path), lines(second))


# -- 5. throttles and the quota -----------------------------------------------------------


@pytest.mark.sim(rate_per_second=10)
async def test_throttles_are_waited_out(sim: Simulator, tmp_path: Path) -> None:
    contacts = uuids(sim, range(1, 31))
    async with v3_client(sim, rate=40, concurrency=6, max_retries=0) as c:
        summary = await c.export(contacts, tmp_path)
    assert_exact(record_lines(tmp_path), lines(truth(sim, contacts)))
    rejected = [r for r in sim.request_log if r.status == 429]
    assert rejected
    assert summary.throttles == len(rejected)
    assert summary.status == "complete"


@pytest.mark.sim(rate_per_second=12, jitter_ms=3)
async def test_the_clients_rate_is_never_exceeded(sim: Simulator, tmp_path: Path) -> None:
    contacts = uuids(sim, range(1, 31))
    async with v3_client(sim, rate=12, concurrency=8) as c:
        summary = await c.export(contacts, tmp_path)
    times = [r.t for r in sim.request_log]
    assert summary.throttles == 0
    assert len(times) == summary.requests
    assert max_in_window(times) <= 12


@pytest.mark.sim(daily_quota=15)
async def test_the_quota_answer_stops_the_run_and_it_resumes(
    sim: Simulator, tmp_path: Path
) -> None:
    contacts = uuids(sim, range(1, 31))
    async with v3_client(sim, concurrency=4) as c:
        with pytest.raises(bulkopens.QuotaExhausted) as info:
            await c.export(contacts, tmp_path)
    summary = info.value.summary
    assert summary is not None
    assert summary.status == "quota_exhausted"
    over = [r for r in sim.request_log if r.status == 429]
    assert 1 <= len(over) <= 4  # every worker stops at once
    done = record_lines(tmp_path)
    assert not Counter(done) - Counter(line(r) for r in truth(sim, contacts))


# -- 6. a token file: renewed during the run, single flight --------------------------------


def token_file(sim: Simulator, path: Path, *, expires_in: float | None = None) -> TokenSet:
    answer = sim.mint_tokens(expires_in=expires_in)
    tokens = TokenSet.from_answer(
        answer,
        client_id=CLIENT_ID,
        token_url=sim.url + "/oauth2/default/v1/token",
        now=time.time(),
        flow="device",
    )
    write_tokens(path, tokens)
    return tokens


@pytest.mark.sim(access_token_seconds=1.0, rate_per_second=0)
async def test_a_run_longer_than_the_token_renews_it_and_no_request_fails(
    sim: Simulator, tmp_path: Path
) -> None:
    path = tmp_path / "token.json"
    first = token_file(sim, path, expires_in=1.0)
    contacts = uuids(sim, range(1, 31))
    provider = TokenFile(path, client_id=CLIENT_ID)
    async with v3_client(sim, tokens=provider, rate=12) as c:  # ~3 s: three lifetimes
        summary = await c.export(contacts, tmp_path / "out")
    assert summary.status == "complete"
    assert_exact(record_lines(tmp_path / "out"), lines(truth(sim, contacts)))
    counts = sim.token_counts()
    assert counts.get("refresh_token 200", 0) >= 2, counts
    assert set(counts) == {"refresh_token 200"}, counts  # no invalid_grant, no 429
    assert provider.refreshes == counts["refresh_token 200"]
    # A 401 (a token that expired in flight) is renewed and asked again, never a failure.
    assert set(sim.status_counts()) <= {200, 401}
    assert summary.contacts_done == len(contacts)
    saved = read_tokens(path)
    assert saved is not None
    assert saved.refresh_token != first.refresh_token
    # No secret in the output files or the state.
    secrets = [TOKEN, first.access_token, first.refresh_token, *provider.secrets()]
    for file in (tmp_path / "out").rglob("*"):
        if file.is_file():
            data = file.read_bytes()
            for secret in secrets:
                assert secret
                assert secret.encode() not in data, file.name


# -- 8. bad input on v3 ---------------------------------------------------------------------


async def test_v2_ids_are_mapped_through_the_xref_endpoint_once(
    sim: Simulator, tmp_path: Path
) -> None:
    contacts = uuids(sim, range(1, 6))
    given = [*contacts, "1", "42", "999999", "junk"]  # "1" is contacts[0] again
    async with v3_client(sim) as c:
        summary = await c.export(given, tmp_path)
    assert_exact(record_lines(tmp_path), lines(truth(sim, [*contacts, sim.contact_uuid("42")])))
    assert summary.duplicates == 1
    errors = [json.loads(x) for x in (tmp_path / "errors.ndjson").read_text().splitlines()]
    assert sorted((e["contact_id"], e["status"], e["error_key"]) for e in errors) == [
        ("999999", None, "bulkopens.no_v3_id"),
        ("junk", None, "bulkopens.invalid_contact_id"),
    ]
    for error in errors:
        assert "UUID" in error["error"] or "no v3 counterpart" in error["error"], error
        assert "positive integer" not in error["error"], error
    mapping = [json.loads(x) for x in (tmp_path / "id-map.ndjson").read_text().splitlines()]
    assert mapping == [
        {"scope": "contact", "v2_id": "1", "v3_id": contacts[0]},
        {"scope": "contact", "v2_id": "42", "v3_id": sim.contact_uuid("42")},
        {"scope": "contact", "v2_id": "999999", "v3_id": None},
    ]
    asked = paths_asked(sim)
    assert asked["/v3/contacts/contact_id_xrefs"] == 1  # 3 ids, one request
    assert summary.requests == len(sim.request_log)  # the mapping is counted
    # A rerun asks nothing: not the reports, not the mapping (kept in the state).
    sim.reset_stats()
    async with v3_client(sim) as c:
        again = await c.export(given, tmp_path)
    assert (again.requests, len(sim.request_log)) == (0, 0)
    assert (tmp_path / "id-map.ndjson").read_text().count("\n") == 3


@pytest.mark.sim(xref="410")
async def test_a_retired_xref_endpoint_is_one_clear_error(sim: Simulator, tmp_path: Path) -> None:
    async with v3_client(sim) as c:
        with pytest.raises(bulkopens.ConfigurationError) as info:
            await c.export(["1", "2"], tmp_path)
    message = str(info.value)
    assert "410" in message
    assert "UUID" in message
    assert "\n" not in message


@pytest.mark.parametrize("report", ["summary", "summary-by-campaign"])
async def test_a_summary_report_is_refused_on_v3_before_any_request(
    sim: Simulator, tmp_path: Path, report: bulkopens.ReportName
) -> None:
    contacts = uuids(sim, range(1, 4))
    async with v3_client(sim) as c:
        with pytest.raises(bulkopens.ConfigurationError, match="not offered on --api v3"):
            await c.export(contacts, tmp_path, report=report)
    assert sim.request_log == []


async def test_a_summary_stream_and_an_unknown_api_are_refused(sim: Simulator) -> None:
    contacts = uuids(sim, range(1, 4))
    async with v3_client(sim) as c:
        with pytest.raises(bulkopens.ConfigurationError, match="not offered on --api v3"):
            async with c.records(contacts, report="summary") as stream:
                [r async for r in stream]
    with pytest.raises(bulkopens.ConfigurationError):
        bulkopens.Client(api="v4", token=TOKEN, base_url=sim.url)  # type: ignore[arg-type]
    assert sim.request_log == []
