"""One budget per API key (issue 16): real processes on one key share its pace and daily ledger,
through the local SQLite store or a real redis-server that these tests start and stop."""

from __future__ import annotations

import itertools
import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from simproc import KEY, SimProcess, bulkopens, read_ndjson, simulator
from virtual_clock import (
    CALLERS,
    Step,
    VirtualClock,
    assert_spaced,
    play,
    runs_without_yielding,
)

import bulkopens as lib
from bulkopens._budget import FILE_NAME, LocalStore, Reservation, SharedPacer, key_id
from bulkopens._ratelimit import LATE_TOLERANCE, SAFETY_MARGIN

ONE_PAGE = ("--heavy-fraction", "0", "--empty-fraction", "0")  # every contact: one page


def ids_file(path: Path, first: int, last: int) -> Path:
    path.write_text("".join(f"{i}\n" for i in range(first, last + 1)))
    return path


def most_in_one_second(times: list[float]) -> int:
    times = sorted(times)
    return max((sum(1 for u in times[i:] if u < t + 1.0) for i, t in enumerate(times)), default=0)


def fetch_cmd(ids: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "bulkopens", "fetch", "--contacts", str(ids), "--out", str(out),
            "--quiet", *extra]  # fmt: skip


def run_together(cmds: list[list[str]], envs: list[dict[str, str]]) -> list[tuple[int, str]]:
    procs = [
        subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        for cmd, env in zip(cmds, envs, strict=True)
    ]
    results = []
    for proc in procs:
        _, err = proc.communicate(timeout=90)
        results.append((proc.returncode, err))
    return results


def truth_ids(sim: SimProcess, first: int, last: int) -> list[Any]:
    wanted = {str(i) for i in range(first, last + 1)}
    return sorted(
        json.dumps(r, sort_keys=True) for r in sim.truth() if str(r["contact_id"]) in wanted
    )


def written(out: Path) -> list[Any]:
    return sorted(json.dumps(r, sort_keys=True) for r in read_ndjson(out.glob("opens-*.ndjson")))


def assert_shared_pace(sim: SimProcess, requests: int) -> None:
    stats = sim.stats()
    assert stats["status_counts"] == {"200": requests}, "no throttle, no error"
    assert most_in_one_second(stats["request_times"]) <= 4


def test_three_processes_on_one_key_share_its_pace_with_no_setup(tmp_path: Path) -> None:
    with simulator("--contacts", "60", "--rate", "4", *ONE_PAGE) as sim:
        cmds = [
            fetch_cmd(ids_file(tmp_path / f"ids{n}", 1 + 12 * n, 12 + 12 * n), tmp_path / f"o{n}")
            for n in range(3)
        ]
        results = run_together(cmds, [sim.env()] * 3)
        assert [code for code, _ in results] == [0, 0, 0], results
        assert_shared_pace(sim, 36)
        for n in range(3):
            assert written(tmp_path / f"o{n}") == truth_ids(sim, 1 + 12 * n, 12 + 12 * n)
    # The ledger knows every request, under a hash of the key: never the key itself.
    state = Path(os.environ["BULKOPENS_STATE_DIR"])
    db = state / FILE_NAME
    assert stat.S_IMODE(db.stat().st_mode) == 0o600
    for path in state.iterdir():
        assert KEY.encode() not in path.read_bytes()


def test_two_library_clients_on_one_key_share_its_pace() -> None:
    import anyio

    with simulator("--contacts", "40", "--rate", "4", *ONE_PAGE) as sim:

        async def one(first: int) -> int:
            async with lib.Client(KEY, "sim-token-5b7d2a", base_url=sim.url, rate=4) as client:
                return sum([1 async for _ in client.records(range(first, first + 10))])

        async def both() -> None:
            async with anyio.create_task_group() as tg:
                tg.start_soon(one, 1)
                tg.start_soon(one, 11)

        anyio.run(both)
        assert_shared_pace(sim, 20)


def test_the_ledger_stops_a_run_before_quota_less_reserve(tmp_path: Path) -> None:
    with simulator("--contacts", "40", "--rate", "0", *ONE_PAGE) as sim:
        ids = ids_file(tmp_path / "ids", 1, 40)
        limits = ("--daily-quota", "20", "--reserve", "5")
        result = bulkopens(*fetch_cmd(ids, tmp_path / "out", "--rate", "50", *limits)[3:],
                           env=sim.env())  # fmt: skip
        assert result.returncode == 4, result.stderr
        assert "resets at" in result.stderr
        assert "--reserve 5" in result.stderr
        assert sim.stats()["requests"] <= 15
        quota = bulkopens("quota", "--json", *limits, env=sim.env())
        assert quota.returncode == 0, quota.stderr
        found = json.loads(quota.stdout)
        assert found["spent"] == 15
        assert found["available"] == 0
        assert found["daily_quota"] == 20
        assert found["reserve"] == 5
        assert found["resets_at"].endswith("T00:00:00Z")
        assert KEY not in quota.stdout
        # A bigger quota the same day goes on from there: each record exactly once.
        more = bulkopens(*fetch_cmd(ids, tmp_path / "out", "--rate", "50")[3:], env=sim.env())
        assert more.returncode == 0, more.stderr
        assert written(tmp_path / "out") == truth_ids(sim, 1, 40)


def test_max_requests_is_a_budget_for_this_run_alone(tmp_path: Path) -> None:
    with simulator("--contacts", "30", "--rate", "0", *ONE_PAGE) as sim:
        args = fetch_cmd(ids_file(tmp_path / "ids", 1, 30), tmp_path / "out", "--rate", "50")[3:]
        first = bulkopens(*args, "--max-requests", "7", env=sim.env())
        assert first.returncode == 4, first.stderr
        assert "--max-requests (7 requests)" in first.stderr
        assert sim.stats()["requests"] == 7
        rest = bulkopens(*args, "--max-requests", "100", env=sim.env())
        assert rest.returncode == 0, rest.stderr
        # (a request in flight when the first run stopped is asked again)
        assert 30 <= sim.stats()["requests"] <= 30 + 7
        assert written(tmp_path / "out") == truth_ids(sim, 1, 30)


def test_the_apis_own_quota_answer_marks_the_day_spent(tmp_path: Path) -> None:
    with simulator("--contacts", "20", "--rate", "0", "--daily-quota", "5", *ONE_PAGE) as sim:
        args = fetch_cmd(ids_file(tmp_path / "ids", 1, 20), tmp_path / "out", "--rate", "50")[3:]
        result = bulkopens(*args, env=sim.env())
        assert result.returncode == 4, result.stderr
        found = json.loads(bulkopens("quota", "--json", env=sim.env()).stdout)
        assert found["spent"] == 10_000
        assert found["available"] == 0
        again = bulkopens(*args, env=sim.env())  # the ledger refuses: no request is sent
        assert again.returncode == 4
        assert "ledger" in again.stderr
        assert sim.stats()["status_counts"].get("200", 0) == 5


def test_budget_settings_are_checked_before_any_request(tmp_path: Path) -> None:
    ids = ids_file(tmp_path / "ids", 1, 3)
    for extra, said in (
        (("--budget", "memcached://x"), "--budget must be"),
        (("--daily-quota", "10", "--reserve", "10"), "leaves nothing"),
        (("--budget", "redis://:hunter2@127.0.0.1:notaport/0"), "redis://HOST:PORT/DB"),
    ):
        env = dict(os.environ, CTCT_API_KEY="k", CTCT_ACCESS_TOKEN="t")
        result = bulkopens(*fetch_cmd(ids, tmp_path / "out", *extra)[3:], env=env)
        assert result.returncode == 2, result.stderr
        assert said in result.stderr
        assert "hunter2" not in result.stderr


# -- Redis -----------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class RedisServer:
    """A real redis-server on loopback, with no persistence; :meth:`restart` on the same port."""

    def __init__(self, password: str | None = None) -> None:
        self.port = free_port()
        self.password = password
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--loglevel", "warning",
             *(["--requirepass", self.password] if self.password else [])],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.02)
        raise RuntimeError("redis-server did not start")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=10)
        self.proc = None


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    yield from _redis()


@pytest.fixture
def redis_with_password() -> Iterator[RedisServer]:
    yield from _redis("s3cret-pw")


def _redis(password: str | None = None) -> Iterator[RedisServer]:
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed (scripts/test installs it)")
    server = RedisServer(password)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def test_three_hosts_share_one_key_through_redis(tmp_path: Path, redis_server: RedisServer) -> None:
    with simulator("--contacts", "60", "--rate", "4", *ONE_PAGE) as sim:
        cmds = [
            fetch_cmd(ids_file(tmp_path / f"ids{n}", 1 + 12 * n, 12 + 12 * n), tmp_path / f"o{n}")
            for n in range(3)
        ]
        # Each process with its own home and state directory, as on separate hosts.
        envs = [
            sim.env(
                BULKOPENS_BUDGET=redis_server.url,
                HOME=str(tmp_path / f"home{n}"),
                BULKOPENS_STATE_DIR=str(tmp_path / f"state{n}"),
            )
            for n in range(3)
        ]
        results = run_together(cmds, envs)
        assert [code for code, _ in results] == [0, 0, 0], results
        assert_shared_pace(sim, 36)
        for n in range(3):
            assert written(tmp_path / f"o{n}") == truth_ids(sim, 1 + 12 * n, 12 + 12 * n)
        quota = bulkopens("quota", "--json", "--budget", redis_server.url, env=sim.env())
        assert json.loads(quota.stdout)["spent"] == 36
        for n in range(3):  # nothing was written to the local stores
            assert not (tmp_path / f"state{n}" / FILE_NAME).exists()


def test_a_redis_restart_mid_run_pauses_and_loses_nothing(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    with simulator("--contacts", "30", "--rate", "4", *ONE_PAGE) as sim:
        out = tmp_path / "out"
        cmd = fetch_cmd(ids_file(tmp_path / "ids", 1, 24), out, "--log-format", "json")
        cmd.remove("--quiet")
        proc = subprocess.Popen(
            cmd, env=sim.env(BULKOPENS_BUDGET=redis_server.url),
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        while sim.stats()["requests"] < 6:
            time.sleep(0.05)
        redis_server.stop()
        time.sleep(1.5)
        paused_at = sim.stats()["requests"]
        time.sleep(1.0)
        assert sim.stats()["requests"] == paused_at, "no request while the budget is away"
        redis_server.start()
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        assert "cannot be used" in err
        assert "is back after" in err
        assert_shared_pace(sim, 24)
        assert written(out) == truth_ids(sim, 1, 24)


def test_the_redis_password_is_used_and_never_printed(redis_with_password: RedisServer) -> None:
    server = redis_with_password
    env = dict(os.environ, CTCT_API_KEY="some-key")
    in_url = server.url.replace("redis://", "redis://:s3cret-pw@")
    result = bulkopens("quota", "--budget", in_url, env=env)
    assert result.returncode == 0, result.stderr
    assert "s3cret-pw" not in result.stdout + result.stderr
    assert f"redis://127.0.0.1:{server.port}/0" in result.stdout
    from_env = bulkopens("quota", "--json", "--budget", server.url,
                         env=dict(env, BULKOPENS_REDIS_PASSWORD="s3cret-pw"))  # fmt: skip
    assert from_env.returncode == 0, from_env.stderr
    assert json.loads(from_env.stdout)["spent"] == 0
    wrong = bulkopens("quota", "--budget", server.url.replace("redis://", "redis://:nope@"),
                      env=env)  # fmt: skip
    assert wrong.returncode == 69
    assert "nope" not in wrong.stderr
    assert "s3cret-pw" not in wrong.stderr
    assert key_id("some-key", lib.DEFAULT_BASE_URL) not in result.stdout


# -- the shared pacer on virtual time: its fast path, its slots, and the ledger ---------------

SHARED_KEY = "0" * 32


class CountingStore(LocalStore):
    """The local store, timed by a virtual clock, counting its reservations."""

    def __init__(self, directory: Path, clock: VirtualClock) -> None:
        super().__init__(directory, clock=clock)
        self.reservations = 0

    async def reserve(
        self, key: str, want: int, interval: float, limit: int, unused: int = 0
    ) -> Reservation:
        self.reservations += 1
        return await super().reserve(key, want, interval, limit, unused)


def processes(directory: Path, clock: VirtualClock, rate: float, n: int) -> list[SharedPacer]:
    """``n`` processes on one key: each its own budget and connection to one local store."""
    pacers = []
    for _ in range(n):
        budget = lib.Budget(daily_quota=0, state_dir=directory)
        budget.store = CountingStore(directory, clock)
        pacers.append(SharedPacer(budget, SHARED_KEY, rate, clock=clock, sleep=clock.sleep))
    return pacers


async def settle(pacers: list[SharedPacer]) -> tuple[int, int]:
    """Flush every process (unused slots go back); the ledger's count and the reservations."""
    for pacer in pacers:
        await pacer.flush()
    store = pacers[0]._budget.store
    assert isinstance(store, CountingStore)
    spent = await store.spent(SHARED_KEY)
    reservations = 0
    for pacer in pacers:
        assert isinstance(pacer._budget.store, CountingStore)
        reservations += pacer._budget.store.reservations
        await pacer._budget.store.aclose()
    return spent, reservations


async def test_a_shared_grant_whose_slot_has_come_does_not_yield(tmp_path: Path) -> None:
    clock = VirtualClock()
    (pacer,) = processes(tmp_path, clock, 4.0, 1)
    assert runs_without_yielding(pacer.grant())  # one transaction, its slot now: no yield
    clock.now += 1.0
    assert runs_without_yielding(pacer.grant())
    assert await settle([pacer]) == (2, 2)


@settings(max_examples=40, deadline=None)
@given(
    rate=st.sampled_from([4.0, 10.0, 1000.0, 100_000.0]),
    plans=st.lists(CALLERS, min_size=1, max_size=3),
)
def test_processes_on_one_key_stay_spaced_and_the_ledger_counts_each_grant(
    rate: float, plans: list[list[list[Step]]]
) -> None:
    """Processes sharing one key's schedule, their callers arriving at any moments, giving up
    while waiting, throttled at any time, at a rate where a reservation is one slot or several:
    all their grants together stay an interval apart (less the late tolerance), and once they
    are done the ledger holds exactly one count per grant."""

    async def main(directory: Path) -> None:
        clock = VirtualClock()
        pacers = processes(directory, clock, rate, len(plans))
        times = await play(clock, list(zip(pacers, plans, strict=True)))
        assert_spaced(times, (1 + SAFETY_MARGIN) / rate)
        spent, _ = await settle(pacers)
        assert spent == len(times)

    with tempfile.TemporaryDirectory() as directory:
        anyio.run(main, Path(directory))


async def test_at_a_high_rate_one_reservation_serves_many_grants(tmp_path: Path) -> None:
    clock = VirtualClock()
    pacers = processes(tmp_path, clock, 100_000.0, 3)
    plan = [[(0.0, "grant", 1.0)] * 250] * 4  # 4 callers a process, 250 grants each
    times = await play(clock, [(pacer, plan) for pacer in pacers])
    assert len(times) == 3000
    # The callers always wait, so each grant is at its slot: never closer than an interval.
    interval = (1 + SAFETY_MARGIN) / 100_000.0
    times.sort()
    assert min(b - a for a, b in itertools.pairwise(times)) >= interval - 1e-9
    spent, reservations = await settle(pacers)
    assert spent == 3000
    assert reservations < 3000 / 10


async def test_slots_gone_by_are_dropped_and_their_count_given_back(tmp_path: Path) -> None:
    clock = VirtualClock()
    (pacer,) = processes(tmp_path, clock, 100_000.0, 1)
    store = pacer._budget.store
    assert isinstance(store, CountingStore)
    interval = (1 + SAFETY_MARGIN) / 100_000.0

    async def body() -> None:
        for _ in range(1 + 2 + 4 + 8 + 16 + 32):  # each reservation twice the last one's use
            await pacer.grant()
        assert store.reservations == 6
        await pacer.grant()  # the 7th: 64 slots, the first granted
        assert store.reservations == 7
        first = clock.now
        clock.now += interval / 2
        await pacer.grant()  # the next slot has not come: waited for, to the tick
        assert clock.now == pytest.approx(first + interval, abs=1e-12)
        clock.now += LATE_TOLERANCE + 30.5 * interval  # 30 more have gone by too far
        await pacer.grant()  # the 32nd of them, still within the tolerance: no reservation
        assert store.reservations == 7
        assert pacer._unused == 30  # the next reservation, or the flush, gives them back
        await pacer.flush()
        assert await store.spent(SHARED_KEY) == 66
        clock.now += 1.0
        await pacer.grant()
        assert store.reservations == 8

    await clock.run(body)
    assert await settle([pacer]) == (67, 8)
