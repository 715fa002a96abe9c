"""The OAuth2 calls of the v3 API's authorization server, and the loopback redirect of a login.

Besides :mod:`bulkopens._aiowire` the one module that imports aiohttp, and only when it is
used (a run that renews no token never imports it). It speaks to Constant
Contact's authorization server (an Okta server, ``https://authz.constantcontact.com/oauth2/
default/v1``; ``--auth-url`` points it elsewhere, at the simulator for instance):

* ``POST /token``: ``grant_type=refresh_token``, ``authorization_code`` (PKCE) and the device
  flow's ``urn:ietf:params:oauth:grant-type:device_code``. A client with a secret
  authenticates with HTTP Basic, a public client sends ``client_id`` in the form;
* ``POST /device/authorize``: starts the device flow;
* ``GET /authorize``: the URL the user's browser opens for the PKCE flow, which comes back to
  :class:`RedirectServer` on 127.0.0.1.

The token endpoint admits one request a second per client id: :class:`OAuthClient` sends at
most one a second, waits out a 429 (a second at least, a bounded number of times) and retries
a failed connection or a 5xx a few times with backoff; then the authorization server counts as
unavailable (:class:`ServiceUnavailable`). An OAuth2 error answer is an :class:`OAuthError`
(an :class:`AuthenticationError`), ``invalid_client`` one that names the client settings.

Secrets (the client secret, tokens, codes, the PKCE verifier, the device code) never reach a
message: every error is built from what the server said, made printable and redacted.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import html
import os
import secrets
import socket
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import anyio
import orjson
from yarl import URL

from bulkopens._config import DEFAULT_AUTH_URL, DEFAULT_SCOPE
from bulkopens._exceptions import AuthenticationError, ConfigurationError, ServiceUnavailable
from bulkopens._redact import Redactor, printable
from bulkopens._wire import USER_AGENT

if TYPE_CHECKING:
    import aiohttp
    from aiohttp import web

DEFAULT_TOKEN_URL = DEFAULT_AUTH_URL + "/token"
DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"

TOKEN_INTERVAL = 1.0  # the token endpoint admits one request a second per client id
RATE_LIMITED_TRIES = 8  # 429s waited out before the server counts as unavailable
FAILED_TRIES = 4  # connection failures and 5xx answers, with backoff
BACKOFF = 0.5  # seconds before the first retry of a failure; doubles each time
MAX_RETRY_AFTER = 60.0
REQUEST_TIMEOUT = 30.0
ANSWER_BYTES = 64 * 1024  # a token answer is a few hundred bytes; read no more than this
SLOW_DOWN = 5.0  # RFC 8628 §3.5: slow_down adds 5 seconds to the polling interval

# The values in a form that are secrets (the others, grant_type or scope, are not).
_SECRET_FIELDS = ("refresh_token", "code", "code_verifier", "device_code", "client_secret")
_SCOPE_TOKEN = frozenset(
    "!#$%&'()*+,-./0123456789:;<=>?@ABCDEFGHIJKLMNOPQRSTUVWXYZ[]^_`abcdefghijklmnopqrstuvwxyz{|}~"
)

Sleep = Callable[[float], Awaitable[None]]


class OAuthError(AuthenticationError):
    """The authorization server answered with an OAuth2 error (RFC 6749 §5.2): ``error`` is
    its code (``invalid_grant``, ``authorization_pending``, ...), the message its description,
    made printable and redacted."""

    def __init__(self, message: str, *, error: str, status: int) -> None:
        super().__init__(message)
        self.error = error
        self.status = status


@dataclass(frozen=True, slots=True)
class AuthServer:
    """The authorization server's endpoints, under one base (``.../oauth2/default/v1``)."""

    base: URL

    @classmethod
    def parse(cls, text: str, flag: str = "--auth-url") -> AuthServer:
        """The server at ``text``: its base, or its token endpoint (``.../token``)."""
        try:
            url = URL(text.strip())
        except (ValueError, TypeError):
            raise ConfigurationError(f"{flag} is not a valid URL") from None
        if url.scheme not in ("http", "https") or not url.host:
            raise ConfigurationError(f"{flag} must be an http:// or https:// URL with a host")
        if url.user or url.password or url.query_string or url.fragment:
            raise ConfigurationError(f"{flag} must not carry credentials, a query or a fragment")
        path = url.path.rstrip("/").removesuffix("/token")
        return cls(url.with_path(path or "/"))

    def _endpoint(self, name: str) -> URL:
        return self.base.with_path(self.base.path.rstrip("/") + "/" + name)

    @property
    def token_url(self) -> URL:
        return self._endpoint("token")

    @property
    def device_url(self) -> URL:
        return self._endpoint("device/authorize")

    @property
    def authorize_url(self) -> URL:
        return self._endpoint("authorize")


def normalise_scope(text: str) -> str:
    """``--scope`` as space-separated scope tokens, or ConfigurationError."""
    scopes = text.replace(",", " ").split()
    if not scopes or any(not set(s) <= _SCOPE_TOKEN or '"' in s for s in scopes):
        raise ConfigurationError(
            "--scope must be scope names separated by spaces, like "
            f"'{DEFAULT_SCOPE}'; got {printable(text)[:80]!r}"
        )
    return " ".join(dict.fromkeys(scopes))


@dataclass(frozen=True, slots=True)
class DeviceStart:
    """The start of a device-flow login: what the user opens and types; the device code is
    the client's secret and stays out of the repr."""

    device_code: str = field(repr=False)
    user_code: str
    verification_uri: str
    verification_uri_complete: str | None
    expires_in: float
    interval: float


@dataclass(frozen=True, slots=True)
class Pkce:
    """A PKCE pair (RFC 7636, S256) and the ``state`` of one authorization request."""

    verifier: str = field(repr=False)
    challenge: str
    state: str = field(repr=False)

    @classmethod
    def new(cls) -> Pkce:
        verifier = secrets.token_urlsafe(64)  # 86 characters of [A-Za-z0-9_-]: 43..128
        digest = hashlib.sha256(verifier.encode("ascii")).digest()
        challenge = base64.urlsafe_b64encode(digest).decode("ascii").rstrip("=")
        return cls(verifier, challenge, secrets.token_urlsafe(24))


class OAuthClient:
    """One OAuth2 client (``client_id``, the secret when it is a confidential one) of one
    authorization server: paced, retried calls of its endpoints.

    ``session`` is the caller's (kept open) or, when None, one of its own that
    :meth:`aclose` closes.
    """

    __slots__ = (
        "_last",
        "_own_session",
        "_secret",
        "_session",
        "_sleep",
        "client_id",
        "server",
    )

    def __init__(
        self,
        server: AuthServer,
        client_id: str,
        client_secret: str | None = None,
        *,
        session: aiohttp.ClientSession | None = None,
        sleep: Sleep = anyio.sleep,
    ) -> None:
        if not client_id or any(c.isspace() for c in client_id) or ":" in client_id:
            raise ConfigurationError(
                "the client id must be one word without ':' (--client-id or CTCT_CLIENT_ID)"
            )
        self.server = server
        self.client_id = client_id
        self._secret = client_secret or None
        self._session = session
        self._own_session = session is None
        self._sleep = sleep
        self._last = -TOKEN_INTERVAL  # monotonic time of the last token request sent

    def __repr__(self) -> str:
        kind = "confidential" if self._secret else "public"
        return f"<OAuthClient {self.server.base.host} ({kind} client)>"

    @property
    def confidential(self) -> bool:
        return self._secret is not None

    def redactor(self, *more: str | None) -> Redactor:
        return Redactor(self.client_id, self._secret, *more)

    async def aclose(self) -> None:
        if self._own_session and self._session is not None:
            await self._session.close()
            self._session = None

    # -- the grants -------------------------------------------------------------------------

    async def refresh(self, refresh_token: str) -> dict[str, Any]:
        """A token answer for ``refresh_token``. ``invalid_grant`` (spent, expired, revoked)
        is an OAuthError that says to log in again."""
        try:
            return await self.token({"grant_type": "refresh_token", "refresh_token": refresh_token})
        except OAuthError as exc:
            if exc.error != "invalid_grant":
                raise
            raise OAuthError(
                "the refresh token is no longer valid (invalid_grant): run bulkopens auth login",
                error=exc.error,
                status=exc.status,
            ) from None

    async def exchange_code(self, code: str, redirect_uri: str, pkce: Pkce) -> dict[str, Any]:
        """The tokens of an authorization code that came back to ``redirect_uri``."""
        form = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": redirect_uri,
            "code_verifier": pkce.verifier,
        }
        return await self.token(form)

    def authorize_url(self, redirect_uri: str, scope: str, pkce: Pkce) -> URL:
        """The URL the user's browser opens for the authorization-code flow with PKCE."""
        query = {
            "client_id": self.client_id,
            "response_type": "code",
            "redirect_uri": redirect_uri,
            "scope": scope,
            "state": pkce.state,
            "code_challenge": pkce.challenge,
            "code_challenge_method": "S256",
        }
        return self.server.authorize_url.with_query(query)

    async def device_start(self, scope: str) -> DeviceStart:
        """Start a device-flow login (RFC 8628 §3.1)."""
        answer = await self._post(self.server.device_url, {"scope": scope}, paced=False)
        try:
            interval = float(answer.get("interval", 5))
            start = DeviceStart(
                device_code=_text(answer, "device_code"),
                user_code=printable(_text(answer, "user_code")),
                verification_uri=printable(_text(answer, "verification_uri")),
                verification_uri_complete=(
                    printable(str(answer["verification_uri_complete"]))
                    if answer.get("verification_uri_complete")
                    else None
                ),
                expires_in=float(answer.get("expires_in", 600)),
                interval=min(max(interval, 1.0), 60.0),
            )
        except (KeyError, TypeError, ValueError):
            raise ServiceUnavailable(
                "the authorization server's device authorization answer lacks device_code, "
                "user_code or verification_uri: is --auth-url right?"
            ) from None
        return start

    async def device_poll(
        self, start: DeviceStart, *, clock: Callable[[], float] = time.monotonic
    ) -> dict[str, Any]:
        """Poll the token endpoint every ``interval`` until the user approves (the tokens),
        denies or lets the code expire (AuthenticationError)."""
        form = {"grant_type": DEVICE_GRANT, "device_code": start.device_code}
        interval = start.interval
        deadline = clock() + start.expires_in
        while True:
            await self._sleep(interval)
            if clock() >= deadline:
                raise _expired_code()
            try:
                return await self.token(form)
            except OAuthError as exc:
                if exc.error == "authorization_pending":
                    continue
                if exc.error == "slow_down":
                    interval += SLOW_DOWN
                    continue
                if exc.error == "access_denied":
                    raise AuthenticationError(
                        "the login was denied at the authorization server (access_denied)"
                    ) from None
                if exc.error == "expired_token":
                    raise _expired_code() from None
                raise

    # -- the token endpoint -----------------------------------------------------------------

    async def token(self, form: Mapping[str, str]) -> dict[str, Any]:
        """POST ``form`` to the token endpoint, with the client's credentials: the token
        answer (``access_token`` checked), or OAuthError, ServiceUnavailable,
        ConfigurationError (not an authorization server)."""
        answer = await self._post(self.server.token_url, form, paced=True)
        token = answer.get("access_token")
        if not isinstance(token, str) or not token or any(c.isspace() for c in token):
            raise ServiceUnavailable(
                "the authorization server's token answer holds no access token: is --auth-url "
                "right?"
            )
        kind = answer.get("token_type", "Bearer")
        if not isinstance(kind, str) or kind.lower() != "bearer":
            raise ServiceUnavailable(
                f"the authorization server issued a {printable(str(kind))[:20]!r} token, not a "
                "Bearer token"
            )
        return answer

    async def _post(self, url: URL, form: Mapping[str, str], *, paced: bool) -> dict[str, Any]:
        """POST one form with the client's credentials; waits out 429s, retries failures."""
        body = dict(form)
        headers = {"Accept": "application/json"}
        if self._secret is not None:
            pair = f"{self.client_id}:{self._secret}".encode()
            headers["Authorization"] = "Basic " + base64.b64encode(pair).decode("ascii")
            if url != self.server.token_url:
                body["client_id"] = self.client_id  # the device endpoint wants it in the form
        else:
            body["client_id"] = self.client_id
        redact = self.redactor(*(form.get(name) for name in _SECRET_FIELDS))
        where = f"{url.host}:{url.port}{url.path}"
        import aiohttp  # here, not at import: most runs renew no token

        throttled = failed = 0
        while True:
            if paced:
                wait = self._last + TOKEN_INTERVAL - time.monotonic()
                if wait > 0:
                    await self._sleep(wait)
                self._last = time.monotonic()
            try:
                status, retry_after, data = await self._send(url, body, headers)
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                failed += 1
                if failed >= FAILED_TRIES:
                    raise ServiceUnavailable(
                        f"cannot reach the authorization server {where}: "
                        f"{redact(printable(_cause(exc)))}"
                    ) from None
                await self._sleep(BACKOFF * 2 ** (failed - 1))
                continue
            if status == 200 and isinstance(data, dict):
                return data
            if status == 429:
                throttled += 1
                if throttled >= RATE_LIMITED_TRIES:
                    raise ServiceUnavailable(
                        f"the authorization server {where} answered 429 (rate limited) "
                        f"{throttled} times in a row: try again in a minute"
                    )
                await self._sleep(min(max(retry_after or 0.0, TOKEN_INTERVAL), MAX_RETRY_AFTER))
                continue
            if status >= 500:
                failed += 1
                if failed >= FAILED_TRIES:
                    raise ServiceUnavailable(
                        f"the authorization server {where} answered {status} {failed} times"
                    )
                await self._sleep(BACKOFF * 2 ** (failed - 1))
                continue
            raise self._refused(status, data, where, redact)

    async def _send(
        self, url: URL, body: dict[str, str], headers: dict[str, str]
    ) -> tuple[int, float | None, Any]:
        import aiohttp

        if self._session is None:
            self._session = aiohttp.ClientSession(headers={"User-Agent": USER_AGENT})
        timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT)
        async with self._session.post(
            url, data=body, headers=headers, timeout=timeout, allow_redirects=False
        ) as response:
            raw = await response.content.read(ANSWER_BYTES)
            try:
                data = orjson.loads(raw) if raw else None
            except orjson.JSONDecodeError:
                data = None
            retry_after = None
            with contextlib.suppress(ValueError):
                retry_after = float(response.headers.get("Retry-After", ""))
            return response.status, retry_after, data

    def _refused(self, status: int, data: Any, where: str, redact: Redactor) -> Exception:
        error = data.get("error") if isinstance(data, dict) else None
        if not isinstance(error, str) or not error:
            return ConfigurationError(
                f"{where} answered {status} without an OAuth2 error: is it the authorization "
                "server (--auth-url)?"
            )
        error = redact.server_text(error, 60)
        if error == "invalid_client":
            secret = "and client secret" if self._secret else "without a client secret"
            return AuthenticationError(
                f"the authorization server refused the client id {secret} (invalid_client): "
                "check --client-id and --client-secret (CTCT_CLIENT_ID, CTCT_CLIENT_SECRET)"
            )
        described = data.get("error_description")
        detail = f": {redact.server_text(described)}" if isinstance(described, str) else ""
        return OAuthError(
            f"the authorization server refused the request ({error}){detail}",
            error=error,
            status=status,
        )


def _text(answer: Mapping[str, Any], name: str) -> str:
    value = answer[name]
    if not isinstance(value, str) or not value:
        raise ValueError(name)
    return value


def _cause(exc: BaseException) -> str:
    import aiohttp

    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, aiohttp.ClientConnectorError) and exc.os_error.errno:
        return os.strerror(exc.os_error.errno).lower()
    return str(exc) or type(exc).__name__


def _expired_code() -> AuthenticationError:
    return AuthenticationError(
        "the login code expired before it was approved: run bulkopens auth login again"
    )


class RedirectServer:
    """The loopback end of the authorization-code flow: an HTTP server on 127.0.0.1 that waits
    for the browser to come back to ``/callback`` with the code and the expected ``state``.
    A request with another state is answered 400 and ignored."""

    def __init__(self, state: str) -> None:
        self._state = state
        self._runner: web.AppRunner | None = None
        self._event = anyio.Event()
        self._code: str | None = None
        self._error: str | None = None
        self.redirect_uri = ""

    async def start(self, port: int = 0) -> str:
        """Listen on 127.0.0.1:``port`` (0: a free one); returns the redirect URI."""
        from aiohttp import web

        app = web.Application()
        app.router.add_get("/callback", self._callback)
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            listener.bind(("127.0.0.1", port))
            listener.listen(8)
        except OSError as exc:
            listener.close()
            raise ConfigurationError(
                f"cannot listen on 127.0.0.1:{port} for the login's redirect: "
                f"{exc.strerror or exc}; choose another --redirect-port"
            ) from None
        bound = listener.getsockname()[1]
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.SockSite(self._runner, listener).start()
        self.redirect_uri = f"http://127.0.0.1:{bound}/callback"
        return self.redirect_uri

    async def code(self, within: float) -> str:
        """The authorization code, once the browser is back; AuthenticationError when the
        server sent an error or nothing came back ``within`` seconds."""
        try:
            with anyio.fail_after(within):
                await self._event.wait()
        except TimeoutError:
            raise AuthenticationError(
                f"no login came back within {within:g} seconds: run bulkopens auth login again"
            ) from None
        if self._code is None:
            raise AuthenticationError(
                f"the authorization server sent the browser back with an error ({self._error})"
            )
        return self._code

    async def aclose(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _callback(self, request: web.Request) -> web.Response:
        state = request.query.get("state", "")
        if self._event.is_set() or not hmac.compare_digest(
            state.encode("utf-8", "replace"), self._state.encode()
        ):
            return _page(400, "This is not the login bulkopens is waiting for.")
        code = request.query.get("code")
        if code:
            self._code = code
            self._event.set()
            return _page(200, "bulkopens is logged in. You can close this window.")
        error = printable(request.query.get("error", "") or "no code")[:60]
        self._error = error
        self._event.set()
        return _page(400, f"The login failed ({error}). See the terminal.")


def _page(status: int, text: str) -> web.Response:
    from aiohttp import web

    body = f"<!doctype html><title>bulkopens</title><p>{html.escape(text)}</p>\n"
    return web.Response(
        status=status,
        text=body,
        content_type="text/html",
        headers={"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"},
    )
