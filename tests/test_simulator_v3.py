"""The simulator's v3 face over a real loopback connection (docs/simulator-v3.md).

Every v3 endpoint, its paging and validation; the OAuth2 server (refresh rotation and reuse,
expiry, PKCE, the device flow, the 1/s token limit); rate limits and faults; and the proof
that the v2 and v3 faces of one simulated account hold the same activities.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import re
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson
import pytest
from test_simulator import DATE_FIELD, Answer
from yarl import URL

from bulkopens.simulator import SimConfig, Simulator, _cli
from bulkopens.simulator._hashing import splitmix64, unsplitmix64

# seed 9 with 8 SENT campaigns has two v2 resends (two v3 campaigns with a resend activity)
# and, at this heavy fraction, three heavy contacts (1,000-3,000 records each).
BASE = SimConfig(
    seed=9,
    contacts=120,
    campaigns=8,
    heavy_fraction=0.02,
    rate_per_second=0,
    daily_quota=0,
    token_rate_per_second=0,
)
SIM_CONFIG = BASE  # the sim fixture's (conftest.py)
DETAILS = "/v3/reports/contact_reports/{}/activity_details"
TYPES = ("em_sends", "em_opens", "em_clicks", "em_forwards", "em_bounces", "em_optouts")
ALL_TYPES = ",".join(TYPES)
V2_TYPES = {
    "EMAIL_SEND": "em_sends",
    "EMAIL_OPEN": "em_opens",
    "EMAIL_CLICK": "em_clicks",
    "EMAIL_FORWARD": "em_forwards",
    "EMAIL_BOUNCE": "em_bounces",
    "EMAIL_UNSUBSCRIBE": "em_optouts",
}
REPORTS = {"sends": "em_sends", "opens": "em_opens", "clicks": "em_clicks",
           "forwards": "em_forwards", "bounces": "em_bounces", "optouts": "em_optouts"}  # fmt: skip
V2_REPORTS = {"sends": "sends", "opens": "opens", "clicks": "clicks", "forwards": "forwards",
              "bounces": "bounces", "optouts": "unsubscribes"}  # fmt: skip
BASE_FIELDS = ["contact_id", "campaign_activity_id", "tracking_activity_type", "email_address",
               "first_name", "last_name"]  # fmt: skip
UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")
SECRET = ("demo-client", "demo-secret")


class Clock:
    """A hand-driven monotonic clock (token expiry and limits without sleeping)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class V3:
    """A minimal v3 caller: Bearer only, ``_links.next.href`` joined to the origin."""

    def __init__(self, http: aiohttp.ClientSession, sim: Simulator, token: str) -> None:
        self.http = http
        self.sim = sim
        self.token = token

    async def get(self, path: str, params: Any = None, *, token: str | None = "default") -> Answer:
        headers = {}
        if token is not None:
            headers["Authorization"] = f"Bearer {self.token if token == 'default' else token}"
        url = self.sim.url + path if params is not None else URL(self.sim.url + path, encoded=True)
        async with self.http.get(url, params=params, headers=headers) as response:
            return Answer(response.status, response.headers, await response.read())

    async def walk(self, path: str, params: Any, key: str) -> tuple[list[Any], int]:
        """Every item of a paged endpoint under ``key``, and the number of pages."""
        answer = await self.get(path, params)
        items: list[Any] = []
        pages = 0
        while True:
            assert answer.status == 200, answer.body
            body = answer.json()
            pages += 1
            items.extend(body[key])
            if "_links" not in body:
                return items, pages
            href = body["_links"]["next"]["href"]
            assert href.startswith("/v3/")
            assert "next=" in href
            answer = await self.get(href)


async def token_call(
    http: aiohttp.ClientSession,
    sim: Simulator,
    form: dict[str, str],
    auth: tuple[str, str] | None = SECRET,
) -> Answer:
    headers = {}
    if auth is not None:
        pair = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
        headers["Authorization"] = f"Basic {pair}"
    async with http.post(sim.url + "/oauth2/default/v1/token", data=form, headers=headers) as r:
        return Answer(r.status, r.headers, await r.read())


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
def v3(http: aiohttp.ClientSession, sim: Simulator) -> V3:
    return V3(http, sim, sim.mint_tokens()["access_token"])


def error_keys(answer: Answer) -> list[str]:
    body = answer.json()
    assert isinstance(body, list)
    return [item["error_key"] for item in body]


# -- ids ------------------------------------------------------------------------------------


def test_unsplitmix64_inverts_splitmix64() -> None:
    for value in (0, 1, 2**63, 2**64 - 1, 0x1234_5678_9ABC_DEF0):
        assert unsplitmix64(splitmix64(value)) == value


async def test_contact_ids_are_uuids_that_decode_back(sim: Simulator, v3: V3) -> None:
    uuids = [sim.contact_uuid(str(n)) for n in range(1, BASE.contacts + 1)]
    assert all(UUID.fullmatch(u) for u in uuids)
    assert len(set(uuids)) == BASE.contacts
    assert sim.v3_truth(contact_ids=[uuids[4]]) == [
        r for r in sim.v3_truth() if r["contact_id"] == uuids[4]
    ]
    other = Simulator(SimConfig(seed=10, contacts=5))
    assert other.contact_uuid("1") != uuids[0]  # another account, other UUIDs
    unknown = "0b9e4c1e-6a0c-4f3e-9a2b-3d2f1c0b9a8e"
    answer = await v3.get(DETAILS.format(unknown), {"tracking_activities_list": "em_opens"})
    assert (answer.status, error_keys(answer)) == (404, ["contacts.api.not_found"])
    answer = await v3.get(DETAILS.format("123"), {"tracking_activities_list": "em_opens"})
    assert answer.status == 400
    with pytest.raises(ValueError):
        sim.contact_uuid(str(BASE.contacts + 1))


# -- auth and the gateway -------------------------------------------------------------------


async def test_bearer_only_and_401_challenge(sim: Simulator, v3: V3) -> None:
    path = "/v3/emails"
    for token in (None, "not-a-token"):
        answer = await v3.get(path, {}, token=token)
        assert answer.status == 401
        assert answer.headers["WWW-Authenticate"] == "Bearer realm=api.cc.email"
        assert answer.json() == {"message": "Unauthorized"}
        assert b"not-a-token" not in answer.body
    answer = await v3.get(path, {"api_key": sim.api_key}, token=None)
    assert answer.status == 401  # an api_key is no credential on v3
    assert (await v3.get(path, {})).status == 200  # no api_key needed
    assert (await v3.get(path, {}, token=sim.token)).status == 200  # configured tokens work
    assert all(r.api_key == BASE.client_id for r in sim.request_log if r.status == 200)


async def test_scopes_accept_route_and_method(
    http: aiohttp.ClientSession, sim: Simulator, v3: V3
) -> None:
    contacts_only = sim.mint_tokens(["contact_data"])["access_token"]
    answer = await v3.get("/v3/emails", {}, token=contacts_only)
    assert (answer.status, error_keys(answer)) == (403, ["http.status.forbidden"])
    uuid = sim.contact_uuid("1")
    answer = await v3.get(DETAILS.format(uuid), {"tracking_activities_list": "em_sends"},
                          token=contacts_only)  # fmt: skip
    assert answer.status == 200
    assert (await v3.get("/v3/nothing/here", {})).status == 404
    headers = {"Authorization": f"Bearer {v3.token}"}
    async with http.post(sim.url + "/v3/emails", headers=headers) as response:
        assert response.status == 405
    async with http.get(sim.url + "/v3/emails", headers={**headers, "Accept": "text/xml"}) as r:
        assert r.status == 406


# -- activity details -----------------------------------------------------------------------


async def test_activity_details_pages_newest_first_and_complete(sim: Simulator, v3: V3) -> None:
    counts = Counter(r["contact_id"] for r in sim.v3_truth())
    busiest = counts.most_common(1)[0][0]
    assert counts[busiest] > 100  # a heavy contact: many pages at the default limit
    for contact_id, limit in ((busiest, None), (sim.contact_uuid("3"), "3")):
        params: dict[str, str] = {"tracking_activities_list": ALL_TYPES}
        if limit:
            params["limit"] = limit
        records, pages = await v3.walk(DETAILS.format(contact_id), params, "tracking_activities")
        assert records == sim.v3_truth(contact_ids=[contact_id])
        size = int(limit or 100)
        assert pages == -(-len(records) // size) or (pages == 1 and not records)
        times = [r["created_time"] for r in records]
        assert times == sorted(times, reverse=True)
        assert list(records[0]) == ["contact_id", "campaign_activity_id", "created_time",
                                    "tracking_activity_type", "campaign_activity_name"]  # fmt: skip
    assert {r["tracking_activity_type"] for r in sim.v3_truth()} == set(TYPES)


async def test_activity_details_parameters(sim: Simulator, v3: V3) -> None:
    path = DETAILS.format(sim.contact_uuid("7"))
    repeated = [("tracking_activity_type", "em_opens"), ("tracking_activity_type", "em_sends")]
    by_repeat, _ = await v3.walk(path, repeated, "tracking_activities")
    by_list, _ = await v3.walk(path, {"tracking_activities_list": "em_sends,em_opens"},
                               "tracking_activities")  # fmt: skip
    assert by_repeat == by_list == sim.v3_truth("em_opens,em_sends", [sim.contact_uuid("7")])
    plain, _ = await v3.walk(
        path,
        {"tracking_activities_list": ALL_TYPES, "include_campaign_activity_names": "false",
         "limit": "2"},
        "tracking_activities",
    )  # fmt: skip
    assert plain == sim.v3_truth(contact_ids=[sim.contact_uuid("7")], names=False)
    assert all("campaign_activity_name" not in r for r in plain)
    landing = await v3.get(path, {"tracking_activities_list": "p_contact_open"})
    assert (landing.status, landing.json()) == (200, {"tracking_activities": []})
    for bad in (
        {},
        {"tracking_activities_list": "em_opens", "tracking_activity_type": "em_opens"},
        {"tracking_activities_list": "all"},
        {"tracking_activities_list": "em_opens", "limit": "0"},
        {"tracking_activities_list": "em_opens", "limit": "101"},
        {"tracking_activities_list": "em_opens", "include_campaign_activity_names": "maybe"},
        {"next": "bm90LWEtdG9rZW4"},
    ):
        answer = await v3.get(path, bad)
        assert answer.status == 400, bad
        assert error_keys(answer) == ["query.param.invalid"]
    first = (await v3.get(path, {"tracking_activities_list": ALL_TYPES, "limit": "1"})).json()
    other = DETAILS.format(sim.contact_uuid("8"))
    href = first["_links"]["next"]["href"].replace(path, other)
    assert (await v3.get(href)).status == 400  # a token belongs to its contact


# -- campaigns and email reports --------------------------------------------------------------


async def campaigns(v3: V3) -> list[dict[str, Any]]:
    """Every v3 campaign with its activities (GET /v3/emails, then /v3/emails/{id})."""
    rows, _ = await v3.walk("/v3/emails", {"limit": "2"}, "campaigns")
    details = []
    for row in rows:
        answer = await v3.get(f"/v3/emails/{row['campaign_id']}", {})
        assert answer.status == 200
        details.append(answer.json())
    return details


async def test_campaign_list_and_activities(v3: V3) -> None:
    rows, pages = await v3.walk("/v3/emails", {"limit": "2"}, "campaigns")
    assert len(rows) == 9
    assert pages == 5
    updated = [r["updated_at"] for r in rows]
    assert updated == sorted(updated, reverse=True)
    assert list(rows[0]) == ["campaign_id", "created_at", "current_status", "name", "type",
                             "type_code", "updated_at"]  # fmt: skip
    assert Counter(r["current_status"] for r in rows) == {"Done": 6, "Draft": 2, "Scheduled": 1}
    whole, _ = await v3.walk("/v3/emails", {}, "campaigns")
    assert whole == rows
    roles: Counter[str] = Counter()
    for campaign in await campaigns(v3):
        kinds = [a["role"] for a in campaign["campaign_activities"]]
        assert kinds[:2] == ["primary_email", "permalink"]
        roles.update(kinds)
    assert roles == {"primary_email": 9, "permalink": 9, "resend": 2}
    missing = await v3.get("/v3/emails/0b9e4c1e-6a0c-4f3e-9a2b-3d2f1c0b9a8e", {})
    assert missing.status == 404
    assert (await v3.get("/v3/emails/nope", {})).status == 400
    assert (await v3.get("/v3/emails", {"limit": "501"})).status == 400


async def test_email_reports_fields_paging_and_unsent(sim: Simulator, v3: V3) -> None:
    fields = {
        "opens": [*BASE_FIELDS, "device_type", "created_time"],
        "clicks": [*BASE_FIELDS, "device_type", "url_id", "link_url", "created_time"],
        "bounces": [*BASE_FIELDS, "bounce_code", "current_email_address", "created_time"],
        "forwards": [*BASE_FIELDS, "created_time"],
        "sends": [*BASE_FIELDS, "created_time"],
    }
    seen: Counter[str] = Counter()
    for campaign in await campaigns(v3):
        for activity in campaign["campaign_activities"]:
            path = f"/v3/reports/email_reports/{activity['campaign_activity_id']}/tracking/"
            if activity["role"] == "permalink":
                assert (await v3.get(path + "opens", {})).status == 404
                continue
            for report, v3_type in REPORTS.items():
                records, _ = await v3.walk(path + report, {"limit": "40"}, "tracking_activities")
                if campaign["current_status"] != "Done":
                    assert records == []  # a never-sent activity: 200, empty
                    continue
                assert {r["tracking_activity_type"] for r in records} <= {v3_type}
                times = [(r["created_time"]) for r in records]
                assert times == sorted(times, reverse=True)
                for record in records:
                    seen[report] += 1
                    assert record["campaign_activity_id"] == activity["campaign_activity_id"]
                    if report in fields:
                        assert list(record) == fields[report]
                    else:
                        assert list(record)[:6] == BASE_FIELDS
                        assert list(record)[-1] == "created_time"
    assert all(seen[report] > 0 for report in ("sends", "opens", "clicks", "bounces"))
    activity = (await campaigns(v3))[0]["campaign_activities"][0]["campaign_activity_id"]
    base = f"/v3/reports/email_reports/{activity}/tracking/"
    assert (await v3.get(base + "opens", {"limit": "501"})).status == 400
    assert (await v3.get(base + "nonsense", {})).status == 404
    unknown = "/v3/reports/email_reports/0b9e4c1e-6a0c-4f3e-9a2b-3d2f1c0b9a8e/tracking/opens"
    assert (await v3.get(unknown, {})).status == 404


# -- the same account on both faces ---------------------------------------------------------


async def v2_get(http: aiohttp.ClientSession, sim: Simulator, url: str) -> Any:
    headers = {"Authorization": f"Bearer {sim.token}"}
    async with http.get(URL(url, encoded=True), headers=headers) as response:
        assert response.status == 200
        return orjson.loads(await response.read())


async def v2_walk(
    http: aiohttp.ClientSession, sim: Simulator, path: str, limit: int = 500
) -> list[Any]:
    page = await v2_get(http, sim, f"{sim.url}{path}?limit={limit}&api_key={sim.api_key}")
    results = list(page["results"])
    while "next_link" in page["meta"]["pagination"]:
        link = page["meta"]["pagination"]["next_link"]
        page = await v2_get(http, sim, f"{sim.url}{link}&api_key={sim.api_key}")
        results.extend(page["results"])
    return results


async def test_v2_and_v3_exports_hold_the_same_activities(
    http: aiohttp.ClientSession, sim: Simulator, v3: V3
) -> None:
    """Both paths (by contact, by campaign) on both faces give the same (contact, v2
    campaign, type, time) set; v3 ids are mapped back with the xref endpoints alone."""
    contact_ids = [str(n) for n in range(1, BASE.contacts + 1)]
    v2_campaigns = await v2_walk(http, sim, "/v2/emailmarketing/campaigns", 50)
    sent = [c["id"] for c in v2_campaigns if c["status"] == "SENT"]
    assert len(sent) == BASE.campaigns

    def v2_key(r: dict[str, Any]) -> tuple[str, str, str, str]:
        kind = r["activity_type"]
        return str(r["contact_id"]), str(r["campaign_id"]), V2_TYPES[kind], r[DATE_FIELD[kind]]

    v2_by_contact: set[tuple[str, str, str, str]] = set()
    for cid in contact_ids:
        v2_by_contact |= {
            v2_key(r) for r in await v2_walk(http, sim, f"/v2/contacts/{cid}/tracking")
        }
    v2_by_campaign: set[tuple[str, str, str, str]] = set()
    for campaign_id in sent:
        for report in V2_REPORTS.values():
            path = f"/v2/emailmarketing/campaigns/{campaign_id}/tracking/{report}"
            v2_by_campaign |= {v2_key(r) for r in await v2_walk(http, sim, path)}
    assert v2_by_contact == v2_by_campaign
    assert len(v2_by_contact) > 1000

    # v3 ids through the xref endpoints (500 contacts, 50 campaigns per call at most).
    answer = await v3.get("/v3/contacts/contact_id_xrefs", {"sequence_ids": ",".join(contact_ids)})
    contact_of = {x["contact_id"]: x["sequence_id"] for x in answer.json()["xrefs"]}
    assert len(contact_of) == BASE.contacts
    all_v2 = [c["id"] for c in v2_campaigns]
    answer = await v3.get(
        "/v3/emails/campaign_id_xrefs", {"v2_email_campaign_ids": ",".join(all_v2)}
    )
    xrefs = answer.json()["xrefs"]
    campaign_of = {x["campaign_activity_id"]: x["v2_email_campaign_id"] for x in xrefs}
    assert sorted(campaign_of.values(), key=int) == sorted(all_v2, key=int)

    def v3_key(r: dict[str, Any]) -> tuple[str, str, str, str]:
        return (contact_of[r["contact_id"]], campaign_of[r["campaign_activity_id"]],
                r["tracking_activity_type"], r["created_time"])  # fmt: skip

    v3_by_contact: set[tuple[str, str, str, str]] = set()
    for uuid in contact_of:
        params = {"tracking_activities_list": ALL_TYPES, "include_campaign_activity_names": "false"}
        records, _ = await v3.walk(DETAILS.format(uuid), params, "tracking_activities")
        v3_by_contact |= {v3_key(r) for r in records}
    v3_by_campaign: set[tuple[str, str, str, str]] = set()
    resends = 0
    for campaign in await campaigns(v3):
        for activity in campaign["campaign_activities"]:
            if activity["role"] == "permalink":
                continue
            resends += activity["role"] == "resend"
            for report in REPORTS:
                activity_id = activity["campaign_activity_id"]
                path = f"/v3/reports/email_reports/{activity_id}/tracking/{report}"
                records, _ = await v3.walk(path, {}, "tracking_activities")
                v3_by_campaign |= {v3_key(r) for r in records}
    assert resends == 2
    assert v3_by_contact == v3_by_campaign == v2_by_contact
    # a v2 resend maps to the resend activity of the campaign of the v2 campaign before it
    resend_rows = [x for x in xrefs if x["campaign_id"] in {
        c["campaign_id"] for c in await campaigns(v3)
        if any(a["role"] == "resend" for a in c["campaign_activities"])}]  # fmt: skip
    assert len(resend_rows) == 4


async def test_added_activity_shows_on_both_faces(sim: Simulator, v3: V3) -> None:
    added = sim.add_activity("5", "clicks", 2)
    uuid = sim.contact_uuid("5")
    page = (await v3.get(DETAILS.format(uuid), {"tracking_activities_list": "em_clicks"})).json()
    newest = page["tracking_activities"][:2]
    assert [r["created_time"] for r in newest] == [a["click_date"] for a in reversed(added)]


# -- xrefs and summaries --------------------------------------------------------------------


async def test_xrefs_limits_order_and_unknown_ids(v3: V3) -> None:
    answer = await v3.get("/v3/contacts/contact_id_xrefs", {"sequence_ids": "9,3,99999,3"})
    assert [x["sequence_id"] for x in answer.json()["xrefs"]] == ["3", "9"]
    too_many = ",".join(str(n) for n in range(1, 502))
    assert (await v3.get("/v3/contacts/contact_id_xrefs", {"sequence_ids": too_many})).status == 400
    assert (await v3.get("/v3/contacts/contact_id_xrefs", {"sequence_ids": "x"})).status == 400
    assert (await v3.get("/v3/contacts/contact_id_xrefs", {})).status == 400
    fifty_one = ",".join(str(n) for n in range(1, 52))
    path = "/v3/emails/campaign_id_xrefs"
    assert (await v3.get(path, {"v2_email_campaign_ids": fifty_one})).status == 400
    assert (await v3.get(path, {"v2_email_campaign_ids": "1"})).json() == {"xrefs": []}


@pytest.mark.parametrize("gone", ["404", "410"])
async def test_xrefs_can_be_gone(http: aiohttp.ClientSession, gone: str) -> None:
    config = SimConfig(seed=9, contacts=5, campaigns=2, rate_per_second=0, xref=gone)  # type: ignore[arg-type]
    async with Simulator(config) as sim:
        v3 = V3(http, sim, sim.token)
        for path, name in (("/v3/contacts/contact_id_xrefs", "sequence_ids"),
                           ("/v3/emails/campaign_id_xrefs", "v2_email_campaign_ids")):  # fmt: skip
            answer = await v3.get(path, {name: "1"})
            assert answer.status == int(gone)
        assert (await v3.get("/v3/emails", {})).status == 200


async def test_summaries(sim: Simulator, v3: V3) -> None:
    rows, pages = await v3.walk(
        "/v3/reports/summary_reports/email_campaign_summaries", {"limit": "4"},
        "bulk_email_campaign_summaries",
    )  # fmt: skip
    assert len(rows) == 6
    assert pages == 2
    sent = [r["last_sent_date"] for r in rows]
    assert sent == sorted(sent, reverse=True)
    truth = sim.v3_truth(names=False)
    campaign_of = {}
    for row in rows:
        detail = (await v3.get(f"/v3/emails/{row['campaign_id']}", {})).json()
        for activity in detail["campaign_activities"]:
            campaign_of[activity["campaign_activity_id"]] = row["campaign_id"]
    for row in rows:  # unique counts: distinct contacts over the primary and resend activities
        for name, v3_type in (("sends", "em_sends"), ("opens", "em_opens"),
                              ("optouts", "em_optouts")):  # fmt: skip
            people = {r["contact_id"] for r in truth if r["tracking_activity_type"] == v3_type
                      and campaign_of[r["campaign_activity_id"]] == row["campaign_id"]}  # fmt: skip
            assert row["unique_counts"][name] == len(people)
    uuid = sim.contact_uuid("11")
    path = f"/v3/reports/contact_reports/{uuid}/activity_summary"
    window = {"start": "2020-01-01T00:00:00Z", "end": "2030-01-01T00:00:00Z"}
    summary = (await v3.get(path, window)).json()
    assert summary["contact_id"] == uuid
    mine = sim.v3_truth(contact_ids=[uuid])
    total = sum(a[t] for a in summary["campaign_activities"]
                for t in ("em_sends", "em_opens", "em_clicks", "em_forwards", "em_bounces",
                          "em_unsubscribes"))  # fmt: skip
    assert total == len(mine)
    assert (await v3.get(path, {"start": "2020-01-01T00:00:00Z"})).status == 400
    assert (await v3.get(path, {"start": "yesterday", "end": "today"})).status == 400


# -- tokens ---------------------------------------------------------------------------------


async def test_refresh_rotates_and_a_reused_token_is_invalid_grant(
    http: aiohttp.ClientSession, sim: Simulator
) -> None:
    first = sim.mint_tokens()
    assert first["expires_in"] == 86_400
    assert first["token_type"] == "Bearer"
    form = {"grant_type": "refresh_token", "refresh_token": first["refresh_token"]}
    answer = await token_call(http, sim, form)
    assert answer.status == 200
    assert answer.headers["Cache-Control"] == "no-store"
    second = answer.json()
    assert second["refresh_token"] != first["refresh_token"]
    reused = await token_call(http, sim, form)
    assert (reused.status, reused.json()["error"]) == (400, "invalid_grant")
    form["refresh_token"] = second["refresh_token"]
    assert (await token_call(http, sim, form)).status == 200
    wrong = await token_call(http, sim, form, ("demo-client", "wrong"))
    assert (wrong.status, wrong.json()["error"]) == (401, "invalid_client")
    assert b"wrong" not in wrong.body
    counts = sim.token_counts()
    assert counts["refresh_token 200"] == 2
    assert counts["refresh_token invalid_grant"] == 1
    no_offline = sim.mint_tokens(["contact_data"])
    assert "refresh_token" not in no_offline


async def test_long_lived_refresh_tokens_come_back_unchanged(
    http: aiohttp.ClientSession,
) -> None:
    async with Simulator(SimConfig(contacts=5, refresh_tokens="long-lived",
                                   token_rate_per_second=0)) as sim:  # fmt: skip
        token = sim.mint_tokens()["refresh_token"]
        form = {"grant_type": "refresh_token", "refresh_token": token}
        for _ in range(3):
            answer = await token_call(http, sim, form)
            assert answer.status == 200
            assert answer.json()["refresh_token"] == token


async def test_access_tokens_expire_and_refresh_tokens_die_idle(
    http: aiohttp.ClientSession,
) -> None:
    clock = Clock()
    config = SimConfig(contacts=5, access_token_seconds=60, refresh_idle_seconds=3600,
                       token_rate_per_second=0, rate_per_second=0)  # fmt: skip
    async with Simulator(config, clock=clock) as sim:
        tokens = sim.mint_tokens()
        assert tokens["expires_in"] == 60
        v3 = V3(http, sim, tokens["access_token"])
        assert (await v3.get("/v3/emails", {})).status == 200
        clock.now += 59.9
        assert (await v3.get("/v3/emails", {})).status == 200
        clock.now += 0.1
        expired = await v3.get("/v3/emails", {})
        assert expired.status == 401
        assert "WWW-Authenticate" in expired.headers
        form = {"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]}
        fresh = (await token_call(http, sim, form)).json()
        assert (await v3.get("/v3/emails", {}, token=fresh["access_token"])).status == 200
        clock.now += 3600
        form["refresh_token"] = fresh["refresh_token"]
        assert (await token_call(http, sim, form)).json()["error"] == "invalid_grant"


async def test_token_endpoint_admits_one_request_per_second(http: aiohttp.ClientSession) -> None:
    clock = Clock()
    async with Simulator(SimConfig(contacts=5), clock=clock) as sim:
        form = {"grant_type": "refresh_token", "refresh_token": sim.mint_tokens()["refresh_token"]}
        first = await token_call(http, sim, form)
        assert first.status == 200
        form["refresh_token"] = first.json()["refresh_token"]
        limited = await token_call(http, sim, form)
        assert limited.status == 429
        assert limited.json()["errorCode"] == "E0000047"
        assert "Retry-After" not in limited.headers
        clock.now += 1.0
        assert (await token_call(http, sim, form)).status == 200  # the 429 spent nothing
        assert sim.token_counts() == {"refresh_token 200": 2, "rate_limited": 1}


def pkce() -> tuple[str, str]:
    verifier = base64.urlsafe_b64encode(hashlib.sha256(b"verifier").digest()).decode().rstrip("=")
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest())
    return verifier, challenge.decode().rstrip("=")


async def authorize(http: aiohttp.ClientSession, sim: Simulator, **extra: str) -> URL:
    params = {"client_id": "demo-client", "response_type": "code", "state": "s-1",
              "redirect_uri": "http://127.0.0.1:9/callback",
              "scope": "contact_data campaign_data offline_access", **extra}  # fmt: skip
    url = sim.url + "/oauth2/default/v1/authorize"
    async with http.get(url, params=params, allow_redirects=False) as response:
        assert response.status == 302
        return URL(response.headers["Location"])


async def test_authorization_code_with_pkce(http: aiohttp.ClientSession, sim: Simulator) -> None:
    verifier, challenge = pkce()
    back = await authorize(http, sim, code_challenge=challenge, code_challenge_method="S256")
    assert back.host == "127.0.0.1"
    assert back.path == "/callback"
    assert back.query["state"] == "s-1"
    form = {"grant_type": "authorization_code", "code": back.query["code"],
            "redirect_uri": "http://127.0.0.1:9/callback", "client_id": "demo-client",
            "code_verifier": "not-the-verifier"}  # fmt: skip
    bad = await token_call(http, sim, form, auth=None)
    assert (bad.status, bad.json()["error"]) == (400, "invalid_grant")
    back = await authorize(http, sim, code_challenge=challenge, code_challenge_method="S256")
    form.update(code=back.query["code"], code_verifier=verifier)
    good = await token_call(http, sim, form, auth=None)  # a public client: no secret
    assert good.status == 200
    assert {"access_token", "refresh_token"} <= set(good.json())
    again = await token_call(http, sim, form, auth=None)
    assert again.json()["error"] == "invalid_grant"  # a code is single use
    # Without PKCE the code flow needs the client secret.
    back = await authorize(http, sim)
    form = {"grant_type": "authorization_code", "code": back.query["code"],
            "redirect_uri": "http://127.0.0.1:9/callback"}  # fmt: skip
    assert (await token_call(http, sim, form)).status == 200
    plain = await authorize(http, sim, code_challenge="abc", code_challenge_method="plain")
    assert plain.query["error"] == "invalid_request"


@pytest.mark.parametrize("device_refresh", [True, False])
async def test_device_flow(http: aiohttp.ClientSession, device_refresh: bool) -> None:
    config = SimConfig(contacts=5, token_rate_per_second=0, device_refresh=device_refresh,
                       device_interval=1)  # fmt: skip
    async with Simulator(config) as sim:
        form = {"client_id": "demo-client", "scope": "contact_data campaign_data offline_access"}
        async with http.post(sim.url + "/oauth2/default/v1/device/authorize", data=form) as r:
            assert r.status == 200
            start = await r.json()
        assert start["interval"] == 1
        assert start["verification_uri"] == sim.url + "/activate"
        assert re.fullmatch(r"[A-Z]{4}-[A-Z]{4}", start["user_code"])
        poll = {"grant_type": "urn:ietf:params:oauth:grant-type:device_code",
                "device_code": start["device_code"], "client_id": "demo-client"}  # fmt: skip
        pending = await token_call(http, sim, poll, auth=None)
        assert (pending.status, pending.json()["error"]) == (400, "authorization_pending")
        async with http.post(sim.url + "/_sim/approve",
                             params={"user_code": start["user_code"]}) as r:  # fmt: skip
            assert r.status == 200
        done = await token_call(http, sim, poll, auth=None)
        assert done.status == 200
        assert ("refresh_token" in done.json()) is device_refresh
        v3 = V3(http, sim, done.json()["access_token"])
        assert (await v3.get("/v3/emails", {})).status == 200
        assert (await token_call(http, sim, poll, auth=None)).json()["error"] == "invalid_grant"


async def test_a_denied_device_code(http: aiohttp.ClientSession, sim: Simulator) -> None:
    form = {"client_id": "demo-client", "scope": "contact_data"}
    async with http.post(sim.url + "/oauth2/default/v1/device/authorize", data=form) as r:
        start = await r.json()
    assert sim.approve_device(start["user_code"], approve=False)
    poll = {"grant_type": "urn:ietf:params:oauth:grant-type:device_code",
            "device_code": start["device_code"], "client_id": "demo-client"}  # fmt: skip
    assert (await token_call(http, sim, poll, auth=None)).json()["error"] == "access_denied"
    assert not sim.approve_device("NOPE-NOPE")


# -- limits, faults, admin, CLI -------------------------------------------------------------


async def test_rate_limit_and_quota_per_client_id(http: aiohttp.ClientSession) -> None:
    clock = Clock()
    config = SimConfig(contacts=5, rate_per_second=2, daily_quota=5)
    async with Simulator(config, clock=clock) as sim:
        minted = V3(http, sim, sim.mint_tokens()["access_token"])
        static = V3(http, sim, sim.token)  # the same client id: one budget
        assert (await minted.get("/v3/emails", {})).status == 200
        assert (await static.get("/v3/emails", {})).status == 200
        throttled = await minted.get("/v3/emails", {})
        assert throttled.status == 429
        assert "Retry-After" not in throttled.headers
        assert throttled.json() == {"error_key": "throttled", "error_message": "Too Many Requests"}
        for _ in range(3):
            clock.now += 1
            assert (await static.get("/v3/emails", {})).status == 200
        clock.now += 1
        quota = await minted.get("/v3/emails", {})
        assert (quota.status, quota.json()["error_key"]) == (429, "quota_exceeded")


@pytest.mark.parametrize("fault", ["error_rate", "truncate_rate", "reset_rate"])
async def test_faults_apply_to_v3(http: aiohttp.ClientSession, fault: str) -> None:
    overrides: dict[str, Any] = {fault: 1.0}
    config = SimConfig(contacts=5, rate_per_second=0, **overrides)
    async with Simulator(config) as sim:
        url = sim.url + "/v3/emails"
        headers = {"Authorization": f"Bearer {sim.token}"}
        if fault == "reset_rate":
            with pytest.raises(aiohttp.ClientError):
                async with http.get(url, headers=headers) as response:
                    await response.read()
            return
        async with http.get(url, headers=headers) as response:
            body = await response.read()
            if fault == "error_rate":
                assert response.status >= 500
            else:
                assert response.status == 200
                with pytest.raises(orjson.JSONDecodeError):
                    orjson.loads(body)


async def test_admin_endpoints(http: aiohttp.ClientSession, sim: Simulator) -> None:
    async with http.post(sim.url + "/_sim/tokens", params={"expires_in": "1"}) as r:
        minted = await r.json()
    assert minted["expires_in"] == 1
    assert "refresh_token" in minted
    async with http.post(sim.url + "/_sim/tokens", params={"scope": "bogus"}) as r:
        assert r.status == 400
    uuid = sim.contact_uuid("2")
    params = {"types": "em_opens,em_sends", "contact_id": uuid, "names": "false"}
    async with http.get(sim.url + "/_sim/v3/truth", params=params) as r:
        lines = [orjson.loads(line) for line in (await r.read()).splitlines()]
    assert lines == sim.v3_truth("em_opens,em_sends", [uuid], names=False)
    async with http.get(sim.url + "/_sim/v3/truth", params={"types": "opens"}) as r:
        assert r.status == 400
    async with http.post(sim.url + "/_sim/approve", params={"user_code": "NOPE"}) as r:
        assert r.status == 404
    async with http.get(sim.url + "/_sim/stats") as r:
        assert "token_requests" in await r.json()
    repr_text = repr(SimConfig(client_secret="s3cr3t-value"))
    assert "s3cr3t-value" not in repr_text


def test_cli_options_for_v3() -> None:
    parser = argparse.ArgumentParser(formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    _cli.add_arguments(parser)
    config = _cli.config_from_args(parser.parse_args([]))
    assert (config.client_id, config.access_token_seconds, config.refresh_tokens) == (
        "demo-client", 86_400, "rotating")  # fmt: skip
    assert (config.device_refresh, config.xref, config.token_rate_per_second) == (True, "ok", 1)
    args = parser.parse_args(
        ["--client-id", "app", "--client-secret", "sec", "--access-token-seconds", "60",
         "--refresh-tokens", "long-lived", "--refresh-idle-days", "1", "--no-device-refresh",
         "--device-interval", "2", "--token-rate", "0", "--xref", "410"]
    )  # fmt: skip
    config = _cli.config_from_args(args)
    assert (config.client_id, config.client_secret, config.access_token_seconds) == (
        "app", "sec", 60)  # fmt: skip
    assert (config.refresh_tokens, config.refresh_idle_seconds, config.device_refresh) == (
        "long-lived", 86_400, False)  # fmt: skip
    assert (config.device_interval, config.token_rate_per_second, config.xref) == (2, 0, "410")
    text = parser.format_help()
    assert "(default: 86400.0)" in text
    assert "(default: rotating)" in text
    with pytest.raises(ValueError):
        SimConfig(client_id="a:b")
