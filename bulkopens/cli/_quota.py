"""``bulkopens quota``: the API key's ledger for today, read without a request to the API."""

from __future__ import annotations

import argparse
import json
import os

import anyio

from bulkopens import ConfigurationError, ServiceUnavailable
from bulkopens._config import DEFAULT_BASE_URL
from bulkopens.cli._parser import EXIT_OK, EXIT_UNAVAILABLE, EXIT_USAGE
from bulkopens.cli._run import _fail, budget_of


def run_quota(args: argparse.Namespace) -> int:
    """Print today's spend, the limit, the reserve and the reset; exit 0, 2 or 69."""
    api_key = args.api_key if args.api_key is not None else os.environ.get("CTCT_API_KEY", "")
    api_key = api_key.strip()
    base_url = args.base_url or os.environ.get("CTCT_BASE_URL") or DEFAULT_BASE_URL
    try:
        if not api_key:
            raise ConfigurationError("an API key is required (--api-key or CTCT_API_KEY)")
        budget = budget_of(args)
    except ConfigurationError as exc:
        return _fail(EXIT_USAGE, str(exc))
    try:
        found = anyio.run(budget.status, api_key, base_url)
    except ServiceUnavailable as exc:
        return _fail(EXIT_UNAVAILABLE, str(exc))
    if args.json:
        print(json.dumps(found, sort_keys=True))
        return EXIT_OK
    quota = found["daily_quota"]
    lines = [f"budget:     {found['budget']}", f"today:      {found['day']} (UTC)"]
    if quota:
        lines.append(f"spent:      {found['spent']:,} of {quota:,} requests")
        lines.append(f"reserve:    {found['reserve']:,} (left for other integrations)")
        lines.append(f"available:  {found['available']:,}")
    else:
        lines.append(f"spent:      {found['spent']:,} requests (no --daily-quota)")
    lines.append(f"resets at:  {found['resets_at'].replace('T', ' ').removesuffix('Z')} UTC")
    print("\n".join(lines))
    return EXIT_OK
