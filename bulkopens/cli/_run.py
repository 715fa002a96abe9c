"""The commands that do the work: ``fetch`` (and its ``--plan``), ``check`` and ``status``.

A client of the library's public API: library errors become exit codes here and only here.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import math
import os
import signal
import sys
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any, Literal

import anyio

from bulkopens import (
    SENT,
    AuthenticationError,
    Budget,
    BulkOpensError,
    Client,
    ConfigurationError,
    OutputError,
    Plan,
    QuotaExhausted,
    RequestLimitReached,
    RunStopped,
    ServiceUnavailable,
    Summary,
)
from bulkopens._check import Check
from bulkopens._config import DEFAULT_BASE_URLS, budget_key, normalise_base_url
from bulkopens._redact import Redactor, printable
from bulkopens._tokens import TokenProvider, default_token_path
from bulkopens.cli._auth import token_provider_from_args
from bulkopens.cli._input import ContactSource
from bulkopens.cli._output import Console, ProgressReporter, describe
from bulkopens.cli._parser import (
    ENV_PREFIX,
    EVENT_LOOPS,
    EXIT_AUTH,
    EXIT_FAILED_CONTACTS,
    EXIT_INTERNAL,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_OUTPUT,
    EXIT_QUOTA,
    EXIT_UNAVAILABLE,
    EXIT_USAGE,
)

# The real API's hosts (v2 and v3): no unpaced run is sent there.
_PRODUCTION_HOSTS = ("api.constantcontact.com", "api.cc.email")


def event_loop_options(choice: str) -> dict[str, bool]:
    """anyio's asyncio backend options for ``--event-loop``; ConfigurationError if uvloop is
    asked for by name and is not installed."""
    if choice == "asyncio":
        return {"use_uvloop": False}
    try:
        import uvloop  # noqa: F401  (installed with bulkopens, but an install may lack it)
    except ImportError:
        if choice == "uvloop":
            raise ConfigurationError(
                "--event-loop uvloop: uvloop is not installed (pip install uvloop)"
            ) from None
        return {"use_uvloop": False}
    return {"use_uvloop": True}


@dataclasses.dataclass(frozen=True)
class Access:
    """Which API, with which credentials, at which URL: from the options and the environment.

    ``--api`` (or ``$CTCT_API``) decides; without it, v2 when an API key is given and v3 when
    not. On v3 a token given (``--token``, ``$CTCT_ACCESS_TOKEN``) is used as it is; otherwise
    the token file of ``auth login`` gives one and renews it (``tokens``).
    """

    api: Literal["v2", "v3"]
    api_key: str = dataclasses.field(repr=False)
    token: str = dataclasses.field(repr=False)
    tokens: TokenProvider | None = dataclasses.field(repr=False)
    base_url: str
    redact: Redactor = dataclasses.field(repr=False)
    client_id: str = dataclasses.field(default="", repr=False)

    def client_options(self) -> dict[str, Any]:
        return {
            "api": self.api,
            "tokens": self.tokens,
            "base_url": self.base_url,
            "client_id": self.client_id if self.api == "v3" else "",
        }

    @property
    def key(self) -> str:
        """What the key's shared budget is kept under, as the client keeps it."""
        return budget_key(self.api, self.api_key, self.token, self.client_id, self.tokens)


def access_of(args: argparse.Namespace) -> Access:
    """The :class:`Access` of a command's options; ConfigurationError for a bad ``--api``."""
    api_key = _secret(args.api_key, "CTCT_API_KEY")
    chosen = getattr(args, "api", None) or os.environ.get("CTCT_API", "").strip().lower()
    if chosen not in ("", "v2", "v3"):
        raise ConfigurationError(f"$CTCT_API must be v2 or v3; got {chosen[:20]!r}")
    api: Literal["v2", "v3"] = (
        "v3" if chosen == "v3" or (not chosen and not api_key and _has_oauth(args)) else "v2"
    )
    token = _secret(args.token, "CTCT_ACCESS_TOKEN")
    tokens: TokenProvider | None = None
    if api == "v3":
        explicit = args.token is not None and args.token.strip()
        from_file = getattr(args, "token_file", None) or os.environ.get("CTCT_TOKEN_FILE")
        if not explicit and (from_file or not token):
            tokens, token = token_provider_from_args(args), ""
    base_url = args.base_url or os.environ.get("CTCT_BASE_URL") or DEFAULT_BASE_URLS[api]
    secrets = tokens.secrets() if tokens is not None else ()
    redact = _given_secrets(args)
    redact.add(*secrets)
    client_id = _secret(getattr(args, "client_id", None), "CTCT_CLIENT_ID")
    return Access(api, api_key, token, tokens, base_url, redact, client_id)


def _not_logged_in(access: Access) -> str | None:
    """Why a v3 run cannot start (exit 3, before ``--out`` is touched): its token file does not
    exist; None when it can."""
    path = getattr(access.tokens, "path", None)
    if path is None or os.path.lexists(path):
        return None
    return printable(f"no tokens in {path}: run bulkopens auth login (or give --token-file)")


def _has_oauth(args: argparse.Namespace) -> bool:
    """Whether v3's OAuth2 credentials are configured: a client id, or a token file (named,
    or at its default place). A bare access token alone says nothing of the API."""
    named = getattr(args, "token_file", None) or os.environ.get("CTCT_TOKEN_FILE")
    client_id = getattr(args, "client_id", None) or os.environ.get("CTCT_CLIENT_ID")
    return bool(named or client_id) or default_token_path().is_file()


def run_check(args: argparse.Namespace) -> int:
    """``bulkopens check``: one request that proves the credentials and the host."""
    redact = _given_secrets(args)
    try:
        access = access_of(args)
        redact = access.redact
        client = Client(access.api_key, access.token, max_retries=2, **access.client_options())
    except ConfigurationError as exc:
        return _fail(EXIT_USAGE, redact(str(exc)))
    if (missing := _not_logged_in(access)) is not None:
        return _fail(EXIT_AUTH, missing)

    async def check() -> Check:
        async with client:
            return await client.check()

    try:
        found = anyio.run(check)
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except RunStopped as exc:
        return _fail(_exit_code(exc), redact(str(exc)))
    print(found.describe())
    return EXIT_OK


def _exit_code(exc: RunStopped) -> int:
    """The exit code of a run-stopping error (see FETCH_EXAMPLES)."""
    for kind, code in (
        (QuotaExhausted, EXIT_QUOTA),
        (AuthenticationError, EXIT_AUTH),
        (OutputError, EXIT_OUTPUT),
        (ServiceUnavailable, EXIT_UNAVAILABLE),
    ):
        if isinstance(exc, kind):
            return code
    return EXIT_USAGE


def run_status(args: argparse.Namespace) -> int:
    """``bulkopens status OUT``: the state of an output directory; exit 0, or 2 without one."""
    from pathlib import Path

    from bulkopens._status import describe_status, read_status

    try:
        status = read_status(Path(args.out))
    except ConfigurationError as exc:
        return _fail(EXIT_USAGE, printable(str(exc)))
    if args.json:
        print(json.dumps(status, indent=None, sort_keys=True))
    else:
        print(describe_status(status))
    return EXIT_OK


def _given_secrets(args: argparse.Namespace) -> Redactor:
    """A redactor of the secrets given by option or environment, before they are checked."""
    return Redactor(*(_secret(getattr(args, name, None), env) for name, env in _SECRET_OPTIONS))


_SECRET_OPTIONS = (
    ("api_key", "CTCT_API_KEY"),
    ("token", "CTCT_ACCESS_TOKEN"),
    ("client_id", "CTCT_CLIENT_ID"),
    ("client_secret", "CTCT_CLIENT_SECRET"),
)


def _secret(flag: str | None, env: str) -> str:
    value = flag if flag is not None else os.environ.get(env, "")
    return value.strip()


def run_fetch(
    args: argparse.Namespace,
    *,
    banner: str | None = None,
    around: Callable[[], AbstractAsyncContextManager[object]] | None = None,
) -> int:
    """``bulkopens fetch``: the batch job. Returns the exit code."""
    redact = _given_secrets(args)
    try:
        access = access_of(args)
    except ConfigurationError as exc:
        return _fail(EXIT_USAGE, redact(str(exc)))
    if (missing := _not_logged_in(access)) is not None:
        return _fail(EXIT_AUTH, missing)
    redact, api_key, token, base_url = access.redact, access.api_key, access.token, access.base_url
    global _console
    try:
        for name, choices in (("log_format", ("text", "json")), ("event_loop", EVENT_LOOPS)):
            if getattr(args, name) not in choices:  # from the environment: argparse took it
                raise ConfigurationError(
                    f"${ENV_PREFIX}{name.upper()} must be one of {', '.join(choices)}"
                )
        console = _console = Console(fmt=args.log_format, path=args.log_file)
    except ConfigurationError as exc:
        return _fail(EXIT_USAGE, str(exc))
    usage = _mode_error(args) or _rate_error(args.rate, base_url)
    if usage is not None:
        return _fail(EXIT_USAGE, usage)
    if args.since is not None and args.since > _now_stamp() and not args.quiet:
        console.emit(
            "warning",
            f"bulkopens: warning: --since {args.since} is in the future: nothing can match yet",
            level="warning",
        )
    try:
        client = Client(
            api_key,
            token,
            **access.client_options(),
            rate=args.rate,
            concurrency=args.concurrency,
            page_size=args.page_size,
            max_retries=args.max_retries,
            request_timeout=args.request_timeout,
            max_page_bytes=args.max_page_bytes,
            max_pages=args.max_pages,
            on_progress=None
            if args.quiet
            else ProgressReporter(live=console.live, log_every=args.log_interval, console=console),
            on_plan=None if args.quiet else _print_plan,
            budget=(
                budget := budget_of(
                    args,
                    run=True,
                    notice=None
                    if args.quiet
                    else lambda text: console.emit("budget", f"bulkopens: {text}", level="warning"),
                )
            ),
        )
        _quota_today.status = None
        _quota_today.read = (
            (lambda: budget.status(access.key, base_url))
            if args.plan or args.strategy in ("auto", "campaign")
            else None
        )
        loop_options = event_loop_options(args.event_loop)
        source: ContactSource | None = None
        if args.campaigns is None:
            source = ContactSource(args.contacts)
        elif args.campaigns != SENT:
            source = ContactSource(args.campaigns, noun="campaign")
        if source is not None:
            source.check()
    except ConfigurationError as exc:
        return _fail(EXIT_USAGE, redact(str(exc)))
    if args.plan:
        return _plan_only(client, source, args, loop_options, redact)
    if banner and not args.quiet:
        console.emit("start", banner)
    resuming = None if args.quiet or args.fresh else _resuming(args.out, args.incremental)
    if resuming is not None:
        console.emit("resume", resuming)
    try:
        try:
            summary = anyio.run(_fetch, client, source, args, around, backend_options=loop_options)
        finally:
            # Everything is committed from here on: a Ctrl-C now simply ends the process.
            for signum in STOP_SIGNALS:
                signal.signal(signum, _exit_interrupted)
    except KeyboardInterrupt:
        console.emit(
            "stopped",
            "bulkopens: interrupted; run the same command again to resume",
            level="warning",
        )
        return EXIT_INTERRUPTED
    except RunStopped as exc:
        return _stopped(exc, redact, args.quiet)
    except BulkOpensError as exc:
        return _fail(EXIT_INTERNAL, redact(f"unexpected error: {exc}"))
    except Exception as exc:
        return _fail(EXIT_INTERNAL, redact(f"internal error: {type(exc).__name__}: {exc}"))
    finally:
        if source is not None:
            source.close()
    if summary is None:
        console.emit(
            "stopped",
            "bulkopens: interrupted; committed what was written. Run the same command "
            "again to resume.",
            level="warning",
        )
        return EXIT_INTERRUPTED
    if not args.quiet:
        console.emit("summary", describe(summary), summary=summary.to_json())
    totals = summary.totals
    failed = totals.get("failed", 0) + totals.get("failed_for_good", 0)
    invalid = totals.get("invalid", 0)
    if args.quiet and (failed or invalid):
        # --quiet hides progress and the summary, never a failure: one line says where to look.
        said = [f"{failed:,} {summary.unit} failed"] if failed else []
        said += (
            [f"{invalid:,} input line{'s' if invalid != 1 else ''} not an id"] if invalid else []
        )
        where = os.path.join(args.out, "errors.ndjson")
        console.emit("failures", f"bulkopens: {', '.join(said)}: see {where}", level="warning")
    return EXIT_FAILED_CONTACTS if failed or invalid else EXIT_OK


def _resuming(out: str, incremental: bool) -> str | None:
    """One line when this fetch resumes a run that --out holds (None for a new run)."""
    from pathlib import Path

    from bulkopens._status import read_status

    try:
        status = read_status(Path(out))
    except ConfigurationError:
        return None
    if status.get("run") is None or status["complete"]:
        return None  # a new run (after a complete one, --incremental starts run N+1)
    items = status["items"]
    return (
        f"bulkopens: resuming run {status['run']} (attempt {status['attempt'] + 1}): "
        f"{items['done']:,} {status['unit']} done earlier, {items['from_cursor']:,} to go on "
        f"from a cursor, {status['records']:,} records already written"
    )


def _plan_only(
    client: Client,
    source: ContactSource | None,
    args: argparse.Namespace,
    loop_options: dict[str, bool],
    redact: Redactor,
) -> int:
    """``fetch --plan``: the planner's estimate on stdout; no record fetched, --out untouched."""
    assert source is not None

    async def plan() -> Plan:
        await _quota_today.load()
        async with client:
            return await client.plan(source, report=args.report, strategy=args.strategy or "auto")

    try:
        estimate = anyio.run(plan, backend_options=loop_options)
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except RunStopped as exc:
        return _stopped(exc, redact, args.quiet)
    finally:
        source.close()
    print(estimate.describe() + _quota_today.fit(estimate))
    return EXIT_OK


def budget_of(
    args: argparse.Namespace, *, run: bool = False, notice: Callable[[str], None] | None = None
) -> Budget:
    """The API key's budget that ``--budget``, ``--daily-quota`` and ``--reserve`` (and for a
    run, ``--max-requests`` and ``--wait-for-quota``) describe; ConfigurationError if wrong."""
    return Budget(
        args.budget,
        daily_quota=args.daily_quota,
        reserve=args.reserve,
        max_requests=args.max_requests if run else None,
        wait_for_quota=args.wait_for_quota if run else False,
        notice=notice,
    )


def _rate_error(rate: float, base_url: str) -> str | None:
    """--rate 0 (no pacing) is for simulators: against the real API it would overrun the key."""
    if rate == 0 and _host_of(base_url) in _PRODUCTION_HOSTS:
        return (
            "--rate 0 (no limit) is for simulators; the API allows 4 requests a second "
            "(10 for a partner key): give --rate 4 or 10"
        )
    return None


def _host_of(url: str) -> str:
    try:
        return (normalise_base_url(url).host or "").lower().rstrip(".")
    except ConfigurationError:
        return ""  # Settings says what is wrong with it


def _now_stamp() -> str:
    from datetime import UTC, datetime

    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")


def _mode_error(args: argparse.Namespace) -> str | None:
    """The one-line usage error of the command line's own flag rules, if any. The library's
    rules (which report a mode has, which strategy a report takes) are its own: a call that
    breaks one raises ConfigurationError before any request or file is touched."""
    if args.campaigns is not None and args.strategy is not None:
        return "--strategy is for contact reports (--contacts), not --campaigns"
    if args.campaigns is not None and getattr(args, "plan", False):
        return (
            "--plan is for contact reports (--contacts): it compares the contact path with "
            "the campaign path"
        )
    return None


def _print_plan(plan: Plan) -> None:
    _output().emit("plan", plan.describe() + _quota_today.fit(plan), plan=plan.to_json())


#: How to read the key's ledger before a planned run (set by ``run_fetch``), then what it said.
class _QuotaToday:
    """Today's ledger for a planned run: read once, before the planner runs, so that the plan
    can say whether the chosen path fits in what is left today (a ledger that cannot be read
    says nothing)."""

    def __init__(self) -> None:
        self.read: Callable[[], Awaitable[dict[str, Any]]] | None = None
        self.status: dict[str, Any] | None = None

    async def load(self) -> None:
        read, self.read = self.read, None
        if read is not None:
            with contextlib.suppress(BulkOpensError):
                self.status = await read()

    def fit(self, plan: Plan) -> str:
        """A line on whether the chosen path fits in today's quota, if not in how many days."""
        status = self.status
        cost = plan.contact_cost if plan.path == "contact" else plan.campaign_cost
        if status is None or not status.get("daily_quota") or cost is None:
            return ""
        left = status["available"] or 0
        per_day = max(1, status["daily_quota"] - status["reserve"])
        if cost <= left:
            return f"\n  quota: its >= {cost:,} requests fit in the {left:,} left today"
        days = 1 + math.ceil((cost - left) / per_day)
        return (
            f"\n  quota: its >= {cost:,} requests do not fit in the {left:,} left today "
            f"({per_day:,} a day after --reserve): about {days} days; --wait-for-quota runs "
            "them unattended"
        )


_quota_today = _QuotaToday()


async def _fetch(
    client: Client,
    source: ContactSource | None,
    args: argparse.Namespace,
    around: Callable[[], AbstractAsyncContextManager[object]] | None,
) -> Summary | None:
    """Run the export; the first SIGINT/SIGTERM stops it cleanly, a second one exits at once.

    ``around`` (the demo's simulator) is entered first and left last.
    """
    result: list[Summary] = []
    async with contextlib.AsyncExitStack() as stack:
        if around is not None:
            await stack.enter_async_context(around())
        try:
            await _export(client, source, args, result)
        except BaseExceptionGroup as group:
            raise _first_leaf(group) from None
    return result[0] if result else None


def _first_leaf(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The most telling error of a group: a run-stopping one if there is one."""
    leaves: list[BaseException] = []

    def collect(exc: BaseException) -> None:
        if isinstance(exc, BaseExceptionGroup):
            for inner in exc.exceptions:
                collect(inner)
        else:
            leaves.append(exc)

    collect(group)
    return next((e for e in leaves if isinstance(e, RunStopped)), leaves[0])


async def _export(
    client: Client,
    source: ContactSource | None,
    args: argparse.Namespace,
    result: list[Summary],
) -> None:
    common: dict[str, Any] = {
        "report": args.report,
        "since": args.since,
        "incremental": args.incremental,
        "retry_failed": args.retry_failed,
        "fresh": args.fresh,
    }
    total = source.total if source is not None else None
    async with anyio.create_task_group() as tg:
        with anyio.CancelScope() as export_scope:
            tg.start_soon(_watch_signals, export_scope, args.quiet)
            async with client:
                if args.campaigns is not None:
                    summary = await client.export_campaigns(
                        source if source is not None else SENT,
                        args.out,
                        campaigns_total=total,
                        **common,
                    )
                else:
                    assert source is not None
                    await _quota_today.load()
                    summary = await client.export(
                        source,
                        args.out,
                        contacts_total=total,
                        strategy=args.strategy or "contact",
                        **common,
                    )
                result.append(summary)
        tg.cancel_scope.cancel()


#: The signals that stop a run cleanly (commit, artifacts, exit 130); a second one exits at
#: once. SIGHUP is one of them: a closed terminal or ssh session is a stop, never a lost commit.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


async def _watch_signals(scope: anyio.CancelScope, quiet: bool) -> None:
    with anyio.open_signal_receiver(*STOP_SIGNALS) as signals:
        async for _ in signals:
            if scope.cancel_called:
                os._exit(EXIT_INTERRUPTED)  # second signal: at once; the commit point keeps us safe
            if not quiet:
                print(
                    ("\n" if sys.stderr.isatty() else "")
                    + "bulkopens: stopping; committing what is written (again to quit at once)",
                    file=sys.stderr,
                    flush=True,
                )
            scope.cancel()


def _exit_interrupted(_signum: int, _frame: object) -> None:
    os._exit(EXIT_INTERRUPTED)


def _stopped(exc: RunStopped, redact: Redactor, quiet: bool) -> int:
    summary: Any = getattr(exc, "summary", None)
    if summary is not None and not quiet:
        _output().emit("summary", describe(summary), summary=summary.to_json())
    if isinstance(exc, RequestLimitReached):
        advice = "; run the same command again to go on"
    elif isinstance(exc, QuotaExhausted):
        advice = "; run the same command again after the reset"
    elif isinstance(exc, AuthenticationError):
        advice = "; fix it and run the same command to resume"
    elif isinstance(exc, ServiceUnavailable):
        advice = "; the run stopped: run the same command again to resume"
    else:
        advice = ""  # an OutputError's message says what to do next; a usage error needs none
    return _fail(_exit_code(exc), redact(str(exc)) + advice)


#: Where the fetch command's words go (``--log-format``, ``--log-file``); text on stderr until
#: ``run_fetch`` sets it.
_console: Console | None = None


def _output() -> Console:
    global _console
    if _console is None:
        _console = Console()
    return _console


def _fail(code: int, message: str) -> int:
    # One line, whatever the message holds: a control sequence a server slipped into it
    # cannot clear the screen, write the clipboard or forge a line of its own.
    _output().emit(
        "error", f"bulkopens: error: {printable(message)}", level="error", exit_code=code
    )
    return code
