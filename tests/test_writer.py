"""The single writer: group commits never move a contact backwards."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio

from bulkopens._exceptions import RetriesExhausted
from bulkopens._files import RecordFiles
from bulkopens._pagination import PageBatch, Work
from bulkopens._state import DONE, FAILED, AsyncStore, Store
from bulkopens._stats import Stats
from bulkopens._writer import ContactFailed, FileSink, Result

FP = {"report": "opens"}


def page(cid: str, stamps: list[str], cursor: str | None, work: Work) -> PageBatch:
    records: list[dict[str, Any]] = [{"contact_id": cid, "open_date": s} for s in stamps]
    return PageBatch(cid, records, cursor, max(stamps), min(stamps), work=work)


async def run_sink(tmp_path: Path, items: list[Result], *, commit_records: int) -> Store:
    store = Store.open(tmp_path, fingerprint=FP)
    store.claim(["1", "2"], since=None, retry_failed=False)
    sink = FileSink(
        AsyncStore(store),
        RecordFiles(tmp_path, "opens", max_bytes=1 << 20),
        Stats(),
        commit_records=commit_records,
        commit_seconds=3600,
        durable=False,
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
        ContactFailed("1", RetriesExhausted("flaky", status=503), work),
        ContactFailed("2", RetriesExhausted("flaky", status=503), resumed),
    ]
    store = await run_sink(tmp_path, items, commit_records=1)
    status, cursor, newest = contact_row(store, 1)
    assert (status, cursor) == (FAILED, "/v2/contacts/1/tracking/opens?next=P2")
    assert newest == "2024-03-01T00:00:00.000Z"
    assert contact_row(store, 2)[:2] == (FAILED, "/v2/contacts/2/tracking/opens?next=R")
    store.close()
