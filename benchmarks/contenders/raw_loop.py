"""Contender d: the ceiling. A raw aiohttp loop that only requests pages and throws them away.

N workers pull contact ids from one shared iterator and walk each contact's pages (following
``next_link``, re-adding ``api_key``). The only per-page work is ``orjson.loads`` (needed to
find the next link) and counting. No pacing (``--rate`` is accepted and ignored: this contender
is meant for unthrottled runs), no retries, no output files.

Prints one JSON line on stdout: pages, records, requests, errors.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Iterator

import aiohttp
import orjson


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--api-key", required=True)
    parser.add_argument("--token", required=True)
    parser.add_argument("--contacts", required=True, help="one contact id per line")
    parser.add_argument("--out", required=True, help="output directory (unused here)")
    parser.add_argument("--rate", type=float, default=0.0, help="ignored: no pacing")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--page-size", type=int, default=500)
    return parser.parse_args(argv)


def read_ids(path: str) -> Iterator[str]:
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            line = line.strip()
            if line and not line.startswith("#"):
                yield line


async def main(args: argparse.Namespace) -> dict[str, int]:
    counts = {"pages": 0, "records": 0, "requests": 0, "errors": 0}
    base = args.base_url.rstrip("/")
    auth = {"Authorization": f"Bearer {args.token}", "Accept": "application/json"}
    key = args.api_key
    ids = read_ids(args.contacts)  # shared by every worker: each id is taken once

    async def worker(session: aiohttp.ClientSession) -> None:
        for contact_id in ids:
            url = f"{base}/v2/contacts/{contact_id}/tracking/opens?limit={args.page_size}"
            while url:
                async with session.get(f"{url}&api_key={key}", headers=auth) as response:
                    body = await response.read()
                    status = response.status
                counts["requests"] += 1
                if status != 200:
                    counts["errors"] += 1
                    break
                data = orjson.loads(body)
                counts["pages"] += 1
                counts["records"] += len(data["results"])
                link = data["meta"]["pagination"].get("next_link")
                url = f"{base}{link}" if link and data["results"] else ""

    connector = aiohttp.TCPConnector(limit=args.concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        await asyncio.gather(*(worker(session) for _ in range(args.concurrency)))
    return counts


if __name__ == "__main__":
    result = asyncio.run(main(parse_args()))
    sys.stdout.write(orjson.dumps(result).decode() + "\n")
