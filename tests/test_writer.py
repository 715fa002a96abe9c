"""The single writer: group commits never move a contact backwards, and come when its clock says."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import anyio

from bulkopens._exceptions import RetriesExhausted
from bulkopens._files import RecordFiles
from bulkopens._state import DONE, FAILED, AsyncStore, FileMark, ItemMark, Store
from bulkopens._stats import Stats
from bulkopens._work import PageBatch, Work
from bulkopens._writer import FileSink, ItemFailed, Result

FP = {"report": "opens"}


def page(cid: str, stamps: list[str], cursor: str | None, work: Work) -> PageBatch:
    records: list[dict[str, Any]] = [{"contact_id": cid, "open_date": s} for s in stamps]
    return PageBatch(cid, records, cursor, max(stamps), min(stamps), work=work)


class CountingStore(Store):
    """A store that notes the records of each commit."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.commits: list[int] = []

    def commit(
        self,
        files: Sequence[FileMark],
        items: dict[str, ItemMark],
        invalid: Sequence[str],
        records: int,
        oldest: str | None,
        newest: str | None,
    ) -> None:
        super().commit(files, items, invalid, records, oldest, newest)
        self.commits.append(records)


async def run_sink(
    tmp_path: Path,
    items: list[Result],
    *,
    commit_records: int,
    commit_seconds: float = 3600,
    stats: Stats | None = None,
    clock: Callable[[], float] | None = None,
) -> CountingStore:
    """Run a FileSink over ``items``, all queued before it starts: it is never idle, so it
    commits only by its ``commit_records`` and ``commit_seconds`` rules, and at the end."""
    store = CountingStore.open(tmp_path, fingerprint=FP)
    assert isinstance(store, CountingStore)
    store.claim(["1", "2"], since=None, retry_failed=False)
    sink = FileSink(
        AsyncStore(store),
        RecordFiles(tmp_path, "opens", max_bytes=1 << 20),
        stats or Stats(),
        commit_records=commit_records,
        commit_seconds=commit_seconds,
        durable=False,
        **({"clock": clock} if clock else {}),
    )
    tx, rx = anyio.create_memory_object_stream[Result](100)
    async with tx:
        for item in items:
            await tx.send(item)
    await sink.consume(rx)
    return store


def contact_row(store: Store, cid: int) -> tuple[Any, ...]:
    row = store._db.execute(
        "SELECT status, cursor, newest FROM contacts WHERE id = ?", (cid,)
    ).fetchone()
    assert row is not None
    return tuple(row)


async def test_newest_survives_commits_between_pages(tmp_path: Path) -> None:
    work = Work("1")
    items: list[Result] = [
        page("1", ["2024-03-01T00:00:00.000Z", "2024-02-01T00:00:00.000Z"], "/p2", work),
        page("1", ["2024-01-01T00:00:00.000Z"], "/p3", work),
        page("1", ["2023-12-01T00:00:00.000Z"], None, work),
    ]
    store = await run_sink(tmp_path, items, commit_records=1)  # a commit after every page
    assert contact_row(store, 1) == (DONE, None, "2024-03-01T00:00:00.000Z")
    store.close()


async def test_a_failure_after_a_commit_keeps_the_cursor(tmp_path: Path) -> None:
    work = Work("1")
    resumed = Work("2", cursor="/v2/contacts/2/tracking/opens?next=R")
    items: list[Result] = [
        page("1", ["2024-03-01T00:00:00.000Z"], "/v2/contacts/1/tracking/opens?next=P2", work),
        ItemFailed("1", RetriesExhausted("flaky", status=503), work),
        ItemFailed("2", RetriesExhausted("flaky", status=503), resumed),
    ]
    store = await run_sink(tmp_path, items, commit_records=1)
    status, cursor, newest = contact_row(store, 1)
    assert (status, cursor) == (FAILED, "/v2/contacts/1/tracking/opens?next=P2")
    assert newest == "2024-03-01T00:00:00.000Z"
    assert contact_row(store, 2)[:2] == (FAILED, "/v2/contacts/2/tracking/opens?next=R")
    store.close()


def ten_pages(cid: str) -> list[Result]:
    """Ten pages of ten records each, newest first, for a contact fetched from page one."""
    work = Work(cid)
    items: list[Result] = []
    for n in range(10):
        stamps = [f"2024-01-{28 - 2 * n:02d}T00:00:{59 - r:02d}.000Z" for r in range(10)]
        items.append(page(cid, stamps, f"/p{n + 2}" if n < 9 else None, work))
    return items


async def test_commits_under_load_follow_the_sinks_clock(tmp_path: Path) -> None:
    """A fake clock that moves one second per record written: with commit_seconds=25 the
    sink commits as soon as 25 s have passed since its last commit (after 30, 60 and 90
    records), then the rest at the end; the record count alone (10,000) never triggers one."""
    stats = Stats()
    store = await run_sink(
        tmp_path,
        ten_pages("1"),
        commit_records=10_000,
        commit_seconds=25,
        stats=stats,
        clock=lambda: float(stats.records),
    )
    assert store.commits == [30, 30, 30, 10]
    assert contact_row(store, 1)[:2] == (DONE, None)
    store.close()


async def test_a_clock_that_stands_still_commits_only_at_the_end(tmp_path: Path) -> None:
    store = await run_sink(
        tmp_path, ten_pages("1"), commit_records=10_000, commit_seconds=25, clock=lambda: 0.0
    )
    assert store.commits == [100]
    store.close()
