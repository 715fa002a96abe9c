"""What is durably done: the state store kept in ``OUT/.bulkopens/state.sqlite3``.

The writer is the only committer while records flow (before that, a planned run commits its
choice of path and the input lines that are not ids). It makes record files durable first and
only then commits here, so a committed row never points past bytes that could be lost. On
resume, files are cut back to their committed length, completed items are skipped, and
in-progress items go on from their committed cursor (the last next_link whose page is in
the files). A work item is a contact, or a campaign in campaign scope; the table that holds
them keeps its first name, ``contacts``, so that states made by earlier versions still open.

Rows are small and keyed by item id; a commit updates only the items it touched, so the
state stays compact and fast for millions of items. With each file's committed length a
commit stores the hash of the file's last 4 KiB before that length (``files.tail``), so a file
changed behind the tool's back is refused on resume (see :mod:`bulkopens._files`). All
methods are synchronous and must be called from one thread at a time (the async side
serialises them through one worker thread).

Nothing here follows a symbolic link: ``.bulkopens``, its lock and the database files are
refused when they are links. A full disk is an :class:`OutputError` (exit 74), a read-only or
misplaced ``.bulkopens`` a ConfigurationError (exit 2), and only a database that SQLite calls
corrupt is reported as unreadable, with ``--fresh`` as the way out (see :mod:`bulkopens._disk`).
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import json
import os
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple, TypeVar, TypeVarTuple, Unpack

import anyio

from bulkopens._disk import refuse_link, state_error, write_error
from bulkopens._exceptions import ConfigurationError
from bulkopens._work import Work

SCHEMA_VERSION = 1
STATE_DIR = ".bulkopens"
DB_FILES = ("state.sqlite3", "state.sqlite3-wal", "state.sqlite3-shm", "state.sqlite3-journal")

PENDING, DONE, FAILED, GONE = 0, 1, 2, 3  # GONE: failed for good (404, foreign next_link)
_CLAIM_CHUNK = 500  # ids per SELECT ... IN (...)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS runs (
    run INTEGER PRIMARY KEY, started_at TEXT NOT NULL, finished_at TEXT,
    complete INTEGER NOT NULL DEFAULT 0, attempts INTEGER NOT NULL DEFAULT 0,
    since TEXT, incremental INTEGER NOT NULL DEFAULT 0,
    records INTEGER NOT NULL DEFAULT 0, oldest TEXT, newest TEXT);
CREATE TABLE IF NOT EXISTS files (
    name TEXT PRIMARY KEY, run INTEGER NOT NULL,
    length INTEGER NOT NULL, records INTEGER NOT NULL, tail BLOB);
CREATE TABLE IF NOT EXISTS contacts (
    id INTEGER PRIMARY KEY, run INTEGER NOT NULL, attempt INTEGER NOT NULL,
    status INTEGER NOT NULL, cursor TEXT, since TEXT, since_seen BLOB,
    newest TEXT, newest_seen BLOB, oldest TEXT, oldest_seen BLOB,
    http_status INTEGER, error_key TEXT, error TEXT);
CREATE TABLE IF NOT EXISTS invalid (
    raw TEXT NOT NULL, run INTEGER NOT NULL, PRIMARY KEY (raw, run));
CREATE TABLE IF NOT EXISTS planned_contacts (id INTEGER PRIMARY KEY);
CREATE TABLE IF NOT EXISTS id_map (
    scope TEXT NOT NULL, v2 TEXT NOT NULL, v3 TEXT, PRIMARY KEY (scope, v2));
"""


@dataclass(slots=True)
class ItemMark:
    """A work item's state (a contact's, or a campaign's) as the writer will commit it."""

    status: int = PENDING
    cursor: str | None = None
    newest: str | None = None
    newest_seen: frozenset[bytes] = frozenset()
    oldest: str | None = None  # in this run
    oldest_seen: frozenset[bytes] = frozenset()
    http_status: int | None = None
    error_key: str | None = None
    error: str | None = None


@dataclass(frozen=True, slots=True)
class FileMark:
    name: str
    run: int
    length: int
    records: int
    tail: bytes | None = None  # _files.tail_hash of the last 4 KiB before ``length``


@dataclass(frozen=True, slots=True)
class Claim:
    """What the producer does with one input id: fetch it (``work``) or skip it (``why``)."""

    item_id: str
    work: Work | None
    why: str = ""  # "duplicate", "done" or "failed" when work is None


class _ItemRow(NamedTuple):
    """The columns of an item's row that a claim reads."""

    id: int | str
    run: int
    attempt: int
    status: int
    cursor: str | None
    since: str | None
    since_seen: bytes | None
    newest: str | None
    newest_seen: bytes | None
    oldest: str | None
    oldest_seen: bytes | None

    @classmethod
    def of(cls, _cursor: sqlite3.Cursor, row: tuple[Any, ...]) -> _ItemRow:
        """A row factory: ``cursor.row_factory = _ItemRow.of``."""
        return cls(*row)


_ITEM_COLUMNS = ", ".join(_ItemRow._fields)


def _pack(hashes: frozenset[bytes]) -> bytes | None:
    return b"".join(sorted(hashes)) or None


def _unpack(blob: bytes | None) -> frozenset[bytes]:
    if not blob:
        return frozenset()
    return frozenset(blob[i : i + 8] for i in range(0, len(blob), 8))


# How each setting a state is tied to reads in a message, with its default when it is absent.
_SETTING_NAMES = {
    "report": ("--report", "opens"),
    "since": ("--since", "none"),
    "base_url": ("--base-url", "the default"),
    "mode": ("the mode", "contacts"),
    "strategy": ("--strategy", "contact"),
    "api": ("--api", "v2"),
}


def _tied(fingerprint: dict[str, Any]) -> dict[str, Any]:
    """The settings a state is tied to. The set of contacts is not one of them (states of
    earlier versions carry its digest): a planned job checks it itself (see _jobs.feed)."""
    return {k: v for k, v in fingerprint.items() if k != "contacts"}


def _setting_change(key: str, before: Any, after: Any) -> str:
    """One changed setting as a person reads it: ``--report opens -> clicks``."""
    if key == "contacts":
        return "the set of contacts (fixed by --strategy auto or campaign) changed"
    name, default = _SETTING_NAMES.get(key, (key, "none"))
    if key == "mode":
        before, after = (v if v else None for v in (before, after))
        before = "campaigns" if before == "campaign" else before
        after = "campaigns" if after == "campaign" else after
    return f"{name} {before if before is not None else default} -> " + (
        f"{after if after is not None else default}"
    )


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


W = TypeVar("W", bound=Callable[..., Any])


def _writes(method: W) -> W:
    """A Store method that writes: an SQLite error rolls the transaction back and becomes the
    run-stopping error it means (a full disk: OutputError; see :func:`_disk.state_error`)."""

    @functools.wraps(method)
    def wrapper(self: Store, *args: Any, **kwargs: Any) -> Any:
        try:
            return method(self, *args, **kwargs)
        except sqlite3.Error as exc:
            with contextlib.suppress(sqlite3.Error):
                self._db.rollback()
            raise state_error(exc, self.state_dir) from None

    return wrapper  # type: ignore[return-value]


def _outputs_of(db_path: Path) -> tuple[list[str], bool]:
    """The record files a state names and whether any of its attempts finished (and so wrote
    the artifacts), read before ``--fresh`` forgets it; nothing for an unreadable state."""
    if not db_path.is_file():
        return [], False
    try:
        db = sqlite3.connect(f"{db_path.resolve().as_uri()}?mode=ro", uri=True)
        try:
            names = [str(name) for (name,) in db.execute("SELECT name FROM files")]
            finished = db.execute(
                "SELECT 1 FROM runs WHERE finished_at IS NOT NULL LIMIT 1"
            ).fetchone()
            return names, finished is not None
        finally:
            db.close()
    except sqlite3.Error:
        return [], False


class Store:
    """The state of one output directory. Open with :meth:`open`; one process at a time."""

    def __init__(
        self,
        db: sqlite3.Connection,
        lock_fd: int | None,
        run: int,
        attempt: int,
        state_dir: Path = Path(STATE_DIR),
    ) -> None:
        self._db = db
        self._lock_fd = lock_fd
        self.run = run
        self.attempt = attempt
        self.state_dir = state_dir
        #: with ``fresh``: the record files the forgotten state named (bulkopens wrote them),
        #: and whether it had a finished attempt (so the artifacts in --out are its own too)
        self.forgotten: list[str] = []
        self.forgotten_finished = False
        # How an item id is kept: v2's numeric ids as integers (the schema's INTEGER PRIMARY
        # KEY), v3's UUIDs as text (a state made with ``text_ids``).
        self._key: Callable[[str], int | str] = int

    # -- opening ---------------------------------------------------------------------------

    @classmethod
    def open(
        cls,
        directory: Path,
        *,
        fingerprint: dict[str, Any],
        incremental: bool = False,
        since: str | None = None,
        durable: bool = True,
        fresh: bool = False,
        text_ids: bool = False,
    ) -> Store:
        """Open (or create) the state in ``directory``, lock it, and start an attempt.

        ``text_ids``: a new state keeps item ids as text (v3's UUIDs), not as integers (v2's
        ids); an existing state keeps the form it was made with.

        ``fresh`` forgets the earlier state (after taking the lock), keeping in
        :attr:`forgotten` the files it named. Raises ConfigurationError when another process
        holds the lock, when the state was made with other settings (``fingerprint``) or by
        another schema version, when ``.bulkopens`` (or a file in it) is a link, not a
        directory, or not writable, or when the database is corrupt; OutputError when the disk
        is full. A state that is missing or empty is a new one: the caller refuses record
        files that it does not account for (:meth:`RecordFiles.recover`).
        """
        state_dir = directory / STATE_DIR
        if refuse_link(state_dir) and not state_dir.is_dir():
            raise ConfigurationError(
                f"{state_dir} is not a directory (bulkopens keeps its state there): move it "
                "elsewhere or use another --out"
            )
        for name in ("lock", *DB_FILES):
            refuse_link(state_dir / name)
        try:
            state_dir.mkdir(parents=True, exist_ok=True)
            flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
            lock_fd = os.open(state_dir / "lock", flags, 0o600)
        except OSError as exc:
            raise write_error(exc, state_dir) from None
        try:
            fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(lock_fd)
            raise ConfigurationError(
                f"another bulkopens run is using {directory}; wait for it or use another --out"
            ) from None
        db: sqlite3.Connection | None = None
        try:
            forgotten: tuple[list[str], bool] = ([], False)
            if fresh:  # only once we hold the lock: never pull the state from under a run
                forgotten = _outputs_of(state_dir / DB_FILES[0])
                for name in DB_FILES:
                    (state_dir / name).unlink(missing_ok=True)
            db = sqlite3.connect(state_dir / DB_FILES[0], check_same_thread=False)
            db.execute("PRAGMA journal_mode=WAL")
            # NORMAL is enough: record files are fsynced before each commit, so losing the last
            # commit in a power cut only rolls the state back, and the files are cut back too.
            db.execute(f"PRAGMA synchronous={'NORMAL' if durable else 'OFF'}")
            db.executescript(
                _SCHEMA.replace("id INTEGER PRIMARY KEY", "id TEXT PRIMARY KEY")
                if text_ids
                else _SCHEMA
            )
            columns = {row[1] for row in db.execute("PRAGMA table_info(files)")}
            if "tail" not in columns:  # a state of an older version: its rows have no hash
                db.execute("ALTER TABLE files ADD COLUMN tail BLOB")
            store = cls(db, lock_fd, 0, 0, state_dir)
            kinds = {row[1]: row[2] for row in db.execute("PRAGMA table_info(contacts)")}
            if str(kinds.get("id", "")).upper() == "TEXT":
                store._key = str
            store.forgotten, store.forgotten_finished = forgotten
            store._begin(fingerprint, incremental, since)
        except (sqlite3.Error, OSError) as exc:
            if db is not None:
                db.close()
            os.close(lock_fd)
            if isinstance(exc, OSError):
                raise write_error(exc, state_dir) from None
            raise state_error(exc, state_dir) from None
        except BaseException:
            if db is not None:
                db.close()
            os.close(lock_fd)
            raise
        return store

    def _meta(self, key: str) -> str | None:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def _set_meta(self, key: str, value: str) -> None:
        self._db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))

    def _begin(self, fingerprint: dict[str, Any], incremental: bool, since: str | None) -> None:
        wanted = json.dumps(fingerprint, sort_keys=True)
        version = self._meta("schema")
        if version is not None and version != str(SCHEMA_VERSION):
            raise ConfigurationError(
                "this --out was written by another version of bulkopens; use --fresh"
            )
        stored = self._meta("settings")
        if stored is not None and _tied(json.loads(stored)) != _tied(fingerprint):
            before = json.loads(stored)
            diff = ", ".join(
                _setting_change(k, before.get(k), fingerprint.get(k))
                for k in sorted(set(before) | set(fingerprint))
                if before.get(k) != fingerprint.get(k)
            )
            raise ConfigurationError(
                f"this --out holds a run with other settings ({diff}); use the same settings, "
                "another --out, or --fresh to start over"
            )
        self._set_meta("schema", str(SCHEMA_VERSION))
        self._set_meta("settings", wanted)
        attempt = int(self._meta("attempt") or 0) + 1
        self._set_meta("attempt", str(attempt))
        last = self._db.execute(
            "SELECT run, complete FROM runs ORDER BY run DESC LIMIT 1"
        ).fetchone()
        if last is None or (incremental and last[1]):
            run = 1 if last is None else int(last[0]) + 1
            self._db.execute(
                "INSERT INTO runs (run, started_at, since, incremental) VALUES (?, ?, ?, ?)",
                (run, _now(), since, int(incremental)),
            )
        else:
            run = int(last[0])
        self._db.execute("UPDATE runs SET attempts = attempts + 1 WHERE run = ?", (run,))
        self._db.commit()
        self.run, self.attempt = run, attempt

    # -- the producer's side ---------------------------------------------------------------

    @_writes
    def claim(self, ids: Sequence[str], *, since: str | None, retry_failed: bool) -> list[Claim]:
        """Decide, for each canonical id in input order, whether this attempt fetches it.

        New ids are fetched from page one; ids of this run that are pending, or failed for a
        transient reason, go on from their cursor; done ids are skipped; ids that failed for
        good are skipped unless ``retry_failed``; ids already claimed by this attempt are
        duplicates. In a new (incremental) run, an id from an earlier run starts again from
        page one with ``created_since`` set to the newest activity already written for it.
        Writes are left uncommitted: the writer's next commit makes them durable.
        """
        rows: dict[int | str, _ItemRow] = {}
        key = self._key
        unique = list(dict.fromkeys(key(i) for i in ids))
        select = self._db.cursor()
        select.row_factory = _ItemRow.of
        for start in range(0, len(unique), _CLAIM_CHUNK):
            chunk = unique[start : start + _CLAIM_CHUNK]
            marks = ",".join("?" * len(chunk))
            for row in select.execute(
                f"SELECT {_ITEM_COLUMNS} FROM contacts WHERE id IN ({marks})", chunk
            ):
                rows[row.id] = row
        inserts: list[tuple[Any, ...]] = []
        updates: list[tuple[Any, ...]] = []
        out: list[Claim] = []
        run, attempt = self.run, self.attempt
        taken: set[int | str] = set()  # claimed (or skipped) by this call: a repeat is a duplicate
        for raw in ids:
            cid = key(raw)
            row = rows.get(cid)
            if cid in taken or (row is not None and row.attempt == attempt):
                out.append(Claim(raw, None, "duplicate"))
                continue
            taken.add(cid)
            if row is None:
                inserts.append((cid, run, attempt, PENDING, since))
                out.append(Claim(raw, Work(raw, None, since)))
                continue
            if row.run != run:  # a new incremental run: fetch what is new since last time
                if row.status == GONE and not retry_failed:
                    updates.append((run, attempt, GONE, None, row.since, row.since_seen, cid))
                    out.append(Claim(raw, None, "failed"))
                    continue
                new_since = row.newest or since
                new_seen = row.newest_seen if row.newest else None
                updates.append((run, attempt, PENDING, None, new_since, new_seen, cid))
                work = Work(
                    raw, None, new_since, _unpack(new_seen), row.newest, _unpack(row.newest_seen)
                )
                out.append(Claim(raw, work))
                continue
            if row.status == DONE or (row.status == GONE and not retry_failed):
                out.append(Claim(raw, None, "done" if row.status == DONE else "failed"))
                continue
            updates.append((run, attempt, PENDING, row.cursor, row.since, row.since_seen, cid))
            work = Work(
                raw,
                row.cursor,
                row.since,
                _unpack(row.since_seen),
                row.newest,
                _unpack(row.newest_seen),
                row.oldest,
                _unpack(row.oldest_seen),
            )
            out.append(Claim(raw, work))
        if inserts:
            self._db.executemany(
                "INSERT INTO contacts (id, run, attempt, status, since) VALUES (?, ?, ?, ?, ?)",
                inserts,
            )
        if updates:
            self._db.executemany(
                "UPDATE contacts SET run = ?, attempt = ?, status = ?, cursor = ?, since = ?, "
                "since_seen = ?, "
                # the span written "in this run" starts empty when a new run claims the item
                "oldest = CASE WHEN run = ? THEN oldest END, "
                "oldest_seen = CASE WHEN run = ? THEN oldest_seen END WHERE id = ?",
                [(*u[:-1], run, run, u[-1]) for u in updates],
            )
        return out

    # -- the writer's side -----------------------------------------------------------------

    def committed_files(self) -> dict[str, int]:
        """Every record file and the length up to which it is committed."""
        return dict(self._db.execute("SELECT name, length FROM files"))

    def committed_tails(self) -> dict[str, bytes]:
        """The tail hash committed with each file's length (files that have one)."""
        return dict(self._db.execute("SELECT name, tail FROM files WHERE tail IS NOT NULL"))

    def has_finished(self) -> bool:
        """Whether an attempt on this state ever finished (and so wrote the artifacts)."""
        row = self._db.execute("SELECT 1 FROM runs WHERE finished_at IS NOT NULL LIMIT 1")
        return row.fetchone() is not None

    @_writes
    def commit(
        self,
        files: Sequence[FileMark],
        items: dict[str, ItemMark],
        invalid: Sequence[str],
        records: int,
        oldest: str | None,
        newest: str | None,
    ) -> None:
        """Record, in one transaction, how far each file is valid and where each item stands."""
        db = self._db
        db.executemany(
            "INSERT OR REPLACE INTO files (name, run, length, records, tail) "
            "VALUES (?, ?, ?, ?, ?)",
            [(f.name, f.run, f.length, f.records, f.tail) for f in files],
        )
        db.executemany(
            "UPDATE contacts SET status = ?, cursor = ?, newest = ?, newest_seen = ?, "
            "oldest = ?, oldest_seen = ?, http_status = ?, error_key = ?, error = ? WHERE id = ?",
            [
                (
                    m.status,
                    m.cursor,
                    m.newest,
                    _pack(m.newest_seen),
                    m.oldest,
                    _pack(m.oldest_seen),
                    m.http_status,
                    m.error_key,
                    m.error,
                    self._key(cid),
                )
                for cid, m in items.items()
            ],
        )
        db.executemany(
            "INSERT OR IGNORE INTO invalid (raw, run) VALUES (?, ?)",
            [(raw, self.run) for raw in invalid],
        )
        if records or oldest or newest:
            db.execute(
                "UPDATE runs SET records = records + ?, "
                "oldest = CASE WHEN oldest IS NULL OR ? < oldest THEN ? ELSE oldest END, "
                "newest = CASE WHEN newest IS NULL OR ? > newest THEN ? ELSE newest END "
                "WHERE run = ?",
                (records, oldest, oldest, newest, newest, self.run),
            )
        db.commit()

    @_writes
    def add_invalid(self, raws: Sequence[str]) -> None:
        """Record input lines that are not ids, and commit (the planner's contacts, which never
        pass through the writer)."""
        self._db.executemany(
            "INSERT OR IGNORE INTO invalid (raw, run) VALUES (?, ?)",
            [(raw, self.run) for raw in raws],
        )
        self._db.commit()

    def plan(self) -> str | None:
        """The path (``contact`` or ``campaign``) the planner chose for this ``--out``, if any."""
        return self._meta("plan")

    @_writes
    def save_plan(self, path: str) -> None:
        """Keep the planner's choice: resumes and incremental runs take the same path."""
        self._set_meta("plan", path)
        self._db.commit()

    def contacts_digest(self) -> str | None:
        """The digest of the contact set that states of earlier versions were tied to."""
        stored = self._meta("settings")
        digest = json.loads(stored).get("contacts") if stored else None
        return str(digest) if digest else None

    # -- v2 ids mapped to v3 (the xref endpoints), kept so a rerun asks nothing again -----------

    def mapped(self, scope: str, v2_ids: Sequence[str]) -> dict[str, str | None]:
        """The stored v3 id of each of ``v2_ids`` that was mapped before (None: it has none)."""
        out: dict[str, str | None] = {}
        for start in range(0, len(v2_ids), _CLAIM_CHUNK):
            chunk = list(v2_ids[start : start + _CLAIM_CHUNK])
            marks = ",".join("?" * len(chunk))
            for v2, v3 in self._db.execute(
                f"SELECT v2, v3 FROM id_map WHERE scope = ? AND v2 IN ({marks})", (scope, *chunk)
            ):
                out[str(v2)] = None if v3 is None else str(v3)
        return out

    @_writes
    def save_mapped(self, scope: str, pairs: dict[str, str | None]) -> None:
        """Keep a mapping the API gave (committed at once: it cost requests)."""
        self._db.executemany(
            "INSERT OR REPLACE INTO id_map (scope, v2, v3) VALUES (?, ?, ?)",
            [(scope, v2, v3) for v2, v3 in pairs.items()],
        )
        self._db.commit()

    def id_map(self) -> Iterator[tuple[str, str, str | None]]:
        """Every mapping kept: (scope, v2 id, v3 id or None), by scope and v2 id as a number."""
        for scope, v2, v3 in self._db.execute(
            "SELECT scope, v2, v3 FROM id_map ORDER BY scope, LENGTH(v2), v2"
        ):
            yield str(scope), str(v2), None if v3 is None else str(v3)

    def planned_contacts(self) -> frozenset[str] | None:
        """The contacts of the last planned attempt (``--strategy auto`` or ``campaign``), or
        None if no attempt stored them."""
        if self._meta("planned_contacts") is None:
            return None
        return frozenset(str(i) for (i,) in self._db.execute("SELECT id FROM planned_contacts"))

    @_writes
    def save_planned_contacts(self, ids: frozenset[str]) -> None:
        """Keep this attempt's contacts: the next attempt tells which were added since."""
        self._db.execute("DELETE FROM planned_contacts")
        self._db.executemany(
            "INSERT INTO planned_contacts (id) VALUES (?)", ((self._key(i),) for i in ids)
        )
        self._set_meta("planned_contacts", str(len(ids)))
        self._db.commit()

    @_writes
    def finish(self, complete: bool) -> None:
        """Close this attempt; a complete run is what ``--incremental`` builds on next time."""
        self._db.execute(
            "UPDATE runs SET finished_at = ?, complete = MAX(complete, ?) WHERE run = ?",
            (_now(), int(complete), self.run),
        )
        self._db.commit()

    # -- views for the output files --------------------------------------------------------

    def failures(
        self,
        key_column: str = "contact_id",
        invalid_noun: str = "contact",
        id_form: str = "a v2 {noun} id (a positive integer)",
    ) -> Iterator[dict[str, Any]]:
        """Every contact (or campaign: ``key_column``) of this run that is failed, then every
        invalid input line (which was meant to be an ``invalid_noun`` id)."""
        for cid, status, http_status, key, error in self._db.execute(
            "SELECT id, status, http_status, error_key, error FROM contacts "
            "WHERE run = ? AND status IN (?, ?) ORDER BY id",
            (self.run, FAILED, GONE),
        ):
            yield {
                key_column: str(cid),
                "status": http_status,
                "error_key": key,
                "error": error,
                "retryable": status == FAILED,
            }
        for raw, unmapped in self._db.execute(
            "SELECT raw, EXISTS (SELECT 1 FROM id_map WHERE v2 = TRIM(raw) AND v3 IS NULL) "
            "FROM invalid WHERE run = ? ORDER BY raw",
            (self.run,),
        ):
            if unmapped:
                yield {
                    f"{invalid_noun}_id": raw,
                    "status": None,
                    "error_key": "bulkopens.no_v3_id",
                    "error": f"this v2 {invalid_noun} id has no v3 counterpart (the API's id "
                    "mapping knows none); no request was made for it",
                    "retryable": False,
                }
                continue
            yield {
                f"{invalid_noun}_id": raw,
                "status": None,
                "error_key": f"bulkopens.invalid_{invalid_noun}_id",
                "error": f"not {id_form.format(noun=invalid_noun)}; no request was made",
                "retryable": False,
            }

    def counts(self) -> dict[str, int]:
        """Items of the current run by status, plus records committed in it."""
        names = {PENDING: "pending", DONE: "done", FAILED: "failed", GONE: "failed_for_good"}
        out = dict.fromkeys(names.values(), 0)
        for status, n in self._db.execute(
            "SELECT status, COUNT(*) FROM contacts WHERE run = ? GROUP BY status", (self.run,)
        ):
            out[names[status]] = n
        (out["invalid"],) = self._db.execute(
            "SELECT COUNT(*) FROM invalid WHERE run = ?", (self.run,)
        ).fetchone()
        return out

    def runs(self) -> list[dict[str, Any]]:
        """Every run with its files, counts and time window, oldest first (for the manifest)."""
        files: dict[int, list[dict[str, Any]]] = {}
        for name, run, length, records in self._db.execute(
            "SELECT name, run, length, records FROM files ORDER BY name"
        ):
            files.setdefault(run, []).append({"name": name, "bytes": length, "records": records})
        out = []
        for row in self._db.execute(
            "SELECT run, started_at, finished_at, complete, attempts, since, incremental, "
            "records, oldest, newest FROM runs ORDER BY run"
        ):
            run, started, finished, complete, attempts, since, incr, records, oldest, newest = row
            out.append(
                {
                    "run": run,
                    "incremental": bool(incr),
                    "complete": bool(complete),
                    "started_at": started,
                    "finished_at": finished,
                    "attempts": attempts,
                    "since": since,
                    "records": records,
                    "oldest_activity": oldest,
                    "newest_activity": newest,
                    "files": files.get(run, []),
                }
            )
        return out

    def close(self) -> None:
        try:
            self._db.close()
        finally:
            if self._lock_fd is not None:
                os.close(self._lock_fd)
                self._lock_fd = None


T = TypeVar("T")
# Positional arguments only, as anyio.to_thread.run_sync takes them: a ParamSpec would need
# **kwargs too. A TypeVarTuple keeps each argument's type all the same.
Ts = TypeVarTuple("Ts")


class AsyncStore:
    """A :class:`Store` for the event loop: every call runs in a worker thread, one at a time."""

    def __init__(self, store: Store) -> None:
        self.sync = store
        self._limiter = anyio.CapacityLimiter(1)

    @property
    def run(self) -> int:
        return self.sync.run

    async def call(self, fn: Callable[[Unpack[Ts]], T], *args: *Ts) -> T:
        """Run ``fn(*args)`` off the loop, after every call made before it. Not abandoned on
        cancellation: a commit that has started always finishes. Arguments are positional
        only (as ``anyio.to_thread.run_sync`` takes them): wrap a call with keywords in a
        lambda or :func:`functools.partial`."""
        return await anyio.to_thread.run_sync(fn, *args, limiter=self._limiter)
