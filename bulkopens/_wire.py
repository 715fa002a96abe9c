"""One GET on the wire: the lean HTTP/1.1 client of the run's hot loop, and what a wire is.

A *wire* sends one GET and returns the answer whole, bounded: :class:`Answer` (status, the
headers it needs, the body). Two implement it: :class:`HttpPool` here, the default, and
:class:`bulkopens._aiowire.SessionWire`, a caller's own ``aiohttp.ClientSession`` (for its
proxies, TLS or tracing). :mod:`bulkopens._http` gives an answer its meaning; a wire only moves
bytes and raises :class:`WireError` subclasses, which the transport words.

Why a second HTTP client: aiohttp's request machinery costs about as much CPU per request as
all of bulkopens' own bookkeeping, and its import a tenth of a second per run
(benchmarks/README.md, issue 17). :class:`HttpPool` is a keep-alive pool of asyncio
connections whose answers are parsed by ``httptools`` (llhttp, the parser Node.js and aiohttp
use), so what it does by hand is small and tested against hostile servers:

- one request per connection at a time, kept alive while the server allows
  (``should_keep_alive``), dropped after ``keepalive`` seconds idle, never reused after an
  answer cut short, cancelled, timed out, or followed by bytes nobody asked for;
- bodies by ``Content-Length``, chunked, or up to the connection's close; interim ``1xx``
  answers skipped; ``gzip`` and ``deflate`` inflated at most ``limit + 1`` bytes at a time;
- bounds whatever a server sends: the head at :data:`MAX_HEAD_BYTES` and
  :data:`MAX_HEADERS`, the body at ``limit`` (a 200) or ``error_limit`` (anything else, cut
  there rather than refused), a declared length over the limit refused before reading;
- timeouts: connect (``connect``), the longest silence (``read``), and the whole request from
  the first try to connect to the last byte (``total``), one timer per request;
- TLS by the standard library's default context (system trust store, host name checked);
  several addresses tried Happy-Eyeballs style on asyncio's loop.

No redirects are followed and no cookies kept; the API uses neither.
"""

from __future__ import annotations

import asyncio
import errno
import functools
import ipaddress
import socket
import ssl
import zlib
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, cast

import httptools

if TYPE_CHECKING:
    from collections.abc import Mapping

    from yarl import URL

USER_AGENT = "bulkopens (+https://pypi.org/project/bulkopens/)"
MAX_HEAD_BYTES = 64 * 1024  # status line and headers of one answer
MAX_HEADERS = 128
KEEPALIVE = 15.0  # seconds an idle connection is kept (aiohttp's default too)
_CONNECT_CAUSES = {
    errno.ECONNREFUSED: "connection refused",
    errno.ECONNRESET: "connection reset",
    errno.ENETUNREACH: "network unreachable",
    errno.EHOSTUNREACH: "host unreachable",
    errno.ETIMEDOUT: "timed out",
    errno.EADDRNOTAVAIL: "address not available",
    errno.EPIPE: "broken pipe",
}


# -- what every wire gives and raises ---------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Timeouts:
    """Seconds: to connect, of silence while waiting for an answer, for the whole request."""

    connect: float
    read: float
    total: float


@dataclass(frozen=True, slots=True)
class Answer:
    """An answer, read whole: its status, its headers (names in lower case, the first of a
    repeated one) and its body (inflated; an error answer's cut at ``error_limit``)."""

    status: int
    headers: Mapping[str, str]
    body: bytes

    @property
    def content_type(self) -> str:
        """The media type, lower case, without parameters ('' when there is none)."""
        return self.headers.get("content-type", "").partition(";")[0].strip().lower()


class Wire(Protocol):
    """Sends one GET; the connection pooling, timeouts and body bounds are the wire's."""

    @property
    def limit(self) -> int:
        """The most requests it carries at once (its connections)."""

    async def get(
        self,
        url: URL,
        headers: Mapping[str, str],
        *,
        timeouts: Timeouts,
        limit: int,
        error_limit: int,
    ) -> Answer:
        """GET ``url``. A 200's body longer than ``limit`` raises :class:`TooLarge`; any other
        status's body is cut at ``error_limit``."""

    async def close(self) -> None:
        """Close its connections (a caller's own session is left open)."""


class WireError(Exception):
    """A request that got no whole answer. ``str()`` is a few words, never a secret."""


class ConnectFailed(WireError):
    """No connection: refused, DNS, unreachable, TLS. The message is the cause."""


class ConnectTimedOut(WireError):
    """No connection within the connect timeout."""


class ReadTimedOut(WireError):
    """Nothing from the server for the read timeout."""


class DeadlinePassed(WireError):
    """No whole answer within the request's total timeout."""


class Broken(WireError):
    """The connection closed, or the server said something that is not HTTP, mid-request."""


class Failed(WireError):
    """An operating-system error on an open connection (reset, broken pipe)."""


class TooLarge(WireError):
    """A 200's body over the limit: not read further."""


class Unsendable(WireError):
    """The request cannot be sent as asked (a header with a line break, a URL without host)."""


def connect_cause(exc: BaseException) -> str:
    """Why no connection was made, in a few words."""
    if isinstance(exc, socket.gaierror):
        return "the host name does not resolve (DNS)"
    if isinstance(exc, ssl.SSLCertVerificationError):
        return "its TLS certificate is not trusted"
    if isinstance(exc, ssl.SSLError):
        return "the TLS handshake failed"
    if isinstance(exc, OSError):
        cause = _CONNECT_CAUSES.get(exc.errno or 0)
        if cause is None and "refused" in str(exc).lower():
            cause = "connection refused"  # several addresses tried: errno is not kept
        return cause or type(exc).__name__
    return type(exc).__name__


# -- the lean client --------------------------------------------------------------------------


class _Stop(Exception):
    """Raised in a parser callback to stop the parser: the answer is already settled."""


class _Connection(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection carrying one request at a time."""

    __slots__ = (
        "_body",
        "_cap",
        "_count",
        "_cut",
        "_deadline",
        "_decoder",
        "_error_limit",
        "_fed",
        "_fields",
        "_head",
        "_head_done",
        "_headers",
        "_interim",
        "_last",
        "_limit",
        "_loop",
        "_parser",
        "_read_timeout",
        "_size",
        "_timer",
        "_until_close",
        "_waiter",
        "gone",
        "idle_since",
        "key",
        "lost",
        "reusable",
        "transport",
    )

    def __init__(self, loop: asyncio.AbstractEventLoop, key: tuple[str, str, int]) -> None:
        self._loop = loop
        self.key = key
        self.transport: asyncio.Transport | None = None
        self._parser = httptools.HttpResponseParser(self)
        self._waiter: asyncio.Future[Answer] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self.lost = False
        self.gone: asyncio.Future[None] = loop.create_future()  # done once the socket is closed
        self.reusable = False
        self.idle_since = 0.0
        self._reset(0, 0)
        self._deadline = self._last = self._read_timeout = 0.0

    def _reset(self, limit: int, error_limit: int) -> None:
        self._headers: dict[str, str] = {}
        self._body: list[bytes] = []
        self._size = 0
        self._head = 0  # bytes received while no head was whole (interim answers' too)
        self._fields = 0  # bytes of header fields parsed (interim answers' too)
        self._count = 0  # header fields parsed
        self._head_done = False
        self._interim = False
        self._until_close = False
        self._decoder: zlib._Decompress | None = None
        self._fed = False  # compressed bytes given to the decoder
        self._limit = limit  # a 200's body: refused past it
        self._error_limit = error_limit  # any other answer's body: cut there
        self._cap = limit
        self._cut = False

    # -- one exchange --

    def exchange(
        self, request: bytes, deadline: float, read_timeout: float, limit: int, error_limit: int
    ) -> asyncio.Future[Answer]:
        """Send ``request``; the future is the whole answer or a WireError."""
        self._reset(limit, error_limit)
        waiter = self._waiter = self._loop.create_future()
        transport = self.transport
        if self.lost or transport is None or transport.is_closing():
            # Closed, or it spoke before being asked (a banner: not an HTTP server).
            waiter.set_exception(Broken("the server closed the connection before answering"))
            return waiter
        now = self._loop.time()
        self._deadline, self._last, self._read_timeout = deadline, now, read_timeout
        self._timer = self._loop.call_at(min(deadline, now + read_timeout), self._on_timer)
        self.reusable = False
        transport.write(request)
        return waiter

    def _on_timer(self) -> None:
        waiter = self._waiter
        if waiter is None or waiter.done():
            return
        now = self._loop.time() + 0.001  # the loop fires a timer up to its clock's resolution early
        if now >= self._deadline:
            self._fail(DeadlinePassed("no whole answer in time"))
        elif now >= self._last + self._read_timeout:
            self._fail(ReadTimedOut("nothing from the server"))
        else:
            when = min(self._deadline, self._last + self._read_timeout)
            self._timer = self._loop.call_at(when, self._on_timer)

    def _settle(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _fail(self, exc: WireError) -> None:
        self._settle()
        self.reusable = False
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)
        self.abort()

    def _finish(self, *, keep: bool) -> None:
        self._settle()
        waiter = self._waiter
        if waiter is None or waiter.done():
            return
        body = self._body[0] if len(self._body) == 1 else b"".join(self._body)
        self._body = []
        self.reusable = keep and not self.lost
        waiter.set_result(Answer(self._parser.get_status_code(), self._headers, body))
        if not self.reusable:
            self.abort()

    def abort(self) -> None:
        """Drop the connection at once (its state is unknown): never reused."""
        self._settle()
        self.reusable = False
        self.lost = True
        if self.transport is not None:
            self.transport.abort()

    # -- asyncio.Protocol --

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast("asyncio.Transport", transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        waiter = self._waiter
        if waiter is None or waiter.done():
            self.abort()  # bytes nobody asked for: this connection cannot be trusted again
            return
        self._last = self._loop.time()
        if not self._head_done:
            self._head += len(data)  # (a body's first bytes too: checked only while no head)
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserCallbackError:
            if not waiter.done():  # not our _Stop (which settles first): never left waiting
                self._fail(Broken("an answer this client could not read"))
            return
        except httptools.HttpParserUpgrade:
            self._fail(Broken("the server switched protocols"))
            return
        except httptools.HttpParserError:
            self._fail(Broken("an answer that is not HTTP/1.1"))
            return
        if not self._head_done and self._head > MAX_HEAD_BYTES:
            self._fail(Broken(f"an answer head over {MAX_HEAD_BYTES:,} bytes"))

    def eof_received(self) -> bool | None:
        return None  # close our side too; connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self.reusable = False
        if not self.gone.done():
            self.gone.set_result(None)
        waiter = self._waiter
        if waiter is None or waiter.done():
            return
        if self._head_done and self._until_close and not self._interim:
            try:
                self._flush_decoder()
            except _Stop:
                return
            self._finish(keep=False)  # a body that ends with the connection: whole
        elif isinstance(exc, OSError):
            self._fail(Failed(connect_cause(exc)))
        elif self._head_done or self._head:
            self._fail(Broken("the server closed the connection mid-answer"))
        else:
            self._fail(Broken("the server closed the connection before answering"))

    # -- httptools callbacks --

    def on_message_begin(self) -> None:
        if self._waiter is None or self._waiter.done():
            self.abort()  # a second answer to one request
            raise _Stop

    def on_header(self, name: bytes, value: bytes) -> None:
        headers = self._headers
        self._fields += len(name) + len(value) + 4
        self._count += 1
        if self._count > MAX_HEADERS or self._fields > MAX_HEAD_BYTES:
            self._fail(
                Broken(f"an answer head over {MAX_HEADERS} headers or {MAX_HEAD_BYTES:,} bytes")
            )
            raise _Stop
        headers.setdefault(name.decode("latin-1").lower(), value.decode("latin-1"))

    def on_headers_complete(self) -> None:
        status = self._parser.get_status_code()
        headers = self._headers
        if 100 <= status < 200:
            self._interim = True  # 100 Continue, 103 Early Hints: the answer follows
            return
        self._interim = False
        self._head_done = True
        self._cut = status != 200
        self._cap = self._error_limit if self._cut else self._limit
        encoding = headers.get("content-encoding", "identity").strip().lower()
        if encoding in ("gzip", "x-gzip"):
            self._decoder = zlib.decompressobj(16 + zlib.MAX_WBITS)
        elif encoding == "deflate":
            self._decoder = zlib.decompressobj()  # zlib-wrapped; raw deflate found below
        elif encoding != "identity":
            self._fail(Broken(f"an answer in an encoding not asked for ({encoding[:20]!r})"))
            raise _Stop
        declared = headers.get("content-length")
        chunked = "chunked" in headers.get("transfer-encoding", "").lower()
        self._until_close = declared is None and not chunked and status not in (204, 304)
        if (
            declared is not None
            and self._decoder is None
            and not self._cut
            and declared.strip().isdigit()
            and int(declared) > self._cap
        ):
            self._fail(TooLarge("declared over the limit"))
            raise _Stop

    def on_body(self, data: bytes) -> None:
        if self._interim:
            return
        decoder = self._decoder
        if decoder is not None:
            self._fed = True
            try:
                data = decoder.decompress(data, self._cap - self._size + 1)
            except zlib.error:
                if self._size or decoder.unused_data or not self._raw_deflate():
                    self._fail(Broken("a compressed body that does not inflate"))
                    raise _Stop from None
                decoder = self._decoder
                assert decoder is not None
                data = decoder.decompress(data, self._cap - self._size + 1)
            # Inflated at most one byte past the cap: past it, _add stops the answer.
        self._add(data)

    def on_message_complete(self) -> None:
        if self._interim:
            self._interim = False
            self._headers = {}
            return
        self._flush_decoder()
        self._finish(keep=self._parser.should_keep_alive())

    # -- the body --

    def _add(self, data: bytes) -> None:
        size = self._size + len(data)
        if size > self._cap:
            self._over(data)
            raise _Stop
        self._size = size
        self._body.append(data)

    def _over(self, data: bytes) -> None:
        """The body passed its cap: an error answer is cut there, a 200 refused."""
        if self._cut:
            self._body.append(data[: self._cap - self._size])
            self._finish(keep=False)  # the rest is unread: never reused
        else:
            self._fail(TooLarge("over the limit"))

    def _raw_deflate(self) -> bool:
        """A ``deflate`` body without zlib's wrapper (some servers send that): inflated raw
        from its first byte on, as aiohttp does. False for any other encoding."""
        if self._headers.get("content-encoding", "").strip().lower() != "deflate" or self._body:
            return False
        self._decoder = zlib.decompressobj(-zlib.MAX_WBITS)
        return True

    def _flush_decoder(self) -> None:
        decoder = self._decoder
        if decoder is not None:
            self._decoder = None
            try:
                rest = decoder.flush()
            except zlib.error:
                self._fail(Broken("a compressed body that does not inflate"))
                raise _Stop from None
            if rest:
                self._add(rest)
            if self._fed and not decoder.eof:  # (an empty body, a 204 say, is no stream)
                self._fail(Broken("a compressed body cut short"))
                raise _Stop


class HttpPool:
    """The lean wire: a keep-alive pool of HTTP/1.1 connections (per origin), at most
    ``limit`` open at once. Made and used inside one running event loop."""

    __slots__ = ("_closed", "_conns", "_idle", "_keepalive", "_limit", "_ssl", "_waiters")

    def __init__(
        self, limit: int, *, keepalive: float = KEEPALIVE, ssl_context: ssl.SSLContext | None = None
    ) -> None:
        if limit < 1:
            raise ValueError("limit must be at least 1")
        self._limit = limit
        self._keepalive = keepalive
        self._ssl = ssl_context
        self._idle: list[_Connection] = []
        self._conns: set[_Connection] = set()
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._closed = False

    @property
    def limit(self) -> int:
        return self._limit

    @property
    def closed(self) -> bool:
        """Closed, with every connection it had."""
        return self._closed and not self._conns

    async def get(
        self,
        url: URL,
        headers: Mapping[str, str],
        *,
        timeouts: Timeouts,
        limit: int,
        error_limit: int,
    ) -> Answer:
        if self._closed:
            raise RuntimeError("the HTTP pool is closed")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeouts.total
        request = _request(url, headers)
        key = (url.scheme, url.raw_host or "", url.port or 0)
        conn = self._take(key, loop.time())
        if conn is None:
            conn = await self._open(loop, url, key, deadline, timeouts.connect)
        try:
            answer = await conn.exchange(request, deadline, timeouts.read, limit, error_limit)
        except BaseException:
            conn.abort()
            self._drop(conn)
            raise
        if conn.reusable and not self._closed:
            conn.idle_since = loop.time()
            self._idle.append(conn)
            self._wake()
        else:
            conn.abort()
            self._drop(conn)
        return answer

    async def close(self) -> None:
        """Close every connection and wait (a second at most) until they are closed."""
        self._closed = True
        conns = list(self._conns)
        for conn in conns:
            if conn.transport is not None:
                conn.transport.close()
        self._conns.clear()
        self._idle.clear()
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
        gone = [conn.gone for conn in conns if conn.transport is not None]
        if gone:
            await asyncio.wait(gone, timeout=1.0)

    # -- the pool --

    def _take(self, key: tuple[str, str, int], now: float) -> _Connection | None:
        """The most recently used idle connection to ``key`` still open (others that have
        closed or idled too long are dropped on the way)."""
        idle = self._idle
        for i in range(len(idle) - 1, -1, -1):
            conn = idle[i]
            if (
                conn.lost
                or now - conn.idle_since > self._keepalive
                or conn.transport is None
                or conn.transport.is_closing()
            ):
                del idle[i]
                conn.abort()
                self._drop(conn)
            elif conn.key == key:
                del idle[i]
                return conn
        return None

    def _drop(self, conn: _Connection) -> None:
        if conn in self._conns:
            self._conns.discard(conn)
            self._wake()

    def _wake(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    async def _open(
        self,
        loop: asyncio.AbstractEventLoop,
        url: URL,
        key: tuple[str, str, int],
        deadline: float,
        connect_timeout: float,
    ) -> _Connection:
        """A new connection to ``url``'s origin, once fewer than ``limit`` are open."""
        while len(self._conns) >= self._limit:
            if self._idle:  # another origin's idle connection makes room
                old = self._idle.pop(0)
                old.abort()
                self._drop(old)
                continue
            waiter = loop.create_future()
            self._waiters.append(waiter)
            try:
                await asyncio.wait_for(waiter, max(deadline - loop.time(), 0))
            except TimeoutError:
                self._wake()  # in case a wake-up came as the wait ended: pass it on
                raise DeadlinePassed("no free connection in time") from None
            except BaseException:
                self._wake()
                raise
            if self._closed:
                raise RuntimeError("the HTTP pool is closed")
            conn = self._take(key, loop.time())
            if conn is not None:
                return conn
        host = key[1]
        secure = url.scheme == "https"
        context: ssl.SSLContext | None = None
        if secure:
            if self._ssl is None:
                self._ssl = ssl.create_default_context()
            context = self._ssl
        conn = _Connection(loop, key)
        self._conns.add(conn)  # counted while it connects
        wait = min(connect_timeout, max(deadline - loop.time(), 0))
        connect = functools.partial(
            loop.create_connection,
            lambda: conn,
            host,
            key[2],
            ssl=context,
            server_hostname=host if secure else None,
            ssl_handshake_timeout=max(wait, 0.001) if secure else None,
        )
        try:
            await asyncio.wait_for(
                # A host name's addresses tried Happy-Eyeballs style (uvloop has no such
                # knobs; an IP address needs none, and spares 3.11's staggered race, which can
                # leak a socket when a connect is cancelled).
                connect(happy_eyeballs_delay=0.25, interleave=1)
                if isinstance(loop, asyncio.BaseEventLoop) and not _is_ip(host)
                else connect(),
                wait,
            )
        except TimeoutError:
            self._drop(conn)
            if wait < connect_timeout:
                raise DeadlinePassed("no connection in time") from None
            raise ConnectTimedOut("no connection in time") from None
        except (OSError, ssl.SSLError) as exc:
            self._drop(conn)
            raise ConnectFailed(connect_cause(exc)) from None
        except BaseException:
            self._drop(conn)
            raise
        if self._closed:  # closed while this one connected
            conn.abort()
            raise RuntimeError("the HTTP pool is closed")
        return conn


def _request(url: URL, headers: Mapping[str, str]) -> bytes:
    """The bytes of a GET of ``url`` with ``headers``; refused if any would break a line."""
    host = url.raw_host or ""
    if not host or url.scheme not in ("http", "https"):
        raise Unsendable("a URL that is not http(s)://host/...")
    if ":" in host:
        host = f"[{host}]"  # an IPv6 address
    port = url.explicit_port
    if port is not None and port != (443 if url.scheme == "https" else 80):
        host = f"{host}:{port}"
    target = url.raw_path_qs
    if " " in target or not _safe(target):
        raise Unsendable("a URL with a space or a line break")
    lines = [f"GET {target} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: {USER_AGENT}\r\n"]
    for name, value in headers.items():
        if not (_safe(name) and _safe(value)):
            raise Unsendable("a header with a line break")
        lines.append(f"{name}: {value}\r\n")
    lines.append("Accept-Encoding: gzip, deflate\r\n\r\n")
    try:
        return "".join(lines).encode("latin-1")
    except UnicodeEncodeError:
        raise Unsendable("a header that is not Latin-1") from None


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _safe(text: str) -> bool:
    return "\r" not in text and "\n" not in text and "\0" not in text
