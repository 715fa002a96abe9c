"""The record files: ``{report}-00001.ndjson`` and on, appended to, rotated by size, cut back.

Each attempt starts a new file (opened on its first record), so files of earlier runs are
never touched again, and a downstream loader can take a run's files from the manifest.

Which files are ours
--------------------
bulkopens deletes or cuts a record file only when it can prove it wrote that file, and
refuses (ConfigurationError, exit 2) to run on an ``--out`` holding a ``{report}-NNNNN.ndjson``
that it cannot account for: a state deleted, emptied or rolled back (a lost WAL), an output
directory copied without its ``.bulkopens/``, or a user's own file. The proof is one of two:

- **Committed**: the state names the file and how far it is valid. Its tail is checked (below)
  and it is cut back to that length; it is never deleted.
- **Staged**: a file made after the last commit (a ``kill -9`` between its creation and its
  first commit). A new file is first created as ``.bulkopens/new/NAME`` (``O_EXCL``), then
  hard-linked to ``NAME`` in ``--out`` (``link`` never replaces an existing name), and the
  staging link is removed only once a commit names the file. On resume, an uncommitted
  ``NAME`` whose inode is the staging link's was made by this tool: nothing in it counts, and
  it is deleted. A file of that name that is not the same inode was put there by someone else
  and is refused, never deleted. On a filesystem without hard links (FAT, some network
  shares) the staging entry is an empty ``NAME.intent`` marker made before ``NAME``: the
  proof is then the name alone.

Every failure mode lands on the safe side: a state rolled back past a file's first commit
(a power cut under ``synchronous=NORMAL``) leaves that file unaccounted for, so the run
refuses to start instead of deleting it.

A file changed behind the tool's back
-------------------------------------
Each commit stores, with a file's committed length, a 16-byte BLAKE2b hash of the last
4 KiB before that length (kept in memory as lines are written: no read-back). On resume the
same bytes are read and hashed; a file that was edited (pretty-printed, re-encoded, replaced
by another of the same length) no longer matches and is refused instead of being cut
mid-record. Edits that leave the last 4 KiB of the committed span intact are not seen: the
check costs one 4 KiB read per file, whatever the file's size.
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import stat
from collections.abc import Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from bulkopens._disk import open_new, open_regular, refuse_link
from bulkopens._exceptions import ConfigurationError

_BUFFER = 1 << 20
TAIL = 4096  # bytes of a committed file's end that each commit hashes
STAGING = Path(".bulkopens") / "new"  # under --out: files made, not yet committed
_INTENT = ".intent"  # a staging marker where hard links are not supported
_NO_LINKS = frozenset({errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK})
_LISTED = 3  # unaccounted files named in the refusal; the rest are counted


def tail_hash(tail: bytes) -> bytes:
    """The hash of a committed file's last (up to) :data:`TAIL` bytes, as stored per commit."""
    return hashlib.blake2b(tail, digest_size=16).digest()


@dataclass(slots=True)
class _Open:
    name: str
    handle: BinaryIO
    length: int  # bytes written, buffered or not
    records: int
    tail: bytes = b""  # the last TAIL bytes written


@dataclass(slots=True)
class _Plan:
    """What :meth:`RecordFiles.recover` will do, decided whole before anything is changed."""

    cut: dict[Path, int] = field(default_factory=dict)
    ours: list[Path] = field(default_factory=list)  # staged, never committed: delete
    staging: list[Path] = field(default_factory=list)  # staging entries to remove


class RecordFiles:
    """Appends NDJSON lines for one report under ``directory``; not thread-safe.

    ``write`` only buffers; ``sync`` (run it off the event loop) flushes and fsyncs and returns
    how far each touched file is now valid; ``confirm`` (after the commit of that sync)
    releases the staging links of files the commit named. Lines are written whole, so a file
    never holds half a line except past its committed length after a crash, which
    :meth:`recover` cuts off.
    """

    def __init__(self, directory: Path, report: str, *, max_bytes: int) -> None:
        self._dir = directory
        self._staging = directory / STAGING
        self._report = report
        self._pattern = re.compile(rf"{re.escape(report)}-(\d{{5,}})\.ndjson")
        self._max_bytes = max_bytes
        self._current: _Open | None = None
        self._closing: list[_Open] = []
        self._next_number = 1
        self._linkless = False  # the filesystem has no hard links: intent markers instead
        self._staged: set[str] = set()  # made by this attempt, not yet named by a commit
        self._made: list[str] = []  # every file made by this attempt
        self._synced: list[tuple[str, int]] = []  # (name, length) of the last sync
        self._confirmed: dict[str, int] = {}  # this attempt's files: committed length

    @property
    def directory(self) -> Path:
        return self._dir

    # -- resume ----------------------------------------------------------------------------

    def recover(
        self,
        committed: dict[str, int],
        tails: dict[str, bytes] | None = None,
        foreign: Sequence[str] = (),
    ) -> None:
        """Cut every committed file back to its committed length, delete the files this tool
        made after its last commit, and refuse anything else.

        ``tails`` holds the :func:`tail_hash` committed with each length (None or missing for
        files committed by an older version: then only the size is checked). Everything is
        checked before anything is changed. Raises ConfigurationError when a committed file is
        missing, shorter than committed, a link, or changed (its tail hash differs), or when a
        ``{report}-NNNNN.ndjson`` is neither committed nor provably made by this tool; the
        names in ``foreign`` (other files in the way, found by the caller) are refused with them.
        """
        tails = tails or {}
        self._prepare_staging()
        plan = _Plan()
        highest = 0
        for name, length in committed.items():
            match = self._pattern.fullmatch(name)
            if match is None:
                continue
            highest = max(highest, int(match.group(1)))
            path = self._dir / name
            size = self._check_committed(path, length, tails.get(name))
            if size > length:
                plan.cut[path] = length
        vouched = self._classify_staging(committed, plan)
        unknown = sorted(
            p.name
            for p in self._dir.iterdir()
            if self._pattern.fullmatch(p.name) and p.name not in committed and p not in vouched
        )
        unknown += foreign
        if unknown:
            listed = ", ".join(unknown[:_LISTED])
            more = f" and {len(unknown) - _LISTED} more" if len(unknown) > _LISTED else ""
            raise ConfigurationError(
                f"{self._dir} holds {listed}{more}, which no bulkopens state in it accounts "
                "for (a state deleted, emptied or rolled back, or files put there); bulkopens "
                "never deletes or overwrites them: move them elsewhere, or use another --out"
            )
        for path in plan.ours:  # the file before its staging entry: a crash in between is safe
            path.unlink(missing_ok=True)
        for path in plan.staging:
            path.unlink(missing_ok=True)
        for path, length in plan.cut.items():
            fd = open_regular(path, os.O_RDWR)
            try:
                os.ftruncate(fd, length)
                os.fsync(fd)
            finally:
                os.close(fd)
        self._next_number = highest + 1

    def _prepare_staging(self) -> None:
        if refuse_link(self._staging.parent) and not self._staging.parent.is_dir():
            raise ConfigurationError(f"{self._staging.parent} is not a directory")
        if refuse_link(self._staging):
            if not self._staging.is_dir():
                raise ConfigurationError(f"{self._staging} is not a directory")
        else:
            self._staging.mkdir(parents=True, exist_ok=True)

    def _check_committed(self, path: Path, length: int, tail: bytes | None) -> int:
        """The size of a committed file, once it is known to be the file that was committed."""
        try:
            fd = open_regular(path, os.O_RDONLY)
        except FileNotFoundError:
            fd = -1
        try:
            size = os.fstat(fd).st_size if fd >= 0 else -1
            if size < length:
                raise ConfigurationError(
                    f"{path} is missing or shorter than its committed length; "
                    "use --fresh to start over"
                )
            if tail is not None:
                start = max(0, length - TAIL)
                if tail_hash(os.pread(fd, length - start, start)) != tail:
                    raise ConfigurationError(
                        f"{path} was changed after bulkopens wrote it (its committed bytes "
                        "differ); it is left as it is: put back the file bulkopens wrote, or "
                        "move it away and use --fresh to start over"
                    )
            return size
        finally:
            if fd >= 0:
                os.close(fd)

    def _classify_staging(self, committed: dict[str, int], plan: _Plan) -> set[Path]:
        """Sort the staging entries: committed (release), ours (delete), stale (release).
        Returns the files in --out that staging proves ours."""
        ours: set[Path] = set()
        for entry in self._staging.iterdir():  # every report's: a --fresh may change it
            plan.staging.append(entry)
            name = entry.name.removesuffix(_INTENT)
            if name in committed or not name.endswith(".ndjson") or "/" in name:
                continue
            path = self._dir / name
            try:
                there = os.lstat(path)
                staged = os.lstat(entry)
            except FileNotFoundError:
                continue  # made, never linked (or already gone): only the entry is left
            if not stat.S_ISREG(there.st_mode):
                continue  # a link or other planted thing: refused as unknown
            if entry.name.endswith(_INTENT) or os.path.samestat(there, staged):
                ours.add(path)
                plan.ours.append(path)
        return ours

    # -- writing ---------------------------------------------------------------------------

    def write(self, data: bytes, count: int) -> None:
        """Append ``count`` whole NDJSON lines, given as one bytes object."""
        if not count:
            return
        current = self._current
        if current is None or current.length >= self._max_bytes:
            current = self._rotate()
        current.handle.write(data)
        current.length += len(data)
        current.records += count
        current.tail = data[-TAIL:] if len(data) >= TAIL else (current.tail + data)[-TAIL:]

    def _rotate(self) -> _Open:
        if self._current is not None:
            self._closing.append(self._current)
            self._current = None
        name = f"{self._report}-{self._next_number:05d}.ndjson"
        self._next_number += 1
        handle = os.fdopen(self._create(name), "wb", buffering=_BUFFER)
        self._current = _Open(name, handle, 0, 0)
        return self._current

    def _create(self, name: str) -> int:
        """Make ``NAME`` in --out, provably ours (see the module docstring); returns its fd."""
        staged, path = self._staging / name, self._dir / name
        marker = staged.with_name(name + _INTENT)
        fd = -1
        if not self._staging.is_dir():  # recover() makes it; a caller may not have run it
            self._prepare_staging()
        try:
            if not self._linkless:
                fd = open_new(staged)
                try:
                    os.link(staged, path)
                except OSError as exc:
                    if exc.errno not in _NO_LINKS:
                        raise
                    self._linkless = True
                    os.close(fd)
                    fd = -1
                    staged.unlink()
            if self._linkless:
                os.close(open_new(marker))
                fd = open_new(path)
        except FileExistsError:
            if fd >= 0:
                os.close(fd)
            staged.unlink(missing_ok=True)
            marker.unlink(missing_ok=True)
            raise ConfigurationError(
                f"{path} appeared while bulkopens was about to create it; bulkopens never "
                "overwrites a file: move it elsewhere and run the same command again"
            ) from None
        except BaseException:
            if fd >= 0:
                os.close(fd)
            raise
        self._staged.add(name)
        self._made.append(name)
        return fd

    def sync(self, durable: bool = True) -> list[tuple[str, int, int, bytes]]:
        """Flush (and fsync if ``durable``) every open file; ``(name, length, records,
        tail hash)`` of each."""
        marks = []
        for item in [*self._closing, *([self._current] if self._current else [])]:
            item.handle.flush()
            if durable:
                os.fsync(item.handle.fileno())
            marks.append((item.name, item.length, item.records, tail_hash(item.tail)))
        for item in self._closing:
            item.handle.close()
        self._closing.clear()
        self._synced = [(name, length) for name, length, _, _ in marks]
        return marks

    def confirm(self) -> None:
        """The last sync is committed: its files no longer need their staging entries."""
        for name, length in self._synced:
            self._confirmed[name] = length
            if name in self._staged:
                self._staged.discard(name)
                staged = self._staging / name
                staged.unlink(missing_ok=True)
                staged.with_name(name + _INTENT).unlink(missing_ok=True)
        self._synced = []

    def close(self) -> None:
        """Close without syncing (the caller syncs first if it wants the data). Bytes still
        buffered are past every commit, so a failure to write them is no loss."""
        for item in [*self._closing, *([self._current] if self._current else [])]:
            with suppress(OSError):
                item.handle.close()
        self._closing.clear()
        self._current = None

    def abandon(self) -> None:
        """After a failed write or commit: close, and give the disk back what no commit holds
        (cut this attempt's files to their committed length; delete those never committed),
        as the next :meth:`recover` would. Best effort: each step may fail on a broken disk."""
        self.close()
        for name in self._made:
            path = self._dir / name
            with suppress(OSError, ConfigurationError):
                if name in self._staged:
                    path.unlink(missing_ok=True)
                    (self._staging / name).unlink(missing_ok=True)
                    (self._staging / (name + _INTENT)).unlink(missing_ok=True)
                else:
                    fd = open_regular(path, os.O_RDWR)
                    try:
                        os.ftruncate(fd, self._confirmed[name])
                    finally:
                        os.close(fd)
