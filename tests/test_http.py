"""What each answer means: the transport's classification, against a loopback stub server.

(aioresponses 0.7.9 cannot build responses for aiohttp 3.14, pnuckowski/aioresponses#289, and
3.14 is a security release, so these tests use a real local server instead of a mock.)
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from yarl import URL

from bulkopens._aiowire import SessionWire
from bulkopens._exceptions import (
    AuthenticationError,
    ConfigurationError,
    ContactError,
    ContactNotFound,
    QuotaExhausted,
    ThrottledError,
    TransientError,
)
from bulkopens._http import Transport
from bulkopens._redact import Redactor
from bulkopens._wire import HttpPool, Wire

KEY, TOKEN = "key-1234567890", "token-abcdefghij"
Answer = Callable[[web.Request], Any]


class Stub:
    """A loopback server that answers each request with the next queued answer."""

    def __init__(self) -> None:
        self.answers: list[Answer] = []
        self.requests: list[web.Request] = []
        self.url = URL()

    def add(
        self,
        status: int = 200,
        payload: object = None,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        def answer(_: web.Request) -> web.StreamResponse:
            data = body if body is not None else json.dumps(payload).encode()
            return web.Response(
                status=status, body=data, headers=headers, content_type="application/json"
            )

        self.answers.append(answer)

    def add_reset(self) -> None:
        async def answer(request: web.Request) -> web.StreamResponse:
            response = web.StreamResponse(headers={"Content-Length": "1000"})
            await response.prepare(request)
            await response.write(b'{"meta": {')
            assert request.transport is not None
            request.transport.abort()
            return response

        self.answers.append(answer)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.requests.append(request)
        result = self.answers.pop(0)(request)
        if asyncio.iscoroutine(result):
            result = await result
        assert isinstance(result, web.StreamResponse)
        return result


@pytest.fixture
async def stub() -> AsyncIterator[Stub]:
    stub = Stub()
    app = web.Application()
    app.router.add_route("GET", "/{tail:.*}", stub.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    stub.url = URL(f"http://{host}:{port}")
    yield stub
    await runner.cleanup()


@pytest.fixture(params=["lean", "session"])
async def wire(request: pytest.FixtureRequest) -> AsyncIterator[Wire]:
    """Each test runs on both wires: the lean pool, and a caller's aiohttp session."""
    if request.param == "lean":
        pool = HttpPool(4)
        yield pool
        await pool.close()
    else:
        async with aiohttp.ClientSession() as session:
            yield SessionWire(session)


@pytest.fixture
def transport(stub: Stub, wire: Wire) -> Transport:
    return Transport(
        wire,
        base=stub.url,
        api_key=KEY,
        token=TOKEN,
        redact=Redactor(KEY, TOKEN),
        connect_timeout=2,
        read_timeout=0.5,
    )


def page_url(stub: Stub) -> URL:
    return stub.url / "v2/contacts/5/tracking/opens"


async def test_200_page_with_next_link_and_credentials_sent(
    stub: Stub, transport: Transport
) -> None:
    body = {
        "meta": {"pagination": {"next_link": "/v2/contacts/5/tracking/opens?next=abc"}},
        "results": [{"activity_type": "EMAIL_OPEN", "open_date": "2012-12-06T08:06:30.641Z"}],
    }
    stub.add(payload=body)
    page = await transport.get(page_url(stub).with_query(limit="500"))
    assert page.results == body["results"]
    assert page.next_link == "/v2/contacts/5/tracking/opens?next=abc"
    (request,) = stub.requests
    assert request.query["api_key"] == KEY
    assert request.query["limit"] == "500"
    assert request.headers["Authorization"] == f"Bearer {TOKEN}"
    assert request.headers["Accept"] == "application/json"
    assert transport.responses == {200: 1}


async def test_last_page_has_empty_pagination(stub: Stub, transport: Transport) -> None:
    stub.add(payload={"meta": {"pagination": {}}, "results": []})
    page = await transport.get(page_url(stub))
    assert page.next_link is None
    assert page.results == []


@pytest.mark.parametrize(
    "body",
    [b'{"meta": {"pagination": {}}, "results": [{"a"', b"<html>oops</html>", b'{"x": 1}', b"[]"],
)
async def test_200_with_broken_body_is_transient(
    stub: Stub, transport: Transport, body: bytes
) -> None:
    stub.add(body=body)
    with pytest.raises(TransientError):
        await transport.get(page_url(stub))


@pytest.mark.parametrize("status", [500, 502, 503, 504, 408])
async def test_5xx_is_transient(stub: Stub, transport: Transport, status: int) -> None:
    stub.add(status=status, body=b"<html>bad gateway</html>")
    with pytest.raises(TransientError) as info:
        await transport.get(page_url(stub))
    assert info.value.status == status


async def test_503_retry_after_is_kept(stub: Stub, transport: Transport) -> None:
    stub.add(status=503, body=b"", headers={"Retry-After": "7"})
    with pytest.raises(TransientError) as info:
        await transport.get(page_url(stub))
    assert info.value.retry_after == 7.0


async def test_reset_mid_body_is_transient(stub: Stub, transport: Transport) -> None:
    stub.add_reset()
    with pytest.raises(TransientError):
        await transport.get(page_url(stub))


async def test_read_timeout_is_transient(stub: Stub, transport: Transport) -> None:
    async def slow(_: web.Request) -> web.StreamResponse:
        await asyncio.sleep(2)
        return web.Response(body=b"{}")

    stub.answers.append(slow)
    with pytest.raises(TransientError, match="timed out"):
        await transport.get(page_url(stub))


async def test_connection_refused_is_transient(wire: Wire) -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    closed = Transport(
        wire,
        base=URL(f"http://127.0.0.1:{port}"),
        api_key=KEY,
        token=TOKEN,
        redact=Redactor(KEY, TOKEN),
        connect_timeout=1,
        read_timeout=1,
    )
    with pytest.raises(TransientError) as info:
        await closed.get(URL(f"http://127.0.0.1:{port}/v2/contacts/1/tracking/opens"))
    assert KEY not in str(info.value)
    assert info.value.__cause__ is None


@pytest.mark.parametrize(
    ("status", "body", "retry_after"),
    [
        (429, [{"error_key": "throttled", "error_message": "Too Many Requests"}], None),
        (429, {"error_key": "throttled", "error_message": "Too Many Requests"}, None),
        (403, [{"error_key": "mashery.not.authorized.over.qps", "error_message": "x"}], None),
        (429, [{"error_key": "throttled"}], 3.0),
        (429, b"", None),
    ],
)
async def test_throttle_answers(
    stub: Stub, transport: Transport, status: int, body: object, retry_after: float | None
) -> None:
    headers = {"Retry-After": str(int(retry_after))} if retry_after else {}
    if isinstance(body, bytes):
        stub.add(status=status, body=body, headers=headers)
    else:
        stub.add(status=status, payload=body, headers=headers)
    with pytest.raises(ThrottledError) as info:
        await transport.get(page_url(stub))
    assert info.value.retry_after == retry_after


@pytest.mark.parametrize(
    ("status", "key"),
    [(429, "quota_exceeded"), (403, "mashery.not.authorized.over.ratelimit")],
)
async def test_quota_answers(stub: Stub, transport: Transport, status: int, key: str) -> None:
    stub.add(status=status, payload=[{"error_key": key, "error_message": "x"}])
    with pytest.raises(QuotaExhausted) as info:
        await transport.get(page_url(stub))
    assert (info.value.resets_at.hour, info.value.resets_at.minute) == (0, 0)
    assert "00:00 UTC" in str(info.value)


@pytest.mark.parametrize(
    ("status", "key"),
    [
        (401, "http.status.authentication.invalid_token"),
        (403, "mashery.not.authorized.inactive"),
        (403, None),
    ],
)
async def test_auth_failures_stop_the_run(
    stub: Stub, transport: Transport, status: int, key: str | None
) -> None:
    stub.add(status=status, payload=[{"error_key": key, "error_message": "denied"}])
    with pytest.raises(AuthenticationError):
        await transport.get(page_url(stub))


async def test_404_fails_the_contact(stub: Stub, transport: Transport) -> None:
    stub.add(status=404, payload=[{"error_key": "http.status.not_found"}])
    with pytest.raises(ContactNotFound) as info:
        await transport.get(page_url(stub))
    assert info.value.status == 404
    assert info.value.permanent


@pytest.mark.parametrize("status", [400, 406, 301])
async def test_400_406_and_redirects_are_configuration_errors(
    stub: Stub, transport: Transport, status: int
) -> None:
    headers = {"Location": "https://elsewhere.test/"} if status == 301 else None
    stub.add(status=status, payload=[{"error_key": "query.param.invalid"}], headers=headers)
    with pytest.raises(ConfigurationError):
        await transport.get(page_url(stub))
    assert len(stub.requests) == 1  # the redirect was not followed


async def test_other_4xx_fails_the_contact(stub: Stub, transport: Transport) -> None:
    stub.add(status=410, payload=[{"error_key": "gone"}])
    with pytest.raises(ContactError) as info:
        await transport.get(page_url(stub))
    assert not isinstance(info.value, ContactNotFound)


async def test_secrets_echoed_by_the_server_are_scrubbed(stub: Stub, transport: Transport) -> None:
    echo = f"bad key {KEY} for token {TOKEN} at ?api_key={KEY}"
    stub.add(status=401, payload=[{"error_key": f"x {KEY}", "error_message": echo}])
    with pytest.raises(AuthenticationError) as info:
        await transport.get(page_url(stub))
    text = str(info.value) + repr(info.value)
    assert KEY not in text
    assert TOKEN not in text


async def test_credentials_never_go_to_another_host(stub: Stub, transport: Transport) -> None:
    with pytest.raises(ConfigurationError):
        await transport.get(URL("http://127.0.0.2:9/v2/contacts/5/tracking/opens"))
    assert not stub.requests
