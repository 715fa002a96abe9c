"""The seam's types: :class:`Api` (one per version), what a campaign listing found, and what
every API call answers (:class:`Page`) through the request path (:class:`Fetcher`)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from yarl import URL

from bulkopens._reports import Report, Scope


@dataclass(slots=True)
class Page:
    """One page of a report: the records as the API sent them, and the raw next_link.

    ``body`` is the answer's text, from which the records' own text can be cut (see
    :func:`bulkopens._pagination.record_text`); whoever changes ``results`` must drop it.
    """

    results: list[dict[str, Any]]
    next_link: str | None
    body: bytes | None = None
    key: str = "results"  # the answer's key of the records' array


class Fetcher(Protocol):
    """The request path as its users see it (the walker, the summaries, the planner, the id
    mapping, ``check``): the retrying, paced ``PageFetcher``, or an iterator's credited one."""

    async def fetch(self, url: URL) -> Page:
        """One page of records (a paged answer)."""
        ...

    async def fetch_object(self, url: URL) -> dict[str, Any]:
        """One JSON object (a summary, a campaign, an id mapping)."""
        ...

    async def fetch_list(self, url: URL) -> list[dict[str, Any]]:
        """One bare JSON array of objects (summaryByCampaign)."""
        ...


ApiName = Literal["v2", "v3"]
#: ``each(fn, xs)``: ``[await fn(x) for x in xs]``, run concurrently by the engine.
Mapper = Callable[[Callable[[str], Awaitable[Any]], Sequence[str]], Awaitable[list[Any]]]
API_NAMES: tuple[ApiName, ...] = ("v2", "v3")


@dataclass(frozen=True, slots=True)
class CampaignList:
    """The work items of the campaign path, as the API lists them.

    ``items`` are what each campaign report is asked about (v2: a campaign; v3: a campaign
    activity, the primary send or a resend); ``owner`` maps each to its campaign (the key of
    the summaries' counts); ``requests`` is what listing them took.
    """

    items: list[str]
    requests: int
    owner: dict[str, str] = field(default_factory=dict, repr=False)


class Api:
    """One API version. Subclasses fill in the class attributes and the methods."""

    name: ApiName
    default_base_url: str
    #: Every endpoint's path starts with it (below the base URL's own path, if any).
    root: str
    #: The key of the records' array in a tracking report's answer (bytes form for the cut).
    results_key: str
    #: Every key under which a paged answer of this API may hold its rows.
    list_keys: tuple[str, ...]
    #: Query parameters that carry a credential: never stored, never followed from a link.
    credential_params: tuple[str, ...] = ("api_key", "access_token")
    #: Whether the tracking reports take a date filter (v2 ``created_since``; v3 none: the
    #: walk filters, and stops at the first page that reaches the date).
    date_filter: bool
    #: Whether each request carries the API key as the ``api_key`` query parameter.
    sends_api_key: bool
    #: The campaign list's largest page.
    list_page_size: int
    #: What an id looks like, for errors.ndjson (``{noun}``: contact or campaign).
    id_form: str
    #: Ids are text (v3's UUIDs), kept as such in the state; else numbers (v2).
    text_ids: bool
    #: Campaign reports write ids as JSON numbers, turned into strings (v2's).
    numeric_ids_in_campaign_reports: bool
    #: Ids of the API before this one are mapped to this one's (v3: v2 ids, see
    #: :meth:`foreign_id` and the xref methods).
    maps_older_ids: bool

    def max_page_size(self, scope: Scope) -> int:
        raise NotImplementedError

    def page_size(self, scope: Scope, asked: int) -> int:
        """The page size a walk asks for: ``asked``, within what the report allows."""
        return max(1, min(asked, self.max_page_size(scope)))

    def parse_id(self, raw: str, scope: Scope = "contact") -> str | None:
        """The canonical id of a contact (or, in campaign scope, a campaign), or None."""
        raise NotImplementedError

    def id_example(self, scope: Scope = "contact") -> str:
        """What an id of ``scope`` looks like, for a message."""
        raise NotImplementedError

    def check_report(self, report: Report, scope: Scope) -> None:
        """ConfigurationError, before any request, for a report this API does not offer."""

    def report_url(
        self,
        base: URL,
        report: Report,
        scope: Scope,
        item_id: str,
        page_size: int,
        since: str | None = None,
    ) -> URL:
        """The first page of ``report`` for one item; no credential in it."""
        raise NotImplementedError

    def summary_url(self, base: URL, report: Report, scope: Scope, item_id: str) -> URL:
        raise NotImplementedError

    def rows(self, data: Any) -> tuple[str, list[Any], Any] | None:
        """A paged answer's key of its rows, the rows and its raw next-page link (None on the
        last page), or None when ``data`` is not a paged answer of this API."""
        if not isinstance(data, dict):
            return None
        for key in self.list_keys:
            rows = data.get(key)
            if isinstance(rows, list):
                return key, rows, self.next_link(data)
        return None

    def next_link(self, data: dict[str, Any]) -> Any:
        raise NotImplementedError

    def date_field(self, report: Report) -> str | None:
        """The field every record of ``report`` is dated by, or None (per record, or none)."""
        raise NotImplementedError

    def record_time(self, report: Report, record: dict[str, Any]) -> str | None:
        """The record's activity time as the API wrote it, or None if it has none."""
        raise NotImplementedError

    def check_url(self, base: URL) -> URL:
        """A cheap request that any key able to read tracking can make (``check``)."""
        raise NotImplementedError

    async def sent_campaigns(self, fetcher: Fetcher, base: URL, each: Mapper) -> CampaignList:
        """Every sent campaign's work items, in the API's order."""
        raise NotImplementedError

    async def campaign_items(
        self, fetcher: Fetcher, base: URL, campaign_ids: Sequence[str], each: Mapper
    ) -> CampaignList:
        """The work items of the given campaigns (``--campaigns FILE``): the ids themselves."""
        return CampaignList(list(campaign_ids), 0)

    @property
    def items_are_campaigns(self) -> bool:
        """Whether a campaign path's work item is the campaign itself (else: an activity)."""
        return True

    def count_requests(self, listed: CampaignList) -> int:
        """The fewest requests :meth:`campaign_counts` takes for ``listed``."""
        raise NotImplementedError

    async def campaign_counts(
        self,
        fetcher: Fetcher,
        base: URL,
        report: Report,
        listed: CampaignList,
        each: Mapper,
    ) -> tuple[list[int], int]:
        """Each item's record count for ``report`` from the summaries (0 where unknown), and
        the requests that took. ``each(fn, xs)`` runs ``fn`` over ``xs`` concurrently (the
        engine's bounded map: this layer starts no task)."""
        raise NotImplementedError

    # -- ids of the other API (v2 ids on v3: the xref endpoints) ----------------------------

    def foreign_id(self, raw: str) -> str | None:
        """The canonical form of ``raw`` as an id of the API before this one (that this API
        can map, see :meth:`xref_url`), or None."""
        return None

    def xref_batch(self, scope: Scope) -> int:
        """How many ids one mapping request takes."""
        return 1

    def xref_url(self, base: URL, scope: Scope, ids: Sequence[str]) -> URL:
        raise NotImplementedError

    def xref_pairs(self, data: dict[str, Any], scope: Scope) -> dict[str, str]:
        """What a mapping answer maps: the old id to the work item's id."""
        raise NotImplementedError
