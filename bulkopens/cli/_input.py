"""Reading contact (or campaign) ids from a file or stdin: plain lines, or a CSV with a
contact_id/id (campaign_id/id) column.

Blank lines and ``#`` comments are ignored and whitespace is stripped. Lines are read in a
worker thread, a chunk at a time, so a slow pipe never blocks the event loop, and the file is
never held in memory whole. Validation of each id is the engine's job, not this module's.
"""

from __future__ import annotations

import csv
import io
import os
import re
import stat
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import IO

import anyio

from bulkopens._config import parse_contact_id
from bulkopens._exceptions import ConfigurationError

_MAX_LINE = 4096  # a longer line is not an id; it is cut, reported as invalid, and skipped
_CHUNK = 2048
# Lines read ahead for the first valid id; past this many, the run starts anyway and reports
# the lines that are not ids.
_LOOK_AHEAD = 10_000


def _open(path: str, flag: str = "--contacts") -> IO[str]:
    if path == "-":
        return io.TextIOWrapper(
            sys.stdin.buffer, encoding="utf-8-sig", errors="replace", newline=""
        )
    try:
        target = Path(path)
        if target.is_dir():
            raise ConfigurationError(f"{flag} {path} is a directory, not a file")
        return open(target, encoding="utf-8-sig", errors="replace", newline="")
    except OSError as exc:
        raise ConfigurationError(f"cannot read {flag} {path}: {exc.strerror or exc}") from None


def _lines(handle: IO[str], where: list[int] | None = None) -> Iterator[str]:
    """Lines without their ending, cut at _MAX_LINE characters (the rest is skipped).

    ``where``, if given, is kept as ``[number of the line last read, first line cut (0)]``.
    """
    number = 0
    while True:
        line = handle.readline(_MAX_LINE)
        if not line:
            return
        number += 1
        if where is not None:
            where[0] = number
        if not line.endswith(("\n", "\r")) and len(line) >= _MAX_LINE:
            if where is not None and not where[1]:
                where[1] = number
            while True:  # drain the rest of an overlong line
                more = handle.readline(_MAX_LINE)
                if not more or more.endswith(("\n", "\r")):
                    break
        yield line.rstrip("\r\n")


def _ids(handle: IO[str], source: str, noun: str = "contact") -> Iterator[str]:
    """The id field of every meaningful line; CSV when the first line is a CSV header.

    A CSV that cannot be read exactly (a field over the csv module's 131,072 characters, a
    line over 4,096, which could cut a quoted field and swallow the rows after it) is refused
    with a ConfigurationError naming the line, rather than guessed at.
    """
    where = [0, 0]
    raws = _lines(handle, where)
    lines = (s for s in (raw.strip() for raw in raws) if s and not s.startswith("#"))
    first = next(lines, None)
    if first is None:
        return
    header = [h.strip().lower() for h in next(csv.reader([first]))]
    column = next((header.index(c) for c in (f"{noun}_id", "id") if c in header), None)
    if column is None:
        if "," in first or "\t" in first:
            raise ConfigurationError(
                f"{source} looks like a CSV file but its header has no {noun}_id or id column"
            )
        yield first  # a plain list of ids: the first line is an id too
        yield from lines
        return
    rows = csv.reader(lines)
    while True:
        start = where[0] + 1  # where the next row starts (give or take a blank line)
        try:
            row = next(rows, None)
        except csv.Error as exc:
            raise _unreadable_csv(source, start, str(exc), noun) from None
        if where[1]:
            raise _unreadable_csv(source, where[1], f"over {_MAX_LINE:,} characters", noun)
        if row is None:
            return
        yield row[column].strip() if column < len(row) else ""


def _unreadable_csv(source: str, line: int, why: str, noun: str) -> ConfigurationError:
    return ConfigurationError(
        f"{source} line {line}: cannot read it as CSV ({why}); give bulkopens the {noun} ids "
        f"alone, one per line, or a CSV without such long fields"
    )


def _is_regular(path: str) -> bool:
    try:
        return stat.S_ISREG(os.stat(path).st_mode)
    except OSError:
        return False


_UUID = re.compile(r"\s*[0-9a-fA-F]{8}(?:-[0-9a-fA-F]{4}){3}-[0-9a-fA-F]{12}\s*")


def _is_id(raw: str) -> bool:
    """Whether ``raw`` is an id of either API (v2: a number; v3: a UUID); the run checks it
    against its own API."""
    return parse_contact_id(raw) is not None or _UUID.fullmatch(raw) is not None


def _no_ids(flag: str, label: str, noun: str, lines: list[str]) -> str:
    """Why an input holds no id, naming what its first line looked like."""
    if not lines:
        return f"{flag} {label} holds no {noun} ids"
    first = lines[0]
    for separator in (",", ";", "\t", "|"):
        if separator in first:
            columns = ", ".join(repr(c.strip()[:40]) for c in first.split(separator)[:8])
            return (
                f"{flag} {label} holds no {noun} ids: its first line reads like a header with "
                f"the columns {columns}; a CSV needs a {noun}_id or id column and commas"
            )
    return (
        f"{flag} {label} holds no {noun} ids (its first line is {first[:40]!r}): give one "
        f"{noun} id per line, or a CSV with a {noun}_id or id column"
    )


class ContactSource:
    """An async iterable of the raw ids in ``path`` (``-`` for stdin), read in a thread.

    :meth:`check` opens the file and finds the first id up front, so a missing, unreadable or
    empty file is reported before any request is made. ``total`` counts the ids of a regular
    file (for progress and ETA); it is None for stdin. ``noun`` ``campaign`` reads campaign
    ids (``--campaigns``; CSV column ``campaign_id`` or ``id``).
    """

    def __init__(self, path: str, *, noun: str = "contact") -> None:
        self.path = path
        self.noun = noun
        self._flag = f"--{noun}s"
        self.total: int | None = None
        self._handle: IO[str] | None = None
        self._iter: Iterator[str] | None = None
        self._first_chunk: list[str] = []

    def check(self) -> None:
        """Open the source and read ahead to its first valid id. ConfigurationError if that
        fails: a missing or unreadable file, or one without a single id (a CSV with another
        separator or without an id column, a spreadsheet, ...).

        The input is read once, streaming: what is read ahead is handed on first. Only a
        regular file is counted for ``total`` (by a second, cheap pass); a pipe, a FIFO or a
        process substitution is never opened twice.
        """
        label = "stdin" if self.path == "-" else self.path
        noun, flag = self.noun, self._flag
        self._handle = _open(self.path, flag)
        ids = _ids(self._handle, label, noun)
        ahead: list[str] = []
        for raw in ids:
            ahead.append(raw)
            if _is_id(raw) or len(ahead) >= _LOOK_AHEAD:
                break
        found = bool(ahead) and _is_id(ahead[-1])
        if not found and len(ahead) < _LOOK_AHEAD:
            self.close()
            raise ConfigurationError(_no_ids(flag, label, noun, ahead))
        self._first_chunk = ahead
        self._iter = ids
        if self.path != "-" and _is_regular(self.path):
            with _open(self.path, flag) as handle:
                self.total = sum(1 for _ in _ids(handle, label, noun))

    def _chunk(self) -> list[str]:
        assert self._iter is not None
        return [line for _, line in zip(range(_CHUNK), self._iter, strict=False)]

    async def batches(self) -> AsyncIterator[list[str]]:
        """The ids a chunk at a time (each chunk read in a worker thread)."""
        if self._iter is None:
            await anyio.to_thread.run_sync(self.check)
        try:
            yield self._first_chunk
            while chunk := await anyio.to_thread.run_sync(self._chunk):
                yield chunk
        finally:
            self.close()

    async def __aiter__(self) -> AsyncIterator[str]:
        async for chunk in self.batches():
            for raw in chunk:
                yield raw

    def close(self) -> None:
        if self._handle is not None and self._handle is not sys.stdin:
            self._handle.close()
        self._handle = None
