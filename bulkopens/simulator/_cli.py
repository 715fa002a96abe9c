"""Command-line front end: ``add_arguments`` declares the options, ``run`` serves until a signal.

Contract of :func:`run`: the first stdout line (flushed) is exactly ``serving http://HOST:PORT``
with the real port, the second names the api_key/token to use and the limits; it serves
until SIGINT or SIGTERM and then returns 0. It returns 2 (with a message on stderr) when the
settings are inconsistent or the address cannot be bound.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from collections.abc import Callable

from bulkopens.simulator._config import MAX_CAMPAIGNS, MAX_CONTACTS, SimConfig
from bulkopens.simulator._server import Simulator

_DEFAULTS = SimConfig()


def _bounded_int(low: int, high: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{value} is not in {low}..{high}")
        return value

    return parse


def _number(high: float | None) -> Callable[[str], float]:
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if not value >= 0 or value == float("inf") or (high is not None and value > high):
            bound = f"0..{high:g}" if high is not None else ">= 0"
            raise argparse.ArgumentTypeError(f"{text} is not a number {bound}")
        return value

    return parse


_share = _number(1.0)
_non_negative = _number(None)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the simulator's options to ``parser``; bad values make the parser exit with usage."""
    d = _DEFAULTS
    add = parser.add_argument
    add("--host", default="127.0.0.1", help="address to bind")
    add("--port", type=_bounded_int(0, 65535), default=8080, help="port; 0 picks a free one")
    add("--seed", type=int, default=d.seed, help="dataset and fault seed")
    add("--contacts", type=_bounded_int(1, MAX_CONTACTS), default=d.contacts,
        help="number of contacts (ids 1..N)")  # fmt: skip
    add("--campaigns", type=_bounded_int(0, MAX_CAMPAIGNS), default=d.campaigns,
        help="number of SENT campaigns (3 DRAFT/SCHEDULED ones are added)")  # fmt: skip
    add("--heavy-fraction", type=_share, default=d.heavy_fraction,
        help="share of contacts with 1,000-3,000 opens")  # fmt: skip
    add("--empty-fraction", type=_share, default=d.empty_fraction,
        help="share of contacts with no activity")  # fmt: skip
    add("--api-key", action="append", dest="api_keys", metavar="KEY",
        help="accepted api_key (repeatable; default demo-key)")  # fmt: skip
    add("--token", action="append", dest="tokens", metavar="TOKEN",
        help="accepted Bearer token (repeatable; default demo-token)")  # fmt: skip
    add("--rate", type=_non_negative, default=d.rate_per_second,
        help="requests per second per api_key; 0 = unlimited")  # fmt: skip
    add("--daily-quota", type=_bounded_int(0, 2**62), default=d.daily_quota,
        help="requests per UTC day per api_key; 0 = unlimited")  # fmt: skip
    add("--limit-style", choices=("429", "403"), default=d.limit_style,
        help="over-limit answers: 429 throttled/quota_exceeded or 403 mashery keys")  # fmt: skip
    add("--retry-after", type=_non_negative, default=None,
        help="add Retry-After (seconds) to over-limit answers")  # fmt: skip
    add("--latency-ms", type=_non_negative, default=d.latency_ms, help="delay of every answer")
    add("--jitter-ms", type=_non_negative, default=d.jitter_ms,
        help="uniform ± jitter on the latency")  # fmt: skip
    add("--slow-rate", type=_share, default=d.slow_rate,
        help="share of answers delayed by --slow-seconds more")  # fmt: skip
    add("--slow-seconds", type=_non_negative, default=d.slow_seconds,
        help="extra delay of slow answers")  # fmt: skip
    add("--error-rate", type=_share, default=d.error_rate,
        help="share of answers that are 500/502/503/504")  # fmt: skip
    add("--reset-rate", type=_share, default=d.reset_rate,
        help="share of answers whose connection is reset mid-body")  # fmt: skip
    add("--truncate-rate", type=_share, default=d.truncate_rate,
        help="share of 200 answers with a body cut short")  # fmt: skip
    add("--numeric-campaign-ids", action="store_true",
        help="campaign-tracking records write campaign_id as a JSON number")  # fmt: skip
    add("--numeric-contact-ids", action="store_true",
        help="campaign-tracking records write contact_id as a JSON number")  # fmt: skip
    v3 = parser.add_argument_group("v3 face (Bearer only, OAuth2 at /oauth2/default/v1/...)")
    v3.add_argument("--client-id", default=d.client_id,
                    help="the OAuth2 app's client id (its rate limit counts on it)")  # fmt: skip
    v3.add_argument("--client-secret", default=d.client_secret, help="the app's client secret")
    v3.add_argument("--access-token-seconds", type=_non_negative, default=d.access_token_seconds,
                    help="lifetime of issued access tokens (expires_in)")  # fmt: skip
    v3.add_argument("--refresh-tokens", choices=("rotating", "long-lived"),
                    default=d.refresh_tokens,
                    help="rotating: single use (reuse is invalid_grant); long-lived: reusable",
                    )  # fmt: skip
    v3.add_argument("--refresh-idle-days", type=_non_negative,
                    default=d.refresh_idle_seconds / 86_400,
                    help="a refresh token unused this long is invalid")  # fmt: skip
    v3.add_argument("--no-device-refresh", action="store_true",
                    help="the device flow issues no refresh token (default: it does, "
                    "with offline_access)")  # fmt: skip
    v3.add_argument("--device-interval", type=_bounded_int(1, 3600), default=d.device_interval,
                    help="polling interval (s) the device flow announces")  # fmt: skip
    v3.add_argument("--token-rate", type=_non_negative, default=d.token_rate_per_second,
                    help="token-endpoint requests per second per client id; 0 = no limit",
                    )  # fmt: skip
    v3.add_argument("--xref", choices=("ok", "404", "410"), default=d.xref,
                    help="404/410: the v2-id cross-reference endpoints are gone")  # fmt: skip


def config_from_args(args: argparse.Namespace) -> SimConfig:
    """The SimConfig the parsed options describe. Raises ValueError if inconsistent."""
    return SimConfig(
        seed=args.seed,
        contacts=args.contacts,
        campaigns=args.campaigns,
        heavy_fraction=args.heavy_fraction,
        empty_fraction=args.empty_fraction,
        api_keys=tuple(args.api_keys or _DEFAULTS.api_keys),
        tokens=tuple(args.tokens or _DEFAULTS.tokens),
        rate_per_second=args.rate,
        daily_quota=args.daily_quota,
        limit_style=args.limit_style,
        retry_after=args.retry_after,
        latency_ms=args.latency_ms,
        jitter_ms=args.jitter_ms,
        slow_rate=args.slow_rate,
        slow_seconds=args.slow_seconds,
        error_rate=args.error_rate,
        reset_rate=args.reset_rate,
        truncate_rate=args.truncate_rate,
        numeric_campaign_ids=args.numeric_campaign_ids,
        numeric_contact_ids=args.numeric_contact_ids,
        client_id=args.client_id,
        client_secret=args.client_secret,
        access_token_seconds=args.access_token_seconds,
        refresh_tokens=args.refresh_tokens,
        refresh_idle_seconds=args.refresh_idle_days * 86_400,
        device_refresh=not args.no_device_refresh,
        device_interval=args.device_interval,
        token_rate_per_second=args.token_rate,
        xref=args.xref,
    )


def run(args: argparse.Namespace) -> int:
    """Serve until SIGINT/SIGTERM; return the process exit code (see module docstring)."""
    try:
        config = config_from_args(args)
    except ValueError as exc:
        print(f"simulate: {exc}", file=sys.stderr)
        return 2
    try:
        asyncio.run(_serve(config, args.host, args.port))
    except OSError as exc:
        print(f"simulate: cannot serve on {args.host}:{args.port}: {exc.strerror}", file=sys.stderr)
        return 2
    return 0


async def _serve(config: SimConfig, host: str, port: int) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        async with Simulator(config, host=host, port=port) as sim:
            print(f"serving {sim.url}", flush=True)
            print(_describe(sim), flush=True)
            await stop.wait()
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)


def _describe(sim: Simulator) -> str:
    c = sim.config
    rate = f"{c.rate_per_second:g}/s" if c.rate_per_second else "unlimited/s"
    quota = f"{c.daily_quota}/day" if c.daily_quota else "unlimited/day"
    return (
        f"use api_key={sim.api_key} token={sim.token}; limits per key: {rate}, {quota}"
        f" (style {c.limit_style}); contacts 1..{c.contacts}, {c.campaigns} SENT campaigns;"
        f" v3: client_id={c.client_id}, access tokens live {c.access_token_seconds:g} s,"
        f" {c.refresh_tokens} refresh tokens"
    )
