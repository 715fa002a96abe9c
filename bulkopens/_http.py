"""The only module that talks to aiohttp's client: one GET of one page, and what its answer means.

Every request carries the ``api_key`` query parameter and ``Authorization: Bearer``; both go only
to the configured API host. Every aiohttp exception is translated here, at this one boundary, into
the error tree of :mod:`bulkopens._exceptions`, with messages built from the URL path only.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import aiohttp
import orjson
from yarl import URL

from bulkopens._exceptions import (
    AuthenticationError,
    BadRequest,
    ConfigurationError,
    ContactError,
    ContactNotFound,
    QuotaExhausted,
    ThrottledError,
    TransientError,
)
from bulkopens._redact import Redactor
from bulkopens._timefmt import next_utc_midnight

USER_AGENT = "bulkopens (+https://pypi.org/project/bulkopens/)"
_THROTTLE_KEYS = {"throttled", "mashery.not.authorized.over.qps"}
_QUOTA_KEYS = {"quota_exceeded", "mashery.not.authorized.over.ratelimit"}
_RETRY_STATUSES = {408, 425, 429}  # besides every 5xx
_MAX_ERROR_TEXT = 200


@dataclass(slots=True)
class Page:
    """One page of a report: the records as the API sent them, and the raw next_link.

    ``body`` is the answer's text, from which the records' own text can be cut (see
    :func:`bulkopens._pagination.record_text`); whoever changes ``results`` must drop it.
    """

    results: list[dict[str, Any]]
    next_link: str | None
    body: bytes | None = None


def new_session(workers: int, connect_timeout: float, read_timeout: float) -> aiohttp.ClientSession:
    """A session sized to the worker pool: keep-alive, connect and read timeouts."""
    connector = aiohttp.TCPConnector(limit=workers, limit_per_host=workers, keepalive_timeout=30)
    timeout = aiohttp.ClientTimeout(
        total=None, sock_connect=connect_timeout, sock_read=read_timeout
    )
    return aiohttp.ClientSession(
        connector=connector, timeout=timeout, headers={"User-Agent": USER_AGENT}
    )


class Transport:
    """Sends one GET for one page and classifies the answer.

    ``get`` returns a :class:`Page` (``get_object``: a JSON object) or raises: TransientError,
    ThrottledError, QuotaExhausted, AuthenticationError, ConfigurationError, or ContactError
    (404, other 4xx).
    """

    __slots__ = ("_headers", "_origin", "_redact", "_session", "_timeout", "api_key", "responses")

    def __init__(
        self,
        session: aiohttp.ClientSession,
        *,
        base: URL,
        api_key: str,
        token: str,
        redact: Redactor,
        connect_timeout: float,
        read_timeout: float,
        responses: dict[int, int] | None = None,
    ) -> None:
        self._session = session
        self._origin = base.origin()
        self.api_key = api_key
        self._headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
        self._redact = redact
        # Set per request too, so a caller's session with other timeouts still gets ours.
        self._timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=connect_timeout, sock_read=read_timeout
        )
        self.responses: dict[int, int] = {} if responses is None else responses

    async def get(self, url: URL) -> Page:
        """GET one page. ``url`` carries no credentials; they are added here."""
        return self._page(await self._body(url), url.path)

    async def get_object(self, url: URL) -> dict[str, Any]:
        """GET one unpaged JSON object (a summary report); errors as for :meth:`get`."""
        where = url.path
        data = _parse(await self._body(url), where)
        if not isinstance(data, dict):
            raise TransientError(f"200 for {where} without a JSON object")
        return data

    async def get_list(self, url: URL) -> list[dict[str, Any]]:
        """GET one unpaged bare JSON array of objects (summaryByCampaign); errors as for
        :meth:`get`."""
        where = url.path
        data = _parse(await self._body(url), where)
        if not isinstance(data, list) or not set(map(type, data)) <= {dict}:
            raise TransientError(f"200 for {where} without a JSON array of objects")
        return data

    async def _body(self, url: URL) -> bytes:
        """The body of a 200 answer to GET ``url``; any other answer is raised as an error."""
        if url.origin() != self._origin:
            # Defence in depth: pagination already refuses foreign next_links.
            raise ConfigurationError(f"refusing to send credentials to another host ({url.host})")
        where = url.path
        try:
            async with self._session.get(
                url.extend_query(api_key=self.api_key),
                headers=self._headers,
                timeout=self._timeout,
                allow_redirects=False,
            ) as response:
                status = response.status
                self.responses[status] = self.responses.get(status, 0) + 1
                body = await response.read()
                retry_after = response.headers.get("Retry-After")
        except TimeoutError:  # also aiohttp's socket read/connect timeouts
            raise TransientError(f"timed out waiting for {where}") from None
        except (aiohttp.ClientPayloadError, aiohttp.ServerDisconnectedError) as exc:
            raise TransientError(f"connection broke during {where}: {type(exc).__name__}") from None
        except (aiohttp.ClientConnectionError, aiohttp.ClientOSError) as exc:
            raise TransientError(f"connection failed for {where}: {type(exc).__name__}") from None
        except aiohttp.InvalidURL:
            raise ConfigurationError(f"invalid request URL for {where}") from None
        except aiohttp.ClientError as exc:
            raise TransientError(f"request failed for {where}: {type(exc).__name__}") from None
        if status == 200:
            return body
        raise self._error(status, body, retry_after, where)

    def _page(self, body: bytes, where: str) -> Page:
        data = _parse(body, where)
        results = data.get("results") if isinstance(data, dict) else None
        if not isinstance(results, list) or not set(map(type, results)) <= {dict}:
            raise TransientError(f"200 for {where} without a results list")
        meta = data.get("meta")
        pagination = meta.get("pagination") if isinstance(meta, dict) else None
        next_link = pagination.get("next_link") if isinstance(pagination, dict) else None
        if next_link is not None and not isinstance(next_link, str):
            raise TransientError(f"200 for {where} with a malformed next_link")
        return Page(results, next_link or None, body)

    def _error(self, status: int, body: bytes, retry_after: str | None, where: str) -> Exception:
        key, text = self._error_detail(body)
        said = f"{status} {key or ''}{': ' if key and text else ''}{text}".strip()
        if key in _THROTTLE_KEYS or (status == 429 and key not in _QUOTA_KEYS):
            return ThrottledError(
                f"throttled on {where} ({said})", retry_after=_seconds(retry_after)
            )
        if key in _QUOTA_KEYS:
            resets = next_utc_midnight(datetime.now(UTC))
            return QuotaExhausted(
                f"the API key's daily quota is exhausted ({said}); it resets at "
                f"{resets:%Y-%m-%d %H:%M} UTC",
                resets_at=resets,
            )
        if status == 401 or status == 403:
            return AuthenticationError(
                f"authentication failed ({said}): check the API key and access token"
            )
        if status == 404:
            return ContactNotFound(f"not found: {where} ({said})", status=404, error_key=key)
        if 300 <= status < 400:
            return ConfigurationError(f"{where} answered a redirect ({status}); check --base-url")
        if status == 400:
            return BadRequest(f"the API rejected the request for {where} ({said})")
        if status == 406:
            return ConfigurationError(f"the API rejected the request for {where} ({said})")
        if status >= 500 or status in _RETRY_STATUSES:
            return TransientError(
                f"{where} answered {said}", status=status, retry_after=_seconds(retry_after)
            )
        return ContactError(f"{where} answered {said}", status=status, error_key=key)

    def _error_detail(self, body: bytes) -> tuple[str | None, str]:
        """The first error_key and error_message of an error body (array or object), redacted."""
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError:
            return None, ""
        if isinstance(data, list) and data:
            data = data[0]
        if not isinstance(data, dict):
            return None, ""
        key = data.get("error_key")
        text = data.get("error_message")
        key = self._redact(str(key))[:_MAX_ERROR_TEXT] if key is not None else None
        text = self._redact(str(text))[:_MAX_ERROR_TEXT] if text is not None else ""
        return key, text


def _parse(body: bytes, where: str) -> Any:
    """A 200 answer's JSON; a body that is not JSON (cut short, an HTML page) is transient."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        raise TransientError(f"200 for {where} with a body that is not valid JSON") from None


def _seconds(header: str | None) -> float | None:
    """A Retry-After header in seconds (delta-seconds form only), capped at an hour."""
    if header is None:
        return None
    try:
        value = float(header.strip())
    except ValueError:
        return None
    return min(max(value, 0.0), 3600.0) if value == value else None
