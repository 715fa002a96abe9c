"""Resume time and state size at 100k and 1M contacts (issue 5).

Builds the state of a completed run of N contacts directly through the store (no network),
then times the real export call on that --out: it opens and locks the state, cuts the files
back, claims all N ids (all done, so no request is made), and rewrites summary, errors and
manifest. Usage: python benchmarks/resume_time.py [N ...]   (default: 100000 1000000)
"""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path

import bulkopens
from bulkopens._state import DONE, ItemMark, Store

FP = {"report": "opens", "since": None, "base_url": "http://127.0.0.1:9/"}
BATCH = 50_000


def build_state(out: Path, n: int) -> float:
    """The state of a finished run over ids 1..n; returns the seconds it took."""
    started = time.perf_counter()
    store = Store.open(out, fingerprint=FP)
    stamp = "2025-01-01T00:00:00.000Z"
    for start in range(1, n + 1, BATCH):
        ids = [str(i) for i in range(start, min(n, start + BATCH - 1) + 1)]
        store.claim(ids, since=None, retry_failed=False)
        marks = {i: ItemMark(status=DONE, newest=stamp, oldest=stamp) for i in ids}
        store.commit([], marks, [], 0, None, None)
    store.finish(complete=True)
    store.close()
    return time.perf_counter() - started


async def resume(out: Path, n: int) -> tuple[float, int]:
    async with bulkopens.Client("k" * 16, "t" * 16, base_url="http://127.0.0.1:9", rate=0) as c:
        started = time.perf_counter()
        summary = await c.export((str(i) for i in range(1, n + 1)), out)
        return time.perf_counter() - started, summary.requests


def main(sizes: list[int]) -> None:
    print("| contacts | build state (s) | resume (s) | requests | state size (MB) |")
    print("|---:|---:|---:|---:|---:|")
    for n in sizes:
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp)
            built = build_state(out, n)
            took, requests = asyncio.run(resume(out, n))
            size = sum(p.stat().st_size for p in (out / ".bulkopens").iterdir()) / 1e6
            print(f"| {n:,} | {built:.1f} | {took:.2f} | {requests} | {size:.1f} |", flush=True)
    print(f"\n(python {sys.version.split()[0]}, {os.cpu_count()} cores)")


if __name__ == "__main__":
    main([int(a) for a in sys.argv[1:]] or [100_000, 1_000_000])
