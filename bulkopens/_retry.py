"""Retry policy: every attempt takes a pacer slot; throttles pause the pool, 5xx back off.

Throttle answers do not use up a request's retries (the pool simply waits), but they are capped
per request so that a server that only ever throttles cannot hold a worker forever.
"""

from __future__ import annotations

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

from bulkopens._exceptions import RetriesExhausted, ThrottledError, TransientError
from bulkopens._http import Page, Transport
from bulkopens._ratelimit import Pacer
from bulkopens._stats import Stats

Sleep = Callable[[float], Awaitable[None]]
T = TypeVar("T")

DEFAULT_THROTTLE_WAIT = 1.0  # the API sends no Retry-After; its per-second window clears in ~1 s
MAX_THROTTLES_PER_REQUEST = 120


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How transient failures are retried: exponential backoff with jitter, then give up."""

    max_retries: int = 6
    initial: float = 0.5
    maximum: float = 30.0
    jitter: float = 0.5


class PageFetcher:
    """Fetches one page: pacer slot, request, and the retry and throttle policy around them."""

    __slots__ = ("_pacer", "_policy", "_retry", "_sleep", "_stats", "_stop", "_transport", "_wait")

    def __init__(
        self,
        transport: Transport,
        pacer: Pacer,
        policy: RetryPolicy,
        stats: Stats,
        *,
        sleep: Sleep = anyio.sleep,
    ) -> None:
        self._transport = transport
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
        """One attempt: as many throttled tries as it takes, each behind a pacer slot."""
        for _ in range(MAX_THROTTLES_PER_REQUEST):
            await self._pacer.acquire()
            self._stats.requests += 1
            try:
                return await get(url)
            except ThrottledError as exc:
                self._stats.throttles += 1
                wait = exc.retry_after if exc.retry_after is not None else DEFAULT_THROTTLE_WAIT
                self._pacer.throttled(wait)
        raise TransientError(f"throttled {MAX_THROTTLES_PER_REQUEST} times in a row on {url.path}")

    def _count_retry(self, _state: RetryCallState) -> None:
        self._stats.retries += 1


def _server_wait(exc: BaseException) -> float:
    """The wait a 5xx answer asked for with Retry-After, on top of the backoff."""
    return getattr(exc, "retry_after", None) or 0.0
