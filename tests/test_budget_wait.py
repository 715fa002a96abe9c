"""``--wait-for-quota`` when the API itself says the key's daily quota is spent: every request
waits for the reset (the clock is moved past it here, not waited for), then the run goes on;
without it the run stops (QuotaExhausted, exit 4 in the CLI). Against a loopback server."""

from __future__ import annotations

import time
from typing import Any

import pytest
from hostile import Hostile

import bulkopens
import bulkopens._budget as budget_module


class _LaterClock:
    """``time`` for the budget module, whose ``time()`` is a day ahead once asked to be."""

    def __init__(self) -> None:
        self.ahead = 0.0

    def time(self) -> float:
        return time.time() + self.ahead

    def __getattr__(self, name: str) -> Any:
        return getattr(time, name)


async def test_the_apis_quota_answer_waits_for_the_reset_with_wait_for_quota(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = _LaterClock()
    monkeypatch.setattr(budget_module, "time", clock)
    notices: list[str] = []

    def notice(text: str) -> None:
        notices.append(text)
        clock.ahead = 86_400.0  # the wait starts: the night passes at once

    budget = bulkopens.Budget(wait_for_quota=True, notice=notice)
    with Hostile("quota-once") as server:
        async with (
            bulkopens.Client(
                "k" * 12, "t" * 12, base_url=server.url, rate=50, budget=budget
            ) as client,
            client.records(["1", "2", "3"]) as stream,
        ):
            records = [r async for r in stream]
        requests = server.count()
    assert len(records) == 9
    assert requests == 4  # the refused one, sent again after the reset, and two more
    assert any("the API says the key's daily quota is spent" in n for n in notices)


async def test_without_wait_for_quota_the_apis_quota_answer_stops_the_run() -> None:
    with Hostile("quota-once") as server:
        async with bulkopens.Client("k" * 12, "t" * 12, base_url=server.url, rate=50) as client:
            with pytest.raises(bulkopens.QuotaExhausted):
                async with client.records(["1", "2", "3"]) as stream:
                    [r async for r in stream]


async def test_the_ledgers_own_stop_waits_for_the_next_day_with_wait_for_quota(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """--daily-quota 2: two requests today, then a wait (the clock moved a day on), then the
    third request on the next day's ledger."""
    clock = _LaterClock()
    monkeypatch.setattr(budget_module, "time", clock)
    notices: list[str] = []

    def notice(text: str) -> None:
        notices.append(text)
        clock.ahead += 86_400.0

    budget = bulkopens.Budget(daily_quota=2, wait_for_quota=True, notice=notice)
    with Hostile("ok") as server:
        async with (
            bulkopens.Client("k" * 12, "t" * 12, base_url=server.url, rate=50, budget=budget) as c,
            c.records(["1", "2", "3"]) as stream,
        ):
            records = [r async for r in stream]
        requests = server.count()
    assert len(records) == 9
    assert requests == 3
    assert any("waiting for the quota to reset" in n for n in notices)
