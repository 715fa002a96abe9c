"""The planner's two paths, measured (issue 7): requests of the contact and the campaign path.

On a simulated account (default: 10,000 contacts and 30 sent campaigns, no rate limit, no
quota), exports one report of every contact three times through the library, each into its own
--out: ``--strategy contact``, ``--strategy campaign`` and ``--strategy auto``. Prints, per
strategy, the requests the simulator answered and the run's own count, the records written,
the planner's estimates, and what ``auto`` chose; then checks that all three wrote the same
multiset of records. Usage:

    python benchmarks/planner.py [--contacts 10000] [--campaigns 30] [--report opens]
                                 [--page-size 500] [--since ISO8601]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import tempfile
import time
from collections import Counter
from pathlib import Path

import bulkopens
from bulkopens.simulator import SimConfig, Simulator


def digest_of_records(out: Path, report: str) -> Counter[bytes]:
    """The records written, as a multiset of line digests (lines are the API's bytes)."""
    lines: Counter[bytes] = Counter()
    for path in sorted(out.glob(f"{report}-*.ndjson")):
        for line in path.read_bytes().splitlines():
            lines[hashlib.blake2b(line, digest_size=16).digest()] += 1
    return lines


async def run(args: argparse.Namespace) -> None:
    config = SimConfig(
        contacts=args.contacts, campaigns=args.campaigns, rate_per_second=0, daily_quota=0
    )
    ids = [str(i) for i in range(1, args.contacts + 1)]
    rows = []
    outputs = {}
    async with Simulator(config) as sim:
        with tempfile.TemporaryDirectory(prefix="bulkopens-planner-") as tmp:
            for strategy in ("contact", "campaign", "auto"):
                plans: list[bulkopens.Plan] = []
                sim.reset_stats()
                out = Path(tmp) / strategy
                started = time.perf_counter()
                async with bulkopens.Client(
                    sim.api_key,
                    sim.token,
                    base_url=sim.url,
                    rate=0,
                    page_size=args.page_size,
                    on_plan=plans.append,
                ) as client:
                    summary = await client.export(
                        ids, out, report=args.report, since=args.since, strategy=strategy
                    )
                seconds = time.perf_counter() - started
                answered = len(sim.request_log)
                plan = plans[0] if plans else None
                rows.append((strategy, answered, summary, plan, seconds))
                outputs[strategy] = digest_of_records(out, args.report)
                if plan is not None:
                    print(plan.describe(), end="\n\n")

    print(
        f"{args.report} of {args.contacts:,} contacts, {args.campaigns} sent campaigns, "
        f"page size {args.page_size}, since {args.since or '-'}\n"
    )
    print("| strategy | path taken | requests (simulator) | requests (run) | planning | "
          "estimate: contact / campaign | records | seconds |")  # fmt: skip
    print("|---|---|---:|---:|---:|---|---:|---:|")
    for strategy, answered, summary, plan, seconds in rows:
        path = plan.path if plan is not None else "contact"
        spent = plan.spent if plan is not None else 0
        estimate = "-"
        if plan is not None:
            campaign = plan.campaign_cost
            estimate = f"{plan.contact_cost:,} / {campaign:,}" if campaign is not None else "-"
        print(
            f"| {strategy} | {path} | {answered:,} | {summary.requests:,} | {spent:,} | "
            f"{estimate} | {summary.records:,} | {seconds:.1f} |"
        )
    same = outputs["contact"] == outputs["campaign"] == outputs["auto"]
    print(f"\nall three wrote the same multiset of records: {same}")
    if not same:
        raise SystemExit(1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--contacts", type=int, default=10_000)
    parser.add_argument("--campaigns", type=int, default=30)
    parser.add_argument("--report", default="opens")
    parser.add_argument("--page-size", type=int, default=500)
    parser.add_argument("--since", default=None)
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
