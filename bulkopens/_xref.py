"""v2 ids on a v3 run: mapped to v3 ones through the API's xref endpoints, once.

Users moving from v2 hold integer ids. On v3, each input id that is a v2 id is asked of
``/v3/contacts/contact_id_xrefs`` (500 a request) or, for campaigns,
``/v3/emails/campaign_id_xrefs`` (50 a request; a v2 campaign maps to the v3 campaign
*activity* whose report it is); see docs/ctct-api.md §5. The requests go through the run's
fetcher, so the pacer and the key's budget count them. The answers are kept in the state store
(a rerun asks nothing again) and written to ``id-map.ndjson``. A v2 id without a v3 counterpart
goes on unmapped: the claimer reports it as an input line that is not a v3 id, and
``errors.ndjson`` says it has no counterpart. The docs say these endpoints exist for the
migration and may go away: a 404 or 410 stops the run with one line.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence

from yarl import URL

from bulkopens._api import Api, Fetcher
from bulkopens._exceptions import ConfigurationError, ContactError
from bulkopens._pipeline import IdSource, id_batches
from bulkopens._reports import Scope
from bulkopens._state import AsyncStore

_ASYNC_CHUNK = 500  # ids of an async source mapped per request


class IdMapper:
    """Maps v2 ids of one scope to the v3 work items' ids, caching every answer."""

    def __init__(
        self, api: Api, fetcher: Fetcher, base: URL, store: AsyncStore | None, scope: Scope
    ) -> None:
        self._api = api
        self._fetcher = fetcher
        self._base = base
        self._store = store
        self._scope = scope
        self._known: dict[str, str | None] = {}
        self.requests = 0  # mapping requests made

    async def resolve(self, v2_ids: Sequence[str]) -> dict[str, str | None]:
        """Each canonical v2 id's v3 id (None: the API knows none)."""
        known, scope, store = self._known, self._scope, self._store
        missing = [i for i in dict.fromkeys(v2_ids) if i not in known]
        if missing and store is not None:
            known.update(await store.call(store.sync.mapped, scope, missing))
            missing = [i for i in missing if i not in known]
        size = self._api.xref_batch(scope)
        for start in range(0, len(missing), size):
            chunk = missing[start : start + size]
            pairs = await self._ask(chunk)
            found = {i: pairs.get(i) for i in chunk}
            known.update(found)
            if store is not None:
                await store.call(store.sync.save_mapped, scope, found)
        return {i: known[i] for i in v2_ids}

    async def _ask(self, chunk: list[str]) -> dict[str, str]:
        url = self._api.xref_url(self._base, self._scope, chunk)
        self.requests += 1
        try:
            data = await self._fetcher.fetch_object(url)
        except ContactError as exc:
            if exc.status in (404, 410):
                raise ConfigurationError(
                    f"the API's v2-to-v3 id mapping ({url.path}) answered {exc.status}: it "
                    "has been retired (the docs said it might be); give v3 ids (UUIDs) instead"
                ) from None
            raise ConfigurationError(f"cannot map v2 ids to v3 ones: {exc}") from None
        return self._api.xref_pairs(data, self._scope)

    async def map_list(self, raw: Sequence[str]) -> list[str]:
        """``raw`` with each v2 id replaced by its v3 id (left as it is when it has none, and
        every other line too: the run tells valid from invalid)."""
        api = self._api
        wanted = {
            r: v2
            for r in raw
            if isinstance(r, str) and api.parse_id(r) is None and (v2 := api.foreign_id(r))
        }
        if not wanted:
            return list(raw)
        mapped = await self.resolve(list(wanted.values()))
        return [(mapped[wanted[r]] or r) if r in wanted else r for r in raw]

    def ids(self, source: IdSource) -> MappedIds:
        return MappedIds(source, self)


class MappedIds:
    """An id source with its v2 ids mapped, a batch at a time (the reader's batches as they
    are; an async source 500 ids at a time; a plain iterable in the reader's batches)."""

    def __init__(self, source: IdSource, mapper: IdMapper) -> None:
        self._source = source
        self._mapper = mapper

    async def batches(self) -> AsyncIterator[list[str]]:
        async for chunk in id_batches(self._source, _ASYNC_CHUNK, held=_ASYNC_CHUNK):
            yield await self._mapper.map_list(chunk)

    async def __aiter__(self) -> AsyncIterator[str]:  # an IdSource too
        async for chunk in self.batches():
            for raw in chunk:
                yield raw
