"""``bulkopens quota``: the API key's ledger for today, read without a request to the API."""

from __future__ import annotations

import argparse
import json

import anyio

from bulkopens import ConfigurationError, ServiceUnavailable
from bulkopens.cli._parser import EXIT_OK, EXIT_UNAVAILABLE, EXIT_USAGE
from bulkopens.cli._run import _fail, access_of, budget_of


def run_quota(args: argparse.Namespace) -> int:
    """Print today's spend, the limit, the reserve and the reset; exit 0, 2 or 69."""
    try:
        access = access_of(args)
        if not access.key:
            raise ConfigurationError(
                "an API key is required (--api-key or CTCT_API_KEY); on v3, the app's client "
                "id (--client-id, CTCT_CLIENT_ID, or a token file)"
            )
        budget = budget_of(args)
    except ConfigurationError as exc:
        return _fail(EXIT_USAGE, str(exc))
    try:
        found = anyio.run(budget.status, access.key, access.base_url)
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
