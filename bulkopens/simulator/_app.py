"""The aiohttp application: one generic API handler plus the ``/_sim/`` admin endpoints.

Checks run in the order the real gateway applies them (docs/ctct-api.md §1, §7):
api_key (401) -> per-key rate limit / daily quota (429 or 403) -> Bearer token (401) ->
Accept (406) -> route (404/405) -> id and query validation (400) -> unknown id (404) ->
injected faults (5xx, reset, truncated body) -> 200. Every API answer is delayed by the
drawn latency and then recorded in :class:`Stats`; admin endpoints are neither
authenticated, rate limited nor recorded. No body or log ever contains a key or token.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable
from datetime import date
from typing import Any

import orjson
from aiohttp import web

from bulkopens.simulator._api import Api, ApiError, error_body
from bulkopens.simulator._config import SimConfig
from bulkopens.simulator._endpoints import match
from bulkopens.simulator._faults import FaultPlan
from bulkopens.simulator._limits import KeyLimits, utc_today
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

    __slots__ = ("api", "clock", "config", "faults", "limits", "stats")

    def __init__(
        self, config: SimConfig, *, clock: Callable[[], float], today: Callable[[], date]
    ) -> None:
        self.config = config
        self.clock = clock
        self.api = Api(config)
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
        api_key = query.get("api_key")
        if api_key is None or api_key not in config.api_keys:
            return 401, _unauthorized("http.status.authentication.invalid_api_key"), None, None
        verdict = self.limits.admit(api_key)
        if verdict is not None:
            status, error_key, message = _THROTTLE[(config.limit_style, verdict)]
            headers = None
            if config.retry_after is not None:
                headers = {"Retry-After": str(math.ceil(config.retry_after))}
            return status, error_body(error_key, message), api_key, headers
        if not _bearer_ok(request.headers.get("Authorization"), config.tokens):
            return 401, _unauthorized("http.status.authentication.invalid_token"), api_key, None
        if not _accepts_json(request.headers.get("Accept")):
            message = "Unsupported accept header value, must be application/json"
            return 406, error_body("http.status.not_acceptable", message), api_key, None
        path = request.path
        found = match(path)
        if found is None:
            message = "No API resource at this path."
            return 404, error_body("http.status.not_found", message), api_key, None
        if request.method != "GET":
            message = "Only GET is supported here."
            return 405, error_body("http.status.method_not_allowed", message), api_key, None
        try:
            return 200, self.api.answer(found[0], found[1], path, query), api_key, None
        except ApiError as exc:
            return exc.status, exc.body, api_key, None

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
    app.router.add_route("*", "/{tail:.*}", state.handle)
    return app


# -- admin endpoints ------------------------------------------------------------------------


async def _admin_stats(request: web.Request) -> web.Response:
    stats = request.app[SIM_STATE].stats
    payload = {
        "status_counts": {str(k): v for k, v in sorted(stats.status_counts.items())},
        "requests": len(stats.log),
        "request_times": [entry.t for entry in stats.log],
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
