"""Virtual time for the pacers' tests: ``sleep`` wakes at exactly ``now + seconds``, and time moves
on only when every task is blocked, so a test of many concurrent callers is exact and takes no
real time. And the call patterns the property tests play on it, and the spacing they prove."""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import anyio
from hypothesis import strategies as st

from bulkopens._ratelimit import LATE_TOLERANCE, Pacer


class VirtualClock:
    """A clock (call it) and its ``sleep``; :meth:`run` drives the time."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start
        self._timers: list[tuple[float, int, anyio.Event]] = []
        self._seq = itertools.count()

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            await anyio.lowlevel.checkpoint()
            return
        event = anyio.Event()
        heapq.heappush(self._timers, (self.now + seconds, next(self._seq), event))
        await event.wait()  # a cancelled sleeper's timer still fires later, on no one

    async def run(self, body: Callable[[], Awaitable[Any]]) -> None:
        """Run ``body``; whenever every other task waits, wake the earliest sleeper."""

        finished = False

        async def ticker() -> None:
            while True:
                await _settled()
                if finished:
                    return
                if not self._timers:
                    raise RuntimeError("every task waits and no timer is set: a deadlock")
                when, _, event = heapq.heappop(self._timers)
                self.now = max(self.now, when)
                event.set()

        async with anyio.create_task_group() as tg:
            tg.start_soon(ticker)
            await body()
            finished = True
            tg.cancel_scope.cancel()


async def _settled() -> None:
    """Return once every other task waits on something and no callback is due (nothing can
    run until a timer fires). Reads asyncio's private ``_ready`` and ``_fut_waiter``."""
    this = asyncio.current_task()
    loop = asyncio.get_running_loop()
    while True:
        await asyncio.sleep(0)
        if getattr(loop, "_ready", None):
            continue  # callbacks due: a task finishing wakes its task group only through one
        for task in asyncio.all_tasks():
            if task is this:
                continue
            waiter = getattr(task, "_fut_waiter", None)
            if waiter is None or waiter.done():
                break
        else:
            return


def runs_without_yielding(coro: Any) -> bool:
    """Whether the coroutine completes without yielding to the event loop even once (the
    coroutine is closed either way)."""
    try:
        coro.send(None)
    except StopIteration:
        return True
    coro.close()
    return False


# One caller's step: think for `think` intervals, then grant; "cancel" gives up after `after`
# intervals if not granted by then; "throttle" reports a throttle answer pausing `after`
# intervals. Thinking up to 3 intervals keeps callers queueing; up to 400 (LATE_TOLERANCE is
# 200 intervals at 100,000/s) makes them late for their slots too.
Step = tuple[float, str, float]
STEP = st.tuples(
    st.one_of(st.just(0.0), st.floats(0, 3), st.floats(0, 400)),
    st.sampled_from(["grant", "grant", "cancel", "throttle"]),
    st.floats(0.05, 3),
)
CALLERS = st.lists(st.lists(STEP, max_size=8), min_size=1, max_size=6)


async def play(
    clock: VirtualClock,
    players: Sequence[tuple[Pacer, list[list[Step]]]],
    pauses: list[float] | None = None,
) -> list[float]:
    """Run the callers of every pacer's plan at once on virtual time (a pacer per process);
    the times of all the grants (and in ``pauses``, the start and end of each throttle's
    pause)."""
    times: list[float] = []

    async def caller(pacer: Pacer, steps: list[Step], mine: list[float]) -> None:
        interval = 1 / pacer.rate
        for think, kind, after in steps:
            await clock.sleep(think * interval)
            if kind == "throttle":
                pacer.throttled(after * interval)
                if pauses is not None:
                    pauses.extend((clock.now, clock.now + after * interval))
                continue
            async with anyio.create_task_group() as tg:
                if kind == "cancel":
                    tg.start_soon(_give_up, clock, tg.cancel_scope, after * interval)
                await pacer.grant()
                mine.append(clock.now)  # no checkpoint between the grant and this
                tg.cancel_scope.cancel()

    granted: list[list[float]] = [[] for _ in players]

    async def body() -> None:
        async with anyio.create_task_group() as tg:
            for (pacer, plan), mine in zip(players, granted, strict=True):
                for steps in plan:
                    tg.start_soon(caller, pacer, steps, mine)

    await clock.run(body)
    for (pacer, _), mine in zip(players, granted, strict=True):
        assert pacer.grants == len(mine)
        times += mine
    return times


async def _give_up(clock: VirtualClock, scope: anyio.CancelScope, wait: float) -> None:
    await clock.sleep(wait)
    scope.cancel()


def assert_spaced(times: list[float], interval: float) -> None:
    """Any k consecutive grants span at least (k - 1) intervals less LATE_TOLERANCE (the most a
    late grant may start its successor's interval early): no window of a second ever holds
    more than the rate."""
    times = sorted(times)
    lowest = float("inf")  # min over i of (t_i - i * interval)
    for j, t in enumerate(times):
        if j:
            assert t - j * interval - lowest >= -LATE_TOLERANCE - 1e-9, (j, times)
        lowest = min(lowest, t - j * interval)
