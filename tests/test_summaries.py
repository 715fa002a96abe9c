"""The summary reports (``--report summary``, ``summary-by-campaign``) and string ids, against
the simulator over real loopback.

The expected summaries are computed here from the simulator's ground truth of activity
records (``truth("all")``), not from its summary endpoints, so the export is checked against
the data itself: nothing missing, nothing twice, every line naming its contact or campaign.
"""

from __future__ import annotations

import json
import random
from collections import Counter, defaultdict
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from simkit import unlimited_config, unpaced_client
from simproc import KEY as PROC_KEY
from simproc import TOKEN as PROC_TOKEN
from simproc import SimProcess, bulkopens, kill_once_it_writes, simulator

import bulkopens as bo
from bulkopens._ids import stringify_ids
from bulkopens._summaries import owned
from bulkopens.simulator import SimConfig, Simulator

KEY, TOKEN = "summary-key-3f1a", "summary-token-9c4e"
COUNTS = ("sends", "opens", "clicks", "forwards", "unsubscribes", "bounces")
TYPES = {  # each summary count: the activity_type of the records it counts
    "sends": "EMAIL_SEND",
    "opens": "EMAIL_OPEN",
    "clicks": "EMAIL_CLICK",
    "forwards": "EMAIL_FORWARD",
    "unsubscribes": "EMAIL_UNSUBSCRIBE",
    "bounces": "EMAIL_BOUNCE",
}


def sim_config(**kw: Any) -> SimConfig:
    defaults: dict[str, Any] = {
        "seed": 11,
        "contacts": 120,
        "campaigns": 5,
        "heavy_fraction": 0.02,
        "empty_fraction": 0.1,
    }
    return unlimited_config(KEY, TOKEN, **(defaults | kw))


SIM_CONFIG = sim_config()  # the sim fixture's (conftest.py)


def client(sim: Simulator, **kw: Any) -> bo.Client:
    return unpaced_client(sim, KEY, TOKEN, **kw)


def ids(first: int, last: int) -> list[str]:
    return [str(i) for i in range(first, last + 1)]


# -- the ground truth, from the activity records ----------------------------------------------


def contact_summaries(activity: list[dict[str, Any]], wanted: list[str]) -> list[dict[str, Any]]:
    """C8 for each wanted contact: how many records of each type it has."""
    counts: dict[str, Counter[str]] = {cid: Counter() for cid in wanted}
    for record in activity:
        if record["contact_id"] in counts:
            counts[record["contact_id"]][record["activity_type"]] += 1
    return [
        {**{name: counts[cid][TYPES[name]] for name in COUNTS}, "contact_id": cid} for cid in wanted
    ]


def summaries_by_campaign(
    activity: list[dict[str, Any]], wanted: list[str]
) -> list[dict[str, Any]]:
    """C9 for each wanted contact: a row per campaign it has any activity in; opens, forwards
    and bounces counted, clicks as distinct links."""
    keep = set(wanted)
    rows: dict[tuple[str, str], dict[str, Any]] = {}
    for r in activity:
        if r["contact_id"] not in keep:
            continue
        row = rows.setdefault(
            (r["contact_id"], r["campaign_id"]),
            {"opens": 0, "links": set(), "forwards": 0, "bounces": 0},
        )
        kind = r["activity_type"]
        if kind == "EMAIL_CLICK":
            row["links"].add(r["link_id"])
        for name in ("opens", "forwards", "bounces"):
            row[name] += kind == TYPES[name]
    return [
        {
            "campaign_id": campaign,
            "contact_id": contact,
            "opens": row["opens"],
            "clicks": len(row["links"]),
            "forwards": row["forwards"],
            "bounces": row["bounces"],
        }
        for (contact, campaign), row in rows.items()
    ]


def campaign_summaries(activity: list[dict[str, Any]], wanted: list[str]) -> list[dict[str, Any]]:
    """K7 for each wanted campaign: distinct contacts per type, plus its campaign_id."""
    people: dict[str, dict[str, set[str]]] = {c: defaultdict(set) for c in wanted}
    for record in activity:
        if record["campaign_id"] in people:
            people[record["campaign_id"]][record["activity_type"]].add(record["contact_id"])
    return [
        {**{name: len(people[c][TYPES[name]]) for name in COUNTS}, "campaign_id": c} for c in wanted
    ]


def truth_of(report: str, activity: list[dict[str, Any]], wanted: list[str]) -> list[Any]:
    if report == "summary":
        return contact_summaries(activity, wanted)
    return summaries_by_campaign(activity, wanted)


# -- reading the output -----------------------------------------------------------------------


def read_lines(out: Path, report: str) -> list[bytes]:
    paths = sorted(out.glob(f"{report}-*.ndjson"))
    return [line for path in paths for line in path.read_bytes().split(b"\n")[:-1]]


def output(out: Path, report: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in read_lines(out, report)]


def assert_same(got: Sequence[Mapping[str, Any]], want: Sequence[Mapping[str, Any]]) -> None:
    g = Counter(json.dumps(r, sort_keys=True) for r in got)
    w = Counter(json.dumps(r, sort_keys=True) for r in want)
    assert g == w, f"{sum((w - g).values())} missing, {sum((g - w).values())} extra"
    assert want, "an empty comparison proves nothing"


def errors(out: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (out / "errors.ndjson").read_text().splitlines()]


# -- contact summaries --------------------------------------------------------------------


@pytest.mark.parametrize("report", ["summary", "summary-by-campaign"])
async def test_contact_summaries_equal_the_truth(
    sim: Simulator, tmp_path: Path, report: bo.ReportName
) -> None:
    wanted = ids(1, 120)
    async with client(sim) as c:
        summary = await c.export([*wanted, "7", "99999", "x1"], tmp_path, report=report)
    got = output(tmp_path, report)
    assert_same(got, truth_of(report, sim.truth("all"), wanted))
    # one request per contact, none paged, and every line says whose it is, as a string
    paths = [r.path for r in sim.request_log]
    suffix = "/summary" if report == "summary" else "/summaryByCampaign"
    assert len(paths) == 121
    assert all(p.endswith("/tracking/reports" + suffix) for p in paths)
    assert (summary.requests, summary.pages, summary.records) == (121, 120, len(got))
    assert all(isinstance(r["contact_id"], str) for r in got)
    assert (summary.status, summary.contacts_done, summary.duplicates) == ("complete", 120, 1)
    assert sorted((e["contact_id"], e["status"], e["retryable"]) for e in errors(tmp_path)) == [
        ("99999", 404, False),
        ("x1", None, False),
    ]
    assert [p.name for p in tmp_path.glob("*.ndjson") if p.name != "errors.ndjson"] == [
        f"{report}-00001.ndjson"
    ]
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["report"] == report
    assert manifest["runs"][0]["records"] == len(got)


async def test_summary_lines_keep_the_api_fields_in_order(sim: Simulator, tmp_path: Path) -> None:
    async with client(sim) as c:
        await c.export(["5"], tmp_path / "c8", report="summary")
        await c.export(["5"], tmp_path / "c9", report="summary-by-campaign")
        await c.export_campaigns(bo.SENT, tmp_path / "k7", report="summary")
    (c8,) = read_lines(tmp_path / "c8", "summary")
    assert list(json.loads(c8)) == [*COUNTS, "contact_id"]  # as the API sends it
    c9 = read_lines(tmp_path / "c9", "summary-by-campaign")
    assert c9
    assert all(
        list(json.loads(line))
        == ["campaign_id", "contact_id", "opens", "clicks", "forwards", "bounces"]
        for line in c9
    )
    k7 = read_lines(tmp_path / "k7", "summary")
    assert len(k7) == 5
    assert all(list(json.loads(line)) == [*COUNTS, "campaign_id"] for line in k7)  # appended


async def test_contact_summaries_retry_throttles_and_faults(tmp_path: Path) -> None:
    faults = sim_config(rate_per_second=40, error_rate=0.2, truncate_rate=0.1, reset_rate=0.05)
    wanted = ids(1, 40)
    async with Simulator(faults) as sim:
        async with client(sim, max_retries=12) as c:
            summary = await c.export(wanted, tmp_path, report="summary-by-campaign")
        truth = truth_of("summary-by-campaign", sim.truth("all"), wanted)
    assert_same(output(tmp_path, "summary-by-campaign"), truth)
    assert summary.status == "complete"
    assert summary.retries > 0
    assert summary.throttles > 0
    assert summary.contacts_done == len(wanted)


async def test_summary_iterator_and_auto_strategy(sim: Simulator) -> None:
    plans: list[bo.Plan] = []
    async with client(sim, on_plan=plans.append) as c:
        records = [r async for r in c.records(ids(1, 40), report="summary")]
        stream = c.records(ids(1, 40), report="summary-by-campaign", strategy="auto")
        by_campaign = [r async for r in stream]
    activity = sim.truth("all")
    assert_same(records, contact_summaries(activity, ids(1, 40)))
    assert_same(by_campaign, summaries_by_campaign(activity, ids(1, 40)))
    assert stream.plan is not None
    assert (stream.plan.path, stream.plan.spent) == ("contact", 0)  # no campaign list asked
    paths = [r.path for r in sim.request_log]
    assert len(paths) == 80
    assert not any(p.startswith("/v2/emailmarketing") for p in paths)


async def test_summary_incremental_takes_a_new_snapshot(sim: Simulator, tmp_path: Path) -> None:
    wanted = ids(1, 30)
    async with client(sim) as c:
        first = await c.export(wanted, tmp_path, report="summary")
        again = await c.export(wanted, tmp_path, report="summary")  # complete: no request
        assert again.requests == 0
        sim.add_activity("3", "opens", 4)
        second = await c.export(wanted, tmp_path, report="summary", incremental=True)
    assert first.run is not None
    assert second.run == first.run + 1
    new = [json.loads(x) for name in second.files for x in (tmp_path / name).read_bytes().split()]
    assert_same(new, contact_summaries(sim.truth("all"), wanted))
    assert new[[r["contact_id"] for r in new].index("3")]["opens"] >= 4


async def test_refused_combinations(sim: Simulator, tmp_path: Path) -> None:
    async with client(sim) as c:
        with pytest.raises(bo.ConfigurationError, match="does not apply to the summary"):
            c.records(["1"], report="summary", strategy="campaign")
        with pytest.raises(bo.ConfigurationError, match="does not apply"):
            await c.export(["1"], tmp_path, report="summary-by-campaign", strategy="campaign")
        with pytest.raises(bo.ConfigurationError, match="contacts only"):
            c.campaign_records(bo.SENT, report="summary-by-campaign")  # type: ignore[call-overload]
        with pytest.raises(bo.ConfigurationError, match="no date filter"):
            c.records(["1"], report="summary", since="2025-01-01")
    assert sim.request_log == []


# -- campaign summaries ---------------------------------------------------------------------


async def test_campaign_summaries_equal_the_truth(sim: Simulator, tmp_path: Path) -> None:
    async with client(sim) as c:
        sent = await c.sent_campaigns()
        summary = await c.export_campaigns([*sent, "999"], tmp_path, report="summary")
    # each campaign's summary counts distinct contacts over the whole account
    assert_same(output(tmp_path, "summary"), campaign_summaries(sim.truth("all"), sent))
    assert len(sent) == 5
    assert (summary.status, summary.contacts_done, summary.contacts_failed) == ("complete", 5, 1)
    assert [(e["campaign_id"], e["status"]) for e in errors(tmp_path)] == [("999", 404)]


# -- numeric ids in campaign-tracking answers ---------------------------------------------


async def test_numeric_ids_are_written_as_strings_on_every_path(tmp_path: Path) -> None:
    config = sim_config(numeric_campaign_ids=True, numeric_contact_ids=True)
    wanted = ids(1, 120)[::3]
    async with Simulator(config) as sim:
        async with client(sim, page_size=37) as c:
            sent = await c.sent_campaigns()
            async with aiohttp.ClientSession() as http:  # the simulator does send numbers
                url = f"{sim.url}/v2/emailmarketing/campaigns/{sent[0]}/tracking/opens"
                params = {"api_key": KEY}
                headers = {"Authorization": f"Bearer {TOKEN}"}
                async with http.get(url, params=params, headers=headers) as answer:
                    raw = (await answer.json())["results"][0]
            assert isinstance(raw["campaign_id"], int)
            assert isinstance(raw["contact_id"], int)
            for strategy in ("contact", "campaign"):
                await c.export(wanted, tmp_path / strategy, strategy=strategy)
            await c.export_campaigns(bo.SENT, tmp_path / "mode")
        truth = sim.truth("opens")
    by_contact = output(tmp_path / "contact", "opens")
    by_campaign = output(tmp_path / "campaign", "opens")
    keep = set(wanted)
    assert_same(by_campaign, [r for r in truth if r["contact_id"] in keep])
    # byte for byte the same lines, whichever endpoint they came from
    assert sorted(read_lines(tmp_path / "contact", "opens")) == sorted(
        read_lines(tmp_path / "campaign", "opens")
    )
    assert_same(by_contact, by_campaign)
    assert_same(output(tmp_path / "mode", "opens"), truth)


def test_stringify_ids_and_owner() -> None:
    records: list[dict[str, Any]] = [
        {"campaign_id": 1100394165287, "contact_id": "36", "x": 1},
        {"campaign_id": "1100394165288", "contact_id": 37, "flag": True},
        {"opens": 2},
    ]
    assert stringify_ids(records) == [
        {"campaign_id": "1100394165287", "contact_id": "36", "x": 1},
        {"campaign_id": "1100394165288", "contact_id": "37", "flag": True},
        {"opens": 2},
    ]
    assert list(records[0]) == ["campaign_id", "contact_id", "x"]  # the same position
    k7 = [{"sends": 1, "campaign_id": 12}]
    assert owned(k7, "campaign", "12") == [{"sends": 1, "campaign_id": "12"}]
    assert owned([{"sends": 1}], "campaign", "12") == [{"sends": 1, "campaign_id": "12"}]


# -- the command line: usage errors, kill -9 and resume -------------------------------------


@pytest.fixture(scope="module")
def proc_sim() -> Iterator[SimProcess]:
    with simulator("--contacts", "400", "--campaigns", "6", "--heavy-fraction", "0.01",
                   "--seed", "21", "--rate", "0", "--daily-quota", "0",
                   "--latency-ms", "3") as sim:  # fmt: skip
        yield sim


@pytest.mark.parametrize(
    ("extra", "says"),
    [
        (["--contacts", "-", "--report", "summary", "--strategy", "campaign"], "--strategy"),
        (["--contacts", "-", "--report", "summary-by-campaign", "--strategy", "campaign"], "strat"),
        (["--campaigns", "sent", "--report", "summary-by-campaign"], "contacts only"),
        (["--contacts", "-", "--report", "summary", "--since", "2025-01-01"], "--since"),
        (["--campaigns", "sent", "--report", "summary", "--since", "2025-01-01"], "--since"),
    ],
    ids=["summary-by-campaign-path", "c9-by-campaign-path", "c9-for-campaigns", "since", "k7"],
)
def test_cli_usage_errors(
    proc_sim: SimProcess, tmp_path: Path, extra: list[str], says: str
) -> None:
    proc_sim.reset_stats()
    out = tmp_path / "out"
    result = bulkopens("fetch", "--out", str(out), *extra, env=proc_sim.env(), stdin="1\n")
    assert result.returncode == 2, result.stderr
    (line,) = result.stderr.splitlines()
    assert line.startswith("bulkopens: error:")
    assert says in line
    assert "summary" in line
    assert proc_sim.stats()["requests"] == 0
    assert not out.exists()


@pytest.mark.slow
@pytest.mark.timeout(60)
@pytest.mark.parametrize("report", ["summary", "summary-by-campaign"])
def test_sigkill_then_resume_writes_every_summary_line_once(
    tmp_path: Path, proc_sim: SimProcess, report: str
) -> None:
    rng = random.Random(5)
    wanted = ids(1, 300)
    contacts = tmp_path / "ids.txt"
    contacts.write_text("\n".join([*wanted, "401", "junk"]) + "\n")
    out = tmp_path / "out"
    args = ["fetch", "--contacts", str(contacts), "--out", str(out), "--report", report,
            "--quiet", "--rate", "250"]  # fmt: skip
    kills = sum(
        kill_once_it_writes(args, proc_sim, rng, tmp_path / f"stderr-{attempt}.txt")
        for attempt in range(2)
    )
    final = bulkopens(*args, env=proc_sim.env(), timeout=60)
    assert final.returncode == 1, final.stderr  # the 404 and the junk line
    truth = truth_of(report, proc_sim.truth("all"), wanted)
    assert_same(output(out, report), truth)
    assert sorted((e["contact_id"], e["status"]) for e in errors(out)) == [
        ("401", 404),
        ("junk", None),
    ]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "complete"
    assert summary["totals"]["done"] == 300
    (run,) = json.loads((out / "manifest.json").read_text())["runs"]
    assert run["records"] == len(truth)
    # the kills landed mid-run, and the last attempt kept what the killed ones committed
    assert kills == 2
    assert run["attempts"] == 3
    assert summary["records"] < run["records"]
    for path in out.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            assert PROC_KEY.encode() not in data
            assert PROC_TOKEN.encode() not in data
