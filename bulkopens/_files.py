"""The record files: ``{report}-00001.ndjson`` and on, appended to, rotated by size, cut back.

Each attempt starts a new file (opened on its first record), so files of earlier runs are
never touched again, and a downstream loader can take a run's files from the manifest.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from bulkopens._exceptions import ConfigurationError

_BUFFER = 1 << 20


@dataclass(slots=True)
class _Open:
    name: str
    handle: BinaryIO
    length: int  # bytes written, buffered or not
    records: int


class RecordFiles:
    """Appends NDJSON lines for one report under ``directory``; not thread-safe.

    ``write`` only buffers; ``sync`` (run it off the event loop) flushes and fsyncs and returns
    how far each touched file is now valid. Lines are written whole, so a file never holds half
    a line except past its committed length after a crash, which :meth:`recover` cuts off.
    """

    def __init__(self, directory: Path, report: str, *, max_bytes: int) -> None:
        self._dir = directory
        self._report = report
        self._pattern = re.compile(rf"{re.escape(report)}-(\d{{5,}})\.ndjson")
        self._max_bytes = max_bytes
        self._current: _Open | None = None
        self._closing: list[_Open] = []
        self._next_number = 1

    def recover(self, committed: dict[str, int]) -> None:
        """Cut every file back to its committed length; delete files no commit knows.

        Raises ConfigurationError if a committed file is missing or shorter than committed
        (someone changed the output directory behind our back).
        """
        highest = 0
        for name, length in committed.items():
            match = self._pattern.fullmatch(name)
            if match is None:
                continue
            highest = max(highest, int(match.group(1)))
            path = self._dir / name
            try:
                size = path.stat().st_size
            except FileNotFoundError:
                size = -1
            if size < length:
                raise ConfigurationError(
                    f"{path} is missing or shorter than its committed length; "
                    "use --fresh to start over"
                )
            if size > length:
                with open(path, "r+b") as handle:
                    handle.truncate(length)
                    os.fsync(handle.fileno())
        for path in self._dir.iterdir():
            match = self._pattern.fullmatch(path.name)
            if match and path.name not in committed:
                path.unlink()  # written after the last commit: nothing in it counts
        self._next_number = highest + 1

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

    def _rotate(self) -> _Open:
        if self._current is not None:
            self._closing.append(self._current)
        name = f"{self._report}-{self._next_number:05d}.ndjson"
        self._next_number += 1
        handle = open(self._dir / name, "xb", buffering=_BUFFER)  # noqa: SIM115 (kept open)
        self._current = _Open(name, handle, 0, 0)
        return self._current

    def sync(self, durable: bool = True) -> list[tuple[str, int, int]]:
        """Flush (and fsync if ``durable``) every open file; ``(name, length, records)`` of each."""
        marks = []
        for item in [*self._closing, *([self._current] if self._current else [])]:
            item.handle.flush()
            if durable:
                os.fsync(item.handle.fileno())
            marks.append((item.name, item.length, item.records))
        for item in self._closing:
            item.handle.close()
        self._closing.clear()
        return marks

    def close(self) -> None:
        """Close without syncing (the caller syncs first if it wants the data)."""
        for item in [*self._closing, *([self._current] if self._current else [])]:
            item.handle.close()
        self._closing.clear()
        self._current = None
