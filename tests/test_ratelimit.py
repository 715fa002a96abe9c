"""The pacer on a virtual clock: no real sleeping, exact times."""

from __future__ import annotations

import itertools
import math

import anyio
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from virtual_clock import CALLERS, Step, VirtualClock, assert_spaced, play, runs_without_yielding

from bulkopens._ratelimit import LATE_TOLERANCE, MAX_SLOWDOWN, SAFETY_MARGIN, Gate, Pacer


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds
        await anyio.lowlevel.checkpoint()


def max_in_any_window(times: list[float], window: float = 1.0) -> int:
    """The most starts in any half-open window [t, t + window) that begins at a start."""
    best = 0
    for i, start in enumerate(times):
        best = max(best, sum(1 for t in times[i:] if t < start + window))
    return best


async def grant_times(pacer: Pacer, clock: FakeClock, n: int, workers: int = 8) -> list[float]:
    times: list[float] = []

    async def worker(count: int) -> None:
        for _ in range(count):
            await pacer.acquire()
            times.append(clock.now)

    async with anyio.create_task_group() as tg:
        for i in range(workers):
            tg.start_soon(worker, n // workers + (1 if i < n % workers else 0))
    return times


@pytest.mark.parametrize("rate", [1.0, 4.0, 10.0, 2.5])
async def test_no_one_second_window_holds_more_than_rate_starts(rate: float) -> None:
    clock = FakeClock()
    pacer = Pacer(rate, clock=clock, sleep=clock.sleep)
    times = await grant_times(pacer, clock, 200)
    assert len(times) == 200
    # a whole-number rate is a hard cap per 1 s window; a fractional one is an average
    assert max_in_any_window(times) <= math.ceil(rate)
    gaps = [b - a for a, b in itertools.pairwise(times)]
    # a gap may be short by the late-grant tolerance; the margin keeps windows within rate
    assert min(gaps) >= (1 + SAFETY_MARGIN) / rate - LATE_TOLERANCE - 1e-9
    # and it is not needlessly slow: the whole run is within 1% + one interval of ideal
    assert times[-1] - times[0] <= 199 * (1 + SAFETY_MARGIN) / rate + 1e-6


async def test_no_initial_burst() -> None:
    clock = FakeClock()
    pacer = Pacer(4, clock=clock, sleep=clock.sleep)
    times = await grant_times(pacer, clock, 8, workers=8)
    assert times[0] == 1000.0
    assert times[1] > 1000.25  # aiolimiter's AsyncLimiter(4, 1) would let 4 through at once


async def test_throttle_pauses_every_caller_and_slows_down() -> None:
    clock = FakeClock()
    pacer = Pacer(4, clock=clock, sleep=clock.sleep)
    await pacer.acquire()
    base_rate = pacer.rate
    pacer.throttled(2.0)
    assert pacer.rate == pytest.approx(base_rate / 1.25)
    paused_at = clock.now
    times = await grant_times(pacer, clock, 4, workers=4)
    assert min(times) >= paused_at + 2.0


async def test_slowdown_is_capped_and_recovers() -> None:
    clock = FakeClock()
    pacer = Pacer(10, clock=clock, sleep=clock.sleep)
    base = pacer.rate
    for _ in range(50):
        pacer.throttled(0.1)
        clock.now += 0.2  # each throttle is a new congestion event
    assert pacer.rate == pytest.approx(base / MAX_SLOWDOWN)
    await grant_times(pacer, clock, 2000, workers=4)
    assert pacer.rate == pytest.approx(base)


async def test_unlimited_rate_never_sleeps() -> None:
    clock = FakeClock()
    pacer = Pacer(0, clock=clock, sleep=clock.sleep)
    await grant_times(pacer, clock, 100)
    assert clock.sleeps == []
    assert pacer.grants == 100
    pacer.throttled(1.5)  # a throttle still pauses an unlimited pacer
    await pacer.acquire()
    assert clock.sleeps == [pytest.approx(1.5)]


async def test_cancelled_waiter_gives_its_slot_up() -> None:
    pacer = Pacer(2)  # real clock: the first grant is immediate, the second waits ~0.5 s
    await pacer.acquire()
    with anyio.move_on_after(0.01):
        await pacer.acquire()
    assert pacer.grants == 1
    assert "rate=" in repr(pacer)


async def test_throttles_during_a_pause_slow_down_once() -> None:
    clock = FakeClock()
    pacer = Pacer(4, clock=clock, sleep=clock.sleep)
    base = pacer.rate
    for _ in range(5):  # answers to requests that were in flight when the first came back
        pacer.throttled(1.0)
    assert pacer.rate == pytest.approx(base / 1.25)


async def test_late_wake_ups_do_not_pile_up() -> None:
    """A timer that fires 1 ms late every time (epoll rounds up) costs no throughput."""
    clock = FakeClock()

    async def late_sleep(seconds: float) -> None:
        await clock.sleep(seconds + 0.001)

    pacer = Pacer(10, clock=clock, sleep=late_sleep)
    times = await grant_times(pacer, clock, 101, workers=4)
    assert times[-1] - times[0] == pytest.approx(100 * (1 + SAFETY_MARGIN) / 10, abs=0.002)
    assert max_in_any_window(times) <= 10


async def test_a_stalled_loop_is_not_made_up_for_with_a_burst() -> None:
    clock = FakeClock()
    pacer = Pacer(10, clock=clock, sleep=clock.sleep)
    await pacer.acquire()
    clock.now += 5.0  # the loop was busy for 5 s
    times = await grant_times(pacer, clock, 11, workers=4)
    assert max_in_any_window(times) <= 10


# -- the fast path, and the spacing under any call pattern (virtual time, Hypothesis) ----------


class ReferencePacer(Pacer):
    """The pacer without its fast path: every grant takes the lock (a yield), then the slot."""

    __slots__ = ()

    async def grant(self) -> None:
        if not self._interval and self._paused_until <= self._clock():
            self.grants += 1
            return
        await self._grant_in_turn()


RATES = st.sampled_from([1.0, 4.0, 10.0, 700.0, 100_000.0])


@settings(max_examples=80, deadline=None)
@given(rate=RATES, plan=CALLERS)
def test_grants_are_spaced_whatever_the_call_pattern(rate: float, plan: list[list[Step]]) -> None:
    """Callers arriving at any moments, giving up while waiting, throttles at any time: grants
    stay an interval apart (less the late tolerance, once), on the fast path or the slow, and
    none starts during a throttle's pause."""
    pauses: list[float] = []

    async def main() -> list[float]:
        clock = VirtualClock()
        return await play(clock, [(Pacer(rate, clock=clock, sleep=clock.sleep), plan)], pauses)

    times = anyio.run(main)
    assert_spaced(times, (1 + SAFETY_MARGIN) / rate)
    for begin, end in zip(pauses[::2], pauses[1::2], strict=True):
        assert not [t for t in times if begin < t < end], (begin, end, times)


@settings(max_examples=80, deadline=None)
@given(rate=RATES, plan=CALLERS.map(lambda p: [[s for s in c if s[1] != "throttle"] for c in p]))
def test_the_fast_path_grants_exactly_what_the_slow_path_grants(
    rate: float, plan: list[list[Step]]
) -> None:
    """The same callers against the pacer and against the lock-every-time reference: the same
    grant times, one for one."""

    async def main(kind: type[Pacer]) -> list[float]:
        clock = VirtualClock()
        return await play(clock, [(kind(rate, clock=clock, sleep=clock.sleep), plan)])

    assert sorted(anyio.run(main, Pacer)) == sorted(anyio.run(main, ReferencePacer))


async def test_a_grant_whose_slot_has_come_does_not_yield() -> None:
    clock = FakeClock()
    pacer = Pacer(4, clock=clock, sleep=clock.sleep)
    assert runs_without_yielding(pacer.grant())  # the first slot
    clock.now += 0.3  # past the next slot
    assert runs_without_yielding(pacer.grant())
    clock.now += 10.0
    assert runs_without_yielding(pacer.grant())
    assert pacer.grants == 3
    assert clock.sleeps == []
    # Slots still to come are waited for, one waiter at a time.
    times = await grant_times(pacer, clock, 3, workers=3)
    assert len(clock.sleeps) == 3
    assert_spaced(times, pacer._interval)


async def test_a_free_gate_slot_and_a_come_grant_do_not_yield() -> None:
    clock = FakeClock()
    gate = Gate(Pacer(10, clock=clock, sleep=clock.sleep), 2)
    assert runs_without_yielding(gate.enter())
    clock.now += 1.0
    assert runs_without_yielding(gate.enter())
    assert gate.in_flight == 2
    gate.leave()
    gate.leave()
    assert gate.in_flight == 0
