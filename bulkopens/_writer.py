"""The single writer: the one task that consumes results, writes files and commits state.

Group commit: the writer commits when its input runs dry (the commit is then free), and at
least every ``commit_records`` records or ``commit_seconds`` seconds under load. A commit is
"fsync the record files, then one sqlite transaction", run off the event loop. On cancellation
the writer commits what it has written, shielded, so a stopped run keeps all of its work.

A write or a commit that fails (a full disk) stops the run with an OutputError (exit 74).
From then on the writer never commits again (a half-written buffer must never be committed),
and it gives the disk back what no commit holds (:meth:`RecordFiles.abandon`), so that the
artifacts of the attempt still fit.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import anyio
from anyio.abc import ObjectSendStream
from anyio.streams.memory import MemoryObjectReceiveStream

from bulkopens._disk import write_error
from bulkopens._exceptions import ContactError, InvalidContactId, RunStopped
from bulkopens._files import RecordFiles
from bulkopens._state import DONE, FAILED, GONE, AsyncStore, FileMark, ItemMark
from bulkopens._stats import Stats
from bulkopens._work import PageBatch, Work, line_hash, lines_of


@dataclass(frozen=True, slots=True)
class ItemFailed:
    """A work item (a contact, or a campaign) that could not be fetched; its committed cursor
    stays where it was."""

    item_id: str
    error: ContactError
    work: Work | None = None


@dataclass(frozen=True, slots=True)
class InvalidInput:
    """An input line that is not a contact id (shortened for the report)."""

    raw: str


Result = PageBatch | ItemFailed | InvalidInput


# Idle commits are at least this far apart, so a fast run does not fsync after every page.
_MIN_COMMIT_GAP = 0.2


class Sink(Protocol):
    #: Whether the sink takes pages as NDJSON lines (PageBatch.lines) rather than dicts.
    wants_lines: bool

    async def consume(self, results: MemoryObjectReceiveStream[Result]) -> None: ...


def _failure_mark(error: ContactError) -> ItemMark:
    return ItemMark(
        status=GONE if error.permanent else FAILED,
        http_status=error.status,
        error_key=error.error_key,
        error=str(error),
    )


class FileSink:
    """Writes records to the report's files and commits progress to the store."""

    wants_lines = True

    def __init__(
        self,
        store: AsyncStore,
        files: RecordFiles,
        stats: Stats,
        *,
        commit_records: int,
        commit_seconds: float,
        durable: bool,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._store = store
        self._clock = clock  # when to commit under load, and the gap between idle commits
        self._files = files
        self._stats = stats
        self._commit_records = commit_records
        self._commit_seconds = commit_seconds
        self._durable = durable
        # Items in progress keep their mark across commits (a commit must never move an
        # item's cursor or newest time backwards); _changed is what the next commit writes.
        self._active: dict[str, ItemMark] = {}
        self._changed: dict[str, ItemMark] = {}
        self._invalid: list[str] = []
        self._records = 0  # since the last commit
        self._oldest: str | None = None
        self._newest: str | None = None
        self._last_commit = clock()
        self._broken: RunStopped | None = None  # a write or commit failed: no more commits

    async def consume(self, results: MemoryObjectReceiveStream[Result]) -> None:
        """Apply every result in order; return when every sender is closed.

        ``results`` stays open until the last commit is done, and is closed with no await
        after it: a failed write raised from here reaches the pipeline (which cancels the
        workers) before any worker can find the stream closed under it.
        """
        async with results:
            try:
                while True:
                    item: Result | None
                    try:
                        item = results.receive_nowait()
                    except anyio.WouldBlock:
                        item = None
                    except anyio.EndOfStream:
                        break
                    if item is None:
                        try:
                            item = await self._receive_or_commit(results)
                        except anyio.EndOfStream:
                            break
                        if item is None:
                            continue
                    self._apply(item)
                    if self._records >= self._commit_records or (
                        self._clock() - self._last_commit >= self._commit_seconds and self._dirty
                    ):
                        await self.commit()
            finally:
                with anyio.CancelScope(shield=True):
                    try:
                        await self.commit()
                    finally:
                        if self._broken is None:
                            self._files.close()
                        else:
                            await self._store.call(self._files.abandon)

    async def _receive_or_commit(self, results: MemoryObjectReceiveStream[Result]) -> Result | None:
        """The next result; or, when idle with uncommitted work, a commit (and None).

        Idle commits cost no throughput, but they are kept _MIN_COMMIT_GAP apart.
        Raises EndOfStream when every sender is closed.
        """
        if not self._dirty:
            return await results.receive()
        wait = self._last_commit + _MIN_COMMIT_GAP - self._clock()
        if wait <= 0:
            await self.commit()
            return None
        with anyio.move_on_after(wait):
            return await results.receive()
        return None

    @property
    def _dirty(self) -> bool:
        return bool(self._changed or self._invalid or self._records)

    def _mark(self, item_id: str, work: Work | None) -> ItemMark:
        """The live mark of an item in progress, made from its work item on first sight."""
        mark = self._active.get(item_id)
        if mark is None:
            mark = ItemMark(
                cursor=work.cursor if work else None,
                newest=work.newest if work else None,
                newest_seen=work.newest_seen if work else frozenset(),
                oldest=work.oldest if work else None,
                oldest_seen=work.oldest_seen if work else frozenset(),
            )
            self._active[item_id] = mark
        return mark

    def _apply(self, item: Result) -> None:
        # No await in here: a result is applied whole or not at all, even under cancellation.
        stats = self._stats
        if isinstance(item, PageBatch):
            cid = item.item_id
            mark = self._mark(cid, item.work)
            n = item.count
            if n:
                data = item.lines if item.lines is not None else lines_of(item.records)
                try:
                    self._files.write(data, n)
                except OSError as exc:
                    raise self._break(write_error(exc, self._files.directory)) from None
                except RunStopped as exc:
                    raise self._break(exc) from None
                self._records += n
                stats.records += n
            _merge_span(mark, item)
            if item.newest is not None and (self._newest is None or item.newest > self._newest):
                self._newest = item.newest
            if item.oldest is not None and (self._oldest is None or item.oldest < self._oldest):
                self._oldest = item.oldest
            mark.cursor = item.next_link
            self._changed[cid] = mark
            if item.next_link is None:
                mark.status = DONE
                del self._active[cid]
                stats.contacts_done += 1
        elif isinstance(item, ItemFailed):
            cid = item.item_id
            previous = self._mark(cid, item.work)
            del self._active[cid]
            mark = _failure_mark(item.error)
            # Where it stood is kept: a retry goes on from the cursor, never from page one.
            mark.cursor, mark.newest = previous.cursor, previous.newest
            mark.newest_seen = previous.newest_seen
            mark.oldest, mark.oldest_seen = previous.oldest, previous.oldest_seen
            self._changed[cid] = mark
            stats.contacts_failed += 1
        else:
            self._invalid.append(item.raw)

    def _break(self, error: RunStopped) -> RunStopped:
        if self._broken is None:
            self._broken = error
        return error

    async def commit(self) -> None:
        """Make everything written so far durable, then record it in the store.

        Raises OutputError (or ConfigurationError) when the disk refuses; after that, or
        after a failed write, it does nothing: what is past the last commit is dropped.
        """
        if not self._dirty or self._broken is not None:
            return
        marks, self._changed = self._changed, {}
        invalid, self._invalid = self._invalid, []
        records, self._records = self._records, 0
        oldest, newest, self._oldest, self._newest = self._oldest, self._newest, None, None
        run = self._store.run

        def work() -> None:
            try:
                synced = self._files.sync(self._durable)
            except OSError as exc:
                raise self._break(write_error(exc, self._files.directory)) from None
            files = [FileMark(name, run, length, n, tail) for name, length, n, tail in synced]
            try:
                self._store.sync.commit(files, marks, invalid, records, oldest, newest)
            except RunStopped as exc:
                raise self._break(exc) from None
            self._files.confirm()

        # Shielded: once the pending work is taken, the commit must happen, even when the run
        # is being cancelled (quota, auth, Ctrl-C), or that work would be dropped uncommitted.
        with anyio.CancelScope(shield=True):
            await self._store.call(work)
        self._last_commit = self._clock()


def _merge_span(mark: ItemMark, batch: PageBatch) -> None:
    """Widen the span of activity written for an item (newest ever, oldest in this run),
    keeping the hashes of the lines dated exactly at each end."""
    if batch.newest is None or batch.oldest is None:
        return
    # Hashed only when an end moves or ties (a newest-first walk: the newest end once).
    if mark.newest is None or batch.newest > mark.newest:
        mark.newest, mark.newest_seen = batch.newest, _hashes(batch.newest_lines)
    elif batch.newest == mark.newest:
        mark.newest_seen = mark.newest_seen | _hashes(batch.newest_lines)
    if mark.oldest is None or batch.oldest < mark.oldest:
        mark.oldest, mark.oldest_seen = batch.oldest, _hashes(batch.oldest_lines)
    elif batch.oldest == mark.oldest:
        mark.oldest_seen = mark.oldest_seen | _hashes(batch.oldest_lines)


def _hashes(lines: list[bytes]) -> frozenset[bytes]:
    return frozenset(map(line_hash, lines))


@dataclass(frozen=True, slots=True)
class Failure:
    """A contact (or campaign) a stream could not fetch, or an input item that is not an id.

    ``id`` is the contact's (or campaign's) id, or, for an input item that is not an id, the
    item as given (shortened to 80 characters). ``error`` says why: ``ContactNotFound`` (404),
    ``RetriesExhausted``, ``ForeignNextLink``, ``InvalidContactId``, ...; it carries
    ``status`` (the HTTP status, or None) and ``error_key``.
    """

    id: str
    error: ContactError

    @property
    def retryable(self) -> bool:
        """Whether asking again later may succeed (a transient failure, not a 404)."""
        return not self.error.permanent


class StreamSink:
    """Hands records to an in-process consumer (the async iterator), a page at a time, with
    backpressure. With ``credits`` (the stream's read-ahead bound), a page that reaches the
    consumer keeps the credit its request took, and the consumer gives it back when it takes
    the page; a page without records gives it back here."""

    wants_lines = False

    def __init__(
        self,
        out: ObjectSendStream[list[dict[str, Any]]],
        stats: Stats,
        credits: anyio.Semaphore | None = None,
    ) -> None:
        self._out = out
        self._stats = stats
        self._credits = credits
        self.failures: list[Failure] = []

    async def consume(self, results: MemoryObjectReceiveStream[Result]) -> None:
        stats = self._stats
        async with results:
            async for item in results:
                if isinstance(item, PageBatch):
                    if item.records:
                        await self._out.send(item.records)
                    elif self._credits is not None:
                        self._credits.release()
                    stats.records += len(item.records)
                    if item.next_link is None:
                        stats.contacts_done += 1
                elif isinstance(item, ItemFailed):
                    self.failures.append(Failure(item.item_id, item.error))
                    stats.contacts_failed += 1
                else:  # counted by the claimer (stats.contacts_invalid)
                    noun = "campaign" if stats.unit == "campaigns" else "contact"
                    error = InvalidContactId(f"not a {noun} id of this API; no request was made")
                    self.failures.append(Failure(item.raw, error))
