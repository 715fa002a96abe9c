"""A hostile API server on loopback: each way a server can lie, drip, loop or flood, as a mode.

The server runs in its own thread with its own event loop, so the same instance serves an
in-process library test (``async with Client(base_url=server.url)``) and a ``bulkopens fetch``
subprocess alike. Every request is logged (method, path with query, arrival time) in
``server.requests``, so a test can count what reached the server.

A mode is an async function ``(request, server) -> web.StreamResponse``; :data:`MODES` names
them. Add a mode by writing the function and registering it with ``@mode("name")``.

    with Hostile("loop-back") as server:
        ...  # server.url, server.requests, server.state (a dict for modes to keep state in)
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
from aiohttp import web

Mode = Callable[[web.Request, "Hostile"], Awaitable[web.StreamResponse]]
MODES: dict[str, Mode] = {}


def mode(name: str) -> Callable[[Mode], Mode]:
    """Register a mode under ``name``."""

    def register(fn: Mode) -> Mode:
        MODES[name] = fn
        return fn

    return register


@dataclass(slots=True)
class Seen:
    """One request as the server saw it."""

    method: str
    path_qs: str
    at: float  # time.monotonic() at arrival
    headers: dict[str, str] = field(default_factory=dict)


def record(contact_id: str, n: int, *, date: str | None = None) -> dict[str, Any]:
    """A v2 open record of ``contact_id``; ``n`` makes it distinct."""
    return {
        "activity_type": "EMAIL_OPEN",
        "campaign_id": "1100000000001",
        "contact_id": contact_id,
        "email_address": f"c{contact_id}@example.com",
        "open_date": date or f"2024-01-01T00:00:{n % 60:02d}.000Z",
    }


def page_body(results: list[Any], next_link: str | None = None) -> bytes:
    """A v2 page's JSON text (compact, as the API and the simulator send it)."""
    return orjson.dumps({"meta": {"pagination": {"next_link": next_link}}, "results": results})


def json_response(body: bytes, status: int = 200, **headers: str) -> web.Response:
    return web.Response(
        status=status, body=body, content_type="application/json", headers=headers or None
    )


def contact_of(request: web.Request) -> str:
    """The contact id in ``/v2/contacts/{id}/tracking/...`` (or '' if the path has none)."""
    parts = request.path.split("/")
    try:
        return parts[parts.index("contacts") + 1]
    except (ValueError, IndexError):
        return ""


class Hostile:
    """A loopback aiohttp.web server running ``handler`` (a mode name or a mode function)."""

    def __init__(self, handler: str | Mode, *, host: str = "127.0.0.1") -> None:
        self.handler: Mode = MODES[handler] if isinstance(handler, str) else handler
        self.host = host
        self.port = 0
        self.requests: list[Seen] = []
        self.state: dict[str, Any] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._error: BaseException | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.requests.append(
            Seen(request.method, request.path_qs, time.monotonic(), dict(request.headers))
        )
        return await self.handler(request, self)

    async def _serve(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        runner = web.AppRunner(app, access_log=None, handler_cancellation=True)
        await runner.setup()
        site = web.TCPSite(runner, self.host, 0)
        await site.start()
        server = site._server
        assert server is not None
        self.port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
        self._stop = asyncio.Event()
        self._ready.set()
        try:
            await self._stop.wait()
        finally:
            await runner.cleanup()

    def _main(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._serve())
        except BaseException as exc:  # pragma: no cover - surfaced by start()
            self._error = exc
            self._ready.set()
        finally:
            loop.close()

    def start(self) -> Hostile:
        self._thread = threading.Thread(target=self._main, name="hostile-server", daemon=True)
        self._thread.start()
        self._ready.wait(10)
        if self._error is not None:
            raise self._error
        return self

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(10)

    def __enter__(self) -> Hostile:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def count(self, predicate: Callable[[Seen], bool] = lambda _: True) -> int:
        return sum(1 for seen in list(self.requests) if predicate(seen))


# ---------------------------------------------------------------------------------------------
# Modes. Keep each one small; a mode keeps any state it needs in ``server.state``.
# ---------------------------------------------------------------------------------------------


@mode("ok")
async def _ok(request: web.Request, server: Hostile) -> web.StreamResponse:
    """An honest server: every contact has three opens on one page."""
    cid = contact_of(request)
    return json_response(page_body([record(cid, n) for n in range(3)]))


# ---------------------------------------------------------------------------------------------
# The library in a long-lived app (issue 12): a slow, rate-limited API and an endless contact.
# ---------------------------------------------------------------------------------------------


@mode("slow-limited")
async def _slow_limited(request: web.Request, server: Hostile) -> web.StreamResponse:
    """The real API's per-second limit with slow answers.

    At most ``state["limit"]`` (default 4) request arrivals in any sliding one-second window;
    beyond that the answer is an immediate 429 ``throttled`` (counted in ``state["throttled"]``).
    Admitted requests are answered after a uniform random latency of
    ``state["latency"]`` (default 3 ± 2.5 s), seeded by ``state["seed"]``: one page of three
    opens per contact. Every arrival counts in the window, throttled ones too.
    """
    import random

    state = server.state
    now = time.monotonic()
    arrivals: list[float] = state.setdefault("arrivals", [])
    limit = state.get("limit", 4)
    recent = sum(1 for t in arrivals if t > now - 1.0)
    arrivals.append(now)
    if recent >= limit:
        state["throttled"] = state.get("throttled", 0) + 1
        return json_response(
            orjson.dumps([{"error_key": "throttled", "error_message": "Too many requests"}]), 429
        )
    rng: random.Random = state.setdefault("rng", random.Random(state.get("seed", 12)))
    low, high = state.get("latency", (0.5, 5.5))
    await asyncio.sleep(rng.uniform(low, high))
    cid = contact_of(request)
    return json_response(page_body([record(cid, n) for n in range(3)]))


def max_window(times: list[float], width: float = 1.0) -> int:
    """The most arrivals in any window of ``width`` seconds (a window starts at an arrival)."""
    times = sorted(times)
    best, first = 0, 0
    for last, t in enumerate(times):
        while t - times[first] >= width:
            first += 1
        best = max(best, last - first + 1)
    return best


@mode("endless")
async def _endless(request: web.Request, server: Hostile) -> web.StreamResponse:
    """Every contact is heavy: full pages (``limit`` records, at most 500), each with a
    next_link to the next one, for ever. Answers after ``state["latency"]`` seconds (default 0)."""
    cid = contact_of(request)
    limit = min(500, int(request.query.get("limit", "500")))
    n = int(request.query.get("next", "0"))
    delay = server.state.get("latency", 0.0)
    if delay:
        await asyncio.sleep(delay)
    start = datetime(2024, 6, 1, tzinfo=UTC)  # newest first, one second apart: every page new
    results = [
        record(cid, k, date=f"{start - timedelta(seconds=k):%Y-%m-%dT%H:%M:%S}.000Z")
        for k in range(n * limit, (n + 1) * limit)
    ]
    return json_response(
        page_body(results, f"/v2/contacts/{cid}/tracking/opens?next={n + 1}&limit={limit}")
    )


# -- pages: loops, floods, links out of the API, records no parser round-trips -------------------


def _page_number(request: web.Request) -> int:
    return int(request.query.get("next", "1"))


def _link(cid: str, n: int) -> str:
    return f"/v2/contacts/{cid}/tracking/opens?next={n}"


@mode("loop-back")
async def _loop_back(request: web.Request, server: Hostile) -> web.StreamResponse:
    """Page 1 links to page 2, page 2 back to page 1."""
    cid, n = contact_of(request), _page_number(request)
    return json_response(page_body([record(cid, 10 - n)], _link(cid, 2 if n == 1 else 1)))


@mode("cycle")
async def _cycle(request: web.Request, server: Hostile) -> web.StreamResponse:
    """Pages 1 -> 2 -> 3 -> 2 -> 3 ..."""
    cid, n = contact_of(request), _page_number(request)
    return json_response(page_body([record(cid, 10 - n)], _link(cid, 3 if n != 3 else 2)))


@mode("flood")
async def _flood(request: web.Request, server: Hostile) -> web.StreamResponse:
    """Five more records than ``limit`` asked for, on one page."""
    cid, limit = contact_of(request), int(request.query.get("limit", "500"))
    return json_response(page_body([record(cid, i) for i in range(limit + 5)]))


# One per contact id (modulo): links a worker must refuse without crashing or sending anything.
BAD_LINKS = (
    "http://127.0.0.1:{port}\\@127.0.0.1:1/v2/contacts/1/tracking/opens?next=2",
    "javascript:alert(1)",
    "http://127.0.0.1:{port}:1/v2/x",
    "http://user:pw@127.0.0.1:{port}/v2/contacts/1/tracking/opens?next=2",
    "/v2/../../admin/steal",
    "/v2/%2e%2e/%2e%2e/admin/steal",
    "http://[::1/v2",
)


@mode("bad-link")
async def _bad_link(request: web.Request, server: Hostile) -> web.StreamResponse:
    """Page 1 of contact N links to ``BAD_LINKS[N % len]``; anything else is a 500."""
    cid = contact_of(request)
    if not cid or "next" in request.query:
        return json_response(b"[]", 500)
    link = BAD_LINKS[int(cid) % len(BAD_LINKS)].format(port=server.port)
    return json_response(page_body([record(cid, 1)], link))


@mode("echo-secret")
async def _echo_secret(request: web.Request, server: Hostile) -> web.StreamResponse:
    """Puts the credentials it received into the next_link's path; that page is a 404 whose
    message repeats them."""
    cid = contact_of(request)
    key = request.query.get("api_key", "")
    token = request.headers.get("Authorization", "").removeprefix("Bearer ")
    if "next" in request.query or key in request.path:
        text = f"no such page: {request.path} {key} {token}"
        return json_response(orjson.dumps([{"error_key": "x", "error_message": text}]), 404)
    link = f"/v2/contacts/{cid}/tracking/opens/{key}/{token}?next=2"
    return json_response(page_body([record(cid, 1)], link))


EXACT_BODY = (
    b'{\n  "meta": {"pagination": {"next_link": null}},\n  "results": [\n'
    b'    {"contact_id": "CID", "open_date": "2024-01-01T00:00:00.000Z",'
    b' "big": 123456789012345678901234567890, "k": 1, "k": 2, "f": 1.50},\n'
    b'    {"contact_id": "CID", "open_date": "9999-12-31T23:59:59-10:00", "deep": '
    + b"[" * 300
    + b"]" * 300
    + b"}\n  ]\n}"
)


@mode("exact")
async def _exact(request: web.Request, server: Hostile) -> web.StreamResponse:
    """Pretty-printed pages with a number no float holds, a duplicate key, ``1.50``, a time
    past year 9999 in UTC and a record nested 300 deep: each must be written as sent."""
    return json_response(EXACT_BODY.replace(b"CID", contact_of(request).encode()))


@mode("campaign-list-cycle")
async def _campaign_list_cycle(request: web.Request, server: Hostile) -> web.StreamResponse:
    """The sent-campaign list: page A links to B, B back to A."""
    at = request.query.get("next", "A")
    after = "B" if at == "A" else "A"
    results = [{"id": f"110000000000{1 if at == 'A' else 2}", "status": "SENT"}]
    return json_response(page_body(results, f"/v2/emailmarketing/campaigns?next={after}"))


# ---------------------------------------------------------------------------------------------
# The HTTP transport and the breaker (issue 11): bodies that never end or explode, a drip,
# Retry-After, throttles and 5xx for ever, servers that are not the API, terminal injection.
# Contacts named in ``state["honest"]`` (a set of ids) get an honest page instead, so a test can
# let the API answer once before the hostile answers (the breaker then opens the gate).
# ---------------------------------------------------------------------------------------------


def _honest(request: web.Request, server: Hostile) -> web.Response | None:
    cid = contact_of(request)
    if cid in server.state.get("honest", ()):
        return json_response(page_body([record(cid, n) for n in range(3)]))
    return None


async def _stream(
    request: web.Request, chunk: bytes, total: int | None, **headers: str
) -> web.StreamResponse:
    """A 200 whose body is ``chunk`` over and over: ``total`` bytes (with that Content-Length),
    or for ever, chunked. Stops quietly when the client hangs up."""
    response = web.StreamResponse(headers={"Content-Type": "application/json", **headers})
    if total is not None:
        response.content_length = total
    await response.prepare(request)
    sent = 0
    try:
        while total is None or sent < total:
            piece = chunk if total is None else chunk[: total - sent]
            await response.write(piece)
            sent += len(piece)
    except (ConnectionError, RuntimeError):
        pass  # the client closed the connection: exactly what it should do
    return response


@mode("huge-length")
async def _huge_length(request: web.Request, server: Hostile) -> web.StreamResponse:
    """A 200 of ``state["bytes"]`` (default 600 MB, all spaces) with its Content-Length, sent
    in 1 MiB pieces."""
    honest = _honest(request, server)
    if honest is not None:
        return honest
    total = server.state.get("bytes", 600_000_000)
    return await _stream(request, b" " * (1 << 20), total)


@mode("endless-body")
async def _endless_body(request: web.Request, server: Hostile) -> web.StreamResponse:
    """A chunked 200 that never ends: 64 KiB pieces for as long as the client reads."""
    honest = _honest(request, server)
    if honest is not None:
        return honest
    return await _stream(request, b" " * (64 << 10), None)


_BOMBS: dict[int, bytes] = {}


def gzip_bomb(size: int = 1 << 30) -> bytes:
    """``size`` bytes of spaces, gzipped (1 GiB: about 1 MB), made once per process."""
    import zlib

    cached: bytes | None = _BOMBS.get(size)
    if cached is None:
        packer = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
        block = b" " * (1 << 20)
        parts = [packer.compress(block) for _ in range(size >> 20)]
        cached = _BOMBS[size] = b"".join([*parts, packer.flush()])
    return cached


@mode("gzip-bomb")
async def _gzip_bomb(request: web.Request, server: Hostile) -> web.StreamResponse:
    """A 200 with ``Content-Encoding: gzip``: about 1 MB on the wire that inflates to
    ``state["inflates"]`` bytes (default 1 GiB)."""
    honest = _honest(request, server)
    if honest is not None:
        return honest
    bomb = gzip_bomb(server.state.get("inflates", 1 << 30))
    return await _stream(request, bomb, len(bomb), **{"Content-Encoding": "gzip"})


@mode("drip")
async def _drip(request: web.Request, server: Hostile) -> web.StreamResponse:
    """A 200 whose body arrives one byte every ``state["every"]`` seconds (default 0.5), for
    ever: never idle long enough for a read timeout."""
    response = web.StreamResponse(headers={"Content-Type": "application/json"})
    await response.prepare(request)
    every = server.state.get("every", 0.5)
    try:
        await response.write(b"{")
        while True:
            await asyncio.sleep(every)
            await response.write(b" ")
    except (ConnectionError, RuntimeError):
        pass
    return response


@mode("retry-after")
async def _retry_after(request: web.Request, server: Hostile) -> web.StreamResponse:
    """The first answer is ``state["status"]`` (default 429 ``throttled``; 503 is a server
    error) with ``Retry-After: state["retry_after"]``; every later one is honest."""
    if server.count() > 1:
        return json_response(page_body([record(contact_of(request), 1)]))
    status = server.state.get("status", 429)
    key = "throttled" if status == 429 else "http.status.internal_error"
    body = orjson.dumps([{"error_key": key, "error_message": "later"}])
    return json_response(body, status, **{"Retry-After": server.state["retry_after"]})


@mode("throttle-all")
async def _throttle_all(request: web.Request, server: Hostile) -> web.StreamResponse:
    """Every answer a 429 ``throttled``, with ``Retry-After: state["retry_after"]`` if set."""
    body = orjson.dumps([{"error_key": "throttled", "error_message": "Too many requests"}])
    after = server.state.get("retry_after")
    return json_response(body, 429, **({"Retry-After": after} if after else {}))


@mode("storm")
async def _storm(request: web.Request, server: Hostile) -> web.StreamResponse:
    """Every answer a 503 with the API's error body: the API is up and failing."""
    honest = _honest(request, server)
    if honest is not None:
        return honest
    body = orjson.dumps([{"error_key": "http.status.internal_error", "error_message": "down"}])
    return json_response(body, 503)


@mode("html")
async def _html(request: web.Request, server: Hostile) -> web.StreamResponse:
    """Some other web site: every path is a 200 HTML page."""
    page = "<!doctype html><title>Welcome</title><p>Hello"
    return web.Response(text=page, content_type="text/html")


@mode("bare-404")
async def _bare_404(request: web.Request, server: Hostile) -> web.StreamResponse:
    """Some other web server (or a wrong path prefix): every path is a plain 404."""
    raise web.HTTPNotFound()


INJECTION = (
    "denied\x1b[2J\x1b[H\x1b[32mAll contacts exported OK\x1b[0m"
    "\x1b]52;c;cm0gLXJmIH4=\x07\r\nbulkopens: complete\r\n\x9b31m\u202etxt.exe"
)


@mode("inject")
async def _inject(request: web.Request, server: Hostile) -> web.StreamResponse:
    """An error answer (``state["status"]``, default 403) whose error_key and error_message hold
    terminal controls: clear screen, a fake green line, an OSC 52 clipboard write, CR/LF
    forging a ``bulkopens: complete`` line, a C1 CSI and a right-to-left override."""
    status = server.state.get("status", 403)
    body = orjson.dumps([{"error_key": "x\x1b[2Jkey\r\n", "error_message": INJECTION}])
    return json_response(body, status)


# ---------------------------------------------------------------------------------------------
# The library in a long-lived app (issue 12), continued: a mixed account, and a server in a
# process of its own (its clock and its event loop untouched by the client under test).
# ---------------------------------------------------------------------------------------------


@mode("mixed")
async def _mixed(request: web.Request, server: Hostile) -> web.StreamResponse:
    """Contacts numbered 1000 and up are endless (see ``endless``), 900 to 999 are unknown
    (404 with the API's error body); the others have one page of three opens."""
    number = int(contact_of(request) or 0)
    if number >= 1000:
        return await _endless(request, server)
    if number >= 900:
        body = [{"error_key": "http.status.not_found", "error_message": "Contact not found"}]
        return json_response(orjson.dumps(body), 404)
    return await _ok(request, server)


_SERVER_SCRIPT = str(Path(__file__).with_name("hostile_server.py"))


class HostileProcess:
    """``Hostile(mode)`` in a child process, for tests that count request starts per second:
    in a thread of the test's own process, the server's arrival times would carry the
    client's pauses (the GIL, its event loop) as jitter.

    ``state`` seeds ``server.state`` (JSON values). On exit, ``arrivals`` holds the arrival
    times (seconds, the child's monotonic clock) and ``state`` the mode's counters.
    """

    def __init__(self, mode_name: str, state: dict[str, Any] | None = None) -> None:
        self.mode = mode_name
        self.url = ""
        self.arrivals: list[float] = []
        self.state: dict[str, Any] = dict(state or {})
        self._proc: Any = None

    def __enter__(self) -> HostileProcess:
        import subprocess
        import sys

        self._proc = subprocess.Popen(
            [sys.executable, _SERVER_SCRIPT, self.mode, orjson.dumps(self.state).decode()],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        self.url = self._proc.stdout.readline().decode().strip()
        if not self.url.startswith("http://"):
            self._proc.kill()
            raise RuntimeError(f"the {self.mode} server did not start")
        return self

    def __exit__(self, *exc: object) -> None:
        out, _ = self._proc.communicate(timeout=30)  # closing stdin stops the server
        report = orjson.loads(out)
        self.arrivals = report["arrivals"]
        self.state.update(report["state"])


# -- the shared budget: the API's own "quota spent" -----------------------------------------------


@mode("quota-once")
async def _quota_once(request: web.Request, server: Hostile) -> web.StreamResponse:
    """The first request is told the key's daily quota is spent (429 ``quota_exceeded``); the
    others are answered as ``ok``."""
    if not server.state.get("refused"):
        server.state["refused"] = True
        body = {"error_key": "quota_exceeded", "error_message": "Limit Exceeded"}
        return json_response(orjson.dumps(body), 429)
    return await _ok(request, server)
