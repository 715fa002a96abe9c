"""``bulkopens check``: one request that proves the host, the API key and the access token.

The request is the first page of the account's campaign list, one campaign long (v2:
``GET /v2/emailmarketing/campaigns?status=SENT&limit=1``; v3: ``GET /v3/emails?limit=1``;
see :meth:`bulkopens._api.Api.check_url`): every key that can read tracking
reports can read it, it exists on every account, and its answer has the API's own shape. So a
200 page proves all four (the host answers, it is the API, the key and the token are valid); a
401 or 403 is the key or token (AuthenticationError), a page of another shape or a 404 is not
the API (ServiceUnavailable), and a host that cannot be reached stops as a run would.
"""

from __future__ import annotations

from dataclasses import dataclass

from yarl import URL

from bulkopens._api import Api
from bulkopens._api._v2 import V2
from bulkopens._exceptions import ContactError, RetriesExhausted, ServiceUnavailable
from bulkopens._pagination import Fetcher


@dataclass(frozen=True, slots=True)
class Check:
    """What ``check`` found: the API answered at ``base_url`` and took the credentials."""

    base_url: str
    api: str  # "v2"
    has_sent_campaigns: bool
    requests: int
    seconds: float

    def describe(self) -> str:
        sent = "has sent campaigns" if self.has_sent_campaigns else "has no sent campaign yet"
        plural = "" if self.requests == 1 else "s"
        credentials = "the API key and the access token" if self.api == "v2" else "the access token"
        return (
            f"bulkopens: ok: {self.base_url} answered as the Constant Contact {self.api} API and "
            f"took {credentials} ({self.requests} request{plural}, "
            f"{self.seconds * 1000:.0f} ms); the account {sent}"
        )


async def probe(fetcher: Fetcher, base: URL, api: Api = V2) -> bool:
    """Ask for one campaign; whether the account has any. Raises as a run would."""
    url = api.check_url(base)
    try:
        page = await fetcher.fetch(url)
    except RetriesExhausted as exc:  # the host fails every answer, or cannot be reached
        raise ServiceUnavailable(f"{base.host}:{base.port} cannot be used: {exc}") from None
    except ContactError as exc:
        raise ServiceUnavailable(
            f"{base.host}:{base.port} is not the Constant Contact API (its campaign list "
            f"answered {exc.status or 'an error'}): check --base-url"
        ) from None
    return bool(page.results)
