"""The run: the only place that creates task groups, streams, the pacer and the session.

Data flows one way::

    ids ─► reader ─► claimer ─► work stream ─► N workers ─► result stream ─► one sink
                     (dedupe,                  (pacer ─► retry ─► request,   (files + commit,
                      resume)                   pages of one contact)         or the iterator)

Streams are small and bounded, so a slow sink slows the workers and a million ids never sit
in memory. Per-contact failures travel as results; a run-stopping error (auth, quota, config)
is kept, every task is cancelled, the sink commits what it has, and the error is raised.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import (
    AsyncGenerator,
    AsyncIterable,
    AsyncIterator,
    Awaitable,
    Callable,
    Iterable,
    Sequence,
)
from dataclasses import dataclass
from typing import Protocol, TypeVar, runtime_checkable

import aiohttp
import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from bulkopens._config import Settings, parse_contact_id
from bulkopens._exceptions import ConfigurationError, ContactError, RunStopped
from bulkopens._http import Transport
from bulkopens._ids import StringIdPages
from bulkopens._pagination import PageBatch, Work, walk
from bulkopens._ratelimit import Pacer
from bulkopens._redact import Redactor
from bulkopens._reports import Scope
from bulkopens._retry import PageFetcher, RetryPolicy
from bulkopens._state import AsyncStore, Claim
from bulkopens._stats import Progress, Stats
from bulkopens._summaries import walk_summary
from bulkopens._writer import ContactFailed, InvalidInput, Result, Sink


@runtime_checkable
class IdBatches(Protocol):
    """An id source that can also hand its ids over a list at a time (the CLI's reader)."""

    def batches(self) -> AsyncIterator[list[str]]: ...


IdSource = Iterable[str] | AsyncIterable[str]
ProgressHook = Callable[[Progress], None]
T = TypeVar("T")
R = TypeVar("R")

_MAX_RAW = 80  # an invalid input line is reported shortened to this many characters
_CLAIM_BATCH = 512


@dataclass(slots=True)
class RunOptions:
    """What one pipeline run needs besides the settings."""

    since: str | None = None  # created_since for contacts new to the store
    retry_failed: bool = False
    on_progress: ProgressHook | None = None
    progress_interval: float = 0.5
    scope: Scope = "contact"  # whose report each id names
    keep: frozenset[str] | None = None  # write only the records of these contacts


class _Stopper:
    """Keeps the first run-stopping error and cancels the run."""

    def __init__(self, scope: anyio.CancelScope) -> None:
        self._scope = scope
        self.error: RunStopped | None = None

    def stop(self, error: RunStopped) -> None:
        if self.error is None:
            self.error = error
        self._scope.cancel()


def build_fetcher(
    settings: Settings, session: aiohttp.ClientSession, pacer: Pacer, stats: Stats
) -> PageFetcher:
    """The request path of one run: transport, pacer, retries, counted in ``stats``."""
    transport = Transport(
        session,
        base=settings.base,
        api_key=settings.api_key,
        token=settings.token,
        redact=Redactor(settings.api_key, settings.token),
        connect_timeout=settings.connect_timeout,
        read_timeout=settings.read_timeout,
        responses=stats.responses,
    )
    return PageFetcher(transport, pacer, RetryPolicy(settings.max_retries), stats)


async def map_concurrently(
    fn: Callable[[T], Awaitable[R]], items: Sequence[T], limit: int
) -> list[R]:
    """``[await fn(x) for x in items]``, at most ``limit`` at a time; the first error cancels
    the others and is raised (unwrapped)."""
    results: dict[int, R] = {}
    errors: list[BaseException] = []
    slots = anyio.Semaphore(max(1, limit))

    async def one(i: int, item: T) -> None:
        async with slots:
            try:
                results[i] = await fn(item)
            except Exception as exc:
                errors.append(exc)
                tg.cancel_scope.cancel()

    async with anyio.create_task_group() as tg:
        for i, item in enumerate(items):
            tg.start_soon(one, i, item)
    if errors:
        raise errors[0]
    return [results[i] for i in range(len(items))]


async def run_pipeline(
    settings: Settings,
    ids: IdSource,
    sink: Sink,
    store: AsyncStore,
    session: aiohttp.ClientSession,
    stats: Stats,
    options: RunOptions,
    *,
    pacer: Pacer | None = None,
    fetcher: PageFetcher | None = None,
) -> None:
    """Fetch every id's report into ``sink``. Raises the first RunStopped error, if any.

    ``fetcher`` (from :func:`build_fetcher`) shares its pacer and counters with the caller's
    own requests (the planner's); by default one is made from ``session`` and ``pacer``.
    """
    pacer = pacer or Pacer(settings.rate)
    fetcher = fetcher or build_fetcher(settings, session, pacer, stats)
    workers = settings.workers
    with anyio.CancelScope() as scope:
        stopper = _Stopper(scope)
        async with anyio.create_task_group() as tg:
            id_tx, id_rx = anyio.create_memory_object_stream[list[str]](2)  # lists of ids
            work_tx, work_rx = anyio.create_memory_object_stream[Work](workers)
            result_tx, result_rx = anyio.create_memory_object_stream[Result](workers * 4)
            tg.start_soon(_read, ids, id_tx)
            tg.start_soon(_claim, id_rx, work_tx, result_tx.clone(), store, stats, options)
            pages_of = item_walker(settings, options, fetcher, lines=sink.wants_lines)
            for _ in range(workers):
                tg.start_soon(_work, pages_of, work_rx.clone(), result_tx.clone(), stats, stopper)
            work_rx.close()
            result_tx.close()
            sink_done = anyio.Event()
            tg.start_soon(_sink, sink, result_rx, stopper, sink_done)
            if options.on_progress is not None:
                tg.start_soon(_tick, options.on_progress, options, stats, pacer, sink_done)
    stats.finished = True
    if options.on_progress is not None:
        options.on_progress(stats.snapshot(pacer.rate))
    if stopper.error is not None:
        raise stopper.error


async def _tick(
    hook: ProgressHook, options: RunOptions, stats: Stats, pacer: Pacer, done: anyio.Event
) -> None:
    """Report progress every ``progress_interval`` until the sink has finished."""
    while not done.is_set():
        hook(stats.snapshot(pacer.rate))
        with anyio.move_on_after(options.progress_interval):
            await done.wait()


async def _read(ids: IdSource, out: MemoryObjectSendStream[list[str]]) -> None:
    """Pass the input on in lists: whole batches where the source allows it, so the store
    is asked about many ids per thread hop."""
    async with out:
        if isinstance(ids, IdBatches):
            async for chunk in ids.batches():
                await out.send(chunk)
        elif isinstance(ids, AsyncIterable):
            async for raw in ids:  # a general async source may stall: never hold ids back
                await out.send([raw])
        else:
            source = iter(ids)
            while chunk := list(itertools.islice(source, _CLAIM_BATCH)):
                await out.send(chunk)


async def _claim(
    ids: MemoryObjectReceiveStream[list[str]],
    work_out: MemoryObjectSendStream[Work],
    results: MemoryObjectSendStream[Result],
    store: AsyncStore,
    stats: Stats,
    options: RunOptions,
) -> None:
    """Validate ids, ask the store what to do with each (dedupe, resume), and queue the work."""
    async with ids, work_out, results:
        while True:
            try:
                batch = await ids.receive()
            except anyio.EndOfStream:
                return
            with contextlib.suppress(anyio.WouldBlock, anyio.EndOfStream):
                while len(batch) < _CLAIM_BATCH:
                    batch += ids.receive_nowait()
            valid: list[str] = []
            for raw in batch:
                cid = parse_contact_id(raw) if isinstance(raw, str) else None
                if cid is None:
                    stats.contacts_invalid += 1
                    await results.send(InvalidInput(shorten_input(raw)))
                else:
                    valid.append(cid)
            if not valid:
                continue
            claims: list[Claim] = await store.call(
                lambda v=valid: store.sync.claim(
                    v, since=options.since, retry_failed=options.retry_failed
                )
            )
            for claim in claims:
                if claim.work is not None:
                    stats.contacts_seen += 1
                    await work_out.send(claim.work)
                elif claim.why == "duplicate":
                    stats.duplicates += 1
                else:
                    stats.contacts_seen += 1
                    stats.contacts_skipped += 1


def shorten_input(raw: object) -> str:
    """An input line as it is reported when it is not an id: stripped, at most 80 characters."""
    text = raw if isinstance(raw, str) else repr(raw)
    text = text.strip()
    return text if len(text) <= _MAX_RAW else text[: _MAX_RAW - 1] + "…"


async def _work(
    pages_of: Callable[[Work], AsyncGenerator[PageBatch, None]],
    work_in: MemoryObjectReceiveStream[Work],
    results: MemoryObjectSendStream[Result],
    stats: Stats,
    stopper: _Stopper,
) -> None:
    """One worker: take a contact, walk all of its pages, hand every page on in order."""
    async with work_in, results:
        async for work in work_in:
            try:
                async with contextlib.aclosing(pages_of(work)) as pages:
                    async for page in pages:
                        stats.pages += 1
                        try:  # no event-loop round trip per page while the sink keeps up
                            results.send_nowait(page)
                        except anyio.WouldBlock:
                            await results.send(page)
            except ContactError as exc:
                error = exc.for_contact(work.contact_id)
                await results.send(ContactFailed(work.contact_id, error, work))
            except RunStopped as exc:
                stopper.stop(exc)
                return


def item_walker(
    settings: Settings, options: RunOptions, fetcher: PageFetcher, *, lines: bool = False
) -> Callable[[Work], AsyncGenerator[PageBatch, None]]:
    """How a worker fetches one work item: every page of an activity report, or the one
    answer of a summary report. Records of campaign-tracking answers get string ids. With
    ``lines``, activity pages come serialised (PageBatch.lines), as a file sink wants them."""
    base, report, page_size = settings.base, settings.report_spec, settings.page_size
    scope, keep = options.scope, options.keep
    if not report.paged:
        return lambda work: walk_summary(
            fetcher, base, report, work, page_size, scope=scope, keep=keep
        )
    pages = StringIdPages(fetcher) if scope == "campaign" else fetcher
    return lambda work: walk(
        pages, base, report, work, page_size, scope=scope, keep=keep, lines=lines
    )


async def _sink(
    sink: Sink,
    results: MemoryObjectReceiveStream[Result],
    stopper: _Stopper,
    done: anyio.Event,
) -> None:
    try:
        await sink.consume(results)
    except RunStopped as exc:
        stopper.stop(exc)
    except OSError as exc:
        stopper.stop(ConfigurationError(f"cannot write the output: {exc.strerror or exc}"))
    finally:
        done.set()
