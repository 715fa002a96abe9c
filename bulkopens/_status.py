"""``bulkopens status OUT``: what an output directory holds, read while a job may be writing it.

The state is read through a read-only SQLite connection: in WAL mode a reader never blocks the
writer and sees its last commit, so a running, stopped or killed job can be watched without
taking its lock. Whether a process holds the lock is read from ``/proc/locks`` (Linux), never by
trying the lock, which could make a job starting at that instant refuse to run.
"""

from __future__ import annotations

import json
import os
import sqlite3
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bulkopens._exceptions import ConfigurationError
from bulkopens._state import DB_FILES, DONE, FAILED, GONE, PENDING, STATE_DIR

_STATE_DIR = STATE_DIR
_DB = DB_FILES[0]
_STATUS_NAMES = {PENDING: "pending", DONE: "done", FAILED: "failed", GONE: "failed_for_good"}


def read_status(out: Path) -> dict[str, Any]:
    """The state of ``out`` as a JSON-ready dict; ConfigurationError if it holds none."""
    state_dir = out / _STATE_DIR
    db_path = state_dir / _DB
    if state_dir.is_symlink() or db_path.is_symlink():
        raise ConfigurationError(f"{state_dir} is a symbolic link; bulkopens does not follow it")
    if not db_path.is_file():
        raise ConfigurationError(f"{out} holds no bulkopens state (no {_STATE_DIR}/{_DB})")
    try:
        db = sqlite3.connect(f"{db_path.resolve().as_uri()}?mode=ro", uri=True, timeout=5)
    except sqlite3.Error as exc:
        raise ConfigurationError(f"cannot read the state in {state_dir}: {exc}") from None
    try:
        return _read(db, out, state_dir)
    except sqlite3.Error as exc:
        raise ConfigurationError(f"cannot read the state in {state_dir}: {exc}") from None
    finally:
        db.close()


def _read(db: sqlite3.Connection, out: Path, state_dir: Path) -> dict[str, Any]:
    meta = dict(db.execute("SELECT key, value FROM meta"))
    settings: dict[str, Any] = json.loads(meta.get("settings") or "{}")
    run_row = db.execute(
        "SELECT run, started_at, finished_at, complete, attempts, incremental, records, "
        "oldest, newest FROM runs ORDER BY run DESC LIMIT 1"
    ).fetchone()
    if run_row is None:
        run: dict[str, Any] = {"run": None}
    else:
        number, started, finished, complete, attempts, incremental, records, oldest, newest = (
            run_row
        )
        run = {
            "run": number,
            "attempt": attempts,
            "incremental": bool(incremental),
            "started_at": started,
            "finished_at": finished,
            "complete": bool(complete),
            "records": records,
            "oldest_activity": oldest,
            "newest_activity": newest,
        }
    items = dict.fromkeys([*_STATUS_NAMES.values(), "from_cursor", "invalid"], 0)
    if run_row is not None:
        for status, n in db.execute(
            "SELECT status, COUNT(*) FROM contacts WHERE run = ? GROUP BY status", (run_row[0],)
        ):
            items[_STATUS_NAMES.get(status, "pending")] += n
        (items["from_cursor"],) = db.execute(
            "SELECT COUNT(*) FROM contacts WHERE run = ? AND status IN (?, ?) "
            "AND cursor IS NOT NULL",
            (run_row[0], PENDING, FAILED),
        ).fetchone()
        (items["invalid"],) = db.execute(
            "SELECT COUNT(*) FROM invalid WHERE run = ?", (run_row[0],)
        ).fetchone()
    files = [
        {"name": name, "bytes": length, "records": records}
        for name, length, records in db.execute(
            "SELECT name, length, records FROM files ORDER BY name"
        )
    ]
    holder = lock_holder(state_dir / "lock")
    mode = settings.get("mode", "contact")
    return {
        "out": str(out),
        "report": settings.get("report"),
        "mode": mode,
        "unit": "campaigns" if mode == "campaign" or meta.get("plan") == "campaign" else "contacts",
        "strategy": settings.get("strategy", "contact") if mode != "campaign" else None,
        "since": settings.get("since"),
        **run,
        "items": items,
        "records_total": sum(f["records"] for f in files),
        "files": files,
        "last_commit": _last_commit(state_dir),
        "running": holder is not None,
        "pid": holder if holder not in (None, 0) else None,
    }


def _last_commit(state_dir: Path) -> str | None:
    """When the state last changed: a commit writes the WAL (or, checkpointed, the database)."""
    times = []
    for name in (_DB, _DB + "-wal"):
        try:
            times.append((state_dir / name).stat().st_mtime)
        except OSError:
            continue
    if not times:
        return None
    return datetime.fromtimestamp(max(times), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def lock_holder(lock: Path) -> int | None:
    """The pid of the process holding ``lock`` (an flock), 0 if held by an unknown process,
    None if no process holds it or this system cannot tell."""
    try:
        info = os.stat(lock, follow_symlinks=False)
        with open("/proc/locks", encoding="ascii", errors="replace") as handle:
            table = handle.read()
    except OSError:
        return None
    wanted = f"{os.major(info.st_dev):02x}:{os.minor(info.st_dev):02x}:{info.st_ino}"
    for line in table.splitlines():
        fields = line.split()
        # "1: FLOCK  ADVISORY  WRITE 1234 08:01:5678 0 EOF" (a "->" marks a waiter)
        if "->" in fields or len(fields) < 6 or fields[1] != "FLOCK":
            continue
        if fields[5].lower() == wanted.lower():
            return int(fields[4]) if fields[4].isdigit() else 0
    return None


def describe_status(status: dict[str, Any]) -> str:
    """The status as a few lines for a person."""
    items = status["items"]
    unit = status["unit"]
    lines = [f"bulkopens: {status['out']}: the {status['report']} report of {unit}"]
    if status.get("run") is None:
        lines.append("  no run started yet")
        return "\n".join(lines)
    state = (
        f"running (pid {status['pid']})"
        if status["running"] and status["pid"]
        else "running"
        if status["running"]
        else "complete"
        if status["complete"]
        else "finished, incomplete"
        if status["finished_at"]
        else "stopped (run the same command again to resume)"
    )
    kind = "incremental run" if status["incremental"] else "run"
    lines.append(
        f"  {kind} {status['run']}, attempt {status['attempt']}, started "
        f"{status['started_at']}: {state}"
    )
    failed = items["failed"] + items["failed_for_good"]
    lines.append(
        f"  {unit}: {items['done']:,} done, {items['pending']:,} pending, "
        f"{failed:,} failed ({items['failed']:,} retryable), {items['invalid']:,} invalid "
        "input lines (of the input read so far)"
    )
    files = status["files"]
    lines.append(
        f"  records: {status['records']:,} in this run, {status['records_total']:,} in "
        f"{len(files):,} file{'s' if len(files) != 1 else ''}"
    )
    lines.append(f"  last commit: {status['last_commit'] or 'none'}")
    return "\n".join(lines)
