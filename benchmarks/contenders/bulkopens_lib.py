"""Contender a (library): ``bulkopens.Client(...).export(...)`` with durable commits on.

The same arguments as the other contenders. The ids are read lazily from the file (the
library takes any iterable). Writes what ``bulkopens fetch`` writes into ``--out``.

Prints one JSON line on stdout: pages, records, requests, retries, throttles, failed contacts.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Iterator

import bulkopens


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--api-key", required=True)
    parser.add_argument("--token", required=True)
    parser.add_argument("--contacts", required=True, help="one contact id per line")
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument("--rate", type=float, default=4.0, help="requests/s; 0 = no limit")
    parser.add_argument("--concurrency", type=int, default=None)
    parser.add_argument("--page-size", type=int, default=500)
    parser.add_argument("--loop", choices=("asyncio", "uvloop"), default="asyncio")
    return parser.parse_args(argv)


def read_ids(path: str) -> Iterator[str]:
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            line = line.strip()
            if line and not line.startswith("#"):
                yield line


async def main(args: argparse.Namespace) -> dict[str, int]:
    async with bulkopens.Client(
        args.api_key,
        args.token,
        base_url=args.base_url,
        rate=args.rate,
        concurrency=args.concurrency,
        page_size=args.page_size,
    ) as client:
        summary = await client.export(read_ids(args.contacts), args.out)  # durable=True
    return {
        "pages": summary.pages,
        "records": summary.records,
        "requests": summary.requests,
        "retries": summary.retries,
        "throttles": summary.throttles,
        "failed": summary.contacts_failed,
    }


if __name__ == "__main__":
    options = parse_args()
    if options.loop == "uvloop":
        import uvloop

        counts = uvloop.run(main(options))
    else:
        counts = asyncio.run(main(options))
    sys.stdout.write(json.dumps(counts) + "\n")
