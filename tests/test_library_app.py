"""The library in a long-lived asyncio app (issue 12): one client shared by many calls, streams
that are dropped, fixtures and web apps that open and close it in different tasks, the errors,
types, logs and metrics an app relies on. Counted at the server, never by the test's clock."""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import anyio
import pytest
from aiohttp import web
from hostile import Hostile, HostileProcess, max_window

import bulkopens

KEY, TOKEN = "app-key-0123456789", "app-token-0123456789"
CLIENT = web.AppKey("client", bulkopens.Client)
TESTS = Path(__file__).parent


def fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def temp_dirs() -> set[Path]:
    return set(Path(tempfile.gettempdir()).glob("bulkopens-*"))


async def steady(server: Hostile, quiet: float = 0.3, limit: float = 10.0) -> int:
    """The server's request count once it has not moved for ``quiet`` seconds."""
    with anyio.fail_after(limit):
        while True:
            before = len(server.requests)
            await anyio.sleep(quiet)
            if len(server.requests) == before:
                return before


# -- one client, one rate ------------------------------------------------------------------------


async def test_one_client_keeps_one_rate_however_slow_the_answers() -> None:
    """20 concurrent streams on one Client(rate=4), answers taking 3 ± 2.5 s, a server that
    throttles the 5th start in any second: no throttle, never 5 starts in a second, >= 3.5/s."""
    state = {"limit": 4, "latency": [0.5, 5.5], "seed": 12}
    with HostileProcess("slow-limited", state) as server:
        async with bulkopens.Client(KEY, TOKEN, base_url=server.url, rate=4) as client:

            async def drain(i: int) -> None:
                async with client.records(range(i * 1000 + 1, i * 1000 + 400)) as stream:
                    async for _ in stream:
                        pass

            async with anyio.create_task_group() as tg:
                for i in range(20):
                    tg.start_soon(drain, i)
                await anyio.sleep(12)
                tg.cancel_scope.cancel()
    arrivals = sorted(server.arrivals)
    assert server.state.get("throttled", 0) == 0
    assert max_window(arrivals) <= 4
    assert (len(arrivals) - 1) / (arrivals[-1] - arrivals[0]) >= 3.5


async def test_a_callers_session_never_gets_more_requests_than_its_connections() -> None:
    with Hostile("slow-limited") as server:
        server.state.update(limit=1000, latency=(0.3, 0.3))
        connector = aiohttp.TCPConnector(limit=3)
        async with (
            aiohttp.ClientSession(connector=connector) as session,
            bulkopens.Client(KEY, TOKEN, base_url=server.url, rate=0, session=session) as client,
        ):
            assert "concurrency=3" in repr(client)
            records = [r async for r in client.records(range(1, 10))]
    assert len(records) == 27


# -- dropped streams stop ----------------------------------------------------------------------


async def test_twenty_abandoned_streams_stop_fetching_and_leave_nothing_behind() -> None:
    with Hostile("endless") as server:
        server.state["latency"] = 0.01
        tasks, descriptors, dirs = len(asyncio.all_tasks()), fds(), temp_dirs()
        async with bulkopens.Client(KEY, TOKEN, base_url=server.url, rate=100) as client:
            for i in range(20):
                async for _ in client.records([str(1000 + i)]):
                    break  # the README's old first example: the stream is dropped unclosed
            gc.collect()
            settled = await steady(server)
            assert len(asyncio.all_tasks()) == tasks
            await anyio.sleep(1.0)
            assert len(server.requests) == settled  # nobody fetches for them any more
            assert settled <= 40  # each: the page read, and at most one more
            assert "streams=0" in repr(client)
            assert temp_dirs() == dirs  # an iterator keeps its bookkeeping in memory
        await anyio.sleep(0.1)
        assert fds() <= descriptors + 2  # the server's side of a closing connection, at most


async def test_closing_a_stream_early_stops_it_at_once() -> None:
    with Hostile("endless") as server:
        async with bulkopens.Client(KEY, TOKEN, base_url=server.url, rate=0) as client:
            async with client.records(["1000"]) as stream:
                async for _ in stream:
                    break
            settled = await steady(server)  # a request already sent may land just after
            await anyio.sleep(0.5)
            assert len(server.requests) == settled
            assert stream.summary is not None
            assert stream.summary.status == "interrupted"


@pytest.mark.parametrize(("page_size", "buffer", "ahead"), [(10, 100, 10), (500, None, 10)])
async def test_buffer_bounds_the_read_ahead_of_a_stalled_reader(
    page_size: int, buffer: int | None, ahead: int
) -> None:
    """One record read, then nothing: the stream fetches ``buffer // page_size`` pages beyond
    the page being read, and stops there (the defaults: 5000 // 500)."""
    with Hostile("endless") as server:
        client = bulkopens.Client(KEY, TOKEN, base_url=server.url, rate=0, page_size=page_size)
        async with client:
            kw: dict[str, Any] = {} if buffer is None else {"buffer": buffer}
            async with client.records(["1000"], **kw) as stream:
                async for _ in stream:
                    break
                assert await steady(server) == 1 + ahead


# -- lifecycle ---------------------------------------------------------------------------------


@pytest.fixture
async def shared_client() -> AsyncIterator[bulkopens.Client]:
    with Hostile("mixed") as server:
        async with bulkopens.Client(KEY, TOKEN, base_url=server.url, rate=0) as client:
            yield client


async def test_a_fixture_client_serves_the_test(shared_client: bulkopens.Client) -> None:
    records = [r async for r in shared_client.records(["1", "2"])]
    assert len(records) == 6


async def test_a_client_entered_in_one_task_is_closed_in_another() -> None:
    with Hostile("mixed") as server:
        client = bulkopens.Client(KEY, TOKEN, base_url=server.url, rate=0)
        started = anyio.Event()

        async def enter_and_leave_a_stream_running() -> None:
            await client.__aenter__()
            stream = client.records(["1000"])
            await anext(stream)
            started.set()
            await anyio.sleep(60)  # cancelled below, stream still open

        async with anyio.create_task_group() as tg:
            tg.start_soon(enter_and_leave_a_stream_running)
            await started.wait()
            await asyncio.create_task(client.__aexit__(None, None, None))
            tg.cancel_scope.cancel()
        settled = await steady(server)
        await anyio.sleep(0.3)
        assert len(server.requests) == settled
        assert "closed" in repr(client)
        with pytest.raises(RuntimeError, match="closed"):
            await client.plan(["1"])


async def test_aclose_without_async_with() -> None:
    with Hostile("mixed") as server:
        client = bulkopens.Client(KEY, TOKEN, base_url=server.url, rate=0)
        assert [r["contact_id"] async for r in client.records([5])] == ["5"] * 3
        await client.aclose()
        await client.aclose()


async def test_a_web_app_streams_to_twenty_callers_from_one_client() -> None:
    """An aiohttp app: the client made and closed by cleanup_ctx (in other tasks than the
    requests), 20 concurrent callers, five of whom hang up in the middle of an endless stream."""
    with Hostile("mixed") as api:

        async def client_ctx(app: web.Application) -> AsyncIterator[None]:
            async with bulkopens.Client(KEY, TOKEN, base_url=api.url, rate=200) as client:
                app[CLIENT] = client
                yield

        async def opens(request: web.Request) -> web.StreamResponse:
            client = request.app[CLIENT]
            response = web.StreamResponse()
            await response.prepare(request)
            async with client.records([request.match_info["id"]]) as stream:
                async for record in stream:
                    await response.write(f"{record['open_date']}\n".encode())
            await response.write_eof()
            return response

        app = web.Application()
        app.cleanup_ctx.append(client_ctx)
        app.router.add_get("/opens/{id}", opens)
        runner = web.AppRunner(app, handler_cancellation=True)
        await asyncio.create_task(runner.setup())  # the client is entered in this task
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        tasks = len(asyncio.all_tasks())

        async def caller(i: int, session: aiohttp.ClientSession) -> int:
            heavy = i % 4 == 0
            url = f"http://127.0.0.1:{port}/opens/{1000 + i if heavy else i + 1}"
            async with session.get(url) as response:
                if heavy:  # read a little, then hang up
                    await response.content.readexactly(10)
                    response.close()
                    return 0
                return len((await response.read()).splitlines())

        async with aiohttp.ClientSession() as session:
            lines = await asyncio.gather(*(caller(i, session) for i in range(20)))
        assert sorted(lines)[5:] == [3] * 15
        settled = len(api.requests)
        await anyio.sleep(1.0)
        assert len(api.requests) - settled <= 5  # at most the pages in flight at the hang-ups
        await anyio.sleep(0.5)
        final = len(api.requests)
        await anyio.sleep(0.5)
        assert len(api.requests) == final
        assert len(asyncio.all_tasks()) <= tasks
        await asyncio.create_task(runner.cleanup())  # ... and closed in another


# -- ids, errors, hooks ------------------------------------------------------------------------


async def test_ids_ints_junk_and_a_bare_string() -> None:
    with Hostile("mixed") as server:
        async with bulkopens.Client(KEY, TOKEN, base_url=server.url, rate=0) as client:
            for bare in ("123", b"123"):
                with pytest.raises(TypeError, match="not a single"):
                    client.records(bare)
            with pytest.raises(TypeError, match="iterable"):
                client.records(123)  # type: ignore[call-overload]
            stream = client.records([1, 2, "3", "abc", 2.5, None, True, -4, 950])  # type: ignore[list-item]
            records = [r async for r in stream]
            assert sorted({r["contact_id"] for r in records}) == ["1", "2", "3"]
            failures = {f.id: f for f in stream.failures}
            assert set(failures) == {"abc", "2.5", "None", "True", "-4", "950"}
            assert isinstance(failures["abc"].error, bulkopens.InvalidContactId)
            assert isinstance(failures["950"].error, bulkopens.ContactNotFound)
            assert not failures["950"].retryable
            assert stream.summary is not None
            assert stream.summary.status == "incomplete"
            assert "incomplete" in repr(stream)


async def test_since_takes_an_aware_datetime_and_refuses_a_naive_one() -> None:
    with Hostile("mixed") as server:
        async with bulkopens.Client(KEY, TOKEN, base_url=server.url, rate=0) as client:
            since = datetime(2024, 1, 31, 8, tzinfo=UTC)
            assert len([r async for r in client.records(["1"], since=since)]) == 3
            assert "created_since=2024-01-31T08:00:00.000Z" in server.requests[-1].path_qs
            with pytest.raises(bulkopens.ConfigurationError, match="timezone-aware"):
                client.records(["1"], since=datetime(2024, 1, 31))


async def test_the_callers_own_errors_come_back_as_themselves(tmp_path: Path) -> None:
    async def ids() -> AsyncIterator[str]:
        yield "1"
        raise ConnectionError("the database went away")

    def progress(_: bulkopens.Progress) -> None:
        raise LookupError("a bug in the hook")

    with Hostile("mixed") as server:
        async with bulkopens.Client(KEY, TOKEN, base_url=server.url, rate=0) as client:
            with pytest.raises(ConnectionError, match="went away"):
                async for _ in client.records(ids()):
                    pass
            with pytest.raises(ConnectionError, match="went away"):
                await client.export(ids(), tmp_path / "a")
        client = bulkopens.Client(KEY, TOKEN, base_url=server.url, rate=0, on_progress=progress)
        async with client:
            with pytest.raises(LookupError, match="hook"):
                await client.export(["1", "2"], tmp_path / "b")


async def test_progress_for_a_stream_knows_the_total() -> None:
    seen: list[bulkopens.Progress] = []
    with Hostile("mixed") as server:
        client = bulkopens.Client(KEY, TOKEN, base_url=server.url, rate=0, on_progress=seen.append)
        async with client:
            assert len([r async for r in client.records(["1", "2", "3", "3"])]) == 9
    assert seen
    assert seen[-1].finished
    assert seen[-1].contacts_total == 4
    assert seen[-1].contacts_done == 3


async def test_logs_and_request_metrics_carry_no_secret(caplog: pytest.LogCaptureFixture) -> None:
    metrics: list[bulkopens.RequestMetrics] = []
    caplog.set_level(logging.DEBUG, logger=bulkopens.LOGGER_NAME)
    with Hostile("slow-limited") as server:
        server.state.update(limit=1, latency=(0, 0))
        client = bulkopens.Client(
            KEY, TOKEN, base_url=server.url, rate=0, on_request=metrics.append
        )
        async with client:
            assert len([r async for r in client.records(["1", "2", "3"])]) == 9
        assert "app-key" not in repr(client)
        assert "app-token" not in repr(client)
    throttles = [m for m in metrics if m.status == 429]
    assert throttles
    assert all(m.error == "ThrottledError" for m in throttles)
    assert sum(m.status == 200 for m in metrics) == 3
    assert all("?" not in m.path and KEY not in m.path for m in metrics)
    assert all(m.seconds >= 0 and m.waited >= 0 for m in metrics)
    names = {r.name for r in caplog.records}
    assert {"bulkopens.ratelimit", "bulkopens.http", "bulkopens.run"} <= names
    assert any(r.levelno == logging.WARNING for r in caplog.records if "throttled" in r.message)
    assert not [r for r in caplog.records if KEY in r.getMessage() or TOKEN in r.getMessage()]


def test_public_classes_say_bulkopens() -> None:
    assert repr(bulkopens.QuotaExhausted) == "<class 'bulkopens.QuotaExhausted'>"
    assert bulkopens.Client.__module__ == "bulkopens"
    assert bulkopens.Failure.__module__ == "bulkopens"


# -- types -------------------------------------------------------------------------------------


def test_a_typed_app_passes_mypy_strict_and_its_misuses_do_not(tmp_path: Path) -> None:
    """mypy --strict, run as a user would (outside this repository, on the installed package),
    accepts the typed example app and finds each marked mistake in the misuse file."""
    example = TESTS / "typed_app"
    for name in ("app.py", "misuse.py"):
        (tmp_path / name).write_text((example / name).read_text())
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-error-summary", "app.py", "misuse.py"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=110,
        env={k: v for k, v in os.environ.items() if k != "MYPYPATH"},
    )
    errors = [line for line in result.stdout.splitlines() if ": error:" in line]
    assert not [e for e in errors if e.startswith("app.py")], result.stdout
    marked = [
        i
        for i, line in enumerate((example / "misuse.py").read_text().splitlines(), 1)
        if line.rstrip().endswith("# error")
    ]
    found = sorted({int(e.split(":")[1]) for e in errors if e.startswith("misuse.py")})
    assert found == marked, result.stdout
