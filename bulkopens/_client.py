"""The library API: an async context-managed client with iterators, exports and the planner."""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import os
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import aiohttp
import anyio
from anyio.abc import TaskGroup

from bulkopens._artifacts import Summary, prepare_outputs, write_artifacts
from bulkopens._campaigns import Plan, Strategy, read_contacts, sent_campaigns
from bulkopens._config import DEFAULT_BASE_URL, DEFAULT_RATE, Settings
from bulkopens._exceptions import (
    AuthenticationError,
    BulkOpensError,
    ConfigurationError,
    OutputError,
    QuotaExhausted,
    RunStopped,
)
from bulkopens._disk import open_new, write_error
from bulkopens._files import RecordFiles
from bulkopens._http import new_session
from bulkopens._jobs import Job, PlanHook, feed, plan_job
from bulkopens._pipeline import IdSource, ProgressHook, RunOptions, build_fetcher, run_pipeline
from bulkopens._ratelimit import Pacer
from bulkopens._state import AsyncStore, Store
from bulkopens._stats import Stats
from bulkopens._writer import FileSink, StreamSink

_STATUS_BY_ERROR: list[tuple[type[RunStopped], str]] = [
    (QuotaExhausted, "quota_exhausted"),
    (AuthenticationError, "auth_failed"),
    (ConfigurationError, "config_error"),
    (OutputError, "output_error"),
]


class Client:
    """Fetches Constant Contact tracking reports for many contacts, as fast as the limit allows.

    Use it as ``async with Client(api_key, token) as client:``. One pacer is shared by every
    call made through the same client, so concurrent calls never exceed ``rate`` together.
    Pass your own ``session`` to use its proxies, tracing or TLS settings; it is not closed.
    """

    def __init__(
        self,
        api_key: str,
        token: str,
        *,
        base_url: str = DEFAULT_BASE_URL,
        rate: float = DEFAULT_RATE,
        concurrency: int | None = None,
        page_size: int = 500,
        max_retries: int = 6,
        connect_timeout: float = 10.0,
        read_timeout: float = 60.0,
        session: aiohttp.ClientSession | None = None,
        on_progress: ProgressHook | None = None,
        on_plan: PlanHook | None = None,
    ) -> None:
        self._settings = Settings(
            api_key=api_key,
            token=token,
            base_url=base_url,
            rate=rate,
            concurrency=concurrency,
            page_size=page_size,
            max_retries=max_retries,
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
        )
        self._own_session = session is None
        self._session = session
        self._on_progress = on_progress
        self._on_plan = on_plan
        self._pacer: Pacer | None = None
        self._tg: TaskGroup | None = None

    @property
    def settings(self) -> Settings:
        return self._settings

    async def __aenter__(self) -> Self:
        s = self._settings
        self._pacer = Pacer(s.rate)  # made here, inside the running loop, never at import
        if self._session is None:
            self._session = new_session(s.workers, s.connect_timeout, s.read_timeout)
        self._tg = anyio.create_task_group()
        await self._tg.__aenter__()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        tg, self._tg = self._tg, None
        try:
            if tg is not None:
                # Stop the iterators the caller left open. Their tasks never raise, so the group
                # exits cleanly, and the caller's own exception propagates unwrapped.
                tg.cancel_scope.cancel()
                await tg.__aexit__(None, None, None)
        finally:
            if self._own_session and self._session is not None:
                with anyio.CancelScope(shield=True):
                    await self._session.close()
                self._session = None
        return None

    def _started(self) -> tuple[aiohttp.ClientSession, Pacer, TaskGroup]:
        if self._session is None or self._pacer is None or self._tg is None:
            raise RuntimeError("use the client as `async with Client(...) as client:`")
        return self._session, self._pacer, self._tg

    def records(
        self,
        contact_ids: IdSource,
        *,
        report: str = "opens",
        since: str | None = None,
        buffer: int = 1000,
        strategy: Strategy = "contact",
    ) -> RecordStream:
        """Every record of ``report`` for ``contact_ids``, as an async iterator of dicts.

        Fetching runs ahead of the consumer by at most ``buffer`` records: a slow consumer
        slows the fetching. Per-contact failures are collected in ``stream.failures``; a
        run-stopping error (auth, quota, configuration) is raised from the iteration.
        Duplicated ids are fetched once, invalid ones are reported and never sent.
        ``strategy`` ``auto`` or ``campaign`` reads the ids whole first and may fetch the
        sent campaigns' reports instead, keeping these contacts' records (see :meth:`plan`).
        ``report`` ``summary`` or ``summary-by-campaign`` yields the summary objects (one
        request per contact; no ``since``, no ``campaign`` strategy).
        """
        settings = dataclasses.replace(self._settings, report=report, since=since)
        return RecordStream(self, settings, Job("contact", contact_ids, strategy), buffer)

    def campaign_records(
        self,
        campaign_ids: IdSource,
        *,
        report: str = "opens",
        since: str | None = None,
        buffer: int = 1000,
    ) -> RecordStream:
        """Every record of ``report`` for campaigns, as an async iterator of dicts.

        ``campaign_ids`` are v2 campaign ids, or ``bulkopens.SENT`` for every campaign the
        account has sent. Otherwise as :meth:`records`; failures are per campaign.
        """
        settings = dataclasses.replace(self._settings, report=report, since=since)
        return RecordStream(self, settings, Job("campaign", campaign_ids), buffer)

    async def export(
        self,
        contact_ids: IdSource,
        out_dir: str | os.PathLike[str],
        *,
        report: str = "opens",
        since: str | None = None,
        incremental: bool = False,
        retry_failed: bool = False,
        fresh: bool = False,
        contacts_total: int | None = None,
        max_file_bytes: int | None = None,
        durable: bool = True,
        strategy: Strategy = "contact",
    ) -> Summary:
        """Write every record of ``report`` for ``contact_ids`` to NDJSON files in ``out_dir``.

        Exactly once, across crashes: run it again on the same ``out_dir`` and it resumes.
        Returns the summary; raises QuotaExhausted, AuthenticationError or ConfigurationError
        (each with ``.summary``) after committing what was fetched. Cancellation commits too.

        ``strategy``: ``contact`` (the default) asks each contact; ``campaign`` asks each
        sent campaign and keeps these contacts' records; ``auto`` plans and takes the cheaper
        (see :meth:`plan`). The path chosen first is kept by every later attempt and
        incremental run on ``out_dir``, and so is the set of contacts.
        """
        job = Job("contact", contact_ids, strategy)
        return await self._export(
            job,
            out_dir,
            report=report,
            since=since,
            incremental=incremental,
            retry_failed=retry_failed,
            fresh=fresh,
            total=contacts_total,
            max_file_bytes=max_file_bytes,
            durable=durable,
        )

    async def export_campaigns(
        self,
        campaign_ids: IdSource,
        out_dir: str | os.PathLike[str],
        *,
        report: str = "opens",
        since: str | None = None,
        incremental: bool = False,
        retry_failed: bool = False,
        fresh: bool = False,
        campaigns_total: int | None = None,
        max_file_bytes: int | None = None,
        durable: bool = True,
    ) -> Summary:
        """Write every record of ``report`` for campaigns to NDJSON files in ``out_dir``.

        ``campaign_ids`` are v2 campaign ids (any iterable, as for :meth:`export`), or
        ``bulkopens.SENT`` for every campaign the account has sent (listed on each attempt).
        The same files, guarantees and resume as :meth:`export`; ``errors.ndjson`` is keyed
        by ``campaign_id``. ``all`` and ``summary-by-campaign`` are not campaign reports;
        ``summary`` writes one line per campaign, with its ``campaign_id``.
        """
        return await self._export(
            Job("campaign", campaign_ids),
            out_dir,
            report=report,
            since=since,
            incremental=incremental,
            retry_failed=retry_failed,
            fresh=fresh,
            total=campaigns_total,
            max_file_bytes=max_file_bytes,
            durable=durable,
        )

    async def plan(
        self, contact_ids: IdSource, *, report: str = "opens", strategy: Strategy = "auto"
    ) -> Plan:
        """Estimate the requests of the contact and the campaign path for ``contact_ids`` and
        pick the cheaper; fetches no record. Costs the campaign list and, when the choice is
        not obvious from it, one summary per sent campaign (``plan.spent`` requests)."""
        session, pacer, _ = self._started()
        settings = dataclasses.replace(self._settings, report=report)
        job = Job("contact", contact_ids, strategy)
        job.check(report)
        stats = Stats()
        fetcher = build_fetcher(settings, session, pacer, stats)
        return await plan_job(job, settings, fetcher, stats, await read_contacts(contact_ids))

    async def sent_campaigns(self) -> list[str]:
        """The ids of every campaign the account has sent, newest first (the campaign list)."""
        session, pacer, _ = self._started()
        fetcher = build_fetcher(self._settings, session, pacer, Stats())
        ids, _ = await sent_campaigns(fetcher, self._settings.base)
        return ids

    async def _export(
        self,
        job: Job,
        out_dir: str | os.PathLike[str],
        *,
        report: str,
        since: str | None,
        incremental: bool,
        retry_failed: bool,
        fresh: bool,
        total: int | None,
        max_file_bytes: int | None,
        durable: bool,
    ) -> Summary:
        session, pacer, _ = self._started()
        settings = dataclasses.replace(
            self._settings,
            report=report,
            since=since,
            durable=durable,
            max_file_bytes=max_file_bytes or self._settings.max_file_bytes,
        )
        job.check(settings.report)
        out = Path(out_dir)
        await anyio.to_thread.run_sync(_prepare_out, out)
        contacts = await read_contacts(job.ids) if job.plans else None
        fingerprint = {
            "report": settings.report,
            "since": settings.since,
            "base_url": settings.base_url,
            **job.fingerprint(contacts),
        }
        store = AsyncStore(
            await anyio.to_thread.run_sync(
                lambda: Store.open(
                    out,
                    fingerprint=fingerprint,
                    incremental=incremental,
                    since=settings.since,
                    durable=settings.durable,
                    fresh=fresh,
                )
            )
        )
        stats = Stats(contacts_total=total)
        fetcher = build_fetcher(settings, session, pacer, stats)
        status, error, plan = "interrupted", None, None
        try:
            files = RecordFiles(out, settings.report, max_bytes=settings.max_file_bytes)
            await store.call(prepare_outputs, out, store.sync, files, fresh)
            sink = FileSink(
                store,
                files,
                stats,
                commit_records=settings.commit_records,
                commit_seconds=settings.commit_seconds,
                durable=settings.durable,
            )
            try:
                fed = await feed(job, settings, fetcher, stats, contacts, store, self._on_plan)
                plan = fed.plan
                options = RunOptions(
                    since=settings.since,
                    retry_failed=retry_failed,
                    on_progress=self._on_progress,
                    scope=fed.scope,
                    keep=fed.keep,
                )
                await run_pipeline(
                    settings,
                    fed.ids,
                    sink,
                    store,
                    session,
                    stats,
                    options,
                    pacer=pacer,
                    fetcher=fetcher,
                )
                status = "complete"
            except RunStopped as exc:
                error = exc
                status = next(s for t, s in _STATUS_BY_ERROR if isinstance(exc, t))
            with anyio.CancelScope(shield=True):
                summary = await store.call(
                    _finish,
                    out,
                    store.sync,
                    _summary(settings, stats, status, error, job, plan),
                )
        except anyio.get_cancelled_exc_class():
            with anyio.CancelScope(shield=True):
                await store.call(
                    _finish,
                    out,
                    store.sync,
                    _summary(settings, stats, "interrupted", None, job, plan),
                )
            raise
        finally:
            with anyio.CancelScope(shield=True):
                await store.call(store.sync.close)
        if error is not None:
            error.summary = summary  # type: ignore[attr-defined]
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


def _finish(out: Path, store: Store, summary: Summary) -> Summary:
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
    write_artifacts(out, store, summary)
    return summary


def _summary(
    settings: Settings,
    stats: Stats,
    status: str,
    error: BulkOpensError | None,
    job: Job,
    plan: Plan | None,
) -> Summary:
    snap = stats.snapshot()
    return Summary(
        status=status,
        report=settings.report,
        contacts_done=snap.contacts_done,
        contacts_failed=snap.contacts_failed,
        contacts_skipped=snap.contacts_skipped,
        contacts_invalid=snap.contacts_invalid,
        duplicates=snap.duplicates,
        records=snap.records,
        pages=snap.pages,
        requests=snap.requests,
        retries=snap.retries,
        throttles=snap.throttles,
        responses=dict(stats.responses),
        elapsed_seconds=round(snap.elapsed, 3),
        error=str(error) if error else None,
        quota_resets_at=(
            error.resets_at.strftime("%Y-%m-%dT%H:%M:%SZ")
            if isinstance(error, QuotaExhausted)
            else None
        ),
        mode=job.mode,
        strategy=job.strategy if job.mode == "contact" else None,
        plan=plan.to_json() if plan is not None else None,
    )


class RecordStream:
    """The async iterator returned by :meth:`Client.records` and :meth:`Client.campaign_records`;
    also an async context manager.

    Leaving the ``async with`` block (or calling :meth:`aclose`) stops the fetching at once.
    ``plan`` is the planner's choice once it is made (``strategy`` auto or campaign).
    """

    def __init__(self, client: Client, settings: Settings, job: Job, buffer: int) -> None:
        job.check(settings.report)
        self._client = client
        self._settings = settings
        self._job = job
        self._buffer = buffer
        self._page: collections.deque[dict[str, Any]] = collections.deque()
        self.plan: Plan | None = None
        self._rx: Any = None
        self._scope: anyio.CancelScope | None = None
        self._error: BaseException | None = None
        self._sink: StreamSink | None = None
        self._stats = Stats()
        self.summary: Summary | None = None

    @property
    def failures(self) -> list[Any]:
        return self._sink.failures if self._sink else []

    def __aiter__(self) -> AsyncIterator[dict[str, Any]]:
        return self

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._scope is not None:
            self._scope.cancel()
        if self._rx is not None:
            self._rx.close()

    async def __anext__(self) -> dict[str, Any]:
        if self._page:
            return self._page.popleft()
        if self._rx is None:
            self._start()
        try:
            page: list[dict[str, Any]] = await self._rx.receive()
        except (anyio.EndOfStream, anyio.ClosedResourceError):
            self._rx.close()
            if self._error is not None:
                raise self._error from None
            raise StopAsyncIteration from None
        self._page.extend(page)
        return self._page.popleft()

    def _error_or_none(self) -> BulkOpensError | None:
        return self._error if isinstance(self._error, BulkOpensError) else None

    def _start(self) -> None:
        session, pacer, tg = self._client._started()
        # Pages travel whole (one hop per page, not per record); the stream holds about
        # ``buffer`` records' worth of pages.
        pages = max(1, self._buffer // self._settings.page_size)
        tx, self._rx = anyio.create_memory_object_stream[list[dict[str, Any]]](pages)
        self._sink = StreamSink(tx, self._stats)
        tg.start_soon(self._run, session, pacer, tx)

    async def _run(self, session: aiohttp.ClientSession, pacer: Pacer, tx: Any) -> None:
        # Runs in the client's task group: it must never raise, or it would cancel the caller.
        status = "interrupted"
        with tempfile.TemporaryDirectory(prefix="bulkopens-") as tmp:
            store = None
            try:
                with anyio.CancelScope() as self._scope:
                    async with tx:
                        store = AsyncStore(
                            await anyio.to_thread.run_sync(
                                lambda: Store.open(Path(tmp), fingerprint={}, durable=False)
                            )
                        )
                        assert self._sink is not None
                        settings, job, stats = self._settings, self._job, self._stats
                        fetcher = build_fetcher(settings, session, pacer, stats)
                        contacts = await read_contacts(job.ids) if job.plans else None
                        fed = await feed(job, settings, fetcher, stats, contacts, None, None)
                        self.plan = fed.plan
                        options = RunOptions(since=settings.since, scope=fed.scope, keep=fed.keep)
                        await run_pipeline(
                            settings,
                            fed.ids,
                            self._sink,
                            store,
                            session,
                            stats,
                            options,
                            pacer=pacer,
                            fetcher=fetcher,
                        )
                        status = "complete"
            except RunStopped as exc:
                self._error = exc
                status = next(s for t, s in _STATUS_BY_ERROR if isinstance(exc, t))
            except Exception as exc:
                self._error = exc
                status = "failed"
            finally:
                self.summary = _summary(
                    self._settings,
                    self._stats,
                    status,
                    self._error_or_none(),
                    self._job,
                    self.plan,
                )
                if store is not None:
                    with anyio.CancelScope(shield=True):
                        await store.call(store.sync.close)
                with contextlib.suppress(Exception):
                    tx.close()
