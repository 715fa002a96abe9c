"""One budget per API key: the pace and the daily ledger, shared by every process that uses it.

Constant Contact's limits belong to the API key (4 requests a second and 10,000 a day; partner
keys 10/s and 250,000/day), not to a process. So the pacer of every client on one key reserves
its request starts in one shared schedule, and every request is counted in one ledger per UTC
day:

* ``local`` (the default): a small SQLite file in the user's state directory
  (``$BULKOPENS_STATE_DIR``, else ``$XDG_STATE_HOME/bulkopens``, else
  ``~/.local/state/bulkopens``), mode 0600, one row per key. Every process of the user on the
  machine shares it, with nothing to set up.
* ``redis://HOST:PORT/DB`` (or ``rediss://``): one Redis for a fleet of hosts; the same
  reservation is an atomic server-side script, timed by the Redis server's own clock.
* ``process``: the in-process :class:`~bulkopens._ratelimit.Pacer` alone, no ledger (tests).

The schedule is GCRA (generic cell rate algorithm) virtual scheduling, with no burst, as the
in-process pacer does: a reservation takes the slot ``max(now, tat, paused)`` and moves ``tat``
one interval past it, in one transaction; the process then sleeps until its slot. Each process
holds at most one reservation at a time (its pacer's lock is held while it waits), so a process
that dies wastes one slot, and processes that start together interleave. A throttle seen by any
process pauses them all and stretches the shared interval by a quarter; clean grants earn it
back, as in the pacer.

At a rate so high that ``LATE_TOLERANCE`` spans several slots (above about 500/s: simulators
only, a real key allows 4 or 10), one reservation takes up to that many consecutive slots (the
fewer the process used of its last one, the fewer), and the process grants them locally: each
at or after its own slot and never more than ``LATE_TOLERANCE`` after it (a slot gone by further
is dropped, and its count given back to the ledger with the next reservation). Every grant is
thus still within ``[slot, slot + LATE_TOLERANCE]`` of a slot of its own in the shared schedule,
the same bound as a single reservation's, while most grants need no transaction. At 4/s or
10/s a reservation is one slot, as it always was.

Fast path: a grant whose reserved slot has come, or (local store) whose reservation finds its
slot has come, while no other caller holds or waits for the lock, completes without yielding
to the event loop.

Rows are found by a hash of the API key and the API host (sha256; never the key): a simulator
on another port keeps its own budget, and the key is written nowhere.

The ledger: each grant counts one request for today (UTC). A grant that would take the day past
``daily_quota - reserve`` is refused: the run stops with QuotaExhausted (exit 4), saying when
the quota resets, or with ``wait_for_quota`` waits until 00:00 UTC and goes on. When the API
itself answers that the quota is spent, the ledger marks the day spent. At rate 0 (simulators
only) requests are taken from the ledger in leases of :data:`LEASE`, and the ledger counts
but never stops a run.

If the store cannot be used (Redis unreachable, the SQLite file locked or unwritable), every
request waits, retrying with a backoff, and says so: never a fall back to local full speed,
which would overrun the key.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import math
import os
import sqlite3
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import urlsplit

import anyio

from bulkopens._config import DEFAULT_DAILY_QUOTA
from bulkopens._exceptions import (
    ConfigurationError,
    QuotaExhausted,
    RequestLimitReached,
    ServiceUnavailable,
)
from bulkopens._log import ratelimit_log
from bulkopens._ratelimit import LATE_TOLERANCE, MAX_SLOWDOWN, Clock, Pacer, Sleep

if TYPE_CHECKING:
    from redis.asyncio import Redis

LEASE = 64  # requests taken from the ledger at once at rate 0
STATE_DIR_ENV = "BULKOPENS_STATE_DIR"
REDIS_PASSWORD_ENV = "BULKOPENS_REDIS_PASSWORD"
FILE_NAME = "budget.sqlite3"
OUTAGE_BACKOFF = (0.25, 5.0)  # seconds between tries while the store cannot be used
_STRETCH = 1.25
_RECOVER = 1.05
_ROW_TTL = 86_400  # a schedule row unused for a day is forgotten
_LEDGER_DAYS = 3  # days of ledger kept


def state_dir() -> Path:
    """Where the local budget lives: ``$BULKOPENS_STATE_DIR``, else the XDG state directory."""
    explicit = os.environ.get(STATE_DIR_ENV, "").strip()
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_STATE_HOME", "").strip()
    base = Path(xdg) if xdg and Path(xdg).is_absolute() else Path.home() / ".local" / "state"
    return base / "bulkopens"


def key_id(api_key: str, base_url: str) -> str:
    """The budget's name for one API key on one API host: a hash, never the key itself."""
    parts = urlsplit(base_url)
    host = f"{(parts.hostname or '').lower()}:{parts.port or ''}"
    return hashlib.sha256(f"bulkopens\0{host}\0{api_key}".encode()).hexdigest()[:32]


def utc_day(now: float) -> str:
    return datetime.fromtimestamp(now, UTC).strftime("%Y-%m-%d")


def next_reset(now: float) -> datetime:
    """The next 00:00 UTC after ``now``: when the daily quota starts again."""
    day = datetime.fromtimestamp(now, UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return day + timedelta(days=1)


def _for_humans(seconds: float) -> str:
    minutes = max(1, math.ceil(seconds / 60))
    return f"{minutes // 60} h {minutes % 60:02d} min" if minutes >= 60 else f"{minutes} min"


@dataclass(frozen=True, slots=True)
class Reservation:
    """What the store granted: ``taken`` requests (0: over the ledger's limit), the first one's
    start ``delay`` seconds from now (with an interval, the others follow one interval times
    ``slow`` apart), the shared slow-down factor and today's spend after it."""

    taken: int
    delay: float
    slow: float
    spent: int


class StoreUnavailable(Exception):
    """The shared store cannot be used right now; every request waits and tries again."""


class Store(Protocol):
    """Where the shared schedule and ledger live (a row per key hash)."""

    def describe(self) -> str: ...

    async def reserve(
        self, key: str, want: int, interval: float, limit: int, unused: int = 0
    ) -> Reservation: ...

    async def throttled(self, key: str, wait: float) -> None: ...

    async def mark_spent(self, key: str, quota: int) -> None: ...

    async def give_back(self, key: str, count: int) -> None: ...

    async def spent(self, key: str) -> int: ...

    async def aclose(self) -> None: ...


def _busy(exc: sqlite3.Error) -> bool:
    """Whether SQLite's error is another process holding the database (wait, try again)."""
    text = str(exc).lower()
    return "locked" in text or "busy" in text


class LocalStore:
    """The shared budget of one machine: a SQLite file (WAL) in the user's state directory.

    Each call is one short IMMEDIATE transaction, run on the event loop's thread: about
    0.1 ms, a few times a second (see benchmarks/budget.py). A busy database (another process
    mid-transaction for longer than 0.5 s) is an outage: the request waits and tries again.
    """

    __slots__ = ("_clock", "_db", "directory", "path")

    def __init__(self, directory: Path | None = None, *, clock: Clock | None = None) -> None:
        self.directory = directory or state_dir()
        self.path = self.directory / FILE_NAME
        self._db: sqlite3.Connection | None = None
        self._clock = clock  # the schedule's clock; None: time.time (tests: a virtual one)

    def _now(self) -> float:
        return time.time() if self._clock is None else self._clock()

    def describe(self) -> str:
        return f"local ({self.path})"

    def _connect(self) -> sqlite3.Connection:
        if self._db is not None:
            return self._db
        try:
            self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
            os.close(os.open(self.path, os.O_CREAT | os.O_RDWR, 0o600))
            db = sqlite3.connect(
                self.path, timeout=0.5, isolation_level=None, check_same_thread=False
            )
        except OSError as exc:
            # Not an outage to wait out (a read-only or missing home in a container): say so.
            raise self._unusable(exc.strerror or str(exc)) from None
        except sqlite3.Error as exc:
            raise self._unusable(str(exc)) from None
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.executescript(
                """
                CREATE TABLE IF NOT EXISTS schedule (
                    key TEXT PRIMARY KEY, tat REAL NOT NULL DEFAULT 0,
                    paused REAL NOT NULL DEFAULT 0, slow REAL NOT NULL DEFAULT 1,
                    clean INTEGER NOT NULL DEFAULT 0, used REAL NOT NULL DEFAULT 0);
                CREATE TABLE IF NOT EXISTS ledger (
                    key TEXT NOT NULL, day TEXT NOT NULL, spent INTEGER NOT NULL,
                    PRIMARY KEY (key, day));
                """
            )
            now = self._now()
            db.execute("DELETE FROM schedule WHERE used < ?", (now - _ROW_TTL,))
            db.execute("DELETE FROM ledger WHERE day < ?", (utc_day(now - _LEDGER_DAYS * 86400),))
        except sqlite3.Error as exc:
            db.close()
            if _busy(exc):
                raise StoreUnavailable(f"cannot use {self.path}: {exc}") from None
            raise self._unusable(str(exc)) from None
        self._db = db
        return db

    def _unusable(self, why: str) -> ConfigurationError:
        return ConfigurationError(
            f"cannot keep the API key's budget in {self.directory} ({why}): set "
            "BULKOPENS_STATE_DIR (or XDG_STATE_HOME) to a writable directory, or use --budget "
            "process (this process alone, no ledger)"
        )

    def _transaction(self, work: Any, *args: Any) -> Any:
        db = self._connect()
        try:
            db.execute("BEGIN IMMEDIATE")
            try:
                result = work(db, self._now(), *args)
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")
        except sqlite3.Error as exc:
            if "readonly" in str(exc).lower():
                raise self._unusable(str(exc)) from None
            raise StoreUnavailable(f"{self.path}: {exc}") from None
        return result

    async def reserve(
        self, key: str, want: int, interval: float, limit: int, unused: int = 0
    ) -> Reservation:
        result: Reservation = self._transaction(_local_reserve, key, want, interval, limit, unused)
        return result

    async def throttled(self, key: str, wait: float) -> None:
        self._transaction(_local_throttled, key, wait)

    async def mark_spent(self, key: str, quota: int) -> None:
        self._transaction(_local_add, key, quota, True)

    async def give_back(self, key: str, count: int) -> None:
        self._transaction(_local_add, key, -count, False)

    async def spent(self, key: str) -> int:
        return int(self._transaction(_local_spent, key))

    async def aclose(self) -> None:
        db, self._db = self._db, None
        if db is not None:
            db.close()


def _local_spent(db: sqlite3.Connection, now: float, key: str) -> int:
    row = db.execute(
        "SELECT spent FROM ledger WHERE key = ? AND day = ?", (key, utc_day(now))
    ).fetchone()
    return int(row[0]) if row else 0


def _local_add(db: sqlite3.Connection, now: float, key: str, count: int, at_least: bool) -> None:
    """Add ``count`` to today's spend (never below 0), or with ``at_least`` raise it to that."""
    spent = _local_spent(db, now, key)
    spent = max(spent, count) if at_least else max(0, spent + count)
    db.execute(
        "INSERT INTO ledger (key, day, spent) VALUES (?, ?, ?) "
        "ON CONFLICT (key, day) DO UPDATE SET spent = excluded.spent",
        (key, utc_day(now), spent),
    )


def _local_row(db: sqlite3.Connection, now: float, key: str) -> tuple[float, float, float, int]:
    row = db.execute(
        "SELECT tat, paused, slow, clean FROM schedule WHERE key = ?", (key,)
    ).fetchone()
    if row is None:
        db.execute("INSERT INTO schedule (key, used) VALUES (?, ?)", (key, now))
        return 0.0, 0.0, 1.0, 0
    tat, paused, slow, clean = row
    # A schedule from the future (the wall clock was set back) must not stall every process.
    return min(tat, now + 60.0), min(paused, now + 600.0), slow, clean


def _local_reserve(
    db: sqlite3.Connection,
    now: float,
    key: str,
    want: int,
    interval: float,
    limit: int,
    unused: int = 0,
) -> Reservation:
    """``want`` consecutive slots (and requests of the ledger); ``unused`` slots of an earlier
    reservation went by unused: their count goes back first, unless the day is marked spent."""
    spent = _local_spent(db, now, key)
    if unused > 0 and (not limit or spent < limit):
        _local_add(db, now, key, -unused, False)
        spent = max(0, spent - unused)
    taken = max(0, min(want, limit - spent)) if limit else want
    tat, paused, slow, clean = _local_row(db, now, key)
    if not taken:
        return Reservation(0, 0.0, slow, spent)
    _local_add(db, now, key, taken, False)
    delay = 0.0
    if interval:
        slot = max(now, tat, paused)
        delay = slot - now
        tat = slot + interval * slow * taken
        clean += taken
        if slow > 1.0 and clean >= 10.0 / (interval * slow):
            slow, clean = max(1.0, slow / _RECOVER), 0
    db.execute(
        "UPDATE schedule SET tat = ?, slow = ?, clean = ?, used = ? WHERE key = ?",
        (tat, slow, clean, now, key),
    )
    return Reservation(taken, delay, slow, spent + taken)


def _local_throttled(db: sqlite3.Connection, now: float, key: str, wait: float) -> None:
    _tat, paused, slow, _clean = _local_row(db, now, key)
    if now >= paused:  # one slow-down per congestion event, as in the pacer
        slow = min(MAX_SLOWDOWN, slow * _STRETCH)
    db.execute(
        "UPDATE schedule SET paused = ?, slow = ?, clean = 0, used = ? WHERE key = ?",
        (max(paused, now + wait), slow, now, key),
    )


# The Redis scripts: the same reservation, atomic on the server, timed by the server's clock
# (so hosts whose clocks disagree still share one schedule). Numbers travel as strings: Redis
# turns a Lua number in a reply into an integer.
_RESERVE_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local want, interval, limit = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local unused = tonumber(ARGV[7] or '0')
local spent = tonumber(redis.call('GET', KEYS[2]) or '0')
if unused > 0 and (limit <= 0 or spent < limit) then
  spent = math.max(0, spent - unused)
  redis.call('SET', KEYS[2], spent, 'EX', tonumber(ARGV[4]))
end
local taken = want
if limit > 0 then taken = math.max(0, math.min(want, limit - spent)) end
local row = redis.call('HMGET', KEYS[1], 'tat', 'paused', 'slow', 'clean')
local slow = tonumber(row[3]) or 1
if taken == 0 then return {0, '0', tostring(slow), spent} end
spent = redis.call('INCRBY', KEYS[2], taken)
redis.call('EXPIRE', KEYS[2], tonumber(ARGV[4]))
if interval <= 0 then return {taken, '0', tostring(slow), spent} end
local slot = math.max(now, tonumber(row[1]) or 0, tonumber(row[2]) or 0)
local clean = (tonumber(row[4]) or 0) + taken
local tat = slot + interval * slow * taken
if slow > 1 and clean >= 10 / (interval * slow) then
  slow = math.max(1, slow / tonumber(ARGV[5]))
  clean = 0
end
redis.call('HSET', KEYS[1], 'tat', tostring(tat), 'slow', tostring(slow), 'clean', clean)
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[6]))
return {taken, tostring(slot - now), tostring(slow), spent}
"""

_THROTTLED_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local row = redis.call('HMGET', KEYS[1], 'paused', 'slow')
local paused = tonumber(row[1]) or 0
local slow = tonumber(row[2]) or 1
if now >= paused then slow = math.min(tonumber(ARGV[2]), slow * tonumber(ARGV[3])) end
paused = math.max(paused, now + tonumber(ARGV[1]))
redis.call('HSET', KEYS[1], 'paused', tostring(paused), 'slow', tostring(slow), 'clean', 0)
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[4]))
return tostring(slow)
"""

_ADD_LUA = """
local spent = tonumber(redis.call('GET', KEYS[1]) or '0')
local n = tonumber(ARGV[1])
if ARGV[2] == '1' then spent = math.max(spent, n) else spent = math.max(0, spent + n) end
redis.call('SET', KEYS[1], spent, 'EX', tonumber(ARGV[3]))
return spent
"""


def redis_location(url: str) -> str:
    """The Redis URL without its password (or user): safe to print."""
    parts = urlsplit(url)
    host = parts.hostname or "localhost"
    if ":" in host:
        host = f"[{host}]"
    return f"{parts.scheme}://{host}:{parts.port or 6379}{parts.path or '/0'}"


class RedisStore:
    """The shared budget of a fleet: one Redis, its atomic scripts, keys under ``bulkopens:``.

    The connection is made at first use, in the running event loop (and again in a new one).
    A password comes from the URL or ``$BULKOPENS_REDIS_PASSWORD``; it is never printed.
    """

    __slots__ = ("_client", "_loop", "_scripts", "_url", "location")

    def __init__(self, url: str) -> None:
        try:
            import redis.asyncio  # noqa: F401  (an optional extra)
        except ImportError:
            raise ConfigurationError(
                f"--budget {redis_location(url)}: the Redis client is not installed; "
                "install it with: pip install 'bulkopens[redis]'"
            ) from None
        parts = urlsplit(url)
        if not parts.hostname:
            raise ConfigurationError("--budget redis:// needs a host, like redis://HOST:6379/0")
        try:
            _ = parts.port
            db = (parts.path or "/0").strip("/") or "0"
            int(db)
        except ValueError:
            raise ConfigurationError(
                "--budget must be redis://HOST:PORT/DB (a port and a database number)"
            ) from None
        self._url = url
        self.location = redis_location(url)
        self._client: Redis | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._scripts: dict[str, Any] = {}

    def describe(self) -> str:
        return self.location

    async def _redis(self) -> Redis:
        loop = asyncio.get_running_loop()
        if self._client is None or self._loop is not loop:
            from redis.asyncio import Redis
            from redis.asyncio.retry import Retry
            from redis.backoff import NoBackoff

            password = os.environ.get(REDIS_PASSWORD_ENV) or None
            extra: dict[str, Any] = {} if urlsplit(self._url).password else {"password": password}
            client = Redis.from_url(
                self._url,
                socket_connect_timeout=2.0,
                socket_timeout=2.0,
                retry=Retry(NoBackoff(), 0),  # the budget's own loop retries, and says so
                **extra,
            )
            self._client, self._loop = client, loop
            self._scripts = {
                name: client.register_script(text)
                for name, text in (
                    ("reserve", _RESERVE_LUA),
                    ("throttled", _THROTTLED_LUA),
                    ("add", _ADD_LUA),
                )
            }
        return self._client

    async def _run(self, name: str, keys: list[str], args: list[Any]) -> Any:
        from redis.exceptions import ConnectionError as RedisConnectionError
        from redis.exceptions import RedisError
        from redis.exceptions import TimeoutError as RedisTimeoutError

        await self._redis()
        try:
            return await self._scripts[name](keys=keys, args=args)
        except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
            raise StoreUnavailable(f"{self.location}: {type(exc).__name__}: {exc}") from None
        except RedisError as exc:  # a read-only replica, an out-of-memory server, ...
            raise StoreUnavailable(f"{self.location}: {exc}") from None

    @staticmethod
    def _keys(key: str) -> tuple[str, str]:
        # One hash tag per key, so that a Redis Cluster keeps both keys on one node.
        return f"bulkopens:{{{key}}}:schedule", f"bulkopens:{{{key}}}:day:{utc_day(time.time())}"

    async def reserve(
        self, key: str, want: int, interval: float, limit: int, unused: int = 0
    ) -> Reservation:
        schedule, day = self._keys(key)
        taken, delay, slow, spent = await self._run(
            "reserve",
            [schedule, day],
            [want, repr(interval), limit, _LEDGER_DAYS * 86400, _RECOVER, _ROW_TTL, unused],
        )
        return Reservation(int(taken), float(delay), float(slow), int(spent))

    async def throttled(self, key: str, wait: float) -> None:
        schedule, _ = self._keys(key)
        await self._run("throttled", [schedule], [repr(wait), MAX_SLOWDOWN, _STRETCH, _ROW_TTL])

    async def mark_spent(self, key: str, quota: int) -> None:
        await self._run("add", [self._keys(key)[1]], [quota, "1", _LEDGER_DAYS * 86400])

    async def give_back(self, key: str, count: int) -> None:
        await self._run("add", [self._keys(key)[1]], [-count, "0", _LEDGER_DAYS * 86400])

    async def spent(self, key: str) -> int:
        await self._redis()
        assert self._client is not None
        from redis.exceptions import RedisError

        try:
            value = await self._client.get(self._keys(key)[1])
        except (RedisError, OSError) as exc:
            raise StoreUnavailable(f"{self.location}: {exc}") from None
        return int(value or 0)

    @contextlib.asynccontextmanager
    async def lock(self, name: str, hold: float) -> AsyncIterator[None]:
        """A fleet-wide exclusive lock (redis-py's Lock: a token under ``bulkopens:lock:``,
        released by its owner only, gone by itself after ``hold`` seconds if the owner dies).
        Waits, cancellably, while another process anywhere holds it."""
        from redis.exceptions import LockError, RedisError

        client = await self._redis()
        lock = client.lock(f"bulkopens:lock:{{{name}}}", timeout=hold, sleep=0.05)
        try:
            await lock.acquire()
        except (RedisError, OSError) as exc:
            raise StoreUnavailable(f"{self.location}: {type(exc).__name__}: {exc}") from None
        try:
            yield
        finally:
            with contextlib.suppress(LockError, RedisError, OSError):
                await lock.release()

    async def aclose(self) -> None:
        client, self._client = self._client, None
        if client is not None and self._loop is asyncio.get_running_loop():
            await client.aclose()


class Budget:
    """The shared pace and daily ledger of API keys: ``Client(..., budget=...)``.

    ``url``: None or ``"local"`` (the default: shared by the user's processes on this
    machine), ``"redis://HOST:PORT/DB"`` or ``"rediss://..."`` (a fleet), or ``"process"``
    (this client alone, no ledger). ``daily_quota`` (0: no limit) minus ``reserve`` is what
    the runs may spend a day; ``max_requests`` caps each client that uses this budget (a run);
    ``wait_for_quota`` waits for 00:00 UTC instead of stopping. ``notice`` is told, in one
    line, of each wait the user should know of (the store away and back, the quota wait), as
    the ``bulkopens.ratelimit`` logger is. One object may be shared by
    many clients (of any keys); it closes its connections when the last client closes.
    """

    __slots__ = (
        "_pacers",
        "_users",
        "daily_quota",
        "max_requests",
        "notice",
        "reserve",
        "store",
        "wait_for_quota",
    )

    def __init__(
        self,
        url: str | None = None,
        *,
        daily_quota: int = DEFAULT_DAILY_QUOTA,
        reserve: int = 0,
        max_requests: int | None = None,
        wait_for_quota: bool = False,
        state_dir: str | os.PathLike[str] | None = None,
        notice: Callable[[str], None] | None = None,
    ) -> None:
        text = (url or "local").strip()
        scheme = text.split("://", 1)[0].lower() if "://" in text else text.lower()
        self.store: Store | None
        if scheme == "local":
            self.store = LocalStore(Path(state_dir) if state_dir is not None else None)
        elif scheme == "process":
            self.store = None
        elif scheme in ("redis", "rediss"):
            self.store = RedisStore(text)
        else:
            raise ConfigurationError(
                "--budget must be local (the default), process, or a redis:// or rediss:// URL"
            )
        if daily_quota < 0 or reserve < 0:
            raise ConfigurationError("--daily-quota and --reserve must be >= 0")
        if daily_quota and reserve >= daily_quota:
            raise ConfigurationError(
                f"--reserve ({reserve:,}) leaves nothing of --daily-quota ({daily_quota:,})"
            )
        if max_requests is not None and max_requests < 1:
            raise ConfigurationError("--max-requests must be at least 1")
        self.daily_quota = daily_quota
        self.reserve = reserve
        self.max_requests = max_requests
        self.wait_for_quota = wait_for_quota
        self.notice = notice
        self._pacers: dict[tuple[str, float], SharedPacer] = {}
        self._users = 0

    @property
    def limit(self) -> int:
        """Requests the ledger allows a day (0: no limit)."""
        return self.daily_quota - self.reserve if self.daily_quota else 0

    def describe(self) -> str:
        return self.store.describe() if self.store is not None else "process"

    def __repr__(self) -> str:
        return (
            f"<bulkopens.Budget {self.describe()} daily_quota={self.daily_quota} "
            f"reserve={self.reserve} max_requests={self.max_requests}>"
        )

    def pacer(self, api_key: str, base_url: str, rate: float) -> Pacer:
        """The pacer of a client on ``api_key`` at ``rate``: one per key and rate in this
        process, so clients that share this object share its lock too. Counts the client as a
        user until :meth:`release`."""
        self._users += 1
        if self.store is None:
            return Pacer(rate, deferred=True)
        ident = (key_id(api_key, base_url), rate)
        pacer = self._pacers.get(ident)
        if pacer is None:
            pacer = self._pacers[ident] = SharedPacer(self, ident[0], rate)
        return pacer

    def shared_lock(
        self, api_key: str, base_url: str, hold: float
    ) -> Callable[[], contextlib.AbstractAsyncContextManager[None]] | None:
        """A fleet-wide lock of the key (a token renewal's, see bulkopens._tokens), when the
        budget is shared through Redis; None otherwise (one host: the token file's lock)."""
        store = self.store
        if not isinstance(store, RedisStore):
            return None
        name = f"{key_id(api_key, base_url)}:token"

        @contextlib.asynccontextmanager
        async def held() -> AsyncIterator[None]:
            try:
                async with store.lock(name, hold):
                    yield
            except StoreUnavailable as exc:
                raise ServiceUnavailable(
                    f"--budget {store.location} cannot be reached to renew the access token: {exc}"
                ) from None

        return held

    async def release(self) -> None:
        """A client is done with this budget: the last one gives unused leases back and closes
        the connections (they open again if the budget is used again)."""
        self._users = max(0, self._users - 1)
        if self._users or self.store is None:
            return
        with anyio.CancelScope(shield=True), anyio.move_on_after(3):
            for pacer in self._pacers.values():
                await pacer.flush()
            await self.store.aclose()

    async def status(self, api_key: str, base_url: str) -> dict[str, Any]:
        """Today's spend of ``api_key`` in the ledger, the limit, the reserve and the reset
        (for ``bulkopens quota``). Raises ServiceUnavailable when the store cannot be read."""
        now = time.time()
        spent = 0
        if self.store is not None:
            try:
                spent = await self.store.spent(key_id(api_key, base_url))
            except StoreUnavailable as exc:
                raise ServiceUnavailable(f"cannot read the budget: {exc}") from None
            finally:
                if not self._users:
                    await self.store.aclose()
        return {
            "budget": self.describe(),
            "day": utc_day(now),
            "spent": spent,
            "daily_quota": self.daily_quota,
            "reserve": self.reserve,
            "available": max(0, self.limit - spent) if self.limit else None,
            "resets_at": next_reset(now).strftime("%Y-%m-%dT%H:%M:%SZ"),
        }


class SharedPacer(Pacer):
    """A pacer whose grants are reserved in the budget's shared schedule and counted in its
    ledger. In this process it behaves as :class:`Pacer`: one waiter at a time holds the lock
    (so the process holds at most one reservation), a throttle pauses every caller and slows
    the pace down, now for every process on the key.

    The slots of the current reservation: ``_slots`` of them, the next at ``_slot`` (this
    process's clock), ``_step`` apart. Granted each in ``[slot, slot + LATE_TOLERANCE]`` (or
    after a sleep until it, at the wake-up), never earlier; one gone by further is dropped and
    counted in ``_unused``, which the next reservation gives back to the ledger."""

    __slots__ = (
        "_budget",
        "_cap",
        "_key",
        "_lease",
        "_refused",
        "_run_requests",
        "_slot",
        "_slots",
        "_step",
        "_tasks",
        "_unused",
        "_used",
    )

    def __init__(
        self,
        budget: Budget,
        key: str,
        rate: float,
        *,
        clock: Clock = time.monotonic,
        sleep: Sleep = anyio.sleep,
    ) -> None:
        super().__init__(rate, deferred=True, clock=clock, sleep=sleep)
        self._budget = budget
        self._key = key
        self._lease = 0  # requests taken from the ledger and not used yet (rate 0)
        self._refused = False  # the API said the quota is spent: nothing is given back
        self._run_requests = 0
        self._tasks: set[asyncio.Task[None]] = set()
        # Slots one reservation may take: as many as LATE_TOLERANCE spans (1 below ~500/s).
        base = self._base_interval
        self._cap = max(1, min(LEASE, int(LATE_TOLERANCE / base))) if base else 1
        self._slot = 0.0
        self._slots = 0
        self._step = base
        self._unused = 0  # reserved slots that went by unused: given back with the next one
        self._used = 0  # slots of the current reservation granted so far

    @property
    def _store(self) -> Store:
        assert self._budget.store is not None
        return self._budget.store

    async def grant(self) -> None:
        now = self._clock()
        if self._paused_until <= now and not self._lock.locked():
            # The fast path: no one ahead, no pause: a request of the lease (rate 0), or a
            # reserved slot that has come, is granted without the lock and without a yield.
            if self._lease > 0:
                self._check_run_budget()
                self._lease -= 1
                self._count()
                return
            if self._slots:
                self._drop_gone(now)
                if self._slots and self._slot <= now:
                    self._check_run_budget()
                    self._take_slot()
                    return
        lock = self._lock
        if lock.locked():
            await lock.acquire()
        else:
            # No one holds or waits for the lock: take it without a yield. With the local
            # store, whose reservation is one synchronous transaction, a grant whose slot has
            # come then completes without yielding to the event loop at all.
            lock.acquire_nowait()
        try:
            self._check_run_budget()  # the callers queued on the lock are refused one by one
            while True:
                now = self._clock()
                if self._paused_until > now:  # a throttle seen here: wait before reserving
                    await self._sleep(self._paused_until - now)
                    continue
                if self._lease > 0:
                    self._lease -= 1
                    self._count()
                    return
                self._drop_gone(now)
                if self._slots:
                    if self._slot > now:
                        await self._sleep(self._slot - now)
                        if self._paused_until > self._clock():
                            continue  # a throttle came meanwhile: wait it out first
                    # This slot is ours, the lock held while sleeping: taken even if the
                    # wake-up was late, as a single reservation always was.
                    self._take_slot()
                    return
                await self._reserve()
        finally:
            lock.release()

    def _drop_gone(self, now: float) -> None:
        """Drop the reserved slots more than LATE_TOLERANCE in the past (counted as unused)."""
        late = now - LATE_TOLERANCE - self._slot
        if self._slots and late > 0:
            gone = min(self._slots, int(late / self._step) + 1)
            self._slot += gone * self._step
            self._slots -= gone
            self._unused += gone

    def _take_slot(self) -> None:
        self._slot += self._step
        self._slots -= 1
        self._used += 1
        self._count()

    def _check_run_budget(self) -> None:
        cap = self._budget.max_requests
        if cap is not None and self._run_requests >= cap:
            raise RequestLimitReached(f"this run has sent its --max-requests ({cap:,} requests)")

    def _count(self) -> None:
        self.grants += 1
        self._run_requests += 1

    async def _reserve(self) -> None:
        """One reservation: slots (``_slot``, ``_slots``), or at rate 0 a lease (``_lease``).
        Waits out an outage of the store, and the quota with ``wait_for_quota``."""
        budget = self._budget
        # With an interval: twice the slots the last reservation had granted, up to the cap (a
        # process that keeps up with its slots takes more at once, a slower one wastes few).
        want = min(self._cap, max(1, 2 * self._used)) if self._base_interval else LEASE
        if budget.max_requests is not None:
            want = max(1, min(want, budget.max_requests - self._run_requests))
        limit = budget.limit if self._base_interval else 0  # rate 0 counts, never stops
        down_since: float | None = None
        tries = 0
        while True:
            try:
                got = await self._store.reserve(
                    self._key, want, self._base_interval, limit, self._unused
                )
            except StoreUnavailable as exc:
                if down_since is None:
                    down_since = self._clock()
                    self._say(
                        f"the shared budget cannot be used ({exc}): every request waits for "
                        "it, trying again"
                    )
                low, high = OUTAGE_BACKOFF
                await self._sleep(min(high, low * 2**tries))
                tries += 1
                continue
            self._unused = 0  # given back (or kept counted, if the day is marked spent)
            if down_since is not None:
                self._say(
                    f"the shared budget ({self._budget.describe()}) is back after "
                    f"{self._clock() - down_since:.1f} s; requests go on"
                )
                down_since, tries = None, 0
            if got.taken:
                if not self._base_interval:
                    self._lease = got.taken  # the grant loop takes its request from it
                    return
                self._interval = self._step = self._base_interval * got.slow
                self._slot = self._clock() + got.delay
                self._slots = got.taken
                self._used = 0
                return
            await self._quota_spent(got.spent)

    async def _quota_spent(self, spent: int) -> None:
        """The ledger refuses: stop (QuotaExhausted), or wait for 00:00 UTC."""
        budget = self._budget
        now = time.time()
        resets = next_reset(now)
        said = (
            f"the API key's ledger has {spent:,} requests today, and --daily-quota "
            f"{budget.daily_quota:,}"
            + (f" less --reserve {budget.reserve:,}" if budget.reserve else "")
            + f" allows {budget.limit:,}"
        )
        if not budget.wait_for_quota:
            raise QuotaExhausted(
                f"{said}; the quota resets at {resets:%Y-%m-%d %H:%M} UTC",
                resets_at=resets,
                by_api=False,
            )
        self._say(
            f"{said}: waiting for the quota to reset at {resets:%Y-%m-%d %H:%M} UTC "
            f"(in {_for_humans(resets.timestamp() - now)}); --wait-for-quota"
        )
        while time.time() < resets.timestamp() + 1.0:
            await self._sleep(min(60.0, resets.timestamp() + 1.0 - time.time()))

    async def wait_for_reset(self, resets_at: datetime) -> bool:
        """The API itself answered that the key's daily quota is spent. With
        ``wait_for_quota``, the ledger learns it and every request of this process waits for
        the reset (one waiter holds the lock; the others find it past); True once waited.
        Without it, False: the caller stops the run (exit 4)."""
        self.refused_for_today()
        if not (self._budget.wait_for_quota and self._base_interval):
            return False
        async with self._lock:
            now = time.time()
            if now < resets_at.timestamp() + 1.0:
                self._say(
                    f"the API says the key's daily quota is spent: waiting for it to reset at "
                    f"{resets_at:%Y-%m-%d %H:%M} UTC (in "
                    f"{_for_humans(resets_at.timestamp() - now)}); --wait-for-quota"
                )
            while time.time() < resets_at.timestamp() + 1.0:
                await self._sleep(min(60.0, resets_at.timestamp() + 1.0 - time.time()))
        return True

    def throttled(self, wait: float) -> None:
        """The API said "too fast": pause and slow down here, and tell every process."""
        super().throttled(wait)
        if self._base_interval:
            self._later(self._store.throttled(self._key, wait))

    def refused_for_today(self) -> None:
        """The API answered that the key's daily quota is spent: the ledger learns it."""
        if self._budget.daily_quota:
            self._refused = True
            self._later(self._store.mark_spent(self._key, self._budget.daily_quota))

    def _later(self, work: Any) -> None:
        task = asyncio.get_running_loop().create_task(self._quietly(work))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    @staticmethod
    async def _quietly(work: Any) -> None:
        try:
            await work
        except StoreUnavailable as exc:
            ratelimit_log.warning("the shared budget was not told of a throttle: %s", exc)

    def _say(self, text: str) -> None:
        """A wait the user must know of: logged (WARNING), and told to ``Budget.notice``."""
        ratelimit_log.warning("%s", text)
        notice = self._budget.notice
        if notice is not None:
            try:
                notice(text)
            except Exception:  # a display hook must never stop the requests
                ratelimit_log.exception("the budget's notice hook raised; ignored")

    async def flush(self) -> None:
        """Wait for the messages to the store, and give an unused lease back."""
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        lease = self._lease + self._slots + self._unused
        self._lease = self._slots = self._unused = self._used = 0
        refused, self._refused = self._refused, False
        if lease > 0 and not refused:  # (a day the API called spent stays marked spent)
            # If the store cannot take them back, they stay counted: a few too many, never
            # too few.
            with contextlib.suppress(StoreUnavailable):
                await self._store.give_back(self._key, lease)
        self._run_requests = 0

    def __repr__(self) -> str:
        return (
            f"<SharedPacer {self._budget.describe()} rate={self.rate:.3g}/s grants={self.grants}>"
        )
