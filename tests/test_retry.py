"""Retry and throttle policy, with a scripted transport and an injected sleep (no waiting)."""

from __future__ import annotations

from typing import Any

import pytest
from yarl import URL

from bulkopens._api import Page
from bulkopens._exceptions import (
    AuthenticationError,
    ContactNotFound,
    RetriesExhausted,
    ThrottledError,
    TransientError,
)
from bulkopens._ratelimit import Pacer
from bulkopens._retry import DEFAULT_THROTTLE_WAIT, PageFetcher, RetryPolicy
from bulkopens._stats import Stats

URL_ = URL("http://x.test/v2/contacts/1/tracking/opens")
OK = Page([{"a": 1}], None)


class Script:
    """A transport that answers from a list: an exception is raised, a Page returned."""

    def __init__(self, *answers: Any) -> None:
        self.answers = list(answers)
        self.calls = 0

    async def get(self, url: URL) -> Page:
        self.calls += 1
        answer = self.answers.pop(0)
        if isinstance(answer, BaseException):
            raise answer
        assert isinstance(answer, Page)
        return answer


class RecordingPacer(Pacer):
    def __init__(self) -> None:
        super().__init__(0)
        self.pauses: list[float] = []

    def throttled(self, wait: float) -> None:
        self.pauses.append(wait)


def fetcher(
    script: Script, max_retries: int = 3
) -> tuple[PageFetcher, RecordingPacer, Stats, list[float]]:
    sleeps: list[float] = []

    async def sleep(seconds: float) -> None:
        sleeps.append(seconds)

    pacer, stats = RecordingPacer(), Stats()
    policy = RetryPolicy(max_retries=max_retries, initial=0.5, maximum=30, jitter=0.5)
    return PageFetcher(script, pacer, policy, stats, sleep=sleep), pacer, stats, sleeps  # type: ignore[arg-type]


async def test_success_first_time() -> None:
    f, pacer, stats, sleeps = fetcher(Script(OK))
    assert await f.fetch(URL_) is OK
    assert (stats.requests, stats.retries, sleeps) == (1, 0, [])
    assert pacer.grants == 1


async def test_transient_failures_are_retried_with_growing_backoff() -> None:
    f, pacer, stats, sleeps = fetcher(Script(TransientError("a"), TransientError("b"), OK))
    assert await f.fetch(URL_) is OK
    assert stats.requests == 3
    assert stats.retries == 2
    assert pacer.grants == 3  # every retry takes a pacer slot
    assert len(sleeps) == 2
    assert 0.5 <= sleeps[0] <= 1.0
    assert 1.0 <= sleeps[1] <= 1.5


async def test_retries_run_out() -> None:
    f, _, stats, sleeps = fetcher(Script(*[TransientError("x", status=503)] * 4), max_retries=3)
    with pytest.raises(RetriesExhausted) as info:
        await f.fetch(URL_)
    assert stats.requests == 4
    assert len(sleeps) == 3
    assert info.value.status == 503
    assert not info.value.permanent


async def test_server_retry_after_adds_to_the_backoff() -> None:
    f, _, _, sleeps = fetcher(Script(TransientError("x", retry_after=10.0), OK))
    await f.fetch(URL_)
    assert sleeps[0] >= 10.0


async def test_throttles_pause_the_pool_and_do_not_use_up_retries() -> None:
    answers = [ThrottledError("t")] * 5 + [ThrottledError("t", retry_after=4.0), OK]
    f, pacer, stats, sleeps = fetcher(Script(*answers), max_retries=0)
    assert await f.fetch(URL_) is OK
    assert stats.throttles == 6
    assert stats.retries == 0
    assert pacer.pauses == [DEFAULT_THROTTLE_WAIT] * 5 + [4.0]
    assert sleeps == []  # the wait happens in the pacer, for every worker at once


@pytest.mark.parametrize("error", [AuthenticationError("401"), ContactNotFound("404")])
async def test_other_errors_are_not_retried(error: Exception) -> None:
    script = Script(error, OK)
    f, _, _, _ = fetcher(script)
    with pytest.raises(type(error)):
        await f.fetch(URL_)
    assert script.calls == 1
