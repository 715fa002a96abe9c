"""Retry policy: every attempt takes a pacer slot; throttles pause the pool, 5xx back off; and
one circuit breaker for the whole run stops it when the API cannot be used.

Throttle answers do not use up a request's retries (the pool simply waits), but they are capped
per request so that a server that only ever throttles cannot hold a worker forever, and per run
(:data:`THROTTLE_STOP`, :data:`THROTTLE_STOP_SECONDS`) so that it cannot hold the run.

The breaker (:class:`Breaker`) is what makes a dead host or a wrong server cost seconds and a
handful of requests instead of every contact's retries: see its docstring for the rules.
"""

from __future__ import annotations

import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import anyio
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exception,
    wait_exponential_jitter,
)
from yarl import URL

from bulkopens._api import Page
from bulkopens._exceptions import (
    AnswerTooLarge,
    AuthenticationError,
    ContactError,
    QuotaExhausted,
    RetriesExhausted,
    ServiceUnavailable,
    ThrottledError,
    TransientError,
)
from bulkopens._http import NotTheApi, TokenRejected, Transport, Unreachable
from bulkopens._ratelimit import Pacer
from bulkopens._stats import Stats

Sleep = Callable[[float], Awaitable[None]]
T = TypeVar("T")

DEFAULT_THROTTLE_WAIT = 1.0  # the API sends no Retry-After; its per-second window clears in ~1 s
MAX_THROTTLES_PER_REQUEST = 120
# The breaker's rules (see Breaker).
FIRST_CONTACT_TRIES = 4  # cannot connect / not the API, before the API ever answered: stop
OPEN_AFTER = 5  # failures in a row after which one request at a time probes the server
STORM_FAILURES = 10  # failures in a row that stop the run ...
# ... once they have gone on for as long as one request's retries wait (RetryPolicy.budget)
PROBE_WAIT = (0.25, 8.0)  # the least and the most seconds between probes in a storm
THROTTLE_STOP = 100  # throttle answers in a row, none answered, that stop the run ...
THROTTLE_STOP_SECONDS = 300.0  # ... or throttles (and nothing else) for this long


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How transient failures are retried: exponential backoff with jitter, then give up."""

    max_retries: int = 6
    initial: float = 0.5
    maximum: float = 30.0
    jitter: float = 0.5

    @property
    def budget(self) -> float:
        """The seconds one request's retries wait in all, jitter aside (31.5 s by default)."""
        return sum(min(self.initial * 2.0**i, self.maximum) for i in range(self.max_retries))


class Breaker:
    """The run's circuit breaker: stops the run when the API cannot be used, within seconds.

    Every answer is one of: the API's (a page, or any answer with the API's error body, a
    throttle included), a hard failure (:class:`Unreachable`: no connection; :class:`NotTheApi`
    or :class:`AnswerTooLarge`: an answer the API never gives), or a soft one (a 5xx, a reset,
    a timeout, a broken body). Failures are counted in a row, run-wide; any API answer ends the
    row. The rules:

    * Until the API has answered once, one request at a time is in flight (a dead host is
      then tried once, not once per worker), and after each hard failure the next try waits
      0.5, 1, 2 s: :data:`FIRST_CONTACT_TRIES` hard failures in a row stop the run (about
      3.5 s, 4 requests: ``cannot connect to 127.0.0.1:1: connection refused``).
    * After :data:`OPEN_AFTER` failures in a row, every worker waits and one request at a time
      probes the server (the storm "pauses"), the probes spread over ``window`` seconds (one
      request's whole retry budget: 31.5 s by default, so 6.3 s apart; :data:`PROBE_WAIT`).
    * :data:`STORM_FAILURES` failures in a row that have gone on for ``window`` seconds stop
      the run: by then every contact would have run out of retries anyway.
    * Throttles in a row, none answered: :data:`THROTTLE_STOP` of them, or throttles for
      :data:`THROTTLE_STOP_SECONDS`, stop the run.

    The stop is :class:`ServiceUnavailable`, raised by the request that trips it and by every
    request still waiting; nothing is marked failed for good, and the run can be resumed.
    Waits use the real clock (``anyio``), never the retry policy's injected ``sleep``.
    """

    __slots__ = (
        "_changed",
        "_clock",
        "_hard",
        "_host",
        "_next_probe",
        "_probe_wait",
        "_probing",
        "_since",
        "_streak",
        "_throttled_since",
        "_throttles",
        "_window",
        "confirmed",
        "gated",
        "stopped",
    )

    def __init__(
        self, host: str, *, window: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._host = host
        self._window = window
        low, high = PROBE_WAIT
        self._probe_wait = min(high, max(low, window / (STORM_FAILURES - OPEN_AFTER)))
        self._clock = clock
        self._streak = 0  # failures in a row, with no API answer since
        self._hard = 0  # of which hard
        self._since = 0.0  # when the row began
        self._throttles = 0  # throttle answers in a row
        self._throttled_since = 0.0
        self._probing = False  # the one request allowed while gated is out
        self._next_probe = -math.inf
        self._changed: anyio.Event | None = None
        self.confirmed = False  # the API has answered at least once
        self.gated = True  # one request at a time (until the API answers, or in a storm)
        self.stopped: ServiceUnavailable | None = None

    async def admit(self) -> bool:
        """Wait until a request may go while gated; True if it goes as the probe (then
        :meth:`release` it). Raises ServiceUnavailable once the run is stopped."""
        while True:
            if self.stopped is not None:
                raise ServiceUnavailable(str(self.stopped))
            if not self.gated:
                return False
            now = self._clock()
            if not self._probing and now >= self._next_probe:
                self._probing = True
                return True
            if self._changed is None:
                self._changed = anyio.Event()
            changed = self._changed
            with anyio.move_on_after(math.inf if self._probing else self._next_probe - now):
                await changed.wait()

    def release(self) -> None:
        """The probe's answer is in (or it was cancelled): the next request may go."""
        self._probing = False
        self._notify()

    def ok(self) -> None:
        """The API answered: the row ends, and the gate opens."""
        if self._streak or self._throttles or self.gated:
            self._streak = self._hard = self._throttles = 0
            self.confirmed = True
            self._next_probe = -math.inf
            self._update()

    def failed(self, error: TransientError | AnswerTooLarge, *, hard: bool) -> None:
        """Count a failure; raise ServiceUnavailable if it trips the breaker."""
        now = self._clock()
        if not self._streak:
            self._since = now
        self._streak += 1
        self._hard += hard
        lasted = now - self._since
        if hard and not self.confirmed and self._hard >= FIRST_CONTACT_TRIES:
            if isinstance(error, Unreachable):
                self._stop(f"{error} ({self._hard} tries in {lasted:.1f} s)")
            self._stop(
                f"{self._host} does not answer like the Constant Contact API ({self._hard} "
                f"answers in a row; check --base-url); the last: {error}"
            )
        if self._streak >= STORM_FAILURES and lasted >= self._window:
            self._stop(
                f"{self._host} failed {self._streak} requests in a row over {lasted:.0f} s; "
                f"the last: {error}"
            )
        if self._streak >= OPEN_AFTER:
            self._next_probe = now + self._probe_wait
        elif hard:
            self._next_probe = now + 0.25 * 2**self._streak  # 0.5, 1, 2 s
        self._update()

    def throttled(self, error: ThrottledError) -> None:
        """Count a throttle (the API answered: failures no longer in a row); raise
        ServiceUnavailable if every answer has been a throttle for too long."""
        now = self._clock()
        if not self._throttles:
            self._throttled_since = now
        self._throttles += 1
        self._streak = self._hard = 0
        self.confirmed = True
        self._next_probe = -math.inf
        lasted = now - self._throttled_since
        if self._throttles >= THROTTLE_STOP or (
            self._throttles > 1 and lasted >= THROTTLE_STOP_SECONDS
        ):
            self._stop(
                f"{self._host} throttled {self._throttles} requests in a row over {lasted:.0f} s "
                "and answered none: the API key's per-second limit is taken (another "
                "application, or --rate too high)"
            )
        self._update()

    def _stop(self, message: str) -> None:
        self.stopped = ServiceUnavailable(message)
        self._update()
        raise ServiceUnavailable(message)

    def _update(self) -> None:
        self.gated = self.stopped is not None or not self.confirmed or self._streak >= OPEN_AFTER
        self._notify()

    def _notify(self) -> None:
        if self._changed is not None:
            self._changed.set()
            self._changed = None


class PageFetcher:
    """Fetches one page: pacer slot, request, and the retry and throttle policy around them."""

    __slots__ = (
        "_breaker",
        "_pacer",
        "_policy",
        "_retry",
        "_sleep",
        "_stats",
        "_stop",
        "_transport",
        "_wait",
    )

    def __init__(
        self,
        transport: Transport,
        pacer: Pacer,
        policy: RetryPolicy,
        stats: Stats,
        *,
        sleep: Sleep = anyio.sleep,
        breaker: Breaker | None = None,
    ) -> None:
        self._transport = transport
        self._breaker = breaker or Breaker(
            getattr(transport, "host", "the API host"), window=policy.budget
        )
        self._pacer = pacer
        self._policy = policy
        self._stats = stats
        self._sleep = sleep
        # The strategies are immutable and shared; one AsyncRetrying per call holds the state.
        self._retry = retry_if_exception_type(TransientError)
        self._stop = stop_after_attempt(policy.max_retries + 1)
        self._wait = wait_exponential_jitter(
            multiplier=policy.initial, max=policy.maximum, exp_base=2, jitter=policy.jitter
        ) + wait_exception(_server_wait)

    async def fetch(self, url: URL) -> Page:
        """The page at ``url``; RetriesExhausted when transient failures outlast the budget.

        Run-stopping errors and per-contact errors from the transport pass through untouched.
        """
        return await self._call(self._transport.get, url)

    async def fetch_object(self, url: URL) -> dict[str, Any]:
        """The unpaged JSON object at ``url`` (a summary report), under the same policy."""
        return await self._call(self._transport.get_object, url)

    async def fetch_list(self, url: URL) -> list[dict[str, Any]]:
        """The unpaged JSON array at ``url`` (summaryByCampaign), under the same policy."""
        return await self._call(self._transport.get_list, url)

    async def _call(self, get: Callable[[URL], Awaitable[T]], url: URL) -> T:
        try:  # the common case: one attempt, no retry machinery on the hot path
            return await self._attempt(get, url)
        except TransientError as exc:
            failed: TransientError | None = exc
        policy = self._policy
        retrying = AsyncRetrying(
            retry=self._retry,
            stop=self._stop,
            wait=self._wait,
            sleep=self._sleep,
            before_sleep=self._count_retry,
            reraise=True,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    if failed is not None:  # tenacity's attempt 1 is the one that just failed
                        first, failed = failed, None
                        raise first
                    return await self._attempt(get, url)
        except TransientError as exc:
            raise RetriesExhausted(
                f"gave up after {policy.max_retries + 1} attempts: {exc}",
                status=exc.status,
            ) from None
        raise AssertionError("unreachable: tenacity either returns or reraises")

    async def _attempt(self, get: Callable[[URL], Awaitable[T]], url: URL) -> T:
        """One attempt: as many throttled tries as it takes, each behind the breaker's gate and
        a pacer slot, each answer told to the breaker."""
        breaker = self._breaker
        renewed = 0
        for _ in range(MAX_THROTTLES_PER_REQUEST):
            probe = breaker.gated and await breaker.admit()
            try:
                await self._pacer.acquire()
                self._stats.requests += 1
                try:
                    result = await get(url)
                except ThrottledError as exc:
                    self._stats.throttles += 1
                    breaker.throttled(exc)
                    wait = exc.retry_after if exc.retry_after is not None else DEFAULT_THROTTLE_WAIT
                    self._pacer.throttled(wait)
                    continue
                except TokenRejected as exc:
                    # v3: renew the refused token (single-flight in the provider) and ask
                    # again through the pacer; a renewed token refused too stops the run.
                    renewed += 1
                    if renewed > 1:
                        raise AuthenticationError(
                            "the API refused a freshly renewed access token (401): check the "
                            "app's scopes (contact_data, campaign_data), or run bulkopens auth "
                            "login"
                        ) from None
                    await self._transport.renew(exc.token)
                    continue
                except QuotaExhausted as exc:
                    # --wait-for-quota: the API's own "quota spent" waits for the reset too.
                    wait_for_reset = getattr(self._pacer, "wait_for_reset", None)
                    if not exc.by_api or wait_for_reset is None:
                        raise  # the ledger refused (it waits by itself), or no budget
                    if not await wait_for_reset(exc.resets_at):
                        raise
                    breaker.ok()
                    continue
                except (Unreachable, NotTheApi, AnswerTooLarge) as exc:
                    breaker.failed(exc, hard=True)
                    raise
                except TransientError as exc:
                    breaker.failed(exc, hard=False)
                    raise
                except ContactError:
                    breaker.ok()  # the API's own answer (a 404 with its error body)
                    raise
                breaker.ok()
                return result
            finally:
                if probe:
                    breaker.release()
        raise TransientError(f"throttled {MAX_THROTTLES_PER_REQUEST} times in a row on {url.path}")

    def _count_retry(self, _state: RetryCallState) -> None:
        self._stats.retries += 1


def _server_wait(exc: BaseException) -> float:
    """The wait a 5xx answer asked for with Retry-After, on top of the backoff."""
    return getattr(exc, "retry_after", None) or 0.0
