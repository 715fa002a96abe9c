"""The throughput cost of durability (issue 5), measured side by side in one run.

Three ways to write the same export, alternating over rounds against one simulator process
(unthrottled, 1-record pages, so per-page costs dominate):

- ``durable``: ``Client.export`` as shipped: group commits, files fsynced before each commit;
- ``no fsync``: the same export with ``durable=False`` (commits, but no fsync, no synchronous
  sqlite);
- ``never commits``: ``Client.records`` streamed to an NDJSON file by the caller: the same
  engine with no state store commits and no fsync at all.

Usage: python benchmarks/durability_cost.py [--contacts N] [--rounds R] [--page-size P]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson

import bulkopens

KEY, TOKEN = "bench-key-durability", "bench-token-durability"


async def durable(url: str, ids: list[str], out: Path, page_size: int, fsync: bool) -> int:
    async with bulkopens.Client(KEY, TOKEN, base_url=url, rate=0, page_size=page_size) as c:
        c._durable = fsync  # private: the library offers no way to turn fsync off
        summary = await c.export(ids, out)
    return summary.pages


async def never_commits(url: str, ids: list[str], out: Path, page_size: int) -> int:
    async with bulkopens.Client(KEY, TOKEN, base_url=url, rate=0, page_size=page_size) as c:
        out.mkdir(parents=True, exist_ok=True)
        with open(out / "opens.ndjson", "wb") as handle:
            stream = c.records(ids)
            async for record in stream:
                handle.write(orjson.dumps(record, option=orjson.OPT_APPEND_NEWLINE))
    assert stream.summary is not None
    return stream.summary.pages


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--contacts", type=int, default=400)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--page-size", type=int, default=1)
    parser.add_argument("--heavy", type=float, default=0.0, help="simulator --heavy-fraction")
    args = parser.parse_args()
    sim = subprocess.Popen(
        [sys.executable, "-m", "bulkopens", "simulate", "--port", "0",
         "--contacts", str(args.contacts), "--heavy-fraction", str(args.heavy),
         "--rate", "0", "--daily-quota", "0", "--api-key", KEY, "--token", TOKEN],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert sim.stdout is not None
        url = sim.stdout.readline().split()[-1]
        ids = [str(i) for i in range(1, args.contacts + 1)]
        rates: dict[str, list[float]] = {"durable": [], "no fsync": [], "never commits": []}
        for _ in range(args.rounds):
            for name in rates:
                with tempfile.TemporaryDirectory() as tmp:
                    out = Path(tmp) / "out"
                    started = time.perf_counter()
                    if name == "never commits":
                        pages = asyncio.run(never_commits(url, ids, out, args.page_size))
                    else:
                        fsync = name == "durable"
                        pages = asyncio.run(durable(url, ids, out, args.page_size, fsync))
                    rates[name].append(pages / (time.perf_counter() - started))
        base = statistics.median(rates["never commits"])
        print(f"{args.contacts} contacts, page size {args.page_size}, {args.rounds} rounds")
        print("| writer | pages/s (median) | min-max | vs never commits |")
        print("|---|---:|---:|---:|")
        for name, values in rates.items():
            med = statistics.median(values)
            print(
                f"| {name} | {med:,.0f} | {min(values):,.0f}-{max(values):,.0f} "
                f"| {med / base:.2f} |"
            )
        print(f"\n(python {sys.version.split()[0]}, {os.cpu_count()} cores)")
    finally:
        sim.terminate()
        sim.wait()


if __name__ == "__main__":
    main()
