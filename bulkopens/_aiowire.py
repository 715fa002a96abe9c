"""A caller's own ``aiohttp.ClientSession`` as a wire (``Client(session=...)``): its proxies,
TLS settings and tracing, with the same bounds and the same errors as the lean wire.

The body is read in chunks after aiohttp's decompression (which inflates at most a buffer's
worth at a time) and reading stops at the limit; a declared length over it is refused before
reading. aiohttp's exceptions become :mod:`bulkopens._wire`'s here, at this one boundary.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import aiohttp

from bulkopens._wire import (
    Answer,
    Broken,
    ConnectFailed,
    ConnectTimedOut,
    DeadlinePassed,
    Failed,
    ReadTimedOut,
    Timeouts,
    TooLarge,
    Unsendable,
    connect_cause,
)

if TYPE_CHECKING:
    from collections.abc import Mapping

    from yarl import URL


class SessionWire:
    """Requests through ``session``, which stays the caller's: :meth:`close` leaves it open."""

    __slots__ = ("_session",)

    def __init__(self, session: aiohttp.ClientSession) -> None:
        self._session = session

    @property
    def limit(self) -> int:
        """The session's connection limit (0, no limit, counts as a large number)."""
        connector = self._session.connector
        if connector is None:
            return 1 << 30
        limits = [n for n in (connector.limit, connector.limit_per_host) if n]
        return min(limits, default=1 << 30)

    async def close(self) -> None:
        return None

    async def get(
        self,
        url: URL,
        headers: Mapping[str, str],
        *,
        timeouts: Timeouts,
        limit: int,
        error_limit: int,
    ) -> Answer:
        timeout = aiohttp.ClientTimeout(
            total=timeouts.total, sock_connect=timeouts.connect, sock_read=timeouts.read
        )
        try:
            async with self._session.get(
                url, headers=dict(headers), timeout=timeout, allow_redirects=False
            ) as response:
                status = response.status
                found: dict[str, str] = {}
                for name, value in response.headers.items():
                    found.setdefault(name.lower(), value)
                if status == 200:
                    body = await _read(response, limit, cut=False)
                else:
                    body = await _read(response, error_limit, cut=True)
                return Answer(status, found, body)
        except aiohttp.ClientConnectorError as exc:  # refused, DNS, unreachable, TLS
            raise ConnectFailed(_connector_cause(exc)) from None
        except aiohttp.ConnectionTimeoutError:
            raise ConnectTimedOut("no connection in time") from None
        except aiohttp.SocketTimeoutError:
            raise ReadTimedOut("nothing from the server") from None
        except TimeoutError:  # the whole-request deadline
            raise DeadlinePassed("no whole answer in time") from None
        except aiohttp.ServerDisconnectedError:
            raise Broken("the server closed the connection") from None
        except aiohttp.ClientPayloadError:
            raise Broken("a broken answer body") from None
        except aiohttp.ClientOSError as exc:
            raise Failed(connect_cause(exc)) from None
        except aiohttp.InvalidURL:
            raise Unsendable("an invalid request URL") from None
        except aiohttp.ClientError as exc:
            raise Broken(type(exc).__name__) from None
        except ValueError:  # a header with a line break
            raise Unsendable("a header with a line break") from None


async def _read(response: aiohttp.ClientResponse, limit: int, *, cut: bool) -> bytes:
    """The body, a chunk at a time, up to ``limit`` bytes: past it TooLarge, or with ``cut``
    the first ``limit`` bytes. The connection is then closed: the rest is unread."""
    declared = response.content_length
    # A compressed body could shrink: only a plain one is refused by its length alone.
    plain = "Content-Encoding" not in response.headers
    if declared is not None and declared > limit and plain and not cut:
        response.close()
        raise TooLarge("declared over the limit")
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.content.iter_any():
        size += len(chunk)
        if size > limit:
            response.close()
            if not cut:
                raise TooLarge("over the limit")
            chunks.append(chunk[: limit - size + len(chunk)])
            break
        chunks.append(chunk)
    return b"".join(chunks)


def _connector_cause(exc: aiohttp.ClientConnectorError) -> str:
    if isinstance(exc, aiohttp.ClientConnectorDNSError):
        return "the host name does not resolve (DNS)"
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        return "its TLS certificate is not trusted"
    if isinstance(exc, aiohttp.ClientSSLError):
        return "the TLS handshake failed"
    return connect_cause(exc.os_error)
