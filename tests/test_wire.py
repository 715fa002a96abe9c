"""The lean wire, :class:`HttpPool`, against loopback servers that script every byte.

Each server is raw ``asyncio.start_server``: it reads a request head, records it and writes
the next scripted reply, so a test controls framing, timing and closes exactly, and counts the
connections it accepted (whether the pool reused one).
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import socket
import ssl
import sys
import time
import zlib
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import trustme
from yarl import URL

from bulkopens._wire import (
    MAX_HEAD_BYTES,
    MAX_HEADERS,
    USER_AGENT,
    Answer,
    Broken,
    ConnectFailed,
    ConnectTimedOut,
    DeadlinePassed,
    HttpPool,
    ReadTimedOut,
    Timeouts,
    TooLarge,
    Unsendable,
    _Connection,
)

Script = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
FAST = Timeouts(connect=0.5, read=0.5, total=1.0)
LIMIT = 1 << 20
ERROR_LIMIT = 1000


def answer(
    body: bytes = b"",
    status: str = "200 OK",
    headers: Iterable[tuple[str, str]] = (),
    *,
    length: bool = True,
    version: str = "1.1",
) -> bytes:
    """The bytes of one answer: its status line, headers, a Content-Length (unless not), body."""
    lines = [f"HTTP/{version} {status}\r\n"]
    lines += [f"{name}: {value}\r\n" for name, value in headers]
    if length:
        lines.append(f"Content-Length: {len(body)}\r\n")
    return "".join(lines).encode("latin-1") + b"\r\n" + body


OK = answer(b"ok")


@dataclass
class Reply:
    """What the server does for one request: write bytes or run a script; then maybe close."""

    data: bytes | Script
    close: bool = False


@dataclass
class Server:
    """A loopback server: per request head, the next queued reply; none queued, it stalls
    until the client leaves."""

    replies: deque[Reply] = field(default_factory=deque)
    heads: list[bytes] = field(default_factory=list)
    accepted: int = 0  # connections accepted
    open: int = 0  # connections open now
    most_open: int = 0
    ended: int = 0  # connections over (either side closed)
    left: int = 0  # connections the client closed or reset
    url: URL = field(default_factory=URL)
    tasks: set[asyncio.Task[None]] = field(default_factory=set)
    writers: set[asyncio.StreamWriter] = field(default_factory=set)

    def add(self, data: bytes | Script, *, close: bool = False) -> None:
        self.replies.append(Reply(data, close))

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.tasks.add(task)
        self.writers.add(writer)
        self.accepted += 1
        self.open += 1
        self.most_open = max(self.most_open, self.open)
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except asyncio.IncompleteReadError:
                    self.left += 1
                    return
                self.heads.append(head)
                if not self.replies:
                    await reader.read()  # stall until the client leaves
                    self.left += 1
                    return
                reply = self.replies.popleft()
                if isinstance(reply.data, bytes):
                    writer.write(reply.data)
                    await writer.drain()
                else:
                    await reply.data(reader, writer)
                if reply.close:
                    return
        except ConnectionError:
            self.left += 1
        finally:
            self.open -= 1
            self.ended += 1
            writer.transport.abort()


@pytest.fixture
async def server() -> AsyncIterator[Server]:
    server = Server()
    listener = await asyncio.start_server(server.serve, "127.0.0.1", 0)
    host, port = listener.sockets[0].getsockname()[:2]
    server.url = URL(f"http://{host}:{port}/")
    yield server
    listener.close()
    for writer in server.writers:
        writer.transport.abort()
    for task in server.tasks:
        task.cancel()
    await asyncio.gather(*server.tasks, return_exceptions=True)
    await listener.wait_closed()


@pytest.fixture
async def pools() -> AsyncIterator[Callable[..., HttpPool]]:
    """Makes pools (``HttpPool``'s arguments), every one closed after the test."""
    made: list[HttpPool] = []

    def make(limit: int = 4, *, keepalive: float = 15.0) -> HttpPool:
        made.append(HttpPool(limit, keepalive=keepalive))
        return made[-1]

    yield make
    for pool in made:
        await pool.close()


@pytest.fixture
def pool(pools: Callable[..., HttpPool]) -> HttpPool:
    return pools()


async def get(
    pool: HttpPool,
    url: URL,
    headers: dict[str, str] | None = None,
    *,
    timeouts: Timeouts = FAST,
    limit: int = LIMIT,
    error_limit: int = ERROR_LIMIT,
) -> Answer:
    return await pool.get(
        url, headers or {}, timeouts=timeouts, limit=limit, error_limit=error_limit
    )


async def until(condition: Callable[[], bool], timeout: float = 1.0) -> None:
    """Wait (polling the loop) until ``condition()`` holds; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "the condition did not come true in time"
        await asyncio.sleep(0.005)


async def broken_then_a_new_connection(server: Server, pool: HttpPool, match: str) -> None:
    """The next answer is Broken (``match``), its connection dropped; the one after comes on
    a new connection (the server has queued an OK for it)."""
    with pytest.raises(Broken, match=match):
        await get(pool, server.url)
    await until(lambda: server.left == 1)
    assert (await get(pool, server.url)).body == b"ok"
    assert server.accepted == 2


def gzipped(data: bytes) -> bytes:
    return gzip.compress(data, mtime=0)


def bomb(megabytes: int) -> bytes:
    """``megabytes`` MiB of zeros, gzipped (about 1 KiB each)."""
    packer = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    zeros = bytes(1 << 20)
    return b"".join(packer.compress(zeros) for _ in range(megabytes)) + packer.flush()


def drip(data: bytes, every: float, *, then: bytes = b"") -> Script:
    """A script that writes ``data`` in pieces, one each ``every`` seconds, for ever (the
    ``then`` piece repeated once ``data`` is out) or until the client leaves."""

    async def script(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        pieces = list(data)
        while True:
            piece = bytes([pieces.pop(0)]) if pieces else then
            if not piece:
                return
            writer.write(piece)
            await writer.drain()
            await asyncio.sleep(every)

    return script


# -- bodies and keep-alive ---------------------------------------------------------------------


async def test_content_length_body_and_keep_alive(server: Server, pool: HttpPool) -> None:
    """Two gets in a row share one connection; the answer's status, headers and body."""
    server.add(answer(b'{"a": 1}', headers=[("Content-Type", "application/json; charset=x")]))
    server.add(answer(b"second"))
    first = await get(pool, server.url / "one")
    second = await get(pool, server.url / "two")
    assert first.status == 200
    assert first.body == b'{"a": 1}'
    assert first.headers["content-type"] == "application/json; charset=x"
    assert first.headers["content-length"] == "8"
    assert first.content_type == "application/json"
    assert (second.status, second.body) == (200, b"second")
    assert server.accepted == 1
    assert [head.split(b" ")[1] for head in server.heads] == [b"/one", b"/two"]


async def test_connection_close_answer_is_not_reused(server: Server, pool: HttpPool) -> None:
    """An answer saying ``Connection: close``: the pool drops it; the next get opens another."""
    server.add(answer(b"bye", headers=[("Connection", "close")]))
    server.add(OK)
    first = await get(pool, server.url)
    assert (first.status, first.body, first.headers["connection"]) == (200, b"bye", "close")
    await until(lambda: server.left == 1)  # the client closed it, unasked
    second = await get(pool, server.url)
    assert (second.status, second.body) == (200, b"ok")
    assert server.accepted == 2


async def test_header_names_lower_case_first_of_repeated_kept(
    server: Server, pool: HttpPool
) -> None:
    server.add(answer(b"x", headers=[("X-Thing", "first"), ("x-THING", "second"), ("ETag", "e")]))
    got = await get(pool, server.url)
    assert got.headers["x-thing"] == "first"
    assert got.headers["etag"] == "e"
    assert "ETag" not in got.headers
    assert got.content_type == ""


async def test_204_without_length_and_small_error_reused(server: Server, pool: HttpPool) -> None:
    """A 204 has no body (no waiting for a close); a small error answer is whole and its
    connection kept."""
    server.add(answer(status="204 No Content", length=False))
    server.add(answer(b'{"error": "nope"}', status="404 Not Found"))
    server.add(OK)
    empty = await get(pool, server.url)
    assert (empty.status, empty.body) == (204, b"")
    missing = await get(pool, server.url)
    assert (missing.status, missing.body) == (404, b'{"error": "nope"}')
    assert (await get(pool, server.url)).body == b"ok"
    assert server.accepted == 1


async def test_chunked_body_with_extensions_and_trailers(server: Server, pool: HttpPool) -> None:
    server.add(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-Sum\r\n\r\n"
        b"5\r\nhello\r\n"
        b"1;name=value\r\n,\r\n"
        b"6;a=b;c\r\n world\r\n"
        b"0\r\nX-Sum: 12\r\n\r\n"
    )
    server.add(OK)
    got = await get(pool, server.url)
    assert (got.status, got.body) == (200, b"hello, world")
    assert got.headers["transfer-encoding"] == "chunked"
    assert (await get(pool, server.url)).body == b"ok"
    assert server.accepted == 1


@pytest.mark.parametrize("version", ["1.0", "1.1"])
async def test_body_until_close(server: Server, pool: HttpPool, version: str) -> None:
    """No length and not chunked: the body is all the server sends until it closes."""
    server.add(answer(b"all of it " * 1000, version=version, length=False), close=True)
    server.add(OK)
    got = await get(pool, server.url)
    assert (got.status, got.body) == (200, b"all of it " * 1000)
    assert (await get(pool, server.url)).body == b"ok"
    assert server.accepted == 2


async def test_http10_answer_with_length_is_not_reused(server: Server, pool: HttpPool) -> None:
    server.add(answer(b"old", version="1.0"))
    server.add(OK)
    got = await get(pool, server.url)
    assert (got.status, got.body) == (200, b"old")
    assert (await get(pool, server.url)).body == b"ok"
    assert server.accepted == 2


@pytest.mark.parametrize("status", ["100 Continue", "103 Early Hints"])
async def test_interim_answer_then_the_real_one(
    server: Server, pool: HttpPool, status: str
) -> None:
    server.add(
        f"HTTP/1.1 {status}\r\nLink: </style.css>; rel=preload\r\n\r\n".encode()
        + answer(b"real", headers=[("X-Real", "yes")])
    )
    server.add(OK)
    got = await get(pool, server.url)
    assert (got.status, got.body, got.headers["x-real"]) == (200, b"real", "yes")
    assert "link" not in got.headers  # the interim answer's headers are not the answer's
    assert (await get(pool, server.url)).body == b"ok"
    assert server.accepted == 1


# -- encodings -------------------------------------------------------------------------------


def raw_deflate(data: bytes) -> bytes:
    packer = zlib.compressobj(6, zlib.DEFLATED, -zlib.MAX_WBITS)
    return packer.compress(data) + packer.flush()


@pytest.mark.parametrize(
    ("encoding", "pack"),
    [
        ("gzip", gzipped),
        ("x-gzip", gzipped),
        ("deflate", zlib.compress),
        ("deflate", raw_deflate),  # no zlib wrapper: some servers send that (aiohttp takes it)
        ("GZip ", gzipped),
    ],
)
async def test_compressed_body_inflated(
    server: Server, pool: HttpPool, encoding: str, pack: Callable[[bytes], bytes]
) -> None:
    body = b'{"results": []}' * 500
    server.add(answer(pack(body), headers=[("Content-Encoding", encoding)]))
    server.add(OK)
    got = await get(pool, server.url)
    assert (got.status, got.body) == (200, body)
    assert (await get(pool, server.url)).body == b"ok"
    assert server.accepted == 1


async def test_chunked_gzip_inflated(server: Server, pool: HttpPool) -> None:
    packed = gzipped(b"abc" * 10_000)
    chunks = [packed[i : i + 100] for i in range(0, len(packed), 100)]
    body = b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in chunks) + b"0\r\n\r\n"
    server.add(
        answer(
            body,
            headers=[("Transfer-Encoding", "chunked"), ("Content-Encoding", "gzip")],
            length=False,
        )
    )
    assert (await get(pool, server.url)).body == b"abc" * 10_000


async def test_encoding_not_asked_for_is_broken(server: Server, pool: HttpPool) -> None:
    server.add(answer(b"\x1b\x00\x00", headers=[("Content-Encoding", "br")]))
    with pytest.raises(Broken, match="encoding not asked for"):
        await get(pool, server.url)
    await until(lambda: server.left == 1)


@pytest.mark.parametrize(
    "packed",
    [
        b"this is not gzip at all",
        gzipped(b"x" * 1000)[:-8] + b"\x00\x00\x00\x00" + gzipped(b"x" * 1000)[-4:],  # bad CRC
    ],
    ids=["header", "crc"],
)
async def test_corrupt_gzip_is_broken(server: Server, pool: HttpPool, packed: bytes) -> None:
    server.add(answer(packed, headers=[("Content-Encoding", "gzip")]))
    server.add(OK)
    await broken_then_a_new_connection(server, pool, "does not inflate")


async def test_an_empty_compressed_answer_is_whole(server: Server, pool: HttpPool) -> None:
    """A 204 (or an empty 200) that names an encoding has no stream to finish: not broken."""
    server.add(answer(b"", "204 No Content", headers=[("Content-Encoding", "gzip")], length=False))
    server.add(answer(b"", headers=[("Content-Encoding", "gzip")]))
    assert (await get(pool, server.url)).status == 204
    assert (await get(pool, server.url)).body == b""
    assert server.accepted == 1


async def test_truncated_gzip_is_broken(server: Server, pool: HttpPool) -> None:
    """A well-framed body (its Content-Length right) whose gzip stream stops half-way."""
    packed = gzipped(bytes(range(256)) * 400)
    server.add(answer(packed[: len(packed) // 2], headers=[("Content-Encoding", "gzip")]))
    with pytest.raises(Broken):
        await get(pool, server.url)


async def test_gzip_bomb_200_is_too_large_quickly(server: Server, pool: HttpPool) -> None:
    """50 MB of zeros gzipped, limit 1 MiB: refused once past the limit, never inflated whole."""
    server.add(answer(bomb(50), headers=[("Content-Encoding", "gzip")]))
    started = time.perf_counter()
    with pytest.raises(TooLarge):
        await get(pool, server.url, limit=LIMIT)
    assert time.perf_counter() - started < 0.5
    await until(lambda: server.left == 1)


async def test_gzip_bomb_error_answer_cut_at_error_limit(server: Server, pool: HttpPool) -> None:
    server.add(answer(bomb(50), status="500 Oops", headers=[("Content-Encoding", "gzip")]))
    server.add(OK)
    started = time.perf_counter()
    got = await get(pool, server.url, error_limit=4096)
    assert time.perf_counter() - started < 0.5
    assert got.status == 500
    assert got.body == bytes(4096)
    await until(lambda: server.left == 1)  # the rest unread: dropped
    assert (await get(pool, server.url)).body == b"ok"
    assert server.accepted == 2


# -- the body's limits -----------------------------------------------------------------------


async def test_200_at_the_limit_whole_one_over_too_large(server: Server, pool: HttpPool) -> None:
    server.add(answer(b"a" * 100))
    server.add(answer(b"a" * 101))
    server.add(answer(b"b" * 101, length=False), close=True)
    assert (await get(pool, server.url, limit=100)).body == b"a" * 100
    with pytest.raises(TooLarge, match="declared"):
        await get(pool, server.url, limit=100)
    with pytest.raises(TooLarge, match="over the limit"):
        await get(pool, server.url, limit=100)  # no length: found out while reading
    assert server.accepted == 2


async def test_declared_length_over_limit_refused_before_the_body(
    server: Server, pool: HttpPool
) -> None:
    """Only the head is sent: the pool refuses at once, not waiting for a body."""
    server.add(b"HTTP/1.1 200 OK\r\nContent-Length: 10000000\r\n\r\n")
    started = time.perf_counter()
    with pytest.raises(TooLarge, match="declared over the limit"):
        await get(pool, server.url, timeouts=Timeouts(0.5, 5, 5))
    assert time.perf_counter() - started < 0.5
    await until(lambda: server.left == 1)


async def test_endless_chunked_200_is_too_large(server: Server, pool: HttpPool) -> None:
    async def endless(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        while True:
            writer.write(b"1000\r\n" + b"z" * 0x1000 + b"\r\n")
            await writer.drain()
            await asyncio.sleep(0)

    server.add(endless)
    with pytest.raises(TooLarge):
        await get(pool, server.url, limit=64 * 1024)
    await until(lambda: server.ended == 1)


async def test_large_error_body_cut_and_not_reused(server: Server, pool: HttpPool) -> None:
    server.add(answer(b"e" * 200_000, status="500 Internal Server Error"))
    server.add(OK)
    got = await get(pool, server.url, limit=10, error_limit=ERROR_LIMIT)
    assert got.status == 500
    assert got.body == b"e" * ERROR_LIMIT
    await until(lambda: server.ended == 1)
    assert (await get(pool, server.url)).body == b"ok"
    assert server.accepted == 2


# -- answers that are not HTTP, or not whole ---------------------------------------------------


async def test_head_over_64k_ending_in_the_crossing_read_is_broken(
    server: Server, pool: HttpPool
) -> None:
    """The first 65,000 bytes of a 66 KB head, a pause, then the rest: refused all the same."""
    head = answer(b"ok", headers=[("X-Big", "v" * (MAX_HEAD_BYTES + 1000))])

    async def two_steps(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(head[:65_000])
        await writer.drain()
        await asyncio.sleep(0.02)
        writer.write(head[65_000:])
        await writer.drain()

    server.add(two_steps)
    with pytest.raises(Broken, match="head over"):
        await get(pool, server.url)


async def test_head_over_64k_arriving_slowly_is_broken(server: Server, pool: HttpPool) -> None:
    """The head written in 8 KiB pieces: refused once past the bound, before its end."""
    head = answer(b"ok", headers=[("X-Big", "v" * (2 * MAX_HEAD_BYTES))])

    async def pieces(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for i in range(0, len(head), 8192):
            writer.write(head[i : i + 8192])
            await writer.drain()
            await asyncio.sleep(0.002)

    server.add(pieces)
    with pytest.raises(Broken, match="head over"):
        await get(pool, server.url)
    await until(lambda: server.ended == 1)


async def test_too_many_headers_is_broken(server: Server, pool: HttpPool) -> None:
    server.add(answer(b"ok", headers=[(f"X-H-{i}", "v") for i in range(200)]))
    with pytest.raises(Broken, match=f"over {MAX_HEADERS} headers"):
        await get(pool, server.url)
    await until(lambda: server.left == 1)


async def test_headers_up_to_the_bound_are_fine(server: Server, pool: HttpPool) -> None:
    server.add(answer(b"ok", headers=[(f"X-H-{i}", "v") for i in range(MAX_HEADERS - 1)]))
    got = await get(pool, server.url)
    assert len(got.headers) == MAX_HEADERS  # with Content-Length
    assert got.body == b"ok"


@pytest.mark.parametrize(
    "garbage",
    [
        b"hello\r\n\r\n",
        b"HTTP/1.1 2000 OK\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n",
    ],
    ids=["not-http", "bad-status", "bad-length"],
)
async def test_not_http_is_broken(server: Server, pool: HttpPool, garbage: bytes) -> None:
    server.add(garbage)
    server.add(OK)
    await broken_then_a_new_connection(server, pool, "not HTTP")


async def test_switching_protocols_is_broken(server: Server, pool: HttpPool) -> None:
    server.add(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"
    )
    with pytest.raises(Broken, match="switched protocols"):
        await get(pool, server.url)
    await until(lambda: server.left == 1)


async def test_close_before_answering_is_broken(server: Server, pool: HttpPool) -> None:
    server.add(b"", close=True)
    server.add(OK)
    with pytest.raises(Broken, match="before answering"):
        await get(pool, server.url)
    assert (await get(pool, server.url)).body == b"ok"
    assert server.accepted == 2


@pytest.mark.parametrize(
    "cut",
    [
        b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n",
        b"HTTP/1.1 200 OK\r\nContent-",
    ],
    ids=["length", "chunked", "head"],
)
async def test_close_mid_answer_is_broken(server: Server, pool: HttpPool, cut: bytes) -> None:
    server.add(cut, close=True)
    with pytest.raises(Broken, match="mid-answer"):
        await get(pool, server.url)


# -- timeouts --------------------------------------------------------------------------------


async def test_silent_server_read_timed_out(server: Server, pool: HttpPool) -> None:
    started = time.perf_counter()
    with pytest.raises(ReadTimedOut):
        await get(pool, server.url, timeouts=Timeouts(connect=0.5, read=0.2, total=2))
    assert 0.19 <= time.perf_counter() - started < 0.45
    await until(lambda: server.left == 1)  # a timed-out connection is dropped


async def test_silence_mid_body_read_timed_out(server: Server, pool: HttpPool) -> None:
    server.add(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
    with pytest.raises(ReadTimedOut):
        await get(pool, server.url, timeouts=Timeouts(connect=0.5, read=0.2, total=2))


async def test_drip_server_deadline_passed(server: Server, pool: HttpPool) -> None:
    """A byte every 0.05 s never leaves 0.2 s of silence, but the whole request has 0.6 s."""
    server.add(drip(b"HTTP/1.1 200 OK\r\nX-Slow: ", 0.05, then=b"a"))
    started = time.perf_counter()
    with pytest.raises(DeadlinePassed):
        await get(pool, server.url, timeouts=Timeouts(connect=0.5, read=0.2, total=0.6))
    assert 0.59 <= time.perf_counter() - started < 0.85
    await until(lambda: server.ended == 1)


async def test_total_shorter_than_read_is_deadline(server: Server, pool: HttpPool) -> None:
    started = time.perf_counter()
    with pytest.raises(DeadlinePassed):
        await get(pool, server.url, timeouts=Timeouts(connect=0.5, read=1, total=0.2))
    assert time.perf_counter() - started < 0.45


async def test_no_free_connection_in_time(server: Server, pools: Callable[..., HttpPool]) -> None:
    pool = pools(1)
    stalled = asyncio.create_task(get(pool, server.url))
    await until(lambda: len(server.heads) == 1)
    with pytest.raises(DeadlinePassed, match="no free connection"):
        await get(pool, server.url, timeouts=Timeouts(connect=0.5, read=1, total=0.1))
    stalled.cancel()
    with pytest.raises(asyncio.CancelledError):
        await stalled
    server.add(OK)
    assert (await get(pool, server.url)).body == b"ok"  # the slot is free again


# -- connecting ------------------------------------------------------------------------------


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
async def test_connect_refused(pool: HttpPool, host: str) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(ConnectFailed, match="connection refused"):
        await get(pool, URL(f"http://{host}:{port}/"))


async def test_name_that_does_not_resolve(pool: HttpPool) -> None:
    with pytest.raises(ConnectFailed, match="DNS"):
        await get(pool, URL("http://nonexistent.invalid/"))


@pytest.mark.skipif(sys.platform != "linux", reason="a full accept queue drops SYNs on Linux")
async def test_connect_timed_out(pools: Callable[..., HttpPool]) -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port = listener.getsockname()[1]
        fillers = [socket.socket() for _ in range(3)]
        try:
            for filler in fillers:
                filler.setblocking(False)
                with contextlib.suppress(BlockingIOError):
                    filler.connect(("127.0.0.1", port))
            await asyncio.sleep(0.02)
            url = URL(f"http://127.0.0.1:{port}/")
            started = time.perf_counter()
            with pytest.raises(ConnectTimedOut):
                await get(pools(), url, timeouts=Timeouts(connect=0.2, read=1, total=1))
            assert 0.19 <= time.perf_counter() - started < 0.45
            with pytest.raises(DeadlinePassed, match="no connection"):
                await get(pools(), url, timeouts=Timeouts(connect=1, read=1, total=0.2))
        finally:
            for filler in fillers:
                filler.close()


# -- what is sent ----------------------------------------------------------------------------


async def test_request_bytes(server: Server, pool: HttpPool) -> None:
    server.add(OK)
    url = URL(str(server.url) + "v2/a%2Fb/c%20d?x=%20y&next=a%3Db", encoded=True)
    await get(pool, url, {"Authorization": "Bearer t", "Accept": "application/json"})
    (head,) = server.heads
    lines = head.decode("latin-1").split("\r\n")
    assert lines[0] == "GET /v2/a%2Fb/c%20d?x=%20y&next=a%3Db HTTP/1.1"
    assert lines[-2:] == ["", ""]
    fields = [line.partition(": ") for line in lines[1:-2]]
    names = [name.lower() for name, _, _ in fields]
    assert sorted(names) == sorted(
        ["host", "user-agent", "authorization", "accept", "accept-encoding"]
    )
    values = {name.lower(): value for name, _, value in fields}
    assert values["host"] == f"127.0.0.1:{server.url.port}"
    assert values["user-agent"] == USER_AGENT
    assert values["user-agent"].startswith("bulkopens")
    assert values["accept-encoding"] == "gzip, deflate"
    assert values["authorization"] == "Bearer t"
    assert values["accept"] == "application/json"


@pytest.mark.parametrize(
    "headers",
    [
        {"X-A": "a\r\nX-Injected: 1"},
        {"X-A": "a\nb"},
        {"X-A\r\n": "a"},
        {"X-A": "nul\0"},
        {"X": "€"},
    ],
    ids=["crlf", "lf", "name", "nul", "not-latin-1"],
)
async def test_unsendable_header_sends_nothing(
    server: Server, pool: HttpPool, headers: dict[str, str]
) -> None:
    with pytest.raises(Unsendable):
        await get(pool, server.url, headers)
    await asyncio.sleep(0.02)
    assert server.accepted == 0


@pytest.mark.parametrize(
    "url",
    [
        URL("ftp://127.0.0.1/file"),
        URL("/relative/path"),
        URL("http://127.0.0.1/a b", encoded=True),
        URL("http://127.0.0.1/a\r\nX: y", encoded=True),
    ],
    ids=["ftp", "no-host", "space", "crlf"],
)
async def test_unsendable_url(pool: HttpPool, url: URL) -> None:
    with pytest.raises(Unsendable):
        await get(pool, url)


# -- connections: reuse, extra bytes, cancellation, the pool ----------------------------------


async def test_extra_answer_in_the_same_write_not_reused(server: Server, pool: HttpPool) -> None:
    server.add(answer(b"first") + answer(b"unasked"))
    server.add(OK)
    got = await get(pool, server.url)
    assert (got.status, got.body) == (200, b"first")
    await until(lambda: server.left == 1)
    assert (await get(pool, server.url)).body == b"ok"
    assert server.accepted == 2


async def test_extra_bytes_while_idle_not_reused(server: Server, pool: HttpPool) -> None:
    async def twice(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(answer(b"first"))
        await writer.drain()
        await asyncio.sleep(0.05)
        writer.write(b"garbage")
        await writer.drain()

    server.add(twice)
    server.add(OK)
    assert (await get(pool, server.url)).body == b"first"
    await until(lambda: server.left == 1)
    assert (await get(pool, server.url)).body == b"ok"
    assert server.accepted == 2


async def test_a_server_that_speaks_first_is_broken_at_once(pools: Callable[..., HttpPool]) -> None:
    """A banner on connect (an SMTP or FTP port given as the base URL): Broken now, not a
    request left waiting for the read timeout on a connection already dropped."""

    served: list[asyncio.StreamWriter] = []

    async def banner(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        served.append(writer)
        writer.write(b"220 mail.example.invalid ESMTP ready\r\n")
        await writer.drain()
        await reader.read()
        writer.transport.abort()

    listener = await asyncio.start_server(banner, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    pool = pools()
    started = time.monotonic()
    try:
        with pytest.raises(Broken):
            await get(pool, URL(f"http://127.0.0.1:{port}/"), timeouts=Timeouts(1, 5, 10))
    finally:
        listener.close()
        for writer in served:
            writer.transport.abort()
        await listener.wait_closed()
    assert time.monotonic() - started < 1


class FakeTransport(asyncio.Transport):
    """Records what is written; closing marks it closed."""

    def __init__(self) -> None:
        super().__init__()
        self.written: list[bytes] = []
        self.closed = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.written.append(bytes(data))

    def abort(self) -> None:
        self.closed = True

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed


async def test_a_banner_before_the_request_fails_the_request_at_once() -> None:
    """The race the test above may not hit: the banner is read before the request is sent.
    The connection is dropped then, and the request fails at once instead of being written
    to a closed connection and waiting out the read timeout."""
    conn = _Connection(asyncio.get_running_loop(), ("http", "127.0.0.1", 25))
    transport = FakeTransport()
    conn.connection_made(transport)
    conn.data_received(b"220 mail.example.invalid ESMTP ready\r\n")
    assert transport.closed
    waiter = conn.exchange(b"GET / HTTP/1.1\r\n\r\n", 1e9, 5.0, LIMIT, ERROR_LIMIT)
    assert waiter.done()
    with pytest.raises(Broken):
        waiter.result()
    assert transport.written == []


async def test_cancelled_get_drops_its_connection(server: Server, pool: HttpPool) -> None:
    task = asyncio.create_task(get(pool, server.url, timeouts=Timeouts(0.5, 5, 5)))
    await until(lambda: len(server.heads) == 1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await until(lambda: server.left == 1)
    server.add(OK)
    assert (await get(pool, server.url)).body == b"ok"
    assert server.accepted == 2


async def test_cancelled_waiting_get_keeps_no_slot(
    server: Server, pools: Callable[..., HttpPool]
) -> None:
    """A get waiting for a free connection, cancelled: the connection freed later is used."""
    pool = pools(1)

    async def late(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(0.1)
        writer.write(answer(b"late"))

    server.add(late)
    server.add(OK)
    first = asyncio.create_task(get(pool, server.url))
    await until(lambda: len(server.heads) == 1)
    waiting = asyncio.create_task(get(pool, server.url))
    await asyncio.sleep(0.01)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert (await first).body == b"late"
    assert (await get(pool, server.url, timeouts=Timeouts(0.5, 0.5, 0.5))).body == b"ok"
    assert server.accepted == 1


async def test_pool_limit(server: Server, pools: Callable[..., HttpPool]) -> None:
    """Five gets at once on a pool of two: two connections, each carrying its share."""
    pool = pools(2)

    async def held(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(0.05)
        writer.write(answer(b"held"))

    for _ in range(5):
        server.add(held)
    started = time.perf_counter()
    answers = await asyncio.gather(*(get(pool, server.url) for _ in range(5)))
    assert [a.body for a in answers] == [b"held"] * 5
    assert server.most_open == 2
    assert server.accepted == 2
    assert 0.15 <= time.perf_counter() - started < 0.8  # three rounds of 0.05 s


async def test_idle_connection_to_another_origin_makes_room(
    server: Server, pools: Callable[..., HttpPool]
) -> None:
    pool = pools(1)
    other = Server()
    listener = await asyncio.start_server(other.serve, "127.0.0.1", 0)
    try:
        port = listener.sockets[0].getsockname()[1]
        server.add(OK)
        other.add(answer(b"other"))
        assert (await get(pool, server.url)).body == b"ok"
        assert (await get(pool, URL(f"http://127.0.0.1:{port}/"))).body == b"other"
        await until(lambda: server.left == 1)
        assert other.accepted == 1
    finally:
        listener.close()
        await pool.close()
        await asyncio.gather(*other.tasks, return_exceptions=True)
        await listener.wait_closed()


async def test_close_closes_every_connection(server: Server, pool: HttpPool) -> None:
    for _ in range(3):
        server.add(answer(b"x"))
    answers = await asyncio.gather(*(get(pool, server.url) for _ in range(3)))
    assert [a.body for a in answers] == [b"x"] * 3
    assert server.accepted == 3
    assert not pool.closed
    await pool.close()
    assert pool.closed
    await until(lambda: server.left == 3)
    with pytest.raises(RuntimeError, match="closed"):
        await get(pool, server.url)
    assert server.accepted == 3


async def test_close_fails_gets_in_flight_and_waiting(
    server: Server, pools: Callable[..., HttpPool]
) -> None:
    pool = pools(1)
    running = asyncio.create_task(get(pool, server.url))
    await until(lambda: len(server.heads) == 1)
    waiting = asyncio.create_task(get(pool, server.url))
    await asyncio.sleep(0.01)
    await pool.close()
    with pytest.raises(Broken):
        await running
    with pytest.raises(RuntimeError, match="closed"):
        await waiting
    await until(lambda: server.left == 1)
    assert server.accepted == 1


async def test_close_while_connecting_sends_nothing(server: Server, pool: HttpPool) -> None:
    server.add(OK)
    task = asyncio.create_task(get(pool, server.url))
    await asyncio.sleep(0)  # the get is inside create_connection
    await pool.close()
    outcome = (await asyncio.gather(task, return_exceptions=True))[0]
    await asyncio.sleep(0.02)
    assert server.heads == []
    assert isinstance(outcome, RuntimeError | Broken)


async def test_idle_past_keepalive_not_reused(
    server: Server, pools: Callable[..., HttpPool]
) -> None:
    pool = pools(2, keepalive=0.05)
    server.add(OK)
    server.add(OK)
    server.add(OK)
    assert (await get(pool, server.url)).body == b"ok"
    assert (await get(pool, server.url)).body == b"ok"  # at once: reused
    assert server.accepted == 1
    await asyncio.sleep(0.1)
    assert (await get(pool, server.url)).body == b"ok"
    assert server.accepted == 2
    await until(lambda: server.left == 1)  # the stale one closed by the pool


async def test_idle_connection_closed_by_the_server_replaced(
    server: Server, pool: HttpPool
) -> None:
    server.add(OK, close=True)  # a keep-alive answer, then the server closes anyway
    server.add(OK)
    assert (await get(pool, server.url)).body == b"ok"
    await until(lambda: server.ended == 1)
    await asyncio.sleep(0.02)  # the pool's side sees the close
    got = await get(pool, server.url)
    assert (got.status, got.body) == (200, b"ok")
    assert server.accepted == 2


def test_limit_must_be_positive() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        HttpPool(0)
    assert HttpPool(3).limit == 3


# -- TLS ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def authority() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
async def tls_server(authority: trustme.CA) -> AsyncIterator[Server]:
    """The scripted server behind TLS, its certificate for 127.0.0.1 and localhost."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    authority.issue_cert("127.0.0.1", "localhost").configure_cert(context)
    server = Server()
    listener = await asyncio.start_server(server.serve, "127.0.0.1", 0, ssl=context)
    port = listener.sockets[0].getsockname()[1]
    server.url = URL(f"https://127.0.0.1:{port}/")
    yield server
    listener.close()
    for writer in server.writers:
        writer.transport.abort()
    for task in server.tasks:
        task.cancel()
    await asyncio.gather(*server.tasks, return_exceptions=True)


async def test_tls_answers_and_keeps_the_connection(
    tls_server: Server, authority: trustme.CA
) -> None:
    context = ssl.create_default_context()
    authority.configure_trust(context)
    pool = HttpPool(2, ssl_context=context)
    try:
        tls_server.add(answer(b"secret-free"))
        tls_server.add(OK)
        first = await get(pool, tls_server.url / "v2/x")
        second = await get(pool, tls_server.url / "v2/y")
    finally:
        await pool.close()
    assert (first.body, second.body) == (b"secret-free", b"ok")
    assert tls_server.accepted == 1
    assert tls_server.heads[0].startswith(b"GET /v2/x HTTP/1.1\r\nHost: 127.0.0.1:")


async def test_tls_trusts_the_system_store_and_ssl_cert_file(
    tls_server: Server, authority: trustme.CA, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The default context: a certificate nobody vouches for is refused, by name; one whose
    authority is in SSL_CERT_FILE (how a user trusts a corporate CA) is taken."""
    tls_server.add(OK)
    pool = HttpPool(1)
    try:
        with pytest.raises(ConnectFailed, match="its TLS certificate is not trusted"):
            await get(pool, tls_server.url)
    finally:
        await pool.close()
    assert tls_server.heads == []  # nothing was sent
    bundle = tmp_path / "ca.pem"
    authority.cert_pem.write_to_path(str(bundle))
    monkeypatch.setenv("SSL_CERT_FILE", str(bundle))
    pool = HttpPool(1)
    try:
        assert (await get(pool, tls_server.url)).body == b"ok"
    finally:
        await pool.close()


async def test_tls_checks_the_host_name(authority: trustme.CA) -> None:
    """A trusted certificate for another name is refused before anything is sent."""
    served = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    authority.issue_cert("api.example.invalid").configure_cert(served)
    heads: list[bytes] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(Exception):
            heads.append(await reader.readuntil(b"\r\n\r\n"))
        writer.transport.abort()

    listener = await asyncio.start_server(serve, "127.0.0.1", 0, ssl=served)
    port = listener.sockets[0].getsockname()[1]
    context = ssl.create_default_context()
    authority.configure_trust(context)
    pool = HttpPool(1, ssl_context=context)
    try:
        with pytest.raises(ConnectFailed, match="its TLS certificate is not trusted"):
            await get(pool, URL(f"https://127.0.0.1:{port}/"))
    finally:
        await pool.close()
        listener.close()
    assert heads == []
