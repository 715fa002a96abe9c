"""One pacer for the whole run: evenly spaced request starts, and a pool-wide pause.

The schedule is GCRA (generic cell rate algorithm) virtual scheduling, with no burst: each
grant takes the slot ``max(next slot, pause end)`` once it has come and moves the next slot one
``interval`` past it. Invariant: grants are at least ``interval`` apart, where ``interval`` is
``1 / rate`` plus a safety margin, so no window of one second ever holds more than ``rate``
request starts. There is no burst allowance at all (unlike a token bucket, whose initial burst
is exactly what earns the v2 API's ``over.qps`` rejection). One waiter at a time holds the lock
and sleeps until its slot, and the next slot is counted from the moment the grant really
happened, so a late wake-up pushes later grants back instead of squeezing two of them together.

Fast path: a grant whose slot has already come, while no one holds or waits for the lock, is
taken at once, without the lock and without yielding to the event loop (the same arithmetic
as the slow path, so the grants are the same; no other task can run between the check and the
take). At a high rate, where nearly every slot has passed, that is most grants.

A throttle answer pauses every worker (``throttled``) and, as in AIMD congestion control, stretches
the interval by a quarter; each ``rate * 10`` grants without a throttle earn back 5% of it,
down to the configured rate. So a key that is shared, or a ``--rate`` set above what the key
allows, settles just under the real limit instead of being rejected over and over.

A grant must be the moment a request goes on the wire: a grant followed by a wait for a free
connection lets grants pile up and go out together, over the rate. So a client's requests pass
a :class:`Gate` first: a slot out of ``concurrency`` (never more than the connection pool has),
then the grant, then the request, which finds a connection free; the slot is given back once
the answer is read. The pacer of a gated fetch is ``deferred``: its ``acquire`` only marks the
attempt, and the gate takes the grant.

This replaces aiolimiter on purpose: its leaky bucket cannot be paused or re-rated, and it reads
the event loop's clock, which makes a virtual-clock test impossible.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

import anyio

from bulkopens._log import ratelimit_log

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]

# Spacing 1.5% wider than 1/rate absorbs ~15 ms per second of jitter between our clock and the
# server's (send time, network, the server's own handling): 1% (10 ms) let 2 of 24 benchmark
# runs at 10/s draw a throttle.
SAFETY_MARGIN = 0.015
LATE_TOLERANCE = 0.002  # a grant up to 2 ms late (epoll rounds timeouts up to the ms) costs nothing
MAX_SLOWDOWN = 4.0  # never stretch the interval past 4x the configured one
_STRETCH = 1.25
_RECOVER = 1.05


class Pacer:
    """Spaces request starts evenly at no more than ``rate`` per second (0 = unlimited)."""

    __slots__ = (
        "_base_interval",
        "_clean_grants",
        "_clock",
        "_deferred",
        "_interval",
        "_lock",
        "_next_slot",
        "_paused_until",
        "_sleep",
        "grants",
    )

    def __init__(
        self,
        rate: float,
        *,
        margin: float = SAFETY_MARGIN,
        clock: Clock = time.monotonic,
        sleep: Sleep = anyio.sleep,
        deferred: bool = False,
    ) -> None:
        self._deferred = deferred
        self._base_interval = (1.0 + margin) / rate if rate > 0 else 0.0
        self._interval = self._base_interval
        self._clock = clock
        self._sleep = sleep
        self._lock = anyio.Lock()
        self._next_slot = -float("inf")
        self._paused_until = -float("inf")
        self._clean_grants = 0
        self.grants = 0

    @property
    def rate(self) -> float:
        """The current effective rate, in requests per second (inf when unlimited)."""
        return 1.0 / self._interval if self._interval else float("inf")

    async def acquire(self) -> None:
        """Wait for this caller's slot. Cancellation while waiting gives the slot up.

        A ``deferred`` pacer returns at once: its :class:`Gate` takes the grant at the wire."""
        if not self._deferred:
            await self.grant()

    async def grant(self) -> None:
        """Wait for the next evenly spaced start, and take it."""
        now = self._clock()
        if not self._interval and self._paused_until <= now:
            self.grants += 1  # unlimited and not paused: no lock, no wait
            return
        if not self._lock.locked():
            # The fast path: no one ahead (a holder of the lock, or a waiter, which a release
            # makes its holder), and the slot has come: take it now, without a yield.
            slot = max(self._next_slot, self._paused_until)
            if slot <= now:
                self._take(slot, now)
                return
        await self._grant_in_turn()

    async def _grant_in_turn(self) -> None:
        """The slow path: take the lock (a yield), sleep until the slot, take it."""
        async with self._lock:
            while True:
                now = self._clock()
                slot = max(self._next_slot, self._paused_until)
                if slot <= now:
                    break
                await self._sleep(slot - now)
            self._take(slot, now)

    def _take(self, slot: float, now: float) -> None:
        """Grant ``slot`` (which has come: ``slot <= now``) and schedule the next one."""
        # The next slot counts from this one, not from the (slightly late) wake-up, so timer
        # lateness does not pile up; but never from earlier than LATE_TOLERANCE ago, so a
        # stalled loop cannot make up for lost time with a burst.
        self._next_slot = max(slot, now - LATE_TOLERANCE) + self._interval
        self.grants += 1
        self._clean_grants += 1
        if self._interval > self._base_interval and self._clean_grants >= 10 * self.rate:
            self._interval = max(self._base_interval, self._interval / _RECOVER)
            self._clean_grants = 0

    def throttled(self, wait: float) -> None:
        """The API said "too fast": pause every caller for ``wait`` seconds and slow down.

        Throttles that arrive while a pause is on answer requests sent before it began: they
        extend the pause but do not slow the pacer down again (one step per congestion event).
        """
        now = self._clock()
        already_paused = now < self._paused_until
        self._paused_until = max(self._paused_until, now + wait)
        self._clean_grants = 0
        if self._base_interval and not already_paused:
            self._interval = min(self._base_interval * MAX_SLOWDOWN, self._interval * _STRETCH)
        if not already_paused:
            ratelimit_log.warning(
                "the API throttled a request: every request pauses %.1f s, then the rate is "
                "%.2f/s, recovering gradually",
                wait,
                self.rate,
            )
        else:
            ratelimit_log.debug(
                "another throttle answer during the pause; pause until +%.1f s", wait
            )

    @property
    def paused_for(self) -> float:
        """Seconds left in a throttle pause (0 when the pool is not paused)."""
        return max(0.0, self._paused_until - self._clock())

    def __repr__(self) -> str:
        paused = self.paused_for
        return f"<Pacer rate={self.rate:.3g}/s grants={self.grants} paused={paused:.2f}s>"


class Gate:
    """A client's one door to the API, shared by every call: at most ``slots`` requests in flight,
    and each one's start granted by ``pacer`` only once it holds a slot.

    ``slots`` must not exceed the connections the session can open to the API host, so that a
    request never waits for a connection after its grant. Slots are handed out first come,
    first served, so concurrent calls share the rate fairly.
    """

    __slots__ = ("_free", "pacer", "slots")

    def __init__(self, pacer: Pacer, slots: int) -> None:
        self.pacer = pacer
        self.slots = max(1, slots)
        self._free = anyio.Semaphore(self.slots, fast_acquire=True)

    @property
    def in_flight(self) -> int:
        """Requests holding a slot now (granted or waiting for their grant)."""
        return self.slots - self._free.value

    async def enter(self) -> None:
        """Take a slot, then the pacer's grant. Cancelled while waiting, it holds nothing.

        A free slot and a passed grant slot cost no yield to the event loop at all."""
        free = self._free
        if free.value:
            free.acquire_nowait()  # a slot is free, so no one waits for one: no yield
        else:
            await free.acquire()
        try:
            await self.pacer.grant()
        except BaseException:
            self._free.release()
            raise

    def leave(self) -> None:
        """Give the slot back: the answer has been read (or the request failed)."""
        self._free.release()

    def __repr__(self) -> str:
        return f"<Gate slots={self.slots} in_flight={self.in_flight} {self.pacer!r}>"
