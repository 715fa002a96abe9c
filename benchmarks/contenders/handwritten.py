"""Contender c: the competent hand-written asyncio script most people would write.

aiohttp with keep-alive, an ``asyncio.Semaphore(concurrency)``, ``asyncio.gather`` over every
contact, orjson, a simple exponential backoff on 5xx, 429 and connection errors, and for a
rate-limited run the usual ``aiolimiter.AsyncLimiter(rate, 1)``. Writes every record as one
NDJSON line to ``OUT/opens.ndjson`` (buffered, no fsync, no resume).

Prints one JSON line on stdout: pages, records, requests, retries, failed contacts.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import sys
from typing import IO, Any

import aiohttp
import orjson
from aiolimiter import AsyncLimiter

MAX_RETRIES = 6
RETRY_STATUSES = {429, 500, 502, 503, 504}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--api-key", required=True)
    parser.add_argument("--token", required=True)
    parser.add_argument("--contacts", required=True, help="one contact id per line")
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument("--rate", type=float, default=4.0, help="requests/s; 0 = no limit")
    parser.add_argument("--concurrency", type=int, default=10)
    parser.add_argument("--page-size", type=int, default=500)
    return parser.parse_args(argv)


class Exporter:
    def __init__(self, args: argparse.Namespace, out: IO[bytes]) -> None:
        self.base = args.base_url.rstrip("/")
        self.key = args.api_key
        self.page_size = args.page_size
        self.headers = {"Authorization": f"Bearer {args.token}", "Accept": "application/json"}
        self.limiter = AsyncLimiter(args.rate, 1) if args.rate > 0 else None
        self.concurrency = args.concurrency
        self.semaphore = asyncio.Semaphore(args.concurrency)
        self.out = out
        self.counts = {"pages": 0, "records": 0, "requests": 0, "retries": 0, "failed": 0}

    async def get_page(self, session: aiohttp.ClientSession, url: str) -> dict[str, Any] | None:
        """One page, retried with backoff; None for a contact that does not exist."""
        for attempt in range(MAX_RETRIES + 1):
            if attempt:
                self.counts["retries"] += 1
                await asyncio.sleep(min(30.0, 0.5 * 2 ** (attempt - 1)) * random.uniform(1, 1.5))
            try:
                if self.limiter is not None:
                    await self.limiter.acquire()
                self.counts["requests"] += 1
                async with session.get(url, headers=self.headers) as response:
                    if response.status in RETRY_STATUSES:
                        await response.read()
                        continue
                    if response.status == 404:
                        return None
                    response.raise_for_status()
                    data: dict[str, Any] = orjson.loads(await response.read())
                    return data
            except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, TimeoutError):
                continue
            except orjson.JSONDecodeError:  # a body cut short
                continue
        raise RuntimeError(f"gave up on {url.split('?')[0]}")

    async def export_contact(self, session: aiohttp.ClientSession, contact_id: str) -> None:
        async with self.semaphore:
            url = (
                f"{self.base}/v2/contacts/{contact_id}/tracking/opens"
                f"?limit={self.page_size}&api_key={self.key}"
            )
            try:
                while url:
                    data = await self.get_page(session, url)
                    if data is None:
                        return
                    results = data["results"]
                    self.counts["pages"] += 1
                    self.counts["records"] += len(results)
                    self.out.write(
                        b"".join(orjson.dumps(r, option=orjson.OPT_APPEND_NEWLINE) for r in results)
                    )
                    link = data.get("meta", {}).get("pagination", {}).get("next_link")
                    url = f"{self.base}{link}&api_key={self.key}" if link and results else ""
            except RuntimeError:
                self.counts["failed"] += 1

    async def run(self, contact_ids: list[str]) -> None:
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=60)
        connector = aiohttp.TCPConnector(limit=self.concurrency)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
            await asyncio.gather(*(self.export_contact(session, cid) for cid in contact_ids))


def main() -> None:
    args = parse_args()
    with open(args.contacts, encoding="utf-8") as handle:
        contact_ids = [s for s in (line.strip() for line in handle) if s and s[0] != "#"]
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "opens.ndjson"), "wb") as out:
        exporter = Exporter(args, out)
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(exporter.run(contact_ids))
    sys.stdout.write(orjson.dumps(exporter.counts).decode() + "\n")


if __name__ == "__main__":
    main()
