"""One GET of one page, and what its answer means.

Every request carries ``Authorization: Bearer`` (and, on v2, the ``api_key`` query parameter);
both go only to the configured API host. A renewable token (v3) that the API refuses (401) is
raised as :class:`TokenRejected`, for the retry layer to renew it once and ask again.

The bytes move on a *wire* (:mod:`bulkopens._wire`: the lean HTTP/1.1 pool by default, or a
caller's own aiohttp session). Its failures are worded here, at this one boundary, into the
error tree of :mod:`bulkopens._exceptions`, with messages built from the URL path only; a
connection failure names the host, the port and the cause (``cannot connect to 127.0.0.1:1:
connection refused``). What the server said is made printable, redacted and quoted first.

Whatever a server sends, one request is bounded: the wire reads the body up to
``max_page_bytes`` (an error answer's to 64 KiB), after decompression; the whole request,
connect to last byte, has a deadline (``request_timeout``). Answers that show the server is
not the API (an HTML page, a 404 without the API's error body) and failures to connect are
raised as :class:`NotTheApi` and :class:`Unreachable`, which :mod:`bulkopens._retry` counts
towards stopping the run.
"""

from __future__ import annotations

from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Any

import orjson
from yarl import URL

from bulkopens._api._base import Api, Page
from bulkopens._api._v2 import V2
from bulkopens._config import DEFAULT_MAX_PAGE_BYTES, DEFAULT_REQUEST_TIMEOUT
from bulkopens._exceptions import (
    AnswerTooLarge,
    AuthenticationError,
    BadRequest,
    ConfigurationError,
    ContactError,
    ContactNotFound,
    QuotaExhausted,
    RetryableError,
    ThrottledError,
    TransientError,
)
from bulkopens._redact import Redactor
from bulkopens._timefmt import next_utc_midnight
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
    Wire,
)

if TYPE_CHECKING:
    from bulkopens._tokens import TokenProvider  # where a v3 request's Bearer token comes from

_THROTTLE_KEYS = {"throttled", "mashery.not.authorized.over.qps"}
_QUOTA_KEYS = {"quota_exceeded", "mashery.not.authorized.over.ratelimit"}
_RETRY_STATUSES = {408, 425, 429}  # besides every 5xx
# 4xx answers that mean the same whoever sends them (400 and 406 stop the run; the others are
# retried); any other 4xx without the API's error body is not the API's.
_NOT_FOREIGN = {400, 406} | _RETRY_STATUSES
_MAX_ERROR_TEXT = 200
ERROR_BODY_BYTES = 64 * 1024  # an error answer is read this far: its error_key and message
# A Retry-After is honoured up to a minute: the API's own limits clear in a second (throttles)
# or at midnight UTC (the quota, which has its own stop); a longer wait asked for by some
# server is not worth holding every worker for.
MAX_RETRY_AFTER = 60.0


class Unreachable(TransientError):
    """No connection could be made to the API host (refused, DNS, unreachable, a connect
    timeout, TLS). Retried like any transient failure; the run's breaker stops the run when the
    host stays unreachable."""


class TokenRejected(RetryableError):
    """401 for a token that a provider can renew: renew it (once for every request that saw
    it) and send the request again. ``token`` is the refused one; never in the message."""

    def __init__(self, message: str, token: str) -> None:
        super().__init__(message)
        self.token = token


class NotTheApi(TransientError):
    """An answer the API never gives: a 200 that is not its JSON (an HTML page), a 404 or other
    4xx without its error body. Retried, never a permanent failure; the run's breaker stops the
    run when nothing but such answers come back (another server, or a wrong --base-url)."""


class Transport:
    """Sends one GET for one page and classifies the answer.

    ``get`` returns a :class:`Page` (``get_object``: a JSON object) or raises: TransientError
    (Unreachable, NotTheApi among them), ThrottledError, QuotaExhausted, AuthenticationError,
    ConfigurationError, or ContactError (404, other 4xx, AnswerTooLarge).
    """

    __slots__ = (
        "_api",
        "_headers",
        "_max_bytes",
        "_origin",
        "_query",
        "_redact",
        "_timeouts",
        "_token",
        "_tokens",
        "_wire",
        "api_key",
        "host",
        "responses",
    )

    def __init__(
        self,
        wire: Wire,
        *,
        base: URL,
        api_key: str,
        token: str,
        redact: Redactor,
        connect_timeout: float,
        read_timeout: float,
        request_timeout: float = DEFAULT_REQUEST_TIMEOUT,
        max_page_bytes: int = DEFAULT_MAX_PAGE_BYTES,
        responses: dict[int, int] | None = None,
        api: Api = V2,
        tokens: TokenProvider | None = None,
    ) -> None:
        self._wire = wire
        self._api = api
        self._tokens = tokens
        self._token = ""  # the provider's token last seen (already in the redactor)
        self._query = {"api_key": api_key} if api.sends_api_key else {}
        self._origin = base.origin()
        host = base.raw_host or ""
        # ``host:port``, as connection messages name it (an IPv6 address in brackets).
        self.host = f"[{host}]:{base.port}" if ":" in host else f"{host}:{base.port}"
        self.api_key = api_key
        self._headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
        self._redact = redact
        self._max_bytes = max_page_bytes
        # Per request, so a caller's session with other timeouts still gets ours.
        self._timeouts = Timeouts(connect_timeout, read_timeout, request_timeout)
        self.responses: dict[int, int] = {} if responses is None else responses

    async def get(self, url: URL) -> Page:
        """GET one page. ``url`` carries no credentials; they are added here."""
        return self._page(await self._body(url), self._where(url))

    async def get_object(self, url: URL) -> dict[str, Any]:
        """GET one unpaged JSON object (a summary report); errors as for :meth:`get`."""
        where = self._where(url)
        data = _parse(await self._body(url), where)
        if not isinstance(data, dict):
            raise NotTheApi(f"200 for {where} without a JSON object")
        return data

    async def get_list(self, url: URL) -> list[dict[str, Any]]:
        """GET one unpaged bare JSON array of objects (summaryByCampaign); errors as for
        :meth:`get`."""
        where = self._where(url)
        data = _parse(await self._body(url), where)
        if not isinstance(data, list) or not set(map(type, data)) <= {dict}:
            raise NotTheApi(f"200 for {where} without a JSON array of objects")
        return data

    async def renew(self, rejected: str) -> None:
        """After a 401 for ``rejected``: have the provider renew it (once for all requests
        that saw it); AuthenticationError when it cannot (``invalid_grant``)."""
        if self._tokens is None:
            raise AuthenticationError("the access token was refused (401)")
        token = await self._tokens.refreshed(rejected)
        self._redact.add(token, *self._tokens.secrets())

    def _where(self, url: URL) -> _Where:
        """The URL's path for a message: still percent-encoded (so no control character a
        server put in a next_link can reach a terminal), secrets redacted; worked out only if
        a message uses it."""
        return _Where(self._redact, url)

    async def _body(self, url: URL) -> bytes:
        """The body of a 200 answer to GET ``url``; any other answer is raised as an error."""
        if url.origin() != self._origin:
            # Defence in depth: pagination already refuses foreign next_links.
            raise ConfigurationError(
                "refusing to send credentials to another host "
                f"({self._redact.server_text(url.host or '', 80)!r})"
            )
        where = self._where(url)
        timeouts = self._timeouts
        headers, token = self._headers, ""
        if self._tokens is not None:
            token = await self._tokens.access_token()
            if token != self._token:  # renewed: scrub it from messages from now on
                self._token = token
                self._redact.add(token)
            headers = {**headers, "Authorization": f"Bearer {token}"}
        try:
            answer = await self._wire.get(
                url.extend_query(self._query) if self._query else url,
                headers,
                timeouts=timeouts,
                limit=self._max_bytes,
                error_limit=ERROR_BODY_BYTES,
            )
        except ConnectFailed as exc:  # refused, DNS, unreachable, TLS
            raise Unreachable(f"cannot connect to {self.host}: {exc}") from None
        except ConnectTimedOut:
            raise Unreachable(
                f"cannot connect to {self.host}: timed out after {timeouts.connect:g} s"
            ) from None
        except ReadTimedOut:
            raise TransientError(
                f"timed out waiting for {where}: nothing from {self.host} for {timeouts.read:g} s"
            ) from None
        except DeadlinePassed:
            raise TransientError(
                f"timed out waiting for {where}: no complete answer from {self.host} within "
                f"{timeouts.total:g} s (--request-timeout)"
            ) from None
        except TooLarge:
            raise self._too_large(where, self._max_bytes) from None
        except Broken as exc:
            raise TransientError(
                f"the connection to {self.host} broke during {where}: {exc}"
            ) from None
        except Failed as exc:
            raise TransientError(
                f"the connection to {self.host} failed during {where}: {exc}"
            ) from None
        except Unsendable as exc:
            raise ConfigurationError(f"invalid request for {where}: {exc}") from None
        status = answer.status
        self.responses[status] = self.responses.get(status, 0) + 1
        if status == 200:
            _check_json(answer, where)
            return answer.body
        if status == 401 and self._tokens is not None:
            raise TokenRejected(f"the access token was refused for {where}", token)
        raise self._error(status, answer.body, answer.headers.get("retry-after"), where)

    def _too_large(self, where: _Where, limit: int) -> AnswerTooLarge:
        return AnswerTooLarge(
            f"the answer to {where} is larger than {limit:,} bytes (--max-page-bytes); "
            "not read further"
        )

    def _page(self, body: bytes, where: _Where) -> Page:
        api = self._api
        found = api.rows(_parse(body, where))
        if found is None or not set(map(type, found[1])) <= {dict}:
            raise NotTheApi(f"200 for {where} without a {api.results_key} list")
        key, results, next_link = found
        if next_link is not None and not isinstance(next_link, str):
            raise TransientError(f"200 for {where} with a malformed next-page link")
        return Page(results, next_link or None, body, key)

    def _error(self, status: int, body: bytes, retry_after: str | None, where: _Where) -> Exception:
        key, text, api = self._error_detail(body)
        # The server's words, quoted, after the status: 404 'http.status.not_found': 'The ...'
        said = f"{status} {': '.join(repr(t) for t in (key, text) if t)}".rstrip()
        if key in _THROTTLE_KEYS or (status == 429 and key not in _QUOTA_KEYS):
            return ThrottledError(
                f"throttled on {where} ({said})", retry_after=retry_after_seconds(retry_after)
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
        if 400 <= status < 500 and not api and status not in _NOT_FOREIGN:
            # Not the API's answer (its errors carry an error_key): never a permanent failure.
            return NotTheApi(
                f"{where} answered {status} without the API's error body: is --base-url the "
                "Constant Contact API?",
                status=status,
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
                f"{where} answered {said}",
                status=status,
                retry_after=retry_after_seconds(retry_after),
            )
        return ContactError(f"{where} answered {said}", status=status, error_key=key)

    def _error_detail(self, body: bytes) -> tuple[str | None, str, bool]:
        """The first error_key and error_message of an error body (array or object), made
        printable and redacted, and whether the body has the API's shape (an error_key)."""
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError:
            return None, "", False
        if isinstance(data, list) and data:
            data = data[0]
        if not isinstance(data, dict):
            return None, "", False
        key = data.get("error_key")
        text = data.get("error_message")
        clean = self._redact.server_text
        return (
            clean(str(key), _MAX_ERROR_TEXT) or None if key is not None else None,
            clean(str(text), _MAX_ERROR_TEXT) if text is not None else "",
            isinstance(key, str),
        )


class _Where:
    """A request's path as a message shows it, redacted when first shown (most requests
    never need it)."""

    __slots__ = ("_redact", "_text", "_url")

    def __init__(self, redact: Redactor, url: URL) -> None:
        self._redact, self._url, self._text = redact, url, ""

    def __str__(self) -> str:
        if not self._text:
            self._text = self._redact(self._url.raw_path)
        return self._text

    def __format__(self, spec: str) -> str:
        return format(str(self), spec)


def _check_json(answer: Answer, where: _Where) -> None:
    """NotTheApi for a 200 that is plainly not the API's JSON (an HTML page, a text/* type).
    A JSON answer cut short is left to the parser: that one is a broken answer, retried."""
    kind = answer.content_type
    if answer.body.lstrip()[:1] == b"<" or "html" in kind or "xml" in kind:
        shown = kind if kind.isascii() and kind.isprintable() else "?"
        raise NotTheApi(f"200 for {where} with a {shown[:60]} body, not the API's JSON")


def _parse(body: bytes, where: _Where) -> Any:
    """A 200 answer's JSON; a body that is not JSON (cut short, an HTML page) is transient."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        raise TransientError(f"200 for {where} with a body that is not valid JSON") from None


def retry_after_seconds(header: str | None, *, now: datetime | None = None) -> float | None:
    """A Retry-After header in seconds, in either form (``120`` or an HTTP-date), at most
    :data:`MAX_RETRY_AFTER`; None when there is none or it cannot be read."""
    if header is None:
        return None
    text = header.strip()
    try:
        value = float(text)
    except ValueError:
        try:
            when = parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError, OverflowError):
            return None
        if when.tzinfo is None:  # an HTTP-date is GMT; a zone-less one is read as such
            when = when.replace(tzinfo=UTC)
        value = (when - (now or datetime.now(UTC))).total_seconds()
    if value != value:  # NaN
        return None
    return min(max(value, 0.0), MAX_RETRY_AFTER)
