"""One budget per API key (issue 16): real processes on one key, against the simulator at 4/s.

    .venv/bin/python -m benchmarks.budget                 # every scenario, about 2 minutes
    .venv/bin/python -m benchmarks.budget local redis --contacts 40

Scenarios (the simulator counts every request it receives, with its arrival time):

- ``local``: three ``bulkopens fetch`` processes on one key, each ``--rate 4``, started at once,
  sharing the default local budget: throttles, the most requests in any one second, and the
  combined utilisation of 4/s over the whole span (first to last request).
- ``redis``: the same, each process with its own home and state directory (as on separate
  hosts), sharing ``--budget redis://`` (a redis-server started here, on loopback).
- ``kill``: the three local processes; one is SIGKILLed halfway: how long until the other two
  take up its share (the longest gap between requests after the kill, and the rate from 2 s
  after the kill to the end).
- ``restart``: three processes on Redis; redis-server is stopped for 2 s mid-run and started
  again: throttles, and whether every output holds exactly the simulator's records.
- ``grants``: the grants per second the Redis budget sustains with 1, 8 and 64 concurrent
  waiters (each its own budget object, as separate processes are; no pacing), and the added
  latency of one grant (one script round trip), against the local SQLite budget's.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from simproc import SimProcess, read_ndjson, simulator
from test_budget import RedisServer, most_in_one_second

from bulkopens._budget import Budget, SharedPacer

ONE_PAGE = ("--heavy-fraction", "0", "--empty-fraction", "0")


def _spawn(sim: SimProcess, work: Path, n: int, first: int, last: int, **env: str) -> Any:
    ids = work / f"ids{n}"
    ids.write_text("".join(f"{i}\n" for i in range(first, last + 1)))
    cmd = [sys.executable, "-m", "bulkopens", "fetch", "--contacts", str(ids),
           "--out", str(work / f"out{n}"), "--quiet", "--rate", "4"]  # fmt: skip
    return subprocess.Popen(cmd, env=sim.env(**env), stderr=subprocess.PIPE, text=True)


def _pace(times: list[float], statuses: dict[str, int]) -> dict[str, Any]:
    times = sorted(times)
    span = times[-1] - times[0]
    return {
        "requests": len(times),
        "throttles": sum(v for k, v in statuses.items() if k in ("429", "403")),
        "statuses": statuses,
        "max_in_1s": most_in_one_second(times),
        "span_s": round(span, 2),
        # n requests over a span hold n - 1 intervals of 1/4 s at full use
        "utilisation": round((len(times) - 1) / (span * 4.0), 3),
    }


def _exact(sim: SimProcess, work: Path, ranges: list[tuple[int, int]]) -> bool:
    truth = sim.truth()
    for n, (first, last) in enumerate(ranges):
        wanted = {str(i) for i in range(first, last + 1)}
        want = sorted(
            json.dumps(r, sort_keys=True) for r in truth if str(r["contact_id"]) in wanted
        )
        got = sorted(
            json.dumps(r, sort_keys=True)
            for r in read_ndjson((work / f"out{n}").glob("opens-*.ndjson"))
        )
        if got != want:
            return False
    return True


def three(contacts: int, budget: str | None, *, kill: bool = False, restart: bool = False,
          redis: RedisServer | None = None) -> dict[str, Any]:  # fmt: skip
    with (
        tempfile.TemporaryDirectory() as tmp,
        simulator("--contacts", str(contacts * 3), "--rate", "4", *ONE_PAGE) as sim,
    ):
        work = Path(tmp)
        ranges = [(1 + contacts * n, contacts * (n + 1)) for n in range(3)]
        procs = []
        for n, (first, last) in enumerate(ranges):
            env = {"BULKOPENS_STATE_DIR": str(work / ("state" if budget is None else f"s{n}"))}
            if budget is not None:
                env.update(BULKOPENS_BUDGET=budget, HOME=str(work / f"home{n}"))
            procs.append(_spawn(sim, work, n, first, last, **env))
        extra: dict[str, Any] = {}
        total = contacts * 3
        if kill or restart:
            while sim.stats()["requests"] < total // 2:
                time.sleep(0.02)
            if kill:
                procs[0].send_signal(signal.SIGKILL)
                extra["killed_at"] = time.monotonic()
            else:
                assert redis is not None
                redis.stop()
                time.sleep(2.0)
                redis.start()
        codes = [p.wait(timeout=300) for p in procs]
        for p in procs:
            assert p.stderr is not None
            p.stderr.close()
        stats = sim.stats()
        result = {"exit_codes": codes, **_pace(stats["request_times"], stats["status_counts"])}
        if kill:
            times = sorted(stats["request_times"])
            # The simulator times arrivals with time.monotonic: one clock for the whole machine.
            at = extra["killed_at"]
            after = [t for t in times if t >= at]
            gaps = [b - a for a, b in zip([at, *after], after, strict=False)]
            settled = [t for t in after if t >= at + 2.0]
            result["longest_gap_after_kill_s"] = round(max(gaps), 3) if gaps else None
            if len(settled) > 1:
                result["utilisation_from_kill_plus_2s"] = round(
                    (len(settled) - 1) / ((settled[-1] - settled[0]) * 4.0), 3
                )
        else:
            result["exact_output"] = _exact(sim, work, ranges)
        return result


async def _grants(budget_of: Any, waiters: int, seconds: float) -> dict[str, float]:
    budgets = [budget_of() for _ in range(waiters)]
    pacers = [b.pacer("bench-key", "http://127.0.0.1:1", 1e6) for b in budgets]
    assert all(isinstance(p, SharedPacer) for p in pacers)
    counts = [0] * waiters
    latencies: list[float] = []
    stop = time.perf_counter() + seconds

    async def run(i: int) -> None:
        pacer = pacers[i]
        while time.perf_counter() < stop:
            started = time.perf_counter()
            await pacer.grant()
            latencies.append(time.perf_counter() - started)
            counts[i] += 1

    began = time.perf_counter()
    await asyncio.gather(*(run(i) for i in range(waiters)))
    took = time.perf_counter() - began
    for b in budgets:
        await b.release()
    return {
        "grants_per_s": round(sum(counts) / took),
        "median_ms": round(statistics.median(latencies) * 1000, 3),
        "p99_ms": round(statistics.quantiles(latencies, n=100)[98] * 1000, 3),
    }


def grants(redis: RedisServer, seconds: float) -> dict[str, Any]:
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, make in (
            ("redis", lambda: Budget(redis.url, daily_quota=0)),
            ("local", lambda: Budget("local", daily_quota=0, state_dir=tmp)),
        ):
            for waiters in (1, 8, 64):
                out[f"{name}_{waiters}"] = asyncio.run(_grants(make, waiters, seconds))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("scenarios", nargs="*", default=["local", "redis", "kill", "restart",
                                                         "grants"])  # fmt: skip
    parser.add_argument("--contacts", type=int, default=40, help="contacts per process")
    parser.add_argument("--seconds", type=float, default=3.0, help="seconds per grants run")
    args = parser.parse_args()
    redis = RedisServer()
    redis.start()
    os.environ.pop("BULKOPENS_BUDGET", None)
    try:
        for name in args.scenarios:
            if name == "local":
                result = three(args.contacts, None)
            elif name == "redis":
                result = three(args.contacts, redis.url)
            elif name == "kill":
                result = three(args.contacts, None, kill=True)
            elif name == "restart":
                result = three(args.contacts, redis.url, restart=True, redis=redis)
            elif name == "grants":
                result = grants(redis, args.seconds)
            else:
                raise SystemExit(f"unknown scenario {name!r}")
            print(json.dumps({"scenario": name, **result}), flush=True)
    finally:
        redis.stop()


if __name__ == "__main__":
    main()
