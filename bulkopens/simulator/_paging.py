"""Keyset pagination, newest first, and the opaque ``next`` token that carries it.

A view is a list sorted ascending by ``(ts_ms, tie_break, ...)``. A page holds the newest
``limit`` rows whose key is below the cursor position and at or after ``since_ms``
(inclusive). The next page resumes strictly below the last (oldest) row shown, so rows added
later with newer keys never shift a walk that is under way.

Token: unpadded standard base64 of a small query string such as
``limit=3&next=1354817210430&tb=36`` followed by a 9-byte keyed hash over the resource path
and that string, so any edit, or use on another resource, is rejected. The hash bytes make
``+`` and ``/`` common in tokens, as they may be in the real API's.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from bisect import bisect_left
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeVar

Row = TypeVar("Row", bound=tuple[int, ...])

_FIELDS = ("limit", "since", "status", "kinds", "names", "next", "tb")
_MAC_BYTES = 9


class TokenError(ValueError):
    """The ``next`` token is malformed, tampered with, or belongs to another resource."""


@dataclass(frozen=True, slots=True)
class Cursor:
    """The effective paging parameters of one page request."""

    limit: int
    since_ms: int | None = None
    status: str | None = None  # campaign list only
    after: tuple[int, int] | None = None  # only rows with a key strictly below this
    kinds: int | None = None  # v3 activity details: bit mask of the record kinds asked for
    names: bool | None = None  # v3 activity details: include_campaign_activity_names


def take_page(rows: Sequence[Row], cursor: Cursor) -> tuple[list[Row], tuple[int, int] | None]:
    """Return (rows of the page, newest first; key of the last row if more rows follow)."""
    lo = 0 if cursor.since_ms is None else _index(rows, (cursor.since_ms,))
    hi = len(rows) if cursor.after is None else _index(rows, cursor.after)
    start = max(lo, hi - cursor.limit)
    page = list(rows[start:hi])
    page.reverse()
    if start > lo and page:
        last = page[-1]
        return page, (last[0], last[1])
    return page, None


def _index(rows: Sequence[Row], probe: tuple[int, ...]) -> int:
    # A probe shorter than the rows sorts before every row that shares its prefix.
    return bisect_left(rows, probe)


class TokenCodec:
    """Encodes and verifies ``next`` tokens; deterministic for a given secret."""

    __slots__ = ("_secret",)

    def __init__(self, secret: bytes) -> None:
        self._secret = secret

    def encode(self, scope: str, cursor: Cursor) -> str:
        """Token for ``cursor`` on the resource ``scope`` (its path without trailing slash)."""
        parts = [f"limit={cursor.limit}"]
        if cursor.since_ms is not None:
            parts.append(f"since={cursor.since_ms}")
        if cursor.status is not None:
            parts.append(f"status={cursor.status}")
        if cursor.kinds is not None:
            parts.append(f"kinds={cursor.kinds}")
        if cursor.names is not None:
            parts.append(f"names={int(cursor.names)}")
        if cursor.after is not None:
            parts.append(f"next={cursor.after[0]}&tb={cursor.after[1]}")
        body = "&".join(parts).encode("ascii")
        return base64.b64encode(body + self._sign(scope, body)).decode("ascii").rstrip("=")

    def decode(self, scope: str, token: str) -> Cursor:
        """Parse a token leniently (spaces for ``+``, url-safe letters, padding optional).

        Raises TokenError if it is not one this codec issued for ``scope``.
        """
        text = token.replace(" ", "+").replace("-", "+").replace("_", "/").strip().rstrip("=")
        if not text or len(text) % 4 == 1:
            raise TokenError("bad token length")
        try:
            raw = base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
        except binascii.Error as exc:
            raise TokenError("token is not base64") from exc
        body, mac = raw[:-_MAC_BYTES], raw[-_MAC_BYTES:]
        if not body or not hmac.compare_digest(mac, self._sign(scope, body)):
            raise TokenError("token signature does not match")
        fields: dict[str, str] = {}
        for item in body.decode("ascii").split("&"):
            name, eq, value = item.partition("=")
            if not eq or name not in _FIELDS or name in fields:
                raise TokenError("unexpected token field")
            fields[name] = value
        try:
            limit = int(fields["limit"])
            since = int(fields["since"]) if "since" in fields else None
            after = (int(fields["next"]), int(fields["tb"])) if "next" in fields else None
            kinds = int(fields["kinds"]) if "kinds" in fields else None
            names = bool(int(fields["names"])) if "names" in fields else None
        except (KeyError, ValueError) as exc:
            raise TokenError("token fields are not integers") from exc
        return Cursor(
            limit=limit,
            since_ms=since,
            status=fields.get("status"),
            after=after,
            kinds=kinds,
            names=names,
        )

    def _sign(self, scope: str, body: bytes) -> bytes:
        mac = hashlib.blake2b(scope.encode(), key=self._secret, digest_size=_MAC_BYTES)
        mac.update(b"?" + body)
        return mac.digest()
