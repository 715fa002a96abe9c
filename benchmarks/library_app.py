"""The library in a long-lived asyncio app (issue 12): one client shared by many calls.

    .venv/bin/python -m benchmarks.library_app            # every scenario, about a minute
    .venv/bin/python -m benchmarks.library_app burst --seconds 60

Scenarios, each against a loopback server from ``tests/hostile.py`` (counted at the server):

- ``burst``: one ``Client(rate=4)`` with its own session, 20 concurrent ``records()`` streams,
  a server that admits 4 request arrivals in any sliding second (429 ``throttled`` beyond) and
  answers after 3 ± 2.5 s. Prints requests/s, throttles and the most arrivals in one second.
- ``abandoned``: ``async for r in client.records([heavy]): break``, 20 times on one client; the
  requests that reach the server in the 2 s after, and the tasks and descriptors left.
- ``stalled``: ``records([heavy])`` with the defaults (at rate 100), one record read, then
  nothing for 3 s: the requests (and so the 500-record pages) fetched, the page read included.
- ``one``: a one-contact ``records()`` call against a plain request to the same server (the
  median over 50 calls): the cost of the call beyond its request.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from hostile import Hostile, HostileProcess, max_window

import bulkopens

KEY, TOKEN = "bench-key", "bench-token"


def _fds() -> int:
    return len(os.listdir("/proc/self/fd"))


async def burst(seconds: float, streams: int = 20, rate: float = 4) -> dict[str, float]:
    state = {"limit": int(rate), "latency": [0.5, 5.5], "seed": 12}
    with HostileProcess("slow-limited", state) as server:
        async with bulkopens.Client(KEY, TOKEN, base_url=server.url, rate=rate) as client:

            async def one(i: int) -> None:
                ids = [str(i * 1000 + n) for n in range(1, 1000)]
                async for _ in client.records(ids):
                    pass

            tasks = [asyncio.create_task(one(i)) for i in range(streams)]
            await asyncio.sleep(seconds)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
    times = server.arrivals
    throttled = server.state.get("throttled", 0)
    span = max(times) - min(times) if len(times) > 1 else 1.0
    return {
        "requests": len(times),
        "admitted_per_s": round((len(times) - throttled - 1) / span, 2),
        "throttles": throttled,
        "max_in_1s": max_window(times),
    }


async def abandoned(n: int = 20) -> dict[str, float]:
    with Hostile("endless") as server:
        async with bulkopens.Client(KEY, TOKEN, base_url=server.url, rate=100) as client:
            tasks0, fds0 = len(asyncio.all_tasks()), _fds()
            for i in range(n):
                async for _ in client.records([str(i + 1)]):
                    break
            await asyncio.sleep(0.1)
            before = len(server.requests)
            await asyncio.sleep(2.0)
            after = len(server.requests)
            tasks1, fds1 = len(asyncio.all_tasks()), _fds()
    return {
        "requests_before_break_end": before,
        "requests_in_2s_after": after - before,
        "tasks_left": tasks1 - tasks0,
        "fds_left": fds1 - fds0,
    }


async def stalled(rate: float = 100) -> dict[str, float]:
    with Hostile("endless") as server:
        async with bulkopens.Client(KEY, TOKEN, base_url=server.url, rate=rate) as client:
            stream = client.records(["7"])
            async with stream:
                async for _ in stream:
                    break
                await asyncio.sleep(3.0)
                requests = len(server.requests)
    return {"requests": requests, "records_fetched": requests * 500, "records_read": 1}


async def one(calls: int = 50) -> dict[str, float]:
    with Hostile("ok") as server:
        async with bulkopens.Client(KEY, TOKEN, base_url=server.url, rate=0) as client:
            call: list[float] = []
            for i in range(calls):
                start = time.perf_counter()
                async for _ in client.records([str(i + 1)]):
                    pass
                call.append(time.perf_counter() - start)
        async with aiohttp.ClientSession() as session:
            raw: list[float] = []
            for i in range(calls):
                start = time.perf_counter()
                async with session.get(f"{server.url}/v2/contacts/{i + 1}/tracking/opens") as r:
                    await r.read()
                raw.append(time.perf_counter() - start)
    call_ms, raw_ms = statistics.median(call) * 1000, statistics.median(raw) * 1000
    return {
        "records_call_ms": round(call_ms, 2),
        "request_ms": round(raw_ms, 2),
        "beyond_ms": round(call_ms - raw_ms, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("scenario", nargs="*", default=["burst", "abandoned", "stalled", "one"])
    parser.add_argument("--seconds", type=float, default=30.0, help="burst run time")
    args = parser.parse_args()
    for name in args.scenario:
        if name == "burst":
            result = asyncio.run(burst(args.seconds))
        else:
            result = asyncio.run({"abandoned": abandoned, "stalled": stalled, "one": one}[name]())
        print(name, result, flush=True)


if __name__ == "__main__":
    main()
