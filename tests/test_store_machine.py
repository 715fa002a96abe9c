"""The store and the writer against a model (Hypothesis, stateful): claims, pages, failures,
group commits and kills in any order.

One run over a few items. The machine plays the pipeline: it claims ids, hands pages of the
items it was given to a real :class:`FileSink` (real record files, a real SQLite store), fails
items, commits, and kills the process (the connection is dropped without a commit, the record
files are left as they are) and opens the store again, as a resume does. The model is what
the last commit holds. After every step:

- the store holds exactly the model's last commit for every item (status, cursor, span);
- committed cursors and spans never move backwards, and a finished item stays finished;

and the steps check that a claimed item is never handed out twice in one attempt, that a
finished item is never handed out again, that a reopened store resumes each item exactly from
its last committed cursor and span, and that the record files then hold every committed record
once, in order, and nothing else.
"""

from __future__ import annotations

import shutil
import sqlite3
import tempfile
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import anyio
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from bulkopens._exceptions import ContactNotFound, RetriesExhausted
from bulkopens._files import RecordFiles
from bulkopens._state import DONE, FAILED, GONE, PENDING, AsyncStore, Store
from bulkopens._stats import Stats
from bulkopens._work import PageBatch, Work, line_of
from bulkopens._writer import FileSink, ItemFailed

IDS = ["1", "2", "3", "4", "5"]
FP = {"report": "opens"}
T0 = datetime(2024, 6, 1, tzinfo=UTC)


@dataclass(frozen=True)
class Item:
    """An item as the model's commit holds it."""

    status: int = PENDING
    page: int = 0  # the next page to fetch; the cursor names it (None: page one, or done)
    newest: str | None = None
    oldest: str | None = None

    @property
    def cursor(self) -> str | None:
        return None if self.page == 0 or self.status == DONE else cursor_of(self.page)

    @property
    def progress(self) -> tuple[int, int]:
        """Ordered: a commit must never lower it."""
        return (1 if self.status == DONE else 0, self.page)


def cursor_of(page: int) -> str:
    return f"/items/x/activity?next=P{page}"


def page_of(cursor: str | None) -> int:
    return 0 if cursor is None else int(cursor.rsplit("P", 1)[1])


def stamp(item: str, page: int, n: int) -> str:
    """Each record's own time, older page by page (a newest-first walk)."""
    moment = T0 - timedelta(minutes=100 * page + 10 * n + int(item))
    return moment.strftime("%Y-%m-%dT%H:%M:%S.000Z")


class StoreMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.dir = Path(tempfile.mkdtemp(prefix="bulkopens-machine-"))
        self.committed: dict[str, Item] = {}  # the model: the last commit
        self.live: dict[str, Item] = {}  # what the writer holds, not yet committed
        self.durable: list[bytes] = []  # the committed record lines, in file order
        self.written: list[bytes] = []  # lines written since the last commit
        self.dirty = False  # pages or failures since the last commit (else a commit is a no-op)
        self.seen: dict[str, Item] = {}  # every item's furthest committed state, ever
        self.attempt = 0
        self._open()

    # -- the process -------------------------------------------------------------------------

    def _open(self) -> None:
        self.store = Store.open(self.dir, fingerprint=FP, durable=False)
        self.attempt += 1
        assert self.store.attempt == self.attempt
        self.files = RecordFiles(self.dir, "opens", max_bytes=1 << 20)
        self.files.recover(self.store.committed_files(), self.store.committed_tails())
        self.sink = FileSink(
            AsyncStore(self.store),
            self.files,
            Stats(),
            commit_records=1 << 30,
            commit_seconds=1e9,
            durable=False,
        )
        self.handed: dict[str, Work] = {}  # handed out in this attempt
        self.active: set[str] = set()  # handed out, neither finished nor failed yet

    def teardown(self) -> None:
        self.files.close()
        self.store.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    # -- the pipeline's steps ----------------------------------------------------------------

    @rule(ids=st.lists(st.sampled_from(IDS), min_size=1, max_size=6), retry_failed=st.booleans())
    def claim(self, ids: list[str], retry_failed: bool) -> None:
        claims = self.store.claim(ids, since=None, retry_failed=retry_failed)
        assert [c.item_id for c in claims] == ids
        in_call: set[str] = set()
        for claim in claims:
            cid = claim.item_id
            item = self.committed.get(cid, Item())
            if cid in in_call or cid in self.handed:
                assert (claim.work, claim.why) == (None, "duplicate"), cid
            elif item.status == DONE:
                assert (claim.work, claim.why) == (None, "done"), cid
            elif item.status == GONE and not retry_failed:
                assert (claim.work, claim.why) == (None, "failed"), cid
            else:
                work = claim.work
                assert work is not None, cid
                # resumed exactly from the last commit
                assert (work.cursor, work.newest, work.oldest) == (
                    item.cursor,
                    item.newest,
                    item.oldest,
                ), cid
                self.handed[cid] = work
                self.active.add(cid)
                self.live[cid] = replace(item, status=PENDING)  # claimed: in progress
            in_call.add(cid)

    @precondition(lambda self: self.active)
    @rule(data=st.data(), records=st.integers(0, 3), last=st.booleans())
    def page(self, data: st.DataObject, records: int, last: bool) -> None:
        cid = data.draw(st.sampled_from(sorted(self.active)))
        item = self.live[cid]
        number = item.page
        rows: list[dict[str, Any]] = [
            {"contact_id": cid, "open_date": stamp(cid, number, n), "page": number}
            for n in range(records)
        ]
        lines = [line_of(r) for r in rows]
        newest = rows[0]["open_date"] if rows else None
        oldest = rows[-1]["open_date"] if rows else None
        batch = PageBatch(
            cid,
            rows,
            None if last else cursor_of(number + 1),
            newest,
            oldest,
            newest_lines=lines[:1],
            oldest_lines=lines[-1:],
            work=self.handed[cid],
        )
        self.sink._apply(batch)
        self.written += lines
        self.dirty = True
        self.live[cid] = Item(
            DONE if last else PENDING,
            number + 1,
            max(filter(None, (item.newest, newest)), default=None),
            min(filter(None, (item.oldest, oldest)), default=None),
        )
        if last:
            self.active.discard(cid)

    @precondition(lambda self: self.active)
    @rule(data=st.data(), permanent=st.booleans())
    def fail(self, data: st.DataObject, permanent: bool) -> None:
        cid = data.draw(st.sampled_from(sorted(self.active)))
        error = ContactNotFound("gone", status=404) if permanent else RetriesExhausted("busy")
        self.sink._apply(ItemFailed(cid, error, self.handed[cid]))
        self.live[cid] = replace(self.live[cid], status=GONE if permanent else FAILED)
        self.active.discard(cid)
        self.dirty = True

    @rule()
    def commit(self) -> None:
        """The writer's commit. With nothing written it commits nothing, so the claims made
        since the last commit (pending items) stay uncommitted until it has something."""
        anyio.run(self.sink.commit)
        if self.dirty:
            self.committed.update(self.live)
            self.durable += self.written
            self.written = []
            self.dirty = False

    @rule()
    def kill_and_reopen(self) -> None:
        """A kill -9: nothing past the last commit survives (the buffered lines that reach
        the file are cut back on resume); then the same command again."""
        self.files.close()
        self.store.close()  # the open transaction (claims) is dropped, never committed
        self.live = dict(self.committed)
        self.written = []
        self.dirty = False
        self._open()
        names = sorted(p.name for p in self.dir.glob("opens-*.ndjson"))
        on_disk = b"".join((self.dir / name).read_bytes() for name in names)
        assert on_disk == b"".join(self.durable)

    # -- what always holds -------------------------------------------------------------------

    @invariant()
    def the_store_holds_the_last_commit_and_never_goes_back(self) -> None:
        db = sqlite3.connect(self.dir / ".bulkopens" / "state.sqlite3")
        try:
            rows = db.execute("SELECT id, status, cursor, newest, oldest FROM contacts")
            stored = {
                str(cid): Item(status, page_of(cursor) if status != DONE else -1, newest, oldest)
                for cid, status, cursor, newest, oldest in rows
            }
        finally:
            db.close()
        for cid, item in self.committed.items():
            got = stored.get(cid, Item())
            if got.status == DONE:  # a finished item's cursor is gone: its page is the model's
                got = replace(got, page=item.page)
            assert got == item, (cid, got, item)
            before = self.seen.get(cid)
            if before is not None:
                assert item.progress >= before.progress, cid
                if before.newest is not None:
                    assert (item.newest or "") >= before.newest, cid
                if before.oldest is not None:
                    assert item.oldest is not None, cid
                    assert item.oldest <= before.oldest, cid
            self.seen[cid] = item


TestStoreMachine = StoreMachine.TestCase
TestStoreMachine.settings = settings(max_examples=100, stateful_step_count=40, deadline=None)
