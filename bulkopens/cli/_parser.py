"""The command line's parser: its commands, options, environment defaults and exit codes.

Light on purpose: it imports constants only, so that ``bulkopens --version`` and ``--help`` start
in a blink, and each command's own modules are imported once that command is chosen.
"""

from __future__ import annotations

import argparse
import math
import os
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

from bulkopens._config import (
    DEFAULT_AUTH_URL,
    DEFAULT_BASE_URL,
    DEFAULT_DAILY_QUOTA,
    DEFAULT_MAX_PAGE_BYTES,
    DEFAULT_MAX_PAGES,
    DEFAULT_RATE,
    DEFAULT_REQUEST_TIMEOUT,
    DEFAULT_SCOPE,
    MAX_PAGE_SIZE,
    MIN_PAGE_BYTES,
    PARTNER_DAILY_QUOTA,
    normalise_since,
)
from bulkopens._exceptions import ConfigurationError
from bulkopens._reports import REPORTS
from bulkopens._types import STRATEGIES
from bulkopens._version import __version__

EXIT_OK = 0
EXIT_FAILED_CONTACTS = 1
EXIT_USAGE = 2
EXIT_AUTH = 3
EXIT_QUOTA = 4
EXIT_UNAVAILABLE = 69  # sysexits EX_UNAVAILABLE
EXIT_INTERNAL = 70
EXIT_OUTPUT = 74  # sysexits EX_IOERR: the disk is full or failing; committed work is kept
EXIT_INTERRUPTED = 130

FETCH_EXAMPLES = """\
examples:
  export CTCT_API_KEY=... CTCT_ACCESS_TOKEN=...
  bulkopens fetch --contacts contacts.txt --out opens/
  bulkopens fetch --contacts export.csv --out opens/ --since 2024-01-01
  cut -d, -f1 ids.csv | bulkopens fetch --contacts - --out opens/ --rate 10   # partner key
  bulkopens fetch --contacts contacts.txt --out opens/ --incremental          # daily sync
  bulkopens fetch --contacts contacts.txt --out opens/ --strategy auto        # fewest requests
  bulkopens fetch --campaigns sent --out campaign-opens/                      # campaign mode
  bulkopens fetch --contacts contacts.txt --out sums/ --report summary        # counts per contact
  bulkopens fetch --api v3 --contacts contacts.txt --out v3-opens/            # the v3 API

Run the same command again on the same --out to resume: every record is written once.

exit codes:
  0    every contact (campaign) done
  1    done, and some contacts (campaigns) are in errors.ndjson
  2    usage or configuration error; nothing fetched
  3    authentication failed (v3: also a refresh token that is no longer valid:
       log in again with 'auth login'); the run stopped and can be resumed
  4    the daily quota is exhausted (the API said so, or the key's ledger reached
       --daily-quota less --reserve); resume after 00:00 UTC; or --max-requests is spent
  69   the API cannot be used (host unreachable, not the API, failing or throttling
       every request); the run stopped and can be resumed
  70   an internal error (a bug: please report it); committed work is kept
  74   the output cannot be written (disk full, over quota, I/O error); committed work
       is kept: free space and run the same command again
  130  interrupted (Ctrl-C, SIGTERM, SIGHUP); the run can be resumed
"""


TOP_EXAMPLES = """\
examples:
  bulkopens demo                                        # the real fetch against a simulator
  export CTCT_API_KEY=... CTCT_ACCESS_TOKEN=...
  bulkopens check                                       # the key, the token and the host work
  bulkopens fetch --contacts contacts.txt --out opens/  # the batch job (run it again to resume)
  bulkopens fetch --contacts contacts.txt --out opens/ --plan   # what it would cost
  bulkopens status opens/                               # what a (running) job has done
  bulkopens quota                                       # the key's requests spent today
  bulkopens simulate --port 8080                        # the simulator, for your own tests

'bulkopens COMMAND --help' tells more about each command.
"""


class _DefaultsFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows each option's default, except where it has none (None or a flag's False)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default in (None, False) or "%(default)" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line on stderr and exit code 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


class _CommandParser(_Parser):
    """A command's parser: an unknown argument is its error (``bulkopens fetch: error: ...``),
    not the top-level parser's, which would point at the wrong ``--help``."""

    def parse_known_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        parsed, extra = super().parse_known_args(args, namespace)
        if extra:
            self.error(f"unrecognized arguments: {' '.join(extra)}")
        return parsed, extra


def _bounded(
    cast: Callable[[str], float], low: float, high: float = math.inf, *, low_open: bool = False
) -> Callable[[str], Any]:
    """An argparse type: ``cast`` the text and check ``low <= value <= high`` (or ``low <``)."""
    kind = "a whole number" if cast is int else "a number"
    bounds = (
        (f"> {low:g}" if low_open else f">= {low:g}")
        if high == math.inf
        else (f"between {low:g} and {high:g}")
    )

    def parse(text: str) -> Any:
        try:
            value = cast(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not {kind}: {text!r}") from None
        if (
            not (low < value if low_open else low <= value)
            or not value <= high
            or value == math.inf
        ):
            raise argparse.ArgumentTypeError(f"must be {kind} {bounds}: {text!r}")
        return value

    return parse


_positive_int = _bounded(int, 1)
_non_negative_int = _bounded(int, 0)
_positive_float = _bounded(float, 0, low_open=True)
_page_size = _bounded(int, 1, MAX_PAGE_SIZE)
_page_bytes = _bounded(int, MIN_PAGE_BYTES)
_rate = _bounded(float, 0)


def _since(text: str) -> str:
    try:
        result = normalise_since(text)
    except ConfigurationError as exc:
        raise argparse.ArgumentTypeError(str(exc).removeprefix("--since ")) from None
    assert result is not None
    return result


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The command line's parser. With ``command``, only that command gets its arguments (the
    others are listed, not built): ``bulkopens --version`` and ``--help`` (``command`` "")
    import nothing of the HTTP stack or the simulator. None builds every command."""

    def wanted(name: str) -> bool:
        return command is None or command == name

    parser = _Parser(
        prog="bulkopens",
        description="Export Constant Contact email-tracking reports (who opened what, when) "
        "for many contacts, as fast as the API's rate limit allows, exactly once, to NDJSON.",
        epilog=TOP_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"bulkopens {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_CommandParser)
    commands.required = True

    fetch = commands.add_parser(
        "fetch",
        help="fetch the reports of the contacts (or campaigns) in a file (the batch job)",
        description="Fetch one tracking report for every contact id in --contacts (or every "
        "campaign in --campaigns) and write every record exactly once to NDJSON files in "
        "--out. Resumable: run it again.",
        epilog=FETCH_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    if wanted("fetch"):
        add_fetch_arguments(fetch)

    demo = commands.add_parser(
        "demo",
        help="run the real fetch against a built-in simulated account (no key needed)",
        description="Start the simulator on a free local port with ~2,000 seeded contacts, "
        "some faults and throttles, and run the real fetch against it with live progress.",
        formatter_class=_DefaultsFormatter,
    )
    if wanted("demo"):
        demo.add_argument("--out", default="demo-out", help="output directory")
        demo.add_argument("--contacts", type=_positive_int, default=2000, help="simulated contacts")
        demo.add_argument("--seed", type=int, default=7, help="simulator seed")
        demo.add_argument("--quiet", action="store_true", help="no progress display")
        demo.add_argument(
            "--api",
            choices=("v2", "v3"),
            default="v2",
            help="the API to fetch from; v3 maps the list's v2 ids to v3 ones (id-map.ndjson)",
        )

    check = commands.add_parser(
        "check",
        help="prove the API key, the token and the host with one request, before a long run",
        description="Send one request (the first page of the sent-campaign list, one campaign "
        "long) with the same credentials, --base-url and environment as fetch, and say what "
        "it found. Exit codes as fetch: 0 all good, 2 a bad setting, 3 the key or token was "
        "refused, 4 the daily quota is spent, 69 the host cannot be reached or is not the API.",
    )
    if wanted("check"):
        add_access_arguments(check)

    status = commands.add_parser(
        "status",
        help="show what an --out directory holds, even while a job is writing it",
        description="Read the state of an --out directory without disturbing a running job: "
        "the run and attempt, contacts (or campaigns) done, in progress and failed, records, "
        "files, the last commit, and whether a process is running on it. Exit 0, or 2 when "
        "the directory holds no bulkopens state.",
    )
    if wanted("status"):
        status.add_argument("out", metavar="OUT", help="the --out directory of a fetch")
        status.add_argument("--json", action="store_true", help="one JSON object, for scripts")

    quota = commands.add_parser(
        "quota",
        help="show the API key's requests spent today, the daily quota and when it resets",
        description="Read the API key's ledger (the local one, or --budget's Redis): the "
        "requests every bulkopens process on the key has spent today (UTC), --daily-quota, "
        "--reserve, what is left and when the quota resets. Sends no request to the API. "
        "Exit 0; 2 for a bad setting; 69 when the --budget store cannot be reached.",
    )
    if wanted("quota"):
        add_access_arguments(quota)
        add_budget_arguments(quota, run=False)
        quota.add_argument("--json", action="store_true", help="one JSON object, for scripts")

    auth = commands.add_parser(
        "auth",
        help="log in to the v3 API (OAuth2), show or delete the tokens bulkopens keeps",
        description="The v3 API's OAuth2 tokens: 'auth login' gets them (device flow or PKCE) "
        "and saves them to the token file, from which a run renews them by itself; 'auth "
        "status' shows the client, scopes and expiry (never a token); 'auth logout' deletes "
        "the file.",
    )
    if wanted("auth"):
        add_auth_arguments(auth)

    simulate = commands.add_parser(
        "simulate",
        help="serve the built-in Constant Contact API simulator on a local port",
        description="Serve a faithful, seeded simulation of the Constant Contact v2 tracking "
        "API, with rate limits and fault injection, for demos, tests and benchmarks. Admin "
        "endpoints under /_sim/ drive it from another process: GET /_sim/stats (requests, "
        "statuses), GET /_sim/truth?report=opens[&since=ISO] (every record it holds, as "
        "NDJSON), POST /_sim/activity?contact_id=N&report=opens&count=K (add activity), "
        "POST /_sim/reset-stats. A v3 face (Bearer only) and an OAuth2 server at "
        "/oauth2/default/v1/ run over the same data set (see docs/simulator-v3.md); its admin "
        "endpoints: GET /_sim/v3/truth, POST /_sim/tokens, POST /_sim/approve?user_code=.",
        formatter_class=_DefaultsFormatter,
    )
    if wanted("simulate"):
        from bulkopens.simulator import _cli as simulator_cli

        simulator_cli.add_arguments(simulate)
    return parser


def add_access_arguments(parser: argparse.ArgumentParser) -> None:
    """The API key, token and base URL options, shared by ``fetch`` and ``check``."""
    api = parser.add_argument_group("API access")
    api.add_argument(
        "--api-key", metavar="KEY", help="API key, sent as api_key (default: $CTCT_API_KEY)"
    )
    api.add_argument(
        "--token",
        metavar="TOKEN",
        help="access token, sent as Authorization: Bearer (default: $CTCT_ACCESS_TOKEN)",
    )
    api.add_argument(
        "--base-url",
        metavar="URL",
        help=f"API base URL (default: $CTCT_BASE_URL, else {DEFAULT_BASE_URL} for v2 and "
        "https://api.cc.email for v3)",
    )
    api.add_argument(
        "--api",
        choices=("v2", "v3"),
        default=None,
        help="which Constant Contact API (default: $CTCT_API, else v2 when an API key is "
        "given and v3 when not). v3 sends only Authorization: Bearer: --token, or the token "
        "file of 'bulkopens auth login', renewed by itself",
    )
    add_token_arguments(parser)


_port = _bounded(int, 0, 65535)


def add_token_arguments(parser: argparse.ArgumentParser, *, login: bool = False) -> None:
    """The OAuth2 client and token file options (for ``auth``, and for fetch and check on v3).
    Secrets are read from the environment at run time, never shown by ``--help``."""
    group = parser.add_argument_group("OAuth2 (the v3 API)")
    group.add_argument(
        "--client-id",
        metavar="ID",
        help="the app's client id, its API key in the developer portal (default: $CTCT_CLIENT_ID"
        + ("" if login else "; or the one the token file was written for")
        + ")",
    )
    group.add_argument(
        "--client-secret",
        metavar="SECRET",
        help="the app's client secret, for a confidential app (default: $CTCT_CLIENT_SECRET; "
        "none: a public app)",
    )
    group.add_argument(
        "--token-file",
        metavar="PATH",
        help="where the tokens are kept (default: $CTCT_TOKEN_FILE or "
        "$XDG_CONFIG_HOME/bulkopens/token.json, ~/.config/bulkopens/token.json)",
    )
    group.add_argument(
        "--auth-url",
        metavar="URL",
        help="the authorization server (default: $CTCT_AUTH_URL, "
        + ("or " if login else "else the one the token file came from, or ")
        + f"{DEFAULT_AUTH_URL})",
    )


def add_auth_arguments(parser: argparse.ArgumentParser) -> None:
    """``auth``'s actions and their options."""
    actions = parser.add_subparsers(
        dest="auth_command", metavar="ACTION", parser_class=_CommandParser
    )
    actions.required = True
    login = actions.add_parser(
        "login",
        help="get tokens for the v3 API interactively and save them to the token file",
        description="Log in to the v3 API and save the tokens (mode 0600) to the token file, "
        "from which fetch renews them by itself. --flow device (default) prints a URL and a "
        "code to enter there, on any device; --flow pkce opens the authorization page in a "
        "browser on this machine, which comes back to 127.0.0.1. Exit 0 logged in, 2 a bad "
        "setting, 3 the login was refused, denied or expired, 69 the authorization server "
        "cannot be reached.",
    )
    add_token_arguments(login, login=True)
    flow = login.add_argument_group("the login")
    flow.add_argument(
        "--scope",
        default=DEFAULT_SCOPE,
        help=f"the scopes to ask for (default: {DEFAULT_SCOPE}); offline_access brings the "
        "refresh token that renews the access token",
    )
    flow.add_argument(
        "--flow",
        choices=("device", "pkce"),
        default="device",
        help="device: a URL and a code, on any device (default); pkce: a browser on this "
        "machine, for apps whose device flow issues no refresh token",
    )
    flow.add_argument(
        "--redirect-port",
        type=_port,
        default=0,
        metavar="PORT",
        help="pkce: the port of http://127.0.0.1:PORT/callback, the redirect URI registered "
        "for the app (default: a free port)",
    )
    flow.add_argument(
        "--no-browser",
        action="store_true",
        help="pkce: print the URL only, do not open a browser",
    )

    status = actions.add_parser(
        "status",
        help="show what the token file holds: client, scopes, expiry (never a token)",
        description="Show the token file's client id (shortened), account, scopes, the access "
        "token's expiry and whether a refresh token is held; never a token. Exit 0 when a "
        "run can get a valid token from it, 2 for a bad setting or file, 3 when there are no "
        "tokens or the access token expired and no refresh token is held.",
    )
    add_token_arguments(status)
    status.add_argument(
        "--check",
        action="store_true",
        help="renew the access token now if it has expired or expires soon",
    )
    status.add_argument("--json", action="store_true", help="one JSON object, for scripts")

    logout = actions.add_parser(
        "logout",
        help="delete the token file",
        description="Delete the token file (only a bulkopens token file). The tokens stay "
        "valid at the authorization server until they expire.",
    )
    logout.add_argument("--token-file", metavar="PATH", help="as for login")


ENV_PREFIX = "BULKOPENS_"


def _env(name: str, default: Any) -> Any:
    """An option's default: ``$BULKOPENS_<NAME>`` when set (as text, so argparse checks it with
    the option's own type, as if it were given on the command line), else ``default``."""
    value = os.environ.get(ENV_PREFIX + name, "").strip()
    return value if value else default


def _env_flag(name: str) -> bool:
    return os.environ.get(ENV_PREFIX + name, "").strip().lower() in ("1", "true", "yes", "on")


def _env_help(name: str) -> str:
    return f" [env: {ENV_PREFIX}{name}]"


def _env_option(
    group: argparse._ActionsContainer, flag: str, *, help: str, default: Any = None, **kw: Any
) -> None:
    """An option whose default may come from ``$BULKOPENS_<NAME>``, ``NAME`` being the flag's
    name in capitals (``--page-size``: ``BULKOPENS_PAGE_SIZE``), as its help says."""
    name = flag.removeprefix("--").replace("-", "_").upper()
    flag_only = kw.get("action") == "store_true"
    default = _env_flag(name) if flag_only else _env(name, default)
    group.add_argument(flag, default=default, help=help + _env_help(name), **kw)


def add_fetch_arguments(fetch: argparse.ArgumentParser) -> None:
    what = fetch.add_argument_group("what to fetch")
    whose = what.add_mutually_exclusive_group(required=True)
    whose.add_argument(
        "--contacts",
        metavar="PATH",
        help="one contact id per line (- for stdin); blank and # lines are ignored; "
        "or a CSV whose header has a contact_id or id column",
    )
    whose.add_argument(
        "--campaigns",
        metavar="PATH",
        help="campaign mode: the reports of campaigns, not contacts: a file of campaign ids "
        "(like --contacts, CSV column campaign_id or id), or the word 'sent' for every "
        "campaign the account has sent",
    )
    what.add_argument("--out", required=True, metavar="DIR", help="output directory")
    what.add_argument(
        "--report",
        choices=list(REPORTS),
        default="opens",
        metavar="NAME",
        help=f"which tracking report: {', '.join(REPORTS)} (default: opens). 'all' (every "
        "activity) is for contacts only. 'summary' is one line per contact (or campaign) with "
        "its activity counts; 'summary-by-campaign' one line per campaign a contact has "
        "activity in (contacts only); the summaries take no --since and no --strategy campaign",
    )
    what.add_argument(
        "--strategy",
        choices=STRATEGIES,
        help="with --contacts: 'contact' asks each contact (default); 'campaign' asks each "
        "sent campaign and keeps these contacts' records; 'auto' estimates both and takes "
        "the one with fewer requests. The plan is printed before the run",
    )
    what.add_argument(
        "--since",
        type=_since,
        metavar="ISO8601",
        help="only activity on or after this instant (sent as created_since, in UTC)",
    )
    what.add_argument(
        "--incremental",
        action="store_true",
        help="after a complete run: fetch only activity newer than what --out already holds, "
        "into new files listed in manifest.json (summaries: a new snapshot of each)",
    )
    what.add_argument(
        "--retry-failed",
        action="store_true",
        help="also retry contacts that failed for good (404) in this run",
    )
    what.add_argument(
        "--fresh",
        action="store_true",
        help="delete the state and files of earlier runs in --out and start over",
    )
    what.add_argument(
        "--plan",
        action="store_true",
        help="with --contacts: print what each path would cost (the --strategy auto estimate) "
        "and exit, fetching no record and leaving --out untouched",
    )

    add_access_arguments(fetch)

    speed = fetch.add_argument_group("speed and retries")
    _env_option(
        speed,
        "--rate",
        type=_rate,
        default=DEFAULT_RATE,
        metavar="R",
        help="requests per second for the whole run (default: 4, a standard key; "
        "10 for a partner key; 0 = no limit, for simulators only)",
    )
    _env_option(
        speed,
        "--concurrency",
        type=_positive_int,
        default=None,
        metavar="N",
        help="requests in flight at most (default: enough to keep --rate busy)",
    )
    _env_option(
        speed,
        "--page-size",
        type=_page_size,
        default=MAX_PAGE_SIZE,
        metavar="N",
        help="records per page, sent as limit, 1..500 (default: 500)",
    )
    _env_option(
        speed,
        "--event-loop",
        choices=EVENT_LOOPS,
        default="auto",
        help="the event loop: uvloop (about 20%% less CPU per page; installed with "
        "bulkopens) or asyncio's own; auto takes uvloop when it is installed (default: auto)",
    )
    _env_option(
        speed,
        "--max-retries",
        type=_non_negative_int,
        default=6,
        metavar="N",
        help="retries per request after a 5xx, reset or timeout (default: 6)",
    )
    _env_option(
        speed,
        "--request-timeout",
        type=_positive_float,
        default=DEFAULT_REQUEST_TIMEOUT,
        metavar="SECONDS",
        help="the most one request may take, connect to last byte; then it is retried like a "
        f"timeout (default: {DEFAULT_REQUEST_TIMEOUT:g})",
    )
    _env_option(
        speed,
        "--max-page-bytes",
        type=_page_bytes,
        default=DEFAULT_MAX_PAGE_BYTES,
        metavar="N",
        help="the most bytes one answer may have, after decompression; a larger one fails its "
        f"contact, which the next run retries (default: {DEFAULT_MAX_PAGE_BYTES} = 8 MiB, about "
        "100 times a full 500-record page)",
    )
    _env_option(
        speed,
        "--max-pages",
        type=_positive_int,
        default=DEFAULT_MAX_PAGES,
        metavar="N",
        help="the most pages one contact's (or campaign's) report may take; past it the item "
        f"fails, and --retry-failed goes on from there (default: {DEFAULT_MAX_PAGES:,}, "
        "5 million records at 500 a page)",
    )

    add_budget_arguments(fetch)

    output = fetch.add_argument_group("output")
    _env_option(
        output,
        "--quiet",
        action="store_true",
        help="no progress display, no log lines, no summary; a failure still prints one line",
    )
    _env_option(
        output,
        "--log-interval",
        type=_positive_float,
        default=10.0,
        metavar="SECONDS",
        help="seconds between progress log lines when stderr is not a terminal (default: 10)",
    )
    _env_option(
        output,
        "--log-format",
        choices=("text", "json"),
        default="text",
        help="text (default), or json: one JSON object per line (time, level, event, message "
        "and the event's fields: progress, plan, summary, warning, error), for log collectors",
    )
    _env_option(
        output,
        "--log-file",
        metavar="PATH",
        default=None,
        help="append progress, the plan and the summary to this file instead of stderr "
        "(errors and warnings still reach stderr too)",
    )


EVENT_LOOPS = ("auto", "asyncio", "uvloop")


def add_budget_arguments(parser: argparse.ArgumentParser, *, run: bool = True) -> None:
    """The API key's shared budget and daily ledger (``fetch``; ``quota`` without ``run``)."""
    budget = parser.add_argument_group(
        "the API key's budget",
        "Every process on one API key shares its pace and a ledger of the day's requests: "
        "on this machine with no setup, across hosts through --budget redis://.",
    )
    _env_option(
        budget,
        "--budget",
        metavar="URL",
        default=None,
        help="where the key's pace and ledger are shared: local (default: every process of "
        "this user on this machine, in $XDG_STATE_HOME/bulkopens), redis://HOST:PORT/DB or "
        "rediss://... (a fleet; the password in the URL or $BULKOPENS_REDIS_PASSWORD; pip "
        "install 'bulkopens[redis]'), or process (this run alone, no ledger)",
    )
    _env_option(
        budget,
        "--daily-quota",
        type=_non_negative_int,
        default=DEFAULT_DAILY_QUOTA,
        metavar="N",
        help=f"the key's requests a day, UTC (default: {DEFAULT_DAILY_QUOTA:,}, a standard key; "
        f"{PARTNER_DAILY_QUOTA:,} for a partner key; 0 = no ledger limit)",
    )
    _env_option(
        budget,
        "--reserve",
        type=_non_negative_int,
        default=0,
        metavar="N",
        help="requests a day to leave for other integrations on the key (default: 0)",
    )
    if not run:
        return
    _env_option(
        budget,
        "--wait-for-quota",
        action="store_true",
        help="when the day's quota (less --reserve) is spent, wait for 00:00 UTC and go on "
        "instead of stopping with exit 4: a long export runs over several days unattended",
    )
    _env_option(
        budget,
        "--max-requests",
        type=_positive_int,
        default=None,
        metavar="N",
        help="send at most N requests in this run, then stop (exit 4); the same command goes "
        "on from there",
    )


def build_fetch_namespace(**values: Any) -> argparse.Namespace:
    """The arguments of ``bulkopens fetch`` with its defaults, overridden by ``values``."""
    parser = _Parser(prog="bulkopens fetch")
    add_fetch_arguments(parser)
    args = parser.parse_args(["--contacts", "-", "--out", "-"])
    for name, value in values.items():
        setattr(args, name, value)
    return args
