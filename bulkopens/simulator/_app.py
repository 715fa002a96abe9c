"""The aiohttp application: one generic API handler plus the ``/_sim/`` admin endpoints.

Checks run in the order the real gateway applies them (docs/ctct-api.md §1, §7):
api_key (401) -> per-key rate limit / daily quota (429 or 403) -> Bearer token (401) ->
Accept (406) -> route (404/405) -> id and query validation (400) -> unknown id (404) ->
injected faults (5xx, reset, truncated body) -> 200. Every API answer is delayed by the
drawn latency and then recorded in :class:`Stats`; admin endpoints are neither
authenticated, rate limited nor recorded. No body or log ever contains a key or token.

The v3 face (paths under ``/v3/``, docs/simulator-v3.md) takes no api_key: Bearer token
(401 with ``WWW-Authenticate: Bearer realm=api.cc.email``; missing, unknown and expired
alike) -> rate limit / daily quota per OAuth2 client id (429 single-object bodies, always
v3 style) -> Accept (406) -> route (404/405) -> scope (403) -> validation (400) -> unknown id
(404) -> the same injected faults -> 200. Its requests are recorded like v2 ones, with the
client id in ``RequestRecord.api_key``. The OAuth2 endpoints (``/oauth2/default/v1/...``)
are served by :mod:`._oauth`, counted apart (``/_sim/stats`` ``token_requests``) and
draw no faults.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable, Iterable
from datetime import date
from typing import Any

import orjson
from aiohttp import web

from bulkopens.simulator._api import Api, ApiError, error_body
from bulkopens.simulator._api3 import ALL_KINDS, KIND_OF_TYPE, ApiV3
from bulkopens.simulator._config import SimConfig
from bulkopens.simulator._endpoints import match
from bulkopens.simulator._faults import FaultPlan
from bulkopens.simulator._limits import KeyLimits, utc_today
from bulkopens.simulator._oauth import SCOPES, OAuth, TokenAnswer
from bulkopens.simulator._stats import RESET_STATUS, RequestRecord, Stats

_JSON = "application/json"
_JSON_MEDIA = frozenset({"application/json", "application/*", "*/*"})
_HTML_ERROR = (
    "<!DOCTYPE html>\n<html><head><title>{status} {reason}</title></head>"
    "<body><h1>{status} {reason}</h1><p>The server could not complete the request.</p>"
    "</body></html>\n"
)
_REASONS = {500: "Internal Server Error", 502: "Bad Gateway", 503: "Service Unavailable",
            504: "Gateway Timeout"}  # fmt: skip
_THROTTLE = {
    ("429", "rate"): (429, "throttled", "Too Many Requests"),
    ("429", "quota"): (429, "quota_exceeded", "Limit Exceeded"),
    ("403", "rate"): (
        403,
        "mashery.not.authorized.over.qps",
        "Account over queries per second limit for this API key.",
    ),
    ("403", "quota"): (
        403,
        "mashery.not.authorized.over.ratelimit",
        "Account over daily rate limit for this API key.",
    ),
}


class SimState:
    """Everything the handlers of one simulator share."""

    __slots__ = ("api", "api3", "clock", "config", "faults", "limits", "oauth", "stats")

    def __init__(
        self, config: SimConfig, *, clock: Callable[[], float], today: Callable[[], date]
    ) -> None:
        self.config = config
        self.clock = clock
        self.api = Api(config)
        self.api3 = ApiV3(config.seed, self.api.dataset, xref=config.xref)
        self.oauth = OAuth(config, clock=clock)
        self.limits = KeyLimits(
            config.rate_per_second, config.daily_quota, clock=clock, today=today
        )
        self.faults = FaultPlan(config)
        self.stats = Stats()

    def __repr__(self) -> str:
        return f"<SimState {self.config!r} {self.stats!r} {self.limits!r}>"

    async def handle(self, request: web.Request) -> web.StreamResponse:
        """The one handler behind every API path."""
        t = self.clock()
        config = self.config
        status, body, api_key, headers = self._decide(request)
        fault = None
        delay = config.latency_ms / 1000.0
        if config.has_faults:
            # Only answers that passed every check draw a fault; the others only a delay.
            fault = self.faults.draw(_request_key(request), count=status == 200)
            delay = fault.delay
            if status != 200:
                fault = None
        if delay > 0:
            await asyncio.sleep(delay)
        if fault is not None:
            if fault.kind == "reset":
                return await self._reset(request, t, api_key, body)
            if fault.kind == "error":
                status = fault.status
                self._record(t, api_key, request, status)
                if fault.html:
                    html = _HTML_ERROR.format(status=status, reason=_REASONS[status]).encode()
                    return web.Response(
                        body=html, status=status, headers={"Content-Type": "text/html"}
                    )
                body = error_body("http.status.internal_error", "An internal error occurred.")
                return web.Response(body=body, status=status, headers={"Content-Type": _JSON})
            if fault.kind == "truncate":
                body = body[: len(body) // 2]  # a strict prefix of JSON is never valid JSON
        self._record(t, api_key, request, status)
        response = web.Response(body=body, status=status, headers={"Content-Type": _JSON})
        if headers:
            response.headers.update(headers)
        return response

    def _decide(self, request: web.Request) -> tuple[int, bytes, str | None, dict[str, str] | None]:
        """Run the checks in order: (status, body, configured api_key or None, headers)."""
        config = self.config
        query = request.query
        if request.path.startswith("/v3/"):
            return self._decide_v3(request)
        api_key = query.get("api_key")
        if api_key is None or api_key not in config.api_keys:
            return 401, _unauthorized("http.status.authentication.invalid_api_key"), None, None
        verdict = self.limits.admit(api_key)
        if verdict is not None:
            status, error_key, message = _THROTTLE[(config.limit_style, verdict)]
            return status, error_body(error_key, message), api_key, self._retry_after()
        if not _bearer_ok(request.headers.get("Authorization"), config.tokens):
            return 401, _unauthorized("http.status.authentication.invalid_token"), api_key, None
        path = request.path
        found = match(path)
        refusal = _refusal(request, found is not None)
        if refusal is not None:
            return refusal[0], refusal[1], api_key, None
        assert found is not None
        try:
            return 200, self.api.answer(found[0], found[1], path, query), api_key, None
        except ApiError as exc:
            return exc.status, exc.body, api_key, None

    def _decide_v3(
        self, request: web.Request
    ) -> tuple[int, bytes, str | None, dict[str, str] | None]:
        """The v3 checks (module docstring); the "key" is the token's OAuth2 client id."""
        grant = self.oauth.check(request.headers.get("Authorization"))
        if grant is None:
            return 401, _V3_UNAUTHORIZED, None, dict(_V3_CHALLENGE)
        client_id = grant.client_id
        verdict = self.limits.admit(client_id)
        if verdict is not None:
            _, error_key, message = _THROTTLE[("429", verdict)]
            body = orjson.dumps({"error_key": error_key, "error_message": message})
            return 429, body, client_id, self._retry_after()
        found = self.api3.route(request.path)
        refusal = _refusal(request, found is not None)
        if refusal is not None:
            return refusal[0], refusal[1], client_id, None
        assert found is not None
        name, groups, scope = found
        if scope not in grant.scopes:
            message = f"The access token lacks the {scope} scope."
            return 403, error_body("http.status.forbidden", message), client_id, None
        try:
            return 200, self.api3.answer(name, groups, request.path, request.query), client_id, None
        except ApiError as exc:
            return exc.status, exc.body, client_id, None

    def _retry_after(self) -> dict[str, str] | None:
        """The headers of an over-limit answer: Retry-After only when configured."""
        if self.config.retry_after is None:
            return None
        return {"Retry-After": str(math.ceil(self.config.retry_after))}

    def _record(self, t: float, api_key: str | None, request: web.Request, status: int) -> None:
        self.stats.record(RequestRecord(t, api_key, request.method, request.path, status))

    async def _reset(
        self, request: web.Request, t: float, api_key: str | None, body: bytes
    ) -> web.StreamResponse:
        """Send the headers and half the body, then abort the connection."""
        self._record(t, api_key, request, RESET_STATUS)
        response = web.StreamResponse(status=200, headers={"Content-Type": _JSON})
        response.content_length = len(body)
        await response.prepare(request)
        await response.write(body[: len(body) // 2])
        transport = request.transport
        if transport is not None:
            transport.abort()
        # The handler must not complete the response; cancelling the handler task makes
        # aiohttp drop it quietly (the connection is already gone).
        raise asyncio.CancelledError


SIM_STATE: web.AppKey[SimState] = web.AppKey("bulkopens_simulator_state", SimState)
_V3_UNAUTHORIZED = orjson.dumps({"message": "Unauthorized"})
_V3_CHALLENGE = {
    "WWW-Authenticate": "Bearer realm=api.cc.email",
    "x-amzn-ErrorType": "UnauthorizedException",
}
_OAUTH = "/oauth2/default/v1"


def make_app(
    config: SimConfig,
    *,
    clock: Callable[[], float] = time.monotonic,
    today: Callable[[], date] = utc_today,
) -> web.Application:
    """The simulator as an aiohttp application (for embedding in another server).

    ``clock`` (seconds, monotonic) drives the rate limit and ``RequestRecord.t``; ``today``
    gives the UTC date that the daily quota is counted on.
    """
    state = SimState(config, clock=clock, today=today)
    app = web.Application()
    app[SIM_STATE] = state
    app.router.add_get("/_sim/stats", _admin_stats, allow_head=False)
    app.router.add_post("/_sim/reset-stats", _admin_reset_stats)
    app.router.add_get("/_sim/truth", _admin_truth, allow_head=False)
    app.router.add_post("/_sim/activity", _admin_activity)
    app.router.add_get("/_sim/v3/truth", _admin_v3_truth, allow_head=False)
    app.router.add_post("/_sim/tokens", _admin_tokens)
    app.router.add_post("/_sim/approve", _admin_approve)
    app.router.add_post("/_sim/deny", _admin_deny)
    app.router.add_get(f"{_OAUTH}/authorize", _oauth_authorize, allow_head=False)
    app.router.add_post(f"{_OAUTH}/device/authorize", _oauth_device)
    app.router.add_post(f"{_OAUTH}/token", _oauth_token)
    app.router.add_get("/activate", _activate, allow_head=False)
    app.router.add_route("*", "/{tail:.*}", state.handle)
    return app


# -- admin endpoints ------------------------------------------------------------------------


async def _admin_stats(request: web.Request) -> web.Response:
    stats = request.app[SIM_STATE].stats
    payload = {
        "status_counts": {str(k): v for k, v in sorted(stats.status_counts.items())},
        "requests": len(stats.log),
        "request_times": [entry.t for entry in stats.log],
        "token_requests": dict(sorted(request.app[SIM_STATE].oauth.counts.items())),
    }
    return _json_response(payload)


async def _admin_reset_stats(request: web.Request) -> web.Response:
    request.app[SIM_STATE].stats.reset()
    return _json_response({"reset": True})


async def _admin_truth(request: web.Request) -> web.StreamResponse:
    query = request.query
    contact_ids = query.getall("contact_id", None)
    try:
        records = request.app[SIM_STATE].api.truth(
            query.get("report", "opens"), contact_ids, query.get("since")
        )
    except ValueError as exc:
        return _json_response({"error": str(exc)}, status=400)
    return await _ndjson(request, records)


async def _admin_v3_truth(request: web.Request) -> web.StreamResponse:
    """Every record v3 activity_details returns: ``types`` (CSV, default all six),
    ``contact_id`` (v3 ids, repeatable; default every contact), ``names`` (true/false)."""
    query = request.query
    api3 = request.app[SIM_STATE].api3
    try:
        kinds = v3_kinds(query.get("types"))
        names = query.get("names", "true").lower() != "false"
        raw = query.getall("contact_id", None)
        count = api3.dataset.contact_count
        numbers = range(1, count + 1) if raw is None else [api3.contact_number(c) for c in raw]
    except ValueError as exc:
        return _json_response({"error": str(exc)}, status=400)
    return await _ndjson(request, api3.truth(kinds, numbers, names=names))


def v3_kinds(types: str | None) -> int:
    """The kind bit mask of a CSV of v3 tracking types (None = all). Raises ValueError."""
    if types is None:
        return ALL_KINDS
    mask = 0
    for name in types.split(","):
        if name.strip() not in KIND_OF_TYPE:
            raise ValueError(f"types must be among {sorted(KIND_OF_TYPE)}")
        mask |= 1 << KIND_OF_TYPE[name.strip()]
    return mask


async def _admin_tokens(request: web.Request) -> web.Response:
    """A token response minted without a flow: ``scope`` (default every scope),
    ``expires_in`` (seconds; default the configured lifetime)."""
    query = request.query
    try:
        scopes = frozenset(query.get("scope", " ".join(sorted(SCOPES))).split())
        if not scopes <= SCOPES:
            raise ValueError(f"scope must be among {sorted(SCOPES)}")
        expires_in = float(query["expires_in"]) if "expires_in" in query else None
        if expires_in is not None and not (math.isfinite(expires_in) and expires_in >= 0):
            raise ValueError("expires_in must be a number >= 0")
    except ValueError as exc:
        return _json_response({"error": str(exc)}, status=400)
    return _json_response(request.app[SIM_STATE].oauth.mint(scopes, expires_in=expires_in))


async def _admin_approve(request: web.Request) -> web.Response:
    return _device_decision(request, approve=True)


async def _admin_deny(request: web.Request) -> web.Response:
    return _device_decision(request, approve=False)


def _device_decision(request: web.Request, *, approve: bool) -> web.Response:
    user_code = request.query.get("user_code", "")
    if not request.app[SIM_STATE].oauth.decide_device(user_code, approve=approve):
        return _json_response({"error": "no pending device authorization"}, status=404)
    return _json_response({"approved": approve})


# -- OAuth2 endpoints (the simulated authz server) ---------------------------------------------


async def _oauth_authorize(request: web.Request) -> web.Response:
    return _token_response(request.app[SIM_STATE].oauth.authorize(request.query))


async def _oauth_device(request: web.Request) -> web.Response:
    form = await request.post()
    fields = {k: v for k, v in form.items() if isinstance(v, str)}
    origin = f"{request.scheme}://{request.host}"
    return _token_response(request.app[SIM_STATE].oauth.device_authorize(fields, origin))


async def _oauth_token(request: web.Request) -> web.Response:
    form = await request.post()
    fields = {k: v for k, v in form.items() if isinstance(v, str)}
    oauth = request.app[SIM_STATE].oauth
    return _token_response(oauth.token(request.headers.get("Authorization"), fields))


async def _activate(request: web.Request) -> web.Response:
    text = (
        "bulkopens simulator: a device code is approved with\n"
        "  POST /_sim/approve?user_code=XXXX-XXXX\n"
    )
    return web.Response(text=text, content_type="text/plain")


def _token_response(answer: TokenAnswer) -> web.Response:
    if answer.status == 302:
        return web.Response(status=302, headers=answer.headers)
    response = _json_response(answer.payload, status=answer.status)
    response.headers.update(answer.headers)
    return response


async def _ndjson(request: web.Request, records: Iterable[dict[str, Any]]) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
    await response.prepare(request)
    chunk: list[bytes] = []
    for record in records:
        chunk.append(orjson.dumps(record, option=orjson.OPT_APPEND_NEWLINE))
        if len(chunk) >= 2000:
            await response.write(b"".join(chunk))
            chunk.clear()
    if chunk:
        await response.write(b"".join(chunk))
    await response.write_eof()
    return response


async def _admin_activity(request: web.Request) -> web.Response:
    query = request.query
    try:
        count = int(query.get("count", "1"))
        added = request.app[SIM_STATE].api.add_activity(
            query.get("contact_id", ""), query.get("report", "opens"), count
        )
    except ValueError as exc:
        return _json_response({"error": str(exc)}, status=400)
    return _json_response(added)


# -- helpers --------------------------------------------------------------------------------


def _json_response(payload: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(payload), status=status, headers={"Content-Type": _JSON})


def _unauthorized(error_key: str) -> bytes:
    return error_body(error_key, "Not authorized: the api_key or access token is invalid.")


def _refusal(request: web.Request, routed: bool) -> tuple[int, bytes] | None:
    """406 for an Accept without JSON, else 404 for a path no endpoint serves, else 405 for
    a method other than GET; None when the request may go on."""
    if not _accepts_json(request.headers.get("Accept")):
        message = "Unsupported accept header value, must be application/json"
        return 406, error_body("http.status.not_acceptable", message)
    if not routed:
        return 404, error_body("http.status.not_found", "No API resource at this path.")
    if request.method != "GET":
        return 405, error_body("http.status.method_not_allowed", "Only GET is supported here.")
    return None


def _bearer_ok(header: str | None, tokens: tuple[str, ...]) -> bool:
    if header is None:
        return False
    scheme, _, token = header.strip().partition(" ")
    return scheme.lower() == "bearer" and token.strip() in tokens


def _accepts_json(header: str | None) -> bool:
    """True for a missing/blank Accept or one admitting JSON with a q-value above 0."""
    if header is None or not header.strip():
        return True
    for part in header.split(","):
        media, *params = part.split(";")
        if media.strip().lower() not in _JSON_MEDIA:
            continue
        quality = 1.0
        for param in params:
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    quality = float(value.strip())
                except ValueError:
                    quality = 0.0
        if quality > 0:
            return True
    return False


def _request_key(request: web.Request) -> str:
    """Path plus the raw query minus ``api_key``: what identifies "the same request"."""
    raw = request.rel_url.raw_query_string
    if not raw:
        return request.path
    kept = [p for p in raw.split("&") if p and not p.startswith("api_key=")]
    return f"{request.path}?{'&'.join(kept)}"
