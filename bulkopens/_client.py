"""The library API: a client with iterators, exports and the planner, for long-lived apps.

One client is one budget: every call made through it (iterators, exports, plans, at once)
shares one :class:`~bulkopens._ratelimit.Gate`: ``concurrency`` requests in flight and
``rate`` starts a second. An iterator runs in a task of its own, started at its first
``anext`` and stopped when it is closed, exhausted, or dropped (garbage-collected); the
client keeps no task group, so it can be entered in one task and closed in another.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import os
import time
import weakref
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Sized
from datetime import date, datetime
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Generic, Literal, Self, TypeVar, cast, overload

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from bulkopens._api import api_for
from bulkopens._artifacts import prepare_outputs, write_artifacts
from bulkopens._budget import Budget, SharedPacer
from bulkopens._campaigns import Plan, sent_campaigns
from bulkopens._check import Check, probe
from bulkopens._config import (
    DEFAULT_MAX_PAGE_BYTES,
    DEFAULT_MAX_PAGES,
    DEFAULT_RATE,
    DEFAULT_REQUEST_TIMEOUT,
    Settings,
    budget_key,
)
from bulkopens._disk import open_new, write_error
from bulkopens._exceptions import (
    BulkOpensError,
    ConfigurationError,
    RunStopped,
)
from bulkopens._files import RecordFiles
from bulkopens._jobs import Job, PlanHook, open_run, plan_job, status_of, summarise
from bulkopens._pipeline import (
    IdBatches,
    IdSource,
    ProgressHook,
    RequestHook,
    build_fetcher,
)
from bulkopens._ratelimit import Gate
from bulkopens._state import AsyncStore, Store
from bulkopens._stats import RequestMetrics, Stats, Summary
from bulkopens._types import (
    SENT,
    ActivityRecord,
    BounceRecord,
    CampaignActivitySummary,
    CampaignReportName,
    CampaignSummary,
    ClickRecord,
    ContactSummary,
    ForwardRecord,
    Ids,
    OpenRecord,
    Record,
    ReportName,
    RunStatus,
    SendRecord,
    Strategy,
    UnsubscribeRecord,
)
from bulkopens._wire import HttpPool, Wire
from bulkopens._writer import Failure, FileSink, StreamSink

if TYPE_CHECKING:
    import aiohttp

    from bulkopens._tokens import TokenProvider

# The longest a token renewal may hold the fleet's lock (its request and save are shielded
# for up to bulkopens._tokens.SPEND_SECONDS): a process that dies holding it frees it then.
RENEWAL_HOLD = 150.0
R = TypeVar("R", covariant=True)
Since = str | datetime | date | None
DEFAULT_BUFFER = 5000  # records: 10 pages of 500 ahead of the reader


class Client:
    """Fetches Constant Contact tracking reports for many contacts, as fast as the limit allows.

    Use it as ``async with Client(api_key, token) as client:`` (v2), or
    ``Client(api="v3", tokens=TokenFile(...))`` / ``Client(token=..., api="v3")`` (v3: Bearer
    only; a token provider renews the access token, once for all requests, when the API
    refuses it), or keep one for the life of an app and ``await client.aclose()`` when it
    ends, from any task. ``base_url`` defaults to the API's own. Every call made through one
    client shares one limit: at most ``concurrency`` requests in flight and ``rate`` request
    starts a second, however many calls run at once; a request starts only when a connection
    is free for it, so starts never bunch up behind a busy pool.

    Pass your own ``session`` to use its proxies or TLS settings; it is not closed, and the
    client keeps no more requests in flight than its connector allows (``limit`` and
    ``limit_per_host``). Without one, requests go on bulkopens' own lean HTTP/1.1 pool
    (:class:`bulkopens._wire.HttpPool`: keep-alive, the system's trust store, no proxy).
    Do not trace a session: a trace sees the v2 ``api_key`` in every URL; use
    ``on_request`` for request metrics instead.

    ``budget`` shares the API key's limits with every other client and process on the key:
    by default (None, ``"local"``) with every process of the user on this machine; a
    ``"redis://HOST:PORT/DB"`` URL with a fleet; or a :class:`~bulkopens.Budget` object, which
    also sets the daily ledger's quota (10,000 by default: pass ``Budget(daily_quota=250_000)``
    for a partner key), a reserve, a request cap and waiting for the quota. ``"process"``
    paces this client alone and keeps no ledger.
    """

    # fsync the record files before every commit: what makes a kill -9 or a power cut lose
    # nothing. Not a parameter (turning it off breaks the exactly-once promise); the
    # benchmarks measure its cost by setting it on an instance.
    _durable = True

    def __init__(
        self,
        api_key: str = "",
        token: str = "",
        *,
        api: Literal["v2", "v3"] = "v2",
        tokens: TokenProvider | None = None,
        client_id: str = "",
        base_url: str = "",
        rate: float = DEFAULT_RATE,
        concurrency: int | None = None,
        page_size: int = 500,
        max_retries: int = 6,
        connect_timeout: float = 10.0,
        read_timeout: float = 60.0,
        request_timeout: float = DEFAULT_REQUEST_TIMEOUT,
        max_page_bytes: int = DEFAULT_MAX_PAGE_BYTES,
        max_pages: int = DEFAULT_MAX_PAGES,
        session: aiohttp.ClientSession | None = None,
        on_progress: ProgressHook | None = None,
        on_plan: PlanHook | None = None,
        on_request: RequestHook | None = None,
        budget: Budget | str | None = None,
    ) -> None:
        self._settings = Settings(
            api_key=api_key,
            token=token,
            api=api,
            tokens=tokens,
            client_id=client_id,
            base_url=base_url,
            rate=rate,
            concurrency=concurrency,
            page_size=page_size,
            max_retries=max_retries,
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            request_timeout=request_timeout,
            max_page_bytes=max_page_bytes,
            max_pages=max_pages,
        )
        self._wire: Wire | None = None
        if session is not None:
            from bulkopens._aiowire import SessionWire  # aiohttp: the caller has it already

            self._wire = SessionWire(session)
        self._on_progress = on_progress
        self._on_plan = on_plan
        self._budget = budget if isinstance(budget, Budget) else Budget(budget)
        self._on_request = on_request if self._budget.store is None else self._tell_budget
        self._their_on_request = on_request
        self._gate: Gate | None = None
        self._streams: set[_Fetching] = set()  # the running iterators
        self._closed = False

    @property
    def settings(self) -> Settings:
        return self._settings

    def __repr__(self) -> str:
        s = self._settings
        state = "closed" if self._closed else "open" if self._gate else "not started"
        gate = self._gate
        flight = f" in_flight={gate.in_flight}/{gate.slots}" if gate else ""
        return (
            f"<bulkopens.Client {state} base_url={s.base_url!r} rate={s.rate:g}/s "
            f"concurrency={gate.slots if gate else s.workers}{flight} "
            f"streams={len(self._streams)}>"
        )

    async def __aenter__(self) -> Self:
        self._start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Stop the iterators still running, wait for them to let go, and close the client's
        own connections (a caller's session is left open). Any task may call it, any number
        of times; the client cannot be used afterwards."""
        self._closed = True
        streams = list(self._streams)
        for stream in streams:
            stream.stop()
        with anyio.CancelScope(shield=True):
            for stream in streams:
                await stream.wait()
            wire, self._wire = self._wire, None
            if wire is not None:
                await wire.close()  # a caller's own session is left open
            gate, self._gate = self._gate, None
            if gate is not None:
                await self._budget.release()
            # A token provider's own HTTP session (for renewals); a TokenFile opens a new one
            # if it is used again.
            closer = getattr(self._settings.tokens, "aclose", None)
            if closer is not None:
                await closer()

    def _start(self) -> tuple[Wire, Gate]:
        """The wire and the gate, made at first use inside the running loop."""
        if self._closed:
            raise RuntimeError("this bulkopens.Client is closed")
        if self._gate is None or self._wire is None:
            s = self._settings
            if self._wire is None:
                self._wire = HttpPool(s.workers)  # keep-alive; timeouts are per request
            if self._gate is None:
                pacer = self._budget.pacer(_key_of(s), s.base_url, s.rate)
                self._gate = Gate(pacer, max(1, min(s.workers, self._wire.limit)))
                # A fleet on one Redis budget renews the key's token one process at a time.
                if s.tokens is not None and hasattr(s.tokens, "shared_lock"):
                    lock = self._budget.shared_lock(_key_of(s), s.base_url, RENEWAL_HOLD)
                    if lock is not None:
                        s.tokens.shared_lock = lock
        return self._wire, self._gate

    def _tell_budget(self, metrics: RequestMetrics) -> None:
        """The request hook in front of the caller's: the API's own "daily quota spent"
        answer marks the day spent in the shared ledger."""
        if metrics.error == "QuotaExhausted" and self._gate is not None:
            pacer = self._gate.pacer
            if isinstance(pacer, SharedPacer):
                pacer.refused_for_today()
        if self._their_on_request is not None:
            self._their_on_request(metrics)

    def _track(self, stream: _Fetching, task: asyncio.Task[None]) -> None:
        self._streams.add(stream)
        task.add_done_callback(lambda _: self._streams.discard(stream))

    @overload
    def records(
        self,
        contact_ids: Ids,
        *,
        report: Literal["opens"] = ...,
        since: Since = ...,
        buffer: int = ...,
        strategy: Strategy = ...,
    ) -> RecordStream[OpenRecord]: ...
    @overload
    def records(
        self,
        contact_ids: Ids,
        *,
        report: Literal["clicks"],
        since: Since = ...,
        buffer: int = ...,
        strategy: Strategy = ...,
    ) -> RecordStream[ClickRecord]: ...
    @overload
    def records(
        self,
        contact_ids: Ids,
        *,
        report: Literal["forwards"],
        since: Since = ...,
        buffer: int = ...,
        strategy: Strategy = ...,
    ) -> RecordStream[ForwardRecord]: ...
    @overload
    def records(
        self,
        contact_ids: Ids,
        *,
        report: Literal["bounces"],
        since: Since = ...,
        buffer: int = ...,
        strategy: Strategy = ...,
    ) -> RecordStream[BounceRecord]: ...
    @overload
    def records(
        self,
        contact_ids: Ids,
        *,
        report: Literal["unsubscribes"],
        since: Since = ...,
        buffer: int = ...,
        strategy: Strategy = ...,
    ) -> RecordStream[UnsubscribeRecord]: ...
    @overload
    def records(
        self,
        contact_ids: Ids,
        *,
        report: Literal["sends"],
        since: Since = ...,
        buffer: int = ...,
        strategy: Strategy = ...,
    ) -> RecordStream[SendRecord]: ...
    @overload
    def records(
        self,
        contact_ids: Ids,
        *,
        report: Literal["all"],
        since: Since = ...,
        buffer: int = ...,
        strategy: Strategy = ...,
    ) -> RecordStream[ActivityRecord]: ...
    @overload
    def records(
        self,
        contact_ids: Ids,
        *,
        report: Literal["summary"],
        since: Since = ...,
        buffer: int = ...,
        strategy: Strategy = ...,
    ) -> RecordStream[ContactSummary]: ...
    @overload
    def records(
        self,
        contact_ids: Ids,
        *,
        report: Literal["summary-by-campaign"],
        since: Since = ...,
        buffer: int = ...,
        strategy: Strategy = ...,
    ) -> RecordStream[CampaignActivitySummary]: ...
    @overload
    def records(
        self,
        contact_ids: Ids,
        *,
        report: ReportName,
        since: Since = ...,
        buffer: int = ...,
        strategy: Strategy = ...,
    ) -> RecordStream[Record]: ...
    def records(
        self,
        contact_ids: Ids,
        *,
        report: ReportName = "opens",
        since: Since = None,
        buffer: int = DEFAULT_BUFFER,
        strategy: Strategy = "contact",
    ) -> RecordStream[Any]:
        """Every record of ``report`` for ``contact_ids``, as an async iterator of dicts.

        Use it as ``async with client.records(ids) as stream: async for record in stream:``
        so that leaving the block early stops the fetching at once (a stream that is dropped
        unclosed stops too, when it is garbage-collected). Nothing is fetched before the
        first record is asked for.

        ``contact_ids``: any iterable or async iterable of ids (``str`` or ``int``), read
        lazily; not a bare ``str``. Duplicates are fetched once; items that are not ids are
        never sent and are reported in ``stream.failures``, as are contacts that failed (404,
        retries exhausted). ``since``: an ISO-8601 string, an aware ``datetime`` or a ``date``
        (midnight UTC). A run-stopping error (auth, quota, configuration) or an exception of
        your own id source is raised from the iteration, as it is.

        ``buffer`` bounds the read-ahead: at most ``buffer // page_size`` pages (at least one)
        are being requested, or wait for you, beyond the page you are reading; so never more
        than ``buffer`` records, nor that many pages' requests, ahead of you.

        ``strategy`` ``auto`` or ``campaign`` reads the ids whole first and may fetch the
        sent campaigns' reports instead, keeping these contacts' records (see :meth:`plan`).
        ``report`` ``summary`` or ``summary-by-campaign`` yields the summary objects (one
        request per contact; no ``since``, no ``campaign`` strategy).
        """
        settings = self._with(report=report, since=since)
        job = Job("contact", _id_source(contact_ids, "contact_ids"), strategy)
        return RecordStream(self, settings, job, buffer, _size(contact_ids))

    @overload
    def campaign_records(
        self,
        campaign_ids: Ids,
        *,
        report: Literal["opens"] = ...,
        since: Since = ...,
        buffer: int = ...,
    ) -> RecordStream[OpenRecord]: ...
    @overload
    def campaign_records(
        self,
        campaign_ids: Ids,
        *,
        report: Literal["clicks"],
        since: Since = ...,
        buffer: int = ...,
    ) -> RecordStream[ClickRecord]: ...
    @overload
    def campaign_records(
        self,
        campaign_ids: Ids,
        *,
        report: Literal["forwards"],
        since: Since = ...,
        buffer: int = ...,
    ) -> RecordStream[ForwardRecord]: ...
    @overload
    def campaign_records(
        self,
        campaign_ids: Ids,
        *,
        report: Literal["bounces"],
        since: Since = ...,
        buffer: int = ...,
    ) -> RecordStream[BounceRecord]: ...
    @overload
    def campaign_records(
        self,
        campaign_ids: Ids,
        *,
        report: Literal["unsubscribes"],
        since: Since = ...,
        buffer: int = ...,
    ) -> RecordStream[UnsubscribeRecord]: ...
    @overload
    def campaign_records(
        self,
        campaign_ids: Ids,
        *,
        report: Literal["sends"],
        since: Since = ...,
        buffer: int = ...,
    ) -> RecordStream[SendRecord]: ...
    @overload
    def campaign_records(
        self,
        campaign_ids: Ids,
        *,
        report: Literal["summary"],
        since: Since = ...,
        buffer: int = ...,
    ) -> RecordStream[CampaignSummary]: ...
    @overload
    def campaign_records(
        self,
        campaign_ids: Ids,
        *,
        report: CampaignReportName,
        since: Since = ...,
        buffer: int = ...,
    ) -> RecordStream[Record]: ...
    def campaign_records(
        self,
        campaign_ids: Ids,
        *,
        report: CampaignReportName = "opens",
        since: Since = None,
        buffer: int = DEFAULT_BUFFER,
    ) -> RecordStream[Any]:
        """Every record of ``report`` for campaigns, as an async iterator of dicts.

        ``campaign_ids`` are v2 campaign ids, or ``bulkopens.SENT`` for every campaign the
        account has sent. Otherwise as :meth:`records`; failures are per campaign.
        """
        settings = self._with(report=report, since=since)
        ids = campaign_ids if campaign_ids == SENT else _id_source(campaign_ids, "campaign_ids")
        return RecordStream(self, settings, Job("campaign", ids), buffer, _size(campaign_ids))

    def _with(self, *, report: str, since: Since = None, **more: Any) -> Settings:
        """This client's settings for one call."""
        return dataclasses.replace(self._settings, report=report, since=_since(since), **more)

    async def export(
        self,
        contact_ids: Ids,
        out_dir: str | os.PathLike[str],
        *,
        report: ReportName = "opens",
        since: Since = None,
        incremental: bool = False,
        retry_failed: bool = False,
        fresh: bool = False,
        contacts_total: int | None = None,
        max_file_bytes: int | None = None,
        strategy: Strategy = "contact",
    ) -> Summary:
        """Write every record of ``report`` for ``contact_ids`` to NDJSON files in ``out_dir``.

        Exactly once, across crashes: run it again on the same ``out_dir`` and it resumes.
        Returns the summary; raises QuotaExhausted, AuthenticationError or ConfigurationError
        (each with ``.summary``) after committing what was fetched. Cancellation commits too.

        ``strategy``: ``contact`` (the default) asks each contact; ``campaign`` asks each
        sent campaign and keeps these contacts' records; ``auto`` plans and takes the cheaper
        (see :meth:`plan`). The path chosen first is kept by every later attempt and
        incremental run on ``out_dir``, and so is the set of contacts. ``max_file_bytes``:
        a record file is closed and the next one started past this size (default 256 MiB).
        """
        job = Job("contact", _id_source(contact_ids, "contact_ids"), strategy)
        return await self._export(
            job,
            out_dir,
            report=report,
            since=since,
            incremental=incremental,
            retry_failed=retry_failed,
            fresh=fresh,
            total=contacts_total if contacts_total is not None else _size(contact_ids),
            max_file_bytes=max_file_bytes,
        )

    async def export_campaigns(
        self,
        campaign_ids: Ids,
        out_dir: str | os.PathLike[str],
        *,
        report: CampaignReportName = "opens",
        since: Since = None,
        incremental: bool = False,
        retry_failed: bool = False,
        fresh: bool = False,
        campaigns_total: int | None = None,
        max_file_bytes: int | None = None,
    ) -> Summary:
        """Write every record of ``report`` for campaigns to NDJSON files in ``out_dir``.

        ``campaign_ids`` are v2 campaign ids (any iterable, as for :meth:`export`), or
        ``bulkopens.SENT`` for every campaign the account has sent (listed on each attempt).
        The same files, guarantees and resume as :meth:`export`; ``errors.ndjson`` is keyed
        by ``campaign_id``. ``all`` and ``summary-by-campaign`` are not campaign reports;
        ``summary`` writes one line per campaign, with its ``campaign_id``.
        """
        ids = campaign_ids if campaign_ids == SENT else _id_source(campaign_ids, "campaign_ids")
        return await self._export(
            Job("campaign", ids),
            out_dir,
            report=report,
            since=since,
            incremental=incremental,
            retry_failed=retry_failed,
            fresh=fresh,
            total=campaigns_total if campaigns_total is not None else _size(campaign_ids),
            max_file_bytes=max_file_bytes,
        )

    async def plan(
        self, contact_ids: Ids, *, report: ReportName = "opens", strategy: Strategy = "auto"
    ) -> Plan:
        """Estimate the requests of the contact and the campaign path for ``contact_ids`` and
        pick the cheaper; fetches no record. Costs the campaign list and, when the choice is
        not obvious from it, one summary per sent campaign (``plan.spent`` requests)."""
        settings = self._with(report=report)
        job = Job("contact", _id_source(contact_ids, "contact_ids"), strategy)
        job.check(report, settings.api)
        wire, gate = self._start()
        run = await open_run(settings, job, wire, gate, on_request=self._on_request)
        assert run.contacts is not None  # a contact job with a strategy reads its ids whole
        return await plan_job(job, settings, run.fetcher, run.stats, run.contacts)

    async def check(self) -> Check:
        """One request that proves the host, the API key and the access token (the first
        page of the sent-campaign list, one campaign long). Returns what it found; raises
        AuthenticationError, ServiceUnavailable (not the API, or unreachable), QuotaExhausted
        or ConfigurationError, as a run would."""
        wire, gate = self._start()
        stats = Stats()
        fetcher = build_fetcher(self._settings, wire, gate, stats, self._on_request)
        started = time.monotonic()
        api = api_for(self._settings.api)
        sent = await probe(fetcher, self._settings.base, api)
        return Check(
            base_url=self._settings.base_url.rstrip("/"),
            api=api.name,
            has_sent_campaigns=sent,
            requests=stats.requests,
            seconds=time.monotonic() - started,
        )

    async def sent_campaigns(self) -> list[str]:
        """The ids of every campaign the account has sent, in the list's order. On v3, the
        ids of their primary and resend activities: what the campaign reports are asked of."""
        wire, gate = self._start()
        s = self._settings
        fetcher = build_fetcher(s, wire, gate, Stats(), self._on_request)
        listed = await sent_campaigns(fetcher, s.base, api_for(s.api), s.workers)
        return listed.items

    async def _export(
        self,
        job: Job,
        out_dir: str | os.PathLike[str],
        *,
        report: str,
        since: Since,
        incremental: bool,
        retry_failed: bool,
        fresh: bool,
        total: int | None,
        max_file_bytes: int | None,
    ) -> Summary:
        settings = self._with(
            report=report,
            since=since,
            durable=self._durable,
            max_file_bytes=max_file_bytes or self._settings.max_file_bytes,
        )
        job.check(settings.report, settings.api)
        wire, gate = self._start()
        out = Path(out_dir)
        await anyio.to_thread.run_sync(_prepare_out, out)
        run = await open_run(
            settings,
            job,
            wire,
            gate,
            stats=Stats(contacts_total=total),
            on_request=self._on_request,
            on_plan=self._on_plan,
            on_progress=self._on_progress,
        )
        fingerprint = {
            "report": settings.report,
            "since": settings.since,
            "base_url": settings.base_url,
            **job.fingerprint(),
        }
        if settings.api != "v2":  # absent for v2, so the states of earlier versions stay valid
            fingerprint["api"] = settings.api
        store = AsyncStore(
            await anyio.to_thread.run_sync(
                lambda: Store.open(
                    out,
                    fingerprint=fingerprint,
                    incremental=incremental,
                    since=settings.since,
                    durable=settings.durable,
                    fresh=fresh,
                    text_ids=api_for(settings.api).text_ids,
                )
            )
        )
        status: RunStatus = "interrupted"
        error: RunStopped | None = None
        id_form = api_for(settings.api).id_form
        try:
            files = RecordFiles(out, settings.report, max_bytes=settings.max_file_bytes)
            await store.call(prepare_outputs, out, store.sync, files, fresh)
            sink = FileSink(
                store,
                files,
                run.stats,
                commit_records=settings.commit_records,
                commit_seconds=settings.commit_seconds,
                durable=settings.durable,
            )
            try:
                await run.drive(sink, store, retry_failed=retry_failed)
                status = "complete"
            except RunStopped as exc:
                error, status = exc, status_of(exc)
            with anyio.CancelScope(shield=True):
                summary = await store.call(
                    _finish, out, store.sync, run.summary(status, error), id_form
                )
        except anyio.get_cancelled_exc_class():
            with anyio.CancelScope(shield=True):
                await store.call(_finish, out, store.sync, run.summary("interrupted"), id_form)
            raise
        finally:
            with anyio.CancelScope(shield=True):
                await store.call(store.sync.close)
        if error is not None:
            error.summary = summary
            raise error
        return summary


def _prepare_out(out: Path) -> None:
    """Make ``out`` and prove it writable with an empty probe file, made new (``O_EXCL``)
    and never through a link: a link planted at the probe's name is refused, its target
    untouched. A full disk is an OutputError, anything else a ConfigurationError."""
    probe = out / ".bulkopens-write-test"
    try:
        out.mkdir(parents=True, exist_ok=True)
        try:
            fd = open_new(probe, 0o600)
        except FileExistsError:
            if os.lstat(probe).st_size:  # not the empty probe a killed run left behind
                raise ConfigurationError(f"{probe} is in the way; move it elsewhere") from None
            probe.unlink()
            fd = open_new(probe, 0o600)
        os.close(fd)
        probe.unlink()
    except OSError as exc:
        error = write_error(exc, f"to --out {out}")
        if isinstance(error, ConfigurationError):
            error = ConfigurationError(f"cannot write to --out {out}: {exc.strerror or exc}")
        raise error from None


def _finish(out: Path, store: Store, summary: Summary, id_form: str) -> Summary:
    """Close the attempt in the store and write the artifacts; returns the full summary."""
    totals = store.counts()
    status = summary.status
    complete = status == "complete" and totals["pending"] == 0 and totals["failed"] == 0
    if status == "complete" and not complete:
        status = "incomplete"
    store.finish(complete)
    this_run = [r for r in store.runs() if r["run"] == store.run]
    files = [f["name"] for r in this_run for f in r["files"]]
    summary = dataclasses.replace(
        summary,
        status=status,
        out_dir=str(out),
        run=store.run,
        attempt=store.attempt,
        files=files,
        totals=totals,
    )
    write_artifacts(out, store, summary, id_form)
    return summary


def _id_source(ids: Ids, name: str) -> IdSource:
    """``ids`` as the engine reads them, lazily, with int ids as strings. TypeError for a bare
    ``str`` or ``bytes`` (it would be read as one id per character) and for what cannot be
    iterated at all."""
    if isinstance(ids, str | bytes | bytearray):
        raise TypeError(
            f"{name} must be an iterable of ids, not a single {type(ids).__name__}; "
            f"wrap one id in a list: [{ids!r}]"[:200]
        )
    if not isinstance(ids, Iterable | AsyncIterable | IdBatches):
        raise TypeError(f"{name} must be an iterable of ids, not {type(ids).__name__}")
    if isinstance(ids, IdBatches):
        return cast(IdSource, ids)  # the CLI's reader: strings already
    if isinstance(ids, AsyncIterable):
        return _async_as_str(ids)
    return map(_as_str, ids)


def _size(ids: object) -> int | None:
    """How many ids a sized collection holds (a list, a set, ...): the progress total."""
    if isinstance(ids, Sized) and not isinstance(ids, str | bytes | bytearray):
        return len(ids)
    return None


def _since(since: Since) -> str | None:
    """``since`` as the ISO-8601 text Settings reads: an aware datetime, or a date (midnight
    UTC); a naive datetime names no instant and is refused."""
    if isinstance(since, datetime):
        if since.utcoffset() is None:
            raise ConfigurationError(
                "since must be a timezone-aware datetime (a naive one names no instant); "
                "use datetime(..., tzinfo=datetime.UTC)"
            )
        return since.isoformat()
    if isinstance(since, date):
        return since.isoformat()
    return since


async def _async_as_str(ids: AsyncIterable[str | int]) -> AsyncIterator[str]:
    async for raw in ids:
        yield _as_str(raw)


def _as_str(raw: Any) -> Any:
    return str(raw) if isinstance(raw, int) and not isinstance(raw, bool) else raw


def _key_of(s: Settings) -> str:
    """The key whose limits this client shares (see :func:`bulkopens._config.budget_key`)."""
    return budget_key(s.api, s.api_key, s.token, s.client_id, s.tokens)


class _Fetching:
    """The fetching behind one RecordStream, kept apart from it: the stream's task holds this,
    never the stream, so a stream that is dropped can be collected, and its finalizer stops
    the fetching."""

    def __init__(self, settings: Settings, job: Job, buffer: int, total: int | None) -> None:
        self.settings = settings
        self.job = job
        self.pages = max(1, buffer // settings.page_size)  # the read-ahead bound, in pages
        self.stats = Stats(contacts_total=total)
        if job.mode == "campaign":
            self.stats.unit = "campaigns"
        self.failures: list[Failure] = []
        self.error: BaseException | None = None
        self.summary: Summary | None = None
        self.plan: Plan | None = None
        self.status: RunStatus | Literal["not started", "running"] = "not started"
        self.task: asyncio.Task[None] | None = None
        self.credits = anyio.Semaphore(self.pages)
        self.tx: MemoryObjectSendStream[list[dict[str, Any]]] | None = None
        self.rx: MemoryObjectReceiveStream[list[dict[str, Any]]] | None = None

    def start(self, client: Client) -> MemoryObjectReceiveStream[list[dict[str, Any]]]:
        wire, gate = client._start()
        self.tx, self.rx = anyio.create_memory_object_stream[list[dict[str, Any]]](self.pages)
        sink = StreamSink(self.tx, self.stats, self.credits)
        self.failures = sink.failures
        self.status = "running"
        self.task = asyncio.get_running_loop().create_task(
            self._main(wire, gate, sink, client._on_progress, client._on_request),
            name=f"bulkopens {self.settings.report} stream",
        )
        client._track(self, self.task)
        return self.rx

    def stop(self) -> None:
        """Stop fetching (idempotent): close both ends of the stream and cancel the task."""
        for end in (self.tx, self.rx):
            if end is not None:
                end.close()
        if self.task is not None:
            with contextlib.suppress(RuntimeError):  # its loop is closed: it runs no more
                self.task.cancel()

    async def wait(self) -> None:
        """Until the task has let go of everything (it never raises)."""
        if self.task is not None and not self.task.done():
            with anyio.CancelScope(shield=True):
                await asyncio.wait({self.task})

    async def _main(
        self,
        wire: Wire,
        gate: Gate,
        sink: StreamSink,
        on_progress: ProgressHook | None,
        on_request: RequestHook | None,
    ) -> None:
        # Never raises (but CancelledError): its outcome is read from this object.
        settings, job, stats = self.settings, self.job, self.stats
        status: RunStatus = "interrupted"
        assert self.tx is not None
        try:
            async with self.tx:
                run = await open_run(
                    settings,
                    job,
                    wire,
                    gate,
                    stats=stats,
                    on_request=on_request,
                    on_progress=on_progress,
                )
                try:
                    await run.drive(
                        sink, None, workers=min(gate.slots, self.pages), credits=self.credits
                    )
                finally:
                    self.plan = run.plan
                status = "incomplete" if self.failures else "complete"
        except RunStopped as exc:
            self.error = exc
            status = status_of(exc)
        except Exception as exc:  # the caller's own (an id source), or a bug: raised to them
            self.error = exc
            status = "failed"
        finally:
            error = self.error if isinstance(self.error, BulkOpensError) else None
            self.summary = summarise(settings, job, stats, self.plan, status, error)
            if isinstance(self.error, RunStopped):
                self.error.summary = self.summary
            self.status = status


class RecordStream(Generic[R]):
    """The async iterator returned by :meth:`Client.records` and :meth:`Client.campaign_records`;
    also an async context manager.

    Nothing is fetched before the first record is asked for. Leaving the ``async with`` block,
    calling :meth:`aclose`, or dropping the stream (once it is garbage-collected) stops the
    fetching. ``failures`` lists what could not be fetched (and the items that are not ids) as
    it goes; ``summary`` holds the counts once the stream has ended; ``plan`` is the planner's
    choice once it is made (``strategy`` auto or campaign).
    """

    def __init__(
        self, client: Client, settings: Settings, job: Job, buffer: int, total: int | None
    ) -> None:
        job.check(settings.report, settings.api)
        if buffer < 1:
            raise ValueError("buffer must be at least 1 (records)")
        self._client = client
        self._run = _Fetching(settings, job, buffer, total)
        self._page: collections.deque[Any] = collections.deque()
        self._rx: MemoryObjectReceiveStream[list[dict[str, Any]]] | None = None
        self._finalizer: weakref.finalize[Any, Any] | None = None

    @property
    def failures(self) -> list[Failure]:
        return self._run.failures

    @property
    def summary(self) -> Summary | None:
        return self._run.summary

    @property
    def plan(self) -> Plan | None:
        return self._run.plan

    def __repr__(self) -> str:
        run = self._run
        what = "campaigns" if run.job.mode == "campaign" else "contacts"
        return (
            f"<bulkopens.RecordStream {run.settings.report} of {what}: {run.status}, "
            f"{run.stats.records:,} records, {len(run.failures)} failures>"
        )

    def __aiter__(self) -> Self:
        return self

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Stop fetching now and wait until the stream's task has let go of everything."""
        self._run.stop()
        if self._finalizer is not None:
            self._finalizer.detach()
        await self._run.wait()

    async def __anext__(self) -> R:
        page = self._page
        if page:
            return cast(R, page.popleft())
        rx = self._rx
        if rx is None:
            rx = self._rx = self._run.start(self._client)
            loop = asyncio.get_running_loop()
            self._finalizer = weakref.finalize(self, _abandon, loop, self._run)
        try:
            records = await rx.receive()
        except (anyio.EndOfStream, anyio.ClosedResourceError):
            rx.close()
            await self._run.wait()
            if self._run.error is not None:
                raise self._run.error from None
            raise StopAsyncIteration from None
        self._run.credits.release()  # the page is ours now: its credit goes back
        page.extend(records)
        return cast(R, page.popleft())


def _abandon(loop: asyncio.AbstractEventLoop, run: _Fetching) -> None:
    """A stream was garbage-collected unclosed: stop its fetching, on its loop (the collector
    may run in any thread)."""
    try:
        loop.call_soon_threadsafe(run.stop)
    except RuntimeError:  # the loop is closed: nothing runs any more, close the ends here
        run.stop()
