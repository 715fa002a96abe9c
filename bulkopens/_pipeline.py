"""The run: its task group and its streams (reader, claimer, workers, sink), the request path
(``build_fetcher``) and a client's gate (``new_gate``). Besides this module, only the client
starts a task (one per iterator, with the stream it hands pages on), and the CLI one task group
(its signal watcher around the export).

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
import time
from collections.abc import (
    AsyncGenerator,
    AsyncIterable,
    AsyncIterator,
    Awaitable,
    Callable,
    Iterable,
    Iterator,
    Sequence,
)
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, runtime_checkable

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from yarl import URL

from bulkopens._api import Api, Fetcher, Page, api_for
from bulkopens._config import Settings
from bulkopens._exceptions import (
    ConfigurationError,
    ContactError,
    ContactNotFound,
    RunStopped,
    TransientError,
)
from bulkopens._http import Transport
from bulkopens._ids import StringIdPages
from bulkopens._log import http_log, run_log
from bulkopens._pagination import PageBatch, Work, walk
from bulkopens._ratelimit import Gate, Pacer
from bulkopens._redact import Redactor
from bulkopens._reports import Scope
from bulkopens._retry import PageFetcher, RetryPolicy
from bulkopens._state import AsyncStore, Claim, Store
from bulkopens._stats import Progress, RequestMetrics, Stats, last_status
from bulkopens._summaries import walk_summary
from bulkopens._writer import InvalidInput, ItemFailed, Result, Sink

if TYPE_CHECKING:
    from bulkopens._wire import Wire


@runtime_checkable
class IdBatches(Protocol):
    """An id source that can also hand its ids over a list at a time (the CLI's reader)."""

    def batches(self) -> AsyncIterator[list[str]]: ...


IdSource = Iterable[str] | AsyncIterable[str]
ProgressHook = Callable[[Progress], None]
RequestHook = Callable[[RequestMetrics], None]
T = TypeVar("T")
R = TypeVar("R")
E = TypeVar("E", bound=MemoryObjectSendStream[Any] | MemoryObjectReceiveStream[Any])

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
    workers: int | None = None  # this call's workers; None = settings.workers
    # A stream's read-ahead bound: a credit is taken before each page is requested and given
    # back when the page reaches the consumer (or comes to nothing). None = no bound (files).
    credits: anyio.Semaphore | None = None


class _Stopper:
    """Keeps the first error that ends the run (a run-stopping one, or the caller's own from an
    id source or a hook, raised as it is) and cancels the run."""

    def __init__(self, scope: anyio.CancelScope) -> None:
        self._scope = scope
        self.error: Exception | None = None
        self.by_caller = False  # the error is the caller's own

    def stop(self, error: RunStopped) -> None:
        run_log.error("the run stops: %s", error)
        self._end(error)

    def fail(self, error: Exception, where: str) -> None:
        """The caller's own code (``where``) raised ``error``: stop, and raise it unwrapped."""
        run_log.error("%s raised %s; the run stops", where, type(error).__name__)
        self.by_caller = self.by_caller or self.error is None
        self._end(error)

    def _end(self, error: Exception) -> None:
        if self.error is None:
            self.error = error
        self._scope.cancel()


class GatedTransport(Transport):
    """A transport whose every request passes the client's :class:`Gate` (a slot, then the
    pacer's grant, right before the request goes on the wire), and is logged and reported to
    the request metrics hook (path, status, timings; never the query, which holds the key)."""

    __slots__ = ("_gate", "_on_request")

    def bind(self, gate: Gate, on_request: RequestHook | None) -> GatedTransport:
        self._gate = gate
        self._on_request = on_request
        return self

    async def _body(self, url: URL) -> bytes:
        gate = self._gate
        asked = time.perf_counter()
        await gate.enter()
        started = time.perf_counter()
        last_status.set(None)
        error: BaseException | None = None
        try:
            return await super()._body(url)
        except BaseException as exc:
            error = exc
            raise
        finally:
            gate.leave()
            self._report(url.path, asked, started, error)

    def _report(self, path: str, asked: float, started: float, error: BaseException | None) -> None:
        done = time.perf_counter()
        status = last_status.get()
        if error is None:
            http_log.debug("GET %s: %s in %.0f ms", path, status, (done - started) * 1000)
        elif isinstance(error, ContactNotFound):
            http_log.info("GET %s: not found (404); this item fails, the run goes on", path)
        elif isinstance(error, TransientError):
            http_log.info("GET %s failed, retried after a backoff: %s", path, error)
        elif not isinstance(error, Exception):
            return  # cancelled: there was no answer to report
        if self._on_request is None:
            return
        metrics = RequestMetrics(
            path=path,
            status=status,
            seconds=done - started,
            waited=started - asked,
            error=None if error is None else type(error).__name__,
        )
        try:
            self._on_request(metrics)
        except Exception:  # a metrics hook must never break a fetch
            run_log.exception("the on_request hook raised; ignored")


def build_fetcher(
    settings: Settings,
    wire: Wire,
    gate: Gate,
    stats: Stats,
    on_request: RequestHook | None = None,
) -> PageFetcher:
    """The request path of one call: transport, the client's gate (slots and pacer), retries,
    counted in ``stats``; each request is reported to ``on_request``."""
    tokens = settings.tokens
    transport = GatedTransport(
        wire,
        base=settings.base,
        api_key=settings.api_key,
        token=settings.token,
        redact=Redactor(
            settings.api_key, settings.token, *(tokens.secrets() if tokens is not None else ())
        ),
        api=api_for(settings.api),
        tokens=tokens,
        connect_timeout=settings.connect_timeout,
        read_timeout=settings.read_timeout,
        request_timeout=settings.request_timeout,
        max_page_bytes=settings.max_page_bytes,
        responses=stats.responses,
    ).bind(gate, on_request)
    return PageFetcher(transport, gate.pacer, RetryPolicy(settings.max_retries), stats)


def new_gate(rate: float, slots: int) -> Gate:
    """A client's gate: ``slots`` requests in flight, their starts paced at ``rate``."""
    return Gate(Pacer(rate, deferred=True), slots)


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
    store: AsyncStore | None,
    stats: Stats,
    options: RunOptions,
    *,
    gate: Gate,
    fetcher: PageFetcher,
) -> None:
    """Fetch every id's report into ``sink``. Raises the first RunStopped error, if any, or
    the caller's own exception from the id source or the progress hook, unwrapped.

    ``store`` decides what each id needs (dedupe, resume); None keeps that in memory (each
    distinct id once, from page one), as an iterator needs. ``gate`` is the client's, shared
    by all its calls. ``fetcher`` (from :func:`build_fetcher`) shares the gate and counters
    with the caller's own requests (the planner's).
    """
    pacer = gate.pacer
    workers = options.workers or settings.workers
    run_log.info(
        "%s report: started (%d workers, %s)",
        settings.report,
        workers,
        f"{pacer.rate:.3g} requests/s" if pacer.rate != float("inf") else "no rate limit",
    )
    # Every stream end made here, closed here too: a task cancelled before its first step
    # never runs the ``async with`` that would close the ends it was handed.
    ends: list[MemoryObjectSendStream[Any] | MemoryObjectReceiveStream[Any]] = []

    def end(stream: E) -> E:
        ends.append(stream)
        return stream

    with anyio.CancelScope() as scope:
        stopper = _Stopper(scope)
        try:
            async with anyio.create_task_group() as tg:
                id_tx, id_rx = anyio.create_memory_object_stream[list[str]](2)
                work_tx, work_rx = anyio.create_memory_object_stream[Work](workers)
                result_tx, result_rx = anyio.create_memory_object_stream[Result](workers * 4)
                ends.extend((id_tx, id_rx, work_tx, work_rx, result_tx, result_rx))
                tg.start_soon(_read, ids, id_tx, stopper)
                results = end(result_tx.clone())
                api = api_for(settings.api)
                tg.start_soon(_claim, id_rx, work_tx, results, store, stats, options, api)
                pages_of = item_walker(settings, options, fetcher, lines=sink.wants_lines)
                for _ in range(workers):
                    work, results = end(work_rx.clone()), end(result_tx.clone())
                    tg.start_soon(_work, pages_of, work, results, stats, stopper)
                work_rx.close()
                result_tx.close()
                sink_done = anyio.Event()
                tg.start_soon(_sink, sink, result_rx, stopper, sink_done)
                if options.on_progress is not None:
                    hook = options.on_progress
                    tg.start_soon(_tick, hook, options, stats, pacer, sink_done, stopper)
        finally:
            for stream_end in ends:
                stream_end.close()
    stats.finished = True
    snap = stats.snapshot(pacer.rate)
    run_log.info(
        "%s report: %s; %d %s done, %d failed, %d skipped, %d invalid; %d records, "
        "%d requests, %d retries, %d throttles in %.1f s",
        settings.report,
        "stopped" if stopper.error is not None else "finished",
        snap.contacts_done,
        snap.unit,
        snap.contacts_failed,
        snap.contacts_skipped,
        snap.contacts_invalid,
        snap.records,
        snap.requests,
        snap.retries,
        snap.throttles,
        snap.elapsed,
    )
    if options.on_progress is not None and not stopper.by_caller:
        options.on_progress(snap)
    if stopper.error is not None:
        raise stopper.error


async def _tick(
    hook: ProgressHook,
    options: RunOptions,
    stats: Stats,
    pacer: Pacer,
    done: anyio.Event,
    stopper: _Stopper,
) -> None:
    """Report progress every ``progress_interval`` until the sink has finished."""
    while not done.is_set():
        try:
            hook(stats.snapshot(pacer.rate, pacer.paused_for))
        except Exception as exc:
            stopper.fail(exc, "the on_progress hook")
            return
        with anyio.move_on_after(options.progress_interval):
            await done.wait()


async def _hand_on(stream: MemoryObjectSendStream[T], item: T) -> None:
    """Send ``item``, waiting only when the stream is full. ``send()`` always yields to the
    event loop, so a producer that awaited it would hand on one item per loop turn and leave
    the consumers waiting: handed on at once, a whole batch is queued in one turn. A stream
    whose receivers are gone (the run is stopping) is left to ``send()``, which raises the
    cancellation rather than BrokenResourceError."""
    try:
        stream.send_nowait(item)
    except (anyio.WouldBlock, anyio.BrokenResourceError):
        await stream.send(item)


async def _take(stream: MemoryObjectReceiveStream[T]) -> T:
    """Receive an item, waiting only when the stream is empty (``receive()`` always yields
    first); raises EndOfStream at the end."""
    try:
        return stream.receive_nowait()
    except anyio.WouldBlock:
        return await stream.receive()


async def _read(ids: IdSource, out: MemoryObjectSendStream[list[str]], stopper: _Stopper) -> None:
    """Pass the input on in lists: whole batches where the source allows it, so the store
    is asked about many ids per thread hop. An error of the source stops the run and is
    raised as it is."""
    async with out:
        try:
            # A general async source may stall: never hold its ids back.
            async for chunk in id_batches(ids, _CLAIM_BATCH, held=1):
                await _hand_on(out, chunk)
        except Exception as exc:
            stopper.fail(exc, "the id source")


async def id_batches(ids: IdSource, size: int, *, held: int) -> AsyncIterator[list[str]]:
    """The ids of any source in lists: the source's own batches (the CLI's reader), ``size``
    of a plain iterable at a time, and at most ``held`` of an async one (which may stall
    between ids: what it has given is handed on after ``held`` ids)."""
    if isinstance(ids, IdBatches):
        async for given in ids.batches():
            yield given
    elif isinstance(ids, AsyncIterable):
        chunk: list[str] = []
        async for raw in ids:
            chunk.append(raw)
            if len(chunk) >= held:
                yield chunk
                chunk = []
        if chunk:
            yield chunk
    else:
        source = iter(ids)
        while batch := list(itertools.islice(source, size)):
            yield batch


class MemoryClaims:
    """What an iterator needs of the state store, kept in memory: each distinct id is fetched
    once, from page one (a set of the ids seen: tens of bytes an id)."""

    __slots__ = ("_seen",)

    def __init__(self) -> None:
        self._seen: set[str] = set()

    def claim(self, ids: Sequence[str], *, since: str | None) -> list[Claim]:
        out: list[Claim] = []
        seen = self._seen
        for cid in ids:
            if cid in seen:
                out.append(Claim(cid, None, "duplicate"))
            else:
                seen.add(cid)
                out.append(Claim(cid, Work(cid, None, since)))
        return out


async def _claim(
    ids: MemoryObjectReceiveStream[list[str]],
    work_out: MemoryObjectSendStream[Work],
    results: MemoryObjectSendStream[Result],
    store: AsyncStore | None,
    stats: Stats,
    options: RunOptions,
    api: Api,
) -> None:
    """Validate ids, ask the store what to do with each (dedupe, resume), and queue the work."""
    scope = options.scope
    memory = MemoryClaims() if store is None else None
    async with ids, work_out, results:
        while True:
            try:
                batch = await _take(ids)
            except anyio.EndOfStream:
                return
            with contextlib.suppress(anyio.WouldBlock, anyio.EndOfStream):
                while len(batch) < _CLAIM_BATCH:
                    batch += ids.receive_nowait()
            valid: list[str] = []
            for raw in batch:
                cid = api.parse_id(raw, scope) if isinstance(raw, str) else None
                if cid is None:
                    stats.contacts_invalid += 1
                    await _hand_on(results, InvalidInput(shorten_input(raw)))
                else:
                    valid.append(cid)
            if not valid:
                continue
            claims: list[Claim]
            if store is None:
                assert memory is not None
                claims = memory.claim(valid, since=options.since)
            else:
                claims = await store.call(
                    _claim_in_store, store.sync, valid, options.since, options.retry_failed
                )
            for claim in claims:
                if claim.work is not None:
                    stats.contacts_seen += 1
                    await _hand_on(work_out, claim.work)
                elif claim.why == "duplicate":
                    stats.duplicates += 1
                else:
                    stats.contacts_seen += 1
                    stats.contacts_skipped += 1


def _claim_in_store(
    store: Store, ids: list[str], since: str | None, retry_failed: bool
) -> list[Claim]:
    return store.claim(ids, since=since, retry_failed=retry_failed)


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
        while True:
            try:
                work = await _take(work_in)
            except anyio.EndOfStream:
                return
            try:
                async with contextlib.aclosing(pages_of(work)) as pages:
                    async for page in pages:
                        stats.pages += 1
                        await _hand_on(results, page)
            except ContactError as exc:
                error = exc.for_contact(work.item_id)
                await results.send(ItemFailed(work.item_id, error, work))
            except RunStopped as exc:
                stopper.stop(exc)
                return
            except Exception as exc:  # one bad answer fails one item, never the run
                await results.send(ItemFailed(work.item_id, _unexpected(exc), work))


def _unexpected(exc: Exception) -> ContactError:
    """An error no answer should have caused (a bug, or an answer nobody foresaw), as a failure
    of this one item that the next run retries. Its text names the type only: a message could
    carry what the server sent."""
    error = ContactError(
        f"unexpected error while processing this item ({type(exc).__name__}); the next run "
        "retries it, please report it if it repeats",
        error_key="bulkopens.unexpected",
    )
    error.permanent = False
    return error


class _Credited:
    """A fetcher that takes a read-ahead credit before each request. A page that arrives keeps
    its credit (``taken``) until it reaches the consumer; a request that fails gives it back."""

    __slots__ = ("_credits", "_fetcher", "taken")

    def __init__(self, fetcher: Fetcher, credits: anyio.Semaphore) -> None:
        self._fetcher = fetcher
        self._credits = credits
        self.taken = 0

    async def _call(self, get: Callable[[URL], Awaitable[T]], url: URL) -> T:
        await self._credits.acquire()
        try:
            answer = await get(url)
        except BaseException:
            self._credits.release()
            raise
        self.taken += 1
        return answer

    async def fetch(self, url: URL) -> Page:
        return await self._call(self._fetcher.fetch, url)

    async def fetch_object(self, url: URL) -> dict[str, Any]:
        return await self._call(self._fetcher.fetch_object, url)

    async def fetch_list(self, url: URL) -> list[dict[str, Any]]:
        return await self._call(self._fetcher.fetch_list, url)


def item_walker(
    settings: Settings, options: RunOptions, fetcher: Fetcher, *, lines: bool = False
) -> Callable[[Work], AsyncGenerator[PageBatch, None]]:
    """How a worker fetches one work item: every page of an activity report, or the one
    answer of a summary report. Records of campaign-tracking answers get string ids. With
    ``lines``, activity pages come serialised (PageBatch.lines), as a file sink wants them.

    With ``options.credits`` (a stream), every request first takes a read-ahead credit; each
    page yielded carries one on to the sink, and the credits of answers that yielded no page
    (a walk that stopped on a bad answer) are given back when the walk ends."""
    credits = options.credits
    if credits is None:
        return _walker(settings, options, fetcher, lines)

    async def credited(work: Work) -> AsyncGenerator[PageBatch, None]:
        held = _Credited(fetcher, credits)
        try:
            walker = _walker(settings, options, held, lines)
            async with contextlib.aclosing(walker(work)) as pages:
                async for page in pages:
                    held.taken -= 1
                    yield page
        finally:
            for _ in range(held.taken):
                credits.release()

    return credited


def _walker(
    settings: Settings, options: RunOptions, fetcher: Fetcher, lines: bool
) -> Callable[[Work], AsyncGenerator[PageBatch, None]]:
    base, report, scope, keep = settings.base, settings.report_spec, options.scope, options.keep
    api = api_for(settings.api)  # the report is one it offers: Job.check said so
    page_size = api.page_size(scope, settings.page_size)
    if not report.paged:
        return lambda work: walk_summary(
            fetcher, base, report, work, page_size, scope=scope, keep=keep, api=api
        )
    # Campaign reports that write ids as numbers (v2's): as strings, as the contact reports.
    numeric = scope == "campaign" and api.numeric_ids_in_campaign_reports
    pages = StringIdPages(fetcher) if numeric else fetcher
    max_pages, secrets = settings.max_pages, _Secrets(settings)
    return lambda work: walk(
        pages,
        base,
        report,
        work,
        page_size,
        scope=scope,
        keep=keep,
        lines=lines,
        max_pages=max_pages,
        secrets=secrets,
        api=api,
    )


class _Secrets(Sequence[str]):
    """The run's secrets as they are now (a token provider renews its own): a next_link that
    holds one is never followed, so it never reaches the state."""

    def __init__(self, settings: Settings) -> None:
        self._fixed = (settings.api_key, settings.token)
        self._tokens = settings.tokens

    def _now(self) -> tuple[str, ...]:
        tokens = self._tokens
        return self._fixed if tokens is None else (*self._fixed, *tokens.secrets())

    def __len__(self) -> int:
        return len(self._now())

    def __getitem__(self, i: Any) -> Any:
        return self._now()[i]

    def __iter__(self) -> Iterator[str]:
        return iter(self._now())


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
