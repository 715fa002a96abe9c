"""A server that floods, drips, throttles, fails, is not there or is not the API at all.

Each case ends with a bounded outcome: memory (the peak RSS of the real command, read with
``os.wait4``), time and requests (counted by the server, or in summary.json when nothing
listens) stay under stated bounds; a dead host or a wrong server stops the run with exit 69
and every contact still pending or retryable; terminal controls in what the server says never
reach the terminal. The real command runs against tests/hostile.py's modes.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from hostile import INJECTION, MODES, Hostile
from test_retry import RecordingPacer
from yarl import URL

import bulkopens
from bulkopens._aiowire import SessionWire
from bulkopens._http import MAX_RETRY_AFTER, Transport, retry_after_seconds
from bulkopens._redact import Redactor, printable
from bulkopens._retry import PageFetcher, RetryPolicy
from bulkopens._stats import Stats

KEY, TOKEN = "hostile-key-0d7e41", "hostile-token-6a93fc"
MiB = 1024 * 1024
# The peak RSS of a fetch of 8 contacts at --concurrency 8 with the default --max-page-bytes
# (8 MiB): about 50 MiB of interpreter and libraries, plus at most the cap per request in
# flight (twice, while the chunks are joined). Measured: 52 MiB against the 600 MB body, 116
# MiB against the gzip bombs; before the cap, 1.25 GB and 2.8 GB.
RSS_BOUND = 256 * MiB
STOP_SECONDS = 30  # a dead host or a wrong server stops a run within this (measured: 4 s)
STOP_REQUESTS = 50  # ... after fewer requests than this (measured: 4)
RUN_LIMIT = 90  # any run of the command here: killed past this (pytest's limit is 120 s)


@pytest.fixture
def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def env(base_url: str) -> dict[str, str]:
    out = {k: v for k, v in os.environ.items() if not k.startswith("CTCT_")}
    out.update(CTCT_API_KEY=KEY, CTCT_ACCESS_TOKEN=TOKEN, CTCT_BASE_URL=base_url)
    return out


def reap(proc: subprocess.Popen[bytes], *, deadline: float) -> tuple[int, Any]:
    """Wait for ``proc`` and return its wait status and resource usage (``os.wait4``: this
    child's own peak RSS). Past ``deadline`` it is killed, never left running, and the test
    fails."""
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here, not by Popen
            return status, usage
        if time.monotonic() > deadline:
            proc.kill()
            proc.wait()
            pytest.fail(f"bulkopens fetch still running after {RUN_LIMIT} s: killed")
        time.sleep(0.02)


class Run:
    """One ``bulkopens fetch`` in a subprocess: exit code, stderr, seconds and peak RSS."""

    def __init__(self, base_url: str, tmp: Path, ids: range, *extra: str) -> None:
        contacts = tmp / "contacts.txt"
        contacts.write_text("".join(f"{i}\n" for i in ids))
        self.out = tmp / "out"
        cmd = [
            sys.executable, "-m", "bulkopens", "fetch", "--contacts", str(contacts),
            "--out", str(self.out), *extra,
        ]  # fmt: skip
        started = time.monotonic()
        with open(tmp / "stderr", "w+b") as err:
            proc = subprocess.Popen(
                cmd, env=env(base_url), stdin=subprocess.DEVNULL, stdout=err, stderr=err
            )
            status, usage = reap(proc, deadline=started + RUN_LIMIT)
            err.seek(0)
            self.stderr = err.read().decode("utf-8", "replace")
        self.seconds = time.monotonic() - started
        self.code = os.waitstatus_to_exitcode(status)
        self.peak_rss = usage.ru_maxrss * 1024  # Linux reports KiB

    def errors(self) -> dict[str, dict[str, Any]]:
        path = self.out / "errors.ndjson"
        rows = [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []
        return {row["contact_id"]: row for row in rows}

    def summary(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads((self.out / "summary.json").read_text())
        return data

    def assert_no_secrets(self) -> None:
        files = [p.read_bytes() for p in self.out.rglob("*") if p.is_file()]
        blobs = [self.stderr.encode(), *files]
        for secret in (KEY, TOKEN):
            assert not any(secret.encode() in blob for blob in blobs), secret


def assert_stopped_resumable(run: Run) -> None:
    """Exit 69 with one clear line, and no contact failed for good."""
    assert run.code == 69, run.stderr
    assert "Traceback" not in run.stderr
    assert run.stderr.count("bulkopens: error:") == 1, run.stderr
    assert "run the same command again to resume" in run.stderr
    summary = run.summary()
    assert summary["status"] == "service_unavailable"
    assert summary["totals"]["failed_for_good"] == 0
    assert all(row["retryable"] for row in run.errors().values())
    run.assert_no_secrets()


# -- memory: the body is read in chunks, up to --max-page-bytes, after decompression -------


@pytest.mark.parametrize("mode", ["huge-length", "gzip-bomb"])
def test_a_600_mb_body_or_a_1_gib_gzip_bomb_keeps_memory_bounded(mode: str, tmp_path: Path) -> None:
    # Contact 1 is answered honestly first, so that the breaker lets all 8 workers go: seven
    # 600 MB bodies (or 1 GiB bombs) are then in flight at once.
    with Hostile(mode) as server:
        server.state["honest"] = {"1"}
        run = Run(server.url, tmp_path, range(1, 9), "--rate", "0", "--concurrency", "8", "--quiet")
        requests = server.count()
    assert run.code == 1, run.stderr
    assert run.peak_rss < RSS_BOUND, f"peak RSS {run.peak_rss / MiB:.0f} MiB"
    failed = run.errors()
    assert sorted(failed) == [str(i) for i in range(2, 9)]
    for row in failed.values():
        assert row["error_key"] == "bulkopens.answer_too_large"
        assert row["retryable"]  # the next run tries again ...
    assert requests == 8  # ... but this one does not download it again
    assert "8,388,608 bytes (--max-page-bytes)" in failed["2"]["error"]


def test_an_endless_chunked_body_is_cut_at_the_cap(tmp_path: Path) -> None:
    with Hostile("endless-body") as server:
        server.state["honest"] = {"1"}
        run = Run(
            server.url, tmp_path, range(1, 5), "--rate", "0", "--quiet",
            "--max-page-bytes", str(MiB),
        )  # fmt: skip
    assert run.code == 1, run.stderr
    assert run.seconds < 30
    assert run.peak_rss < RSS_BOUND
    assert {row["error_key"] for row in run.errors().values()} == {"bulkopens.answer_too_large"}
    assert len(run.errors()) == 3


# -- time: a whole-request deadline, and Retry-After at most a minute ------------------------


def test_a_drip_is_cut_at_the_request_deadline(tmp_path: Path) -> None:
    # One byte every half second: never idle long enough for the 60 s read timeout.
    with Hostile("drip") as server:
        run = Run(
            server.url, tmp_path, range(1, 2), "--rate", "0", "--quiet",
            "--request-timeout", "2", "--max-retries", "1",
        )  # fmt: skip
        requests = server.count()
    assert run.code == 1, run.stderr
    assert run.seconds < 30  # two attempts of 2 s and a backoff: about 5 s
    assert requests == 2
    (row,) = run.errors().values()
    assert row["retryable"]
    assert "within 2 s (--request-timeout)" in row["error"]


async def fetch_once(server: Hostile) -> tuple[RecordingPacer, list[float]]:
    """One page through the real transport and retry policy; the pacer's pauses and the
    retry sleeps are recorded, not slept."""
    sleeps: list[float] = []

    async def sleep(seconds: float) -> None:
        sleeps.append(seconds)

    pacer = RecordingPacer()
    async with aiohttp.ClientSession() as session:
        transport = Transport(
            SessionWire(session),
            base=URL(server.url),
            api_key=KEY,
            token=TOKEN,
            redact=Redactor(KEY, TOKEN),
            connect_timeout=2,
            read_timeout=2,
        )
        fetcher = PageFetcher(transport, pacer, RetryPolicy(), Stats(), sleep=sleep)
        page = await fetcher.fetch(URL(server.url) / "v2/contacts/7/tracking/opens")
    assert len(page.results) == 1
    return pacer, sleeps


def http_date(seconds_from_now: float) -> str:
    return format_datetime(datetime.now(UTC) + timedelta(seconds=seconds_from_now), usegmt=True)


@pytest.mark.parametrize(
    ("header", "low", "high"),
    [
        ("999999", 60, 60),  # an hour and more: a minute at most
        ("7", 7, 7),
        ("in 30 s", 25, 31),  # the HTTP-date form
        ("Wed, 21 Oct 2015 07:28:00 GMT", 0, 0),  # a date in the past: no wait
        ("in 86400 s", 60, 60),
    ],
)
async def test_a_throttle_honours_retry_after_up_to_a_minute(
    header: str, low: float, high: float
) -> None:
    if header.startswith("in "):
        header = http_date(float(header.split()[1]))
    with Hostile("retry-after") as server:
        server.state["retry_after"] = header
        pacer, sleeps = await fetch_once(server)
    (pause,) = pacer.pauses
    assert low <= pause <= high
    assert sleeps == []


async def test_a_503_retry_after_of_an_hour_adds_a_minute_at_most() -> None:
    with Hostile("retry-after") as server:
        server.state.update(status=503, retry_after="3600")
        _, sleeps = await fetch_once(server)
    (sleep,) = sleeps
    assert MAX_RETRY_AFTER <= sleep <= MAX_RETRY_AFTER + 1.0  # plus the first backoff


def test_retry_after_forms() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    assert retry_after_seconds("120", now=now) == 60
    assert retry_after_seconds(" 2.5 ", now=now) == 2.5
    assert retry_after_seconds("-3", now=now) == 0
    assert retry_after_seconds("Thu, 01 Jan 2026 00:00:20 GMT", now=now) == 20
    assert retry_after_seconds("Thursday, 01-Jan-26 00:00:20 GMT", now=now) == 20  # RFC 850
    assert retry_after_seconds("Thu Jan  1 00:00:20 2026", now=now) == 20  # asctime
    for junk in (None, "", "soon", "nan", "Thu, 99 Foo 2026"):
        assert retry_after_seconds(junk, now=now) is None


def test_a_server_that_throttles_everything_stops_the_run(tmp_path: Path) -> None:
    with Hostile("throttle-all") as server:
        server.state["retry_after"] = "0"
        run = Run(server.url, tmp_path, range(1, 4), "--rate", "0", "--quiet")
        requests = server.count()
    assert_stopped_resumable(run)
    assert "throttled 100 requests in a row" in run.stderr
    assert requests <= 100 + 16  # the stop, and what the other workers had in flight
    assert run.summary()["totals"]["pending"] == 3


# -- a dead host, a wrong server, a 5xx storm: the breaker stops the run -------------------


def test_a_dead_host_stops_a_10000_contact_run_in_seconds(closed_port: int, tmp_path: Path) -> None:
    run = Run(f"http://127.0.0.1:{closed_port}", tmp_path, range(1, 10_001))
    assert_stopped_resumable(run)
    assert run.seconds < STOP_SECONDS
    assert run.summary()["requests"] < STOP_REQUESTS
    assert f"cannot connect to 127.0.0.1:{closed_port}: connection refused" in run.stderr
    assert "api_key" not in run.stderr
    assert "?" not in run.stderr.split("error:")[1]  # no query string
    # the same command resumes: the contacts are pending, not failed
    totals = run.summary()["totals"]
    assert totals["failed"] == totals["done"] == 0
    assert totals["pending"] > 0


@pytest.mark.parametrize("mode", ["html", "bare-404"])
def test_a_server_that_is_not_the_api_stops_a_10000_contact_run_in_seconds(
    mode: str, tmp_path: Path
) -> None:
    with Hostile(mode) as server:
        run = Run(server.url, tmp_path, range(1, 10_001), "--quiet")
        requests = server.count()
    assert_stopped_resumable(run)
    assert run.seconds < STOP_SECONDS
    assert requests < STOP_REQUESTS
    assert f"127.0.0.1:{URL(server.url).port} does not answer like the Constant Contact API" in (
        run.stderr
    )
    assert run.errors() == {}  # a 404 that is not the API's fails no contact for good


def test_the_same_command_resumes_once_the_api_answers(tmp_path: Path) -> None:
    with Hostile("bare-404") as server:
        stopped = Run(server.url, tmp_path, range(1, 41), "--rate", "0", "--quiet")
        assert_stopped_resumable(stopped)
        server.handler = MODES["ok"]  # the right server behind the same URL
        again = Run(server.url, tmp_path, range(1, 41), "--rate", "0", "--quiet")
    assert again.code == 0, again.stderr
    assert again.summary()["totals"]["done"] == 40
    written = b"".join(p.read_bytes() for p in again.out.glob("opens-*.ndjson"))
    assert written.count(b"\n") == 40 * 3


@pytest.mark.parametrize("honest", [set(), {"1"}], ids=["from-the-start", "after-an-answer"])
def test_a_5xx_storm_pauses_then_stops_the_run(honest: set[str], tmp_path: Path) -> None:
    # --max-retries 2: a request's retries wait 1.5 s in all, which is how long a storm is
    # allowed to last (6 retries: 31.5 s). Before the breaker: 3 requests per contact.
    with Hostile("storm") as server:
        server.state["honest"] = honest
        run = Run(
            server.url, tmp_path, range(1, 21), "--rate", "0", "--max-retries", "2", "--quiet"
        )
        requests = server.count()
    assert_stopped_resumable(run)
    assert "requests in a row" in run.stderr
    assert requests < 3 * 20 // 2
    assert run.seconds < STOP_SECONDS


async def test_the_library_raises_against_a_dead_host(closed_port: int, tmp_path: Path) -> None:
    ids = [str(i) for i in range(1, 11)]
    started = time.monotonic()
    async with bulkopens.Client(KEY, TOKEN, base_url=f"http://127.0.0.1:{closed_port}") as c:
        with pytest.raises(bulkopens.ServiceUnavailable, match="connection refused") as info:
            await c.export(ids, tmp_path)
        assert info.value.summary is not None
        assert info.value.summary.status == "service_unavailable"
        with pytest.raises(bulkopens.ServiceUnavailable, match="connection refused"):
            async for _ in c.records(ids):
                pass
    assert time.monotonic() - started < 2 * STOP_SECONDS
    assert issubclass(bulkopens.ServiceUnavailable, bulkopens.RunStopped)


async def test_a_host_name_that_does_not_resolve_is_named_as_such() -> None:
    async with bulkopens.Client(KEY, TOKEN, base_url="http://bulkopens-test.invalid:8080") as c:
        with pytest.raises(bulkopens.ServiceUnavailable) as info:
            async for _ in c.records(["1"]):
                pass
    message = str(info.value)
    assert message.startswith("cannot connect to bulkopens-test.invalid:8080: ")
    assert "DNS" in message


# -- what the server says never drives the terminal ----------------------------------------

CONTROLS = {chr(c) for c in [*range(0x20), *range(0x7F, 0xA0)]} - {"\n"} | {"\u202e"}


def test_printable_strips_control_sequences_whole() -> None:
    assert printable("a\x1b[2Jb") == "ab"
    assert printable("x\x1b]52;c;cm0gLXJmIH4=\x07y") == "xy"  # OSC 52: write the clipboard
    assert printable("x\x1b]0;title\x1b\\y") == "xy"
    assert printable("ok\r\nbulkopens: complete") == "ok bulkopens: complete"
    assert printable("\x9b31mred\x1b") == "red"
    assert not set(printable(INJECTION)) & CONTROLS


@pytest.mark.parametrize("status", [403, 404])
def test_terminal_controls_from_the_server_never_reach_stderr_or_the_files(
    status: int, tmp_path: Path
) -> None:
    with Hostile("inject") as server:
        server.state["status"] = status
        run = Run(server.url, tmp_path, range(1, 3), "--rate", "0")
    assert run.code == (3 if status == 403 else 1), run.stderr
    assert not set(run.stderr) & CONTROLS, repr(run.stderr)
    lines = run.stderr.splitlines()
    assert not any(line.startswith("bulkopens: complete") for line in lines[1:]), lines
    for row in run.errors().values():
        assert not set(row["error"] + row["error_key"]) & CONTROLS, row
    if status == 403:
        (error,) = (line for line in lines if line.startswith("bulkopens: error:"))
        assert "'deniedAll contacts exported OK bulkopens: complete txt.exe'" in error
    run.assert_no_secrets()
