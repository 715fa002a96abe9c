"""Ids in the API's answers: a number is tolerated, and written out as a string.

Contact-tracking answers write ``campaign_id`` and ``contact_id`` as strings; campaign-tracking
answers of the real API can write ``"campaign_id": 1100394165287`` as a JSON number
(docs/ctct-api.md §3.1 and §8 rule 8). Records are written with both ids as strings, whichever
endpoint they came from, so the contact path and the campaign path give identical lines.
Integers only: orjson reads a 13-digit id as an exact int, never through a float.
"""

from __future__ import annotations

import operator
from typing import Any

from yarl import URL

from bulkopens._api import Fetcher, Page

ID_FIELDS = ("campaign_id", "contact_id")
_TEXT_OR_ABSENT = frozenset({str, type(None)})


def stringify_ids(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``records`` with every integer ``campaign_id``/``contact_id`` turned into its decimal
    string, in place (the field keeps its position); returns ``records``."""
    for name in ID_FIELDS:
        # the common case, every id already a string, is checked without a Python call per record
        if set(map(type, map(operator.methodcaller("get", name), records))) <= _TEXT_OR_ABSENT:
            continue
        for record in records:
            value = record.get(name)
            if type(value) is int:  # not bool, not float
                record[name] = str(value)
    return records


class StringIdPages:
    """A page fetcher whose pages' records carry their ids as strings (campaign scope)."""

    __slots__ = ("_fetcher",)

    def __init__(self, fetcher: Fetcher) -> None:
        self._fetcher = fetcher

    async def fetch(self, url: URL) -> Page:
        page = await self._fetcher.fetch(url)
        # The records may change, so their text can no longer be cut from the body.
        return Page(stringify_ids(page.results), page.next_link)

    async def fetch_object(self, url: URL) -> dict[str, Any]:
        return await self._fetcher.fetch_object(url)

    async def fetch_list(self, url: URL) -> list[dict[str, Any]]:
        return await self._fetcher.fetch_list(url)
