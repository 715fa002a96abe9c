"""The work item types and NDJSON lines: what the walker, the writer and the store share.

A bottom-layer module: the storage side (the state store, the writer) and the API side (the
page walker) both use these types, so neither has to import the other. ``Work`` is one item to
fetch (a contact, or a campaign in campaign scope) and where to start; ``PageBatch`` is one page
of it on its way to the sink; a record's NDJSON line and its short hash recognise a record
already written.
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass, field
from typing import Any

import orjson


@dataclass(frozen=True, slots=True)
class Work:
    """One work item to fetch, and where to start: a contact, or in campaign scope a campaign
    (v3: a campaign activity); ``item_id`` is whatever the report is asked about.

    ``cursor`` is a committed next_link to resume from (None = page one). ``since`` is sent as
    ``created_since``; records dated exactly ``since`` whose line hash is in ``seen_at_since``
    were written by an earlier run and are dropped (``created_since`` is inclusive).

    ``oldest`` .. ``newest`` is the span this run already wrote for the item, walking down
    from the top. If the API refuses a resumed cursor, the walk restarts from page one
    (``restart``) and drops the records inside that span, so nothing is written twice.
    """

    item_id: str
    cursor: str | None = None
    since: str | None = None
    seen_at_since: frozenset[bytes] = frozenset()
    newest: str | None = None  # newest activity time already written for this item
    newest_seen: frozenset[bytes] = frozenset()  # line hashes of the records dated ``newest``
    oldest: str | None = None  # oldest activity time written for this item in this run
    oldest_seen: frozenset[bytes] = frozenset()  # line hashes of the records dated ``oldest``
    restart: bool = False


@dataclass(slots=True)
class PageBatch:
    """The records of one page of one work item, and where the walk goes next.

    The records come as dicts (``records``), or already as NDJSON (``lines``, with ``records``
    empty) when the sink writes files: they are then serialised by the worker right after
    parsing, while they are hot in the CPU cache, and the dicts are freed at once.
    """

    item_id: str
    records: list[dict[str, Any]]
    # The cursor after this page: the next page's path and query, without credentials, so it
    # is safe to store; None when the item is complete.
    next_link: str | None
    newest: str | None = None  # newest canonical activity time on this page
    oldest: str | None = None  # oldest canonical activity time on this page
    newest_lines: list[bytes] = field(default_factory=list)  # the records dated ``newest``
    oldest_lines: list[bytes] = field(default_factory=list)  # the records dated ``oldest``
    work: Work | None = None  # the work item this page belongs to
    lines: bytes | None = None  # the records as NDJSON lines, in place of ``records``
    count: int = 0  # how many records: len(records), or the lines in ``lines``

    def __post_init__(self) -> None:
        if self.lines is None:
            self.count = len(self.records)


def line_of(record: dict[str, Any]) -> bytes:
    """A record as one NDJSON line: its fields exactly as the API sent them, in order."""
    return orjson.dumps(record, option=orjson.OPT_APPEND_NEWLINE)


def lines_of(records: list[dict[str, Any]]) -> bytes:
    """Records as NDJSON lines, joined: exactly ``b"".join(map(line_of, records))``.

    The writer's hot path. One ``orjson.dumps`` of the whole list is about 8x cheaper than one
    per record (a 500-record page: ~0.17 ms against ~1.5 ms). Compact JSON of a list of
    objects is ``[{...},{...}]``, so the records are split at each ``},{``: when the text holds
    exactly ``len(records) - 1`` of them, every one is a boundary between two records (the
    pattern cannot overlap itself, so ``count`` sees each occurrence). Otherwise some string or
    nested value holds the pattern too, and each record is dumped on its own.
    """
    if not records:
        return b""
    joined = orjson.dumps(records)
    if joined.count(b"},{") != len(records) - 1 or joined[1:2] != b"{":
        return b"".join(map(_dumps_line, records))
    return joined[1:-1].replace(b"},{", b"}\n{") + b"\n"


_dumps_line = functools.partial(orjson.dumps, option=orjson.OPT_APPEND_NEWLINE)


def line_hash(line: bytes) -> bytes:
    """A short, stable fingerprint of one output line (to recognise a record already written)."""
    return hashlib.blake2b(line, digest_size=8).digest()
