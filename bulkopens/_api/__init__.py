"""The API seam: everything that depends on which Constant Contact API a run talks to.

One :class:`Api` per version (:mod:`bulkopens._api._v2`, :mod:`bulkopens._api._v3`) answers,
for the engine, the walker, the planner and the transport: the default base URL and the path
every endpoint starts with, which credentials a request carries, the URL of a report for a
contact or a campaign, where an answer keeps its records and its next page, the record's time
field, what an id looks like, which reports exist, and how the sent campaigns and their counts
are listed. Nothing outside this package names an API path or a version's field.

The facts each version relies on, with their sources: docs/ctct-api.md (§1-4 v2, §5 v3).
"""

from __future__ import annotations

from bulkopens._api._base import (
    API_NAMES,
    Api,
    ApiName,
    CampaignList,
    Fetcher,
    Mapper,
    Page,
)
from bulkopens._api._v2 import V2
from bulkopens._api._v3 import V3
from bulkopens._exceptions import ConfigurationError


def api_for(name: str) -> Api:
    """The API of that name (``v2``/``v3``); ConfigurationError otherwise."""
    if name == "v2":
        return V2
    if name == "v3":
        return V3
    raise ConfigurationError(f"--api must be v2 or v3; got {name[:20]!r}")


__all__ = [
    "API_NAMES",
    "V2",
    "V3",
    "Api",
    "ApiName",
    "CampaignList",
    "Fetcher",
    "Mapper",
    "Page",
    "api_for",
]
