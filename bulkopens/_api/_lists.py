"""The one walker of the API's plain lists (the campaign list, the v3 campaign summaries): pages
followed by their safe next-page link, with one loop guard and one page bound."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from yarl import URL

from bulkopens._api._links import resolve_next
from bulkopens._config import DEFAULT_MAX_PAGES
from bulkopens._exceptions import ConfigurationError, ContactError, ForeignNextLink

if TYPE_CHECKING:
    from bulkopens._api._base import Api, Fetcher


async def list_rows(
    api: Api, fetcher: Fetcher, base: URL, url: URL, what: str
) -> AsyncIterator[list[Any]]:
    """Yield the rows of each page of the list at ``url``, following next links.

    Raises ConfigurationError (naming ``what``) when the list cannot be had: an error answer
    (404, retries exhausted), a next link that leaves the API, a loop, or more than the page
    bound; and the run-stopping errors of the fetcher.
    """
    visited = {url}
    pages = 0
    try:
        while True:
            page = await fetcher.fetch(url)
            pages += 1
            yield page.results
            if not page.results or not page.next_link:
                return
            next_url = resolve_next(base, page.next_link, root=api.root)
            if next_url in visited or pages >= DEFAULT_MAX_PAGES:
                raise ConfigurationError(
                    f"the {what}'s pages link back to a page already read (a loop)"
                    if next_url in visited
                    else f"the {what} runs past {DEFAULT_MAX_PAGES:,} pages"
                )
            visited.add(next_url)
            url = next_url
    except ForeignNextLink as exc:
        raise ConfigurationError(f"the {what}'s {exc}") from None
    except ContactError as exc:
        raise ConfigurationError(f"cannot read the {what}: {exc}") from None
