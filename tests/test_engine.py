"""The engine against the simulator over real loopback: one test per row of the answer table."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections import Counter
from collections.abc import Mapping, Sequence
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import aiohttp
import anyio
import pytest
from simkit import unlimited_config, unpaced_client

import bulkopens
from bulkopens._wire import HttpPool
from bulkopens.simulator import SimConfig, Simulator

KEY, TOKEN = "engine-key-5f3a", "engine-token-9c2e"


def sim_config(**kw: Any) -> SimConfig:
    defaults: dict[str, Any] = {
        "seed": 3,
        "contacts": 60,
        "heavy_fraction": 0.05,
    }
    return unlimited_config(KEY, TOKEN, **(defaults | kw))


SIM_CONFIG = sim_config()  # the sim fixture's (conftest.py), with each test's mark.sim fields


def client(sim: Simulator, **kw: Any) -> bulkopens.Client:
    return unpaced_client(sim, kw.pop("api_key", KEY), kw.pop("token", TOKEN), **kw)


def ids(n: int) -> list[str]:
    return [str(i) for i in range(1, n + 1)]


def output(out: Path, report: str = "opens") -> list[dict[str, Any]]:
    records = []
    for path in sorted(out.glob(f"{report}-*.ndjson")):
        records += [json.loads(line) for line in path.read_bytes().splitlines()]
    return records


def key(record: Mapping[str, Any]) -> str:
    return json.dumps(record, sort_keys=True)


def same_records(a: Sequence[Mapping[str, Any]], b: Sequence[Mapping[str, Any]]) -> bool:
    return Counter(map(key, a)) == Counter(map(key, b))


def max_in_window(times: list[float], window: float = 1.0) -> int:
    times = sorted(times)
    best, j = 0, 0
    for i, t in enumerate(times):
        while times[j] <= t - window:
            j += 1
        best = max(best, i - j + 1)
    return best


# -- 200: pages are walked and every record is written exactly once ----------------------------


async def test_export_writes_the_ground_truth_exactly(sim: Simulator, tmp_path: Path) -> None:
    async with client(sim, page_size=37) as c:
        summary = await c.export(ids(60), tmp_path)
    truth = sim.truth("opens", ids(60))
    assert any(sum(1 for r in truth if r["contact_id"] == i) > 37 for i in ids(60))  # multi-page
    assert same_records(output(tmp_path), truth)
    assert summary.status == "complete"
    assert summary.records == len(truth)
    assert summary.contacts_done == 60
    assert summary.throttles == summary.retries == 0
    paths = {r.path for r in sim.request_log}
    assert all(p.startswith("/v2/contacts/") for p in paths)


async def test_iterator_yields_the_ground_truth(sim: Simulator) -> None:
    async with client(sim) as c:
        stream = c.records([*ids(30), "7", "abc", "999999"])
        records = [r async for r in stream]
    assert same_records(records, sim.truth("opens", ids(30)))
    assert sorted(f.id for f in stream.failures) == ["999999", "abc"]
    assert stream.summary is not None
    assert stream.summary.contacts_invalid == 1
    assert stream.summary.duplicates == 1


async def test_since_is_sent_and_inclusive(sim: Simulator, tmp_path: Path) -> None:
    truth = sim.truth("opens", ids(60))
    stamps = sorted(r["open_date"] for r in truth)
    since = stamps[len(stamps) // 2]
    async with client(sim) as c:
        await c.export(ids(60), tmp_path, since=since)
    assert same_records(output(tmp_path), sim.truth("opens", ids(60), since=since))


@pytest.mark.parametrize("report", ["clicks", "all"])
async def test_other_reports(sim: Simulator, tmp_path: Path, report: bulkopens.ReportName) -> None:
    async with client(sim) as c:
        await c.export(ids(20), tmp_path, report=report)
    assert same_records(output(tmp_path, report), sim.truth(report, ids(20)))


# -- 5xx, resets, timeouts, truncated bodies: retried -----------------------------------------


@pytest.mark.sim(error_rate=0.15, reset_rate=0.05, truncate_rate=0.05)
async def test_faults_are_retried_and_nothing_is_lost(sim: Simulator, tmp_path: Path) -> None:
    async with client(sim, page_size=50) as c:
        summary = await c.export(ids(60), tmp_path)
    assert same_records(output(tmp_path), sim.truth("opens", ids(60)))
    assert summary.retries > 0
    counts = sim.status_counts()
    assert counts.get(0, 0) > 0  # resets happened
    assert sum(n for s, n in counts.items() if s >= 500) > 0


@pytest.mark.sim(slow_rate=0.05, slow_seconds=3)
async def test_slow_answers_time_out_and_are_retried(sim: Simulator, tmp_path: Path) -> None:
    async with client(sim, read_timeout=0.3) as c:
        summary = await c.export(ids(60), tmp_path)
    assert same_records(output(tmp_path), sim.truth("opens", ids(60)))
    assert summary.retries > 0


@pytest.mark.sim(error_rate=1.0)
async def test_retries_run_out_and_the_contact_fails_as_retryable(
    sim: Simulator, tmp_path: Path
) -> None:
    async with client(sim, max_retries=1) as c:
        summary = await c.export(ids(3), tmp_path)
    assert summary.status == "incomplete"
    errors = [json.loads(x) for x in (tmp_path / "errors.ndjson").read_text().splitlines()]
    assert [e["retryable"] for e in errors] == [True, True, True]
    assert summary.requests == 6


# -- throttles: the whole pool pauses; retries are not used up ---------------------------------


@pytest.mark.parametrize("style", ["429", "403"])
async def test_throttles_pause_the_whole_pool(tmp_path: Path, style: str) -> None:
    config = sim_config(rate_per_second=10, limit_style=style, contacts=40, heavy_fraction=0)
    async with Simulator(config) as sim:
        async with client(sim, rate=30, concurrency=6, max_retries=0) as c:
            summary = await c.export(ids(40), tmp_path)
        log = sim.request_log
    assert same_records(output(tmp_path), sim.truth("opens", ids(40)))
    rejected = [r.t for r in log if r.status == int(style)]
    assert rejected
    assert summary.throttles == len(rejected)
    first = rejected[0]
    during_pause = [r for r in log if first + 0.2 < r.t < first + 0.9]
    assert during_pause == []  # no worker sent anything while the pool was paused


async def test_no_one_second_window_exceeds_the_rate(tmp_path: Path) -> None:
    config = sim_config(rate_per_second=20, contacts=70, heavy_fraction=0, jitter_ms=3)
    async with Simulator(config) as sim:
        async with client(sim, rate=20, concurrency=8) as c:
            summary = await c.export(ids(70), tmp_path)
        times = [r.t for r in sim.request_log]
    assert summary.throttles == 0
    assert len(times) == 70
    assert max_in_window(times) <= 20


# -- quota: stop cleanly, resumable, say when it resets -----------------------------------------


@pytest.mark.parametrize("style", ["429", "403"])
async def test_quota_stops_the_run_and_it_resumes(tmp_path: Path, style: str) -> None:
    day = [date(2026, 1, 1)]
    config = sim_config(daily_quota=40, limit_style=style)  # ~70 requests in all: two days
    async with Simulator(config, today=lambda: day[0]) as sim:
        async with client(sim, concurrency=4) as c:
            with pytest.raises(bulkopens.QuotaExhausted) as info:
                await c.export(ids(60), tmp_path)
        over = [r for r in sim.request_log if r.status == int(style)]
        assert info.value.resets_at > datetime.now(UTC)
        assert info.value.resets_at.hour == 0
        assert len(over) <= 4  # every worker stops at once
        summary = info.value.summary
        assert summary is not None
        assert summary.status == "quota_exhausted"
        saved = json.loads((tmp_path / "summary.json").read_text())
        assert saved["quota_resets_at"].endswith("T00:00:00Z")

        day[0] = date(2026, 1, 2)  # a new UTC day: a new quota
        async with client(sim) as c:
            await c.export(ids(60), tmp_path)
        assert same_records(output(tmp_path), sim.truth("opens", ids(60)))


# -- auth: stop at once ------------------------------------------------------------------------


@pytest.mark.parametrize("bad", ["api_key", "token"])
async def test_bad_credentials_stop_all_workers_promptly(
    sim: Simulator, tmp_path: Path, bad: str
) -> None:
    wrong = {bad: "wrong-credential-123"}
    async with client(sim, concurrency=8, **wrong) as c:
        with pytest.raises(bulkopens.AuthenticationError) as info:
            await c.export(ids(60), tmp_path)
    assert len(sim.request_log) <= 8
    assert "wrong-credential-123" not in str(info.value)
    assert info.value.summary is not None
    assert info.value.summary.status == "auth_failed"


# -- 404: this contact fails for good; the run goes on -----------------------------------------


async def test_unknown_contacts_fail_and_the_run_goes_on(sim: Simulator, tmp_path: Path) -> None:
    async with client(sim) as c:
        summary = await c.export([*ids(10), "5000", "6000", "x1"], tmp_path)
    assert summary.contacts_done == 10
    assert summary.contacts_failed == 2
    errors = [json.loads(x) for x in (tmp_path / "errors.ndjson").read_text().splitlines()]
    assert [(e["contact_id"], e["status"], e["retryable"]) for e in errors] == [
        ("5000", 404, False),
        ("6000", 404, False),
        ("x1", None, False),
    ]
    assert not any("x1" in r.path for r in sim.request_log)


# -- 400: a refused cursor restarts the contact; a refused first page stops the run ------------


async def test_a_refused_cursor_restarts_the_contact_without_duplicates(
    sim: Simulator, tmp_path: Path
) -> None:
    heavy = max(ids(60), key=lambda i: len(sim.truth("opens", [i])))
    async with client(sim, page_size=100) as c:
        await c.export([heavy], tmp_path)
    # Pretend the run stopped half-way and the API has since forgotten the cursor.
    db = sqlite3.connect(tmp_path / ".bulkopens" / "state.sqlite3")
    db.execute("UPDATE contacts SET status = 0, cursor = ?", (f"{heavy_path(heavy)}?next=bogus!",))
    db.commit()
    db.close()
    sim.add_activity(heavy, "opens", 2)  # and new activity arrived meanwhile
    sim.reset_stats()
    async with client(sim, page_size=100) as c:
        summary = await c.export([heavy], tmp_path)
    assert sim.status_counts()[400] == 1
    assert summary.records == 2  # only the new ones: the rest were already written
    assert same_records(output(tmp_path), sim.truth("opens", [heavy]))


def heavy_path(contact_id: str) -> str:
    return f"/v2/contacts/{contact_id}/tracking/opens"


# -- the library's promises ---------------------------------------------------------------------


async def test_cancellation_commits_and_leaves_nothing_behind(
    sim: Simulator, tmp_path: Path
) -> None:
    wires: list[HttpPool] = []
    before = asyncio.all_tasks()

    async def run() -> None:
        async with client(sim, page_size=5, rate=200, concurrency=4) as c:
            assert isinstance(c._wire, HttpPool)
            wires.append(c._wire)
            await c.export(ids(60), tmp_path)

    with anyio.move_on_after(0.4):
        await run()
    await asyncio.sleep(0)
    # The in-process simulator's handlers of the closed connections end on their own turn.
    left = {t for t in asyncio.all_tasks() - before if "RequestHandler" not in repr(t.get_coro())}
    assert left == set()
    assert wires[0].closed
    for path in tmp_path.glob("opens-*.ndjson"):
        assert path.read_bytes().endswith(b"\n")
    saved = json.loads((tmp_path / "summary.json").read_text())
    assert saved["status"] == "interrupted"
    committed = output(tmp_path)
    assert committed
    assert len({key(r) for r in committed}) == len(committed)

    async with client(sim) as c:  # and it resumes to the exact truth
        await c.export(ids(60), tmp_path)
    assert same_records(output(tmp_path), sim.truth("opens", ids(60)))


async def test_a_slow_consumer_slows_the_fetching(sim: Simulator) -> None:
    async with client(sim, page_size=5, concurrency=2) as c:
        stream = c.records(ids(60), buffer=5)
        got = []
        async for record in stream:
            got.append(record)
            if len(got) == 1:
                await anyio.sleep(0.5)
                paused_requests = len(sim.request_log)
        total_requests = len(sim.request_log)
    assert paused_requests < total_requests / 2


async def test_leaving_the_stream_early_stops_it(sim: Simulator) -> None:
    async with client(sim, page_size=5) as c:
        async with c.records(ids(60)) as stream:
            async for _ in stream:
                break
        await anyio.sleep(0.2)
        settled = len(sim.request_log)
        await anyio.sleep(0.3)
        assert len(sim.request_log) == settled


async def test_the_callers_session_is_used_and_not_closed(sim: Simulator) -> None:
    async with aiohttp.ClientSession() as session:
        async with client(sim, session=session) as c:
            records = [r async for r in c.records(ids(5))]
        assert not session.closed
    assert same_records(records, sim.truth("opens", ids(5)))


async def test_two_clients_with_different_keys_side_by_side(tmp_path: Path) -> None:
    config = sim_config(api_keys=("key-one-111", "key-two-222"), rate_per_second=0)
    async with Simulator(config) as sim:
        async with client(sim, api_key="key-one-111") as a, client(sim, api_key="key-two-222") as b:
            ra, rb = await asyncio.gather(
                a.export(ids(30), tmp_path / "a"), b.export(ids(30), tmp_path / "b")
            )
        assert ra.records == rb.records
        assert {r.api_key for r in sim.request_log} == {"key-one-111", "key-two-222"}


async def test_progress_hook_sees_the_run(sim: Simulator, tmp_path: Path) -> None:
    seen: list[bulkopens.Progress] = []
    async with client(sim, on_progress=seen.append) as c:
        await c.export(ids(20), tmp_path, contacts_total=20)
    assert seen[-1].finished
    assert seen[-1].contacts_done == 20
    assert seen[-1].contacts_total == 20
