"""A token renewal across hosts: with a budget shared through Redis (a real redis-server),
each renewal also holds the key's fleet-wide lock, so hosts that share one token file (a
network file system, whose file locks cannot be trusted) never spend a rotating refresh token
twice."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import anyio
import pytest
from test_budget import RedisServer, _redis
from test_tokens import CLIENT_ID, CLIENT_SECRET, CONFIG, save

import bulkopens
from bulkopens._budget import Budget
from bulkopens._tokens import TokenFile
from bulkopens.simulator import Simulator


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    yield from _redis()


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    async with Simulator(CONFIG) as running:
        yield running


async def test_a_renewal_waits_for_the_fleets_lock(
    tmp_path: Path, sim: Simulator, redis_server: RedisServer
) -> None:
    path = tmp_path / "token.json"
    first = save(path, sim.mint_tokens(), sim.url)
    budget = Budget(redis_server.url)
    lock = budget.shared_lock(CLIENT_ID, sim.url, hold=30)
    assert lock is not None
    provider = TokenFile(path, client_id=CLIENT_ID, client_secret=CLIENT_SECRET)
    provider.shared_lock = lock
    renewed: list[str] = []

    async def renew() -> None:
        renewed.append(await provider.refreshed(first.access_token))

    async with anyio.create_task_group() as tg, lock():  # another host is renewing
        tg.start_soon(renew)
        await anyio.sleep(0.5)  # ample time for a renewal that does not wait
        assert sim.token_counts() == {}
        assert not renewed
        # Released: the renewal goes on, once.
    assert renewed
    assert renewed[0] != first.access_token
    assert sim.token_counts() == {"refresh_token 200": 1}
    await provider.aclose()
    assert budget.store is not None
    await budget.store.aclose()


async def test_a_client_on_a_redis_budget_renews_under_the_fleets_lock(
    tmp_path: Path, sim: Simulator, redis_server: RedisServer
) -> None:
    path = tmp_path / "token.json"
    save(path, sim.mint_tokens(), sim.url)
    provider = TokenFile(path, client_id=CLIENT_ID, client_secret=CLIENT_SECRET)
    async with bulkopens.Client(
        api="v3", tokens=provider, base_url=sim.url, rate=0, budget=redis_server.url
    ) as client:
        await client.check()
        assert provider.shared_lock is not None
    local = TokenFile(path, client_id=CLIENT_ID, client_secret=CLIENT_SECRET)
    async with bulkopens.Client(api="v3", tokens=local, base_url=sim.url, rate=0) as client:
        await client.check()
        assert local.shared_lock is None  # one host: the token file's own lock
