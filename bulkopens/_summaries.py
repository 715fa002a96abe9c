"""The summary reports: one request per work item, its answer as one batch of lines.

* ``summary`` for a contact (C8, ``/v2/contacts/{id}/tracking/reports/summary``) or a campaign
  (K7, ``/v2/emailmarketing/campaigns/{id}/tracking/reports/summary``): one JSON object;
* ``summary-by-campaign`` for a contact (C9, ``…/reports/summaryByCampaign``): a bare JSON
  array, one line per element (none for a contact without activity).

Neither is paged nor takes ``limit`` or ``created_since`` (docs/ctct-api.md §3, §4.1, §8 rule 12).
:func:`walk_summary` stands in for :func:`bulkopens._pagination.walk`: it yields one
:class:`PageBatch` with no next_link, so the writer writes the item's lines and marks it done
in the same commit, as for a contact whose report fits one page. Every line names its owner:
``contact_id`` (or ``campaign_id`` for K7, whose object has none) is added as a string when
the API's object lacks it, and ids written as numbers become strings.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Container
from typing import Any

from yarl import URL

from bulkopens._api import Api, Fetcher
from bulkopens._api._v2 import V2
from bulkopens._ids import stringify_ids
from bulkopens._reports import Report, Scope
from bulkopens._work import PageBatch, Work


def summary_url(base: URL, report: Report, scope: Scope, item_id: str, api: Api = V2) -> URL:
    """The summary's URL for a contact or campaign id: no query (credentials come later)."""
    return api.summary_url(base, report, scope, item_id)


def owned(records: list[dict[str, Any]], scope: Scope, item_id: str) -> list[dict[str, Any]]:
    """``records`` with string ids, each naming its owner (``{scope}_id``, appended last
    when the API left it out); in place, returns ``records``."""
    owner = f"{scope}_id"
    for record in stringify_ids(records):
        if record.get(owner) is None:
            record[owner] = item_id
    return records


async def walk_summary(
    fetcher: Fetcher,
    base: URL,
    report: Report,
    work: Work,
    page_size: int,
    *,
    scope: Scope = "contact",
    keep: Container[str] | None = None,
    api: Api = V2,
) -> AsyncGenerator[PageBatch, None]:
    """Yield the one batch of ``work``'s summary (next_link None: the item is then complete).

    Takes :func:`~bulkopens._pagination.walk`'s arguments; ``page_size``, ``work.since`` and
    ``work.cursor`` do not apply (a summary is one answer, undated). With ``keep``, only the
    lines whose ``contact_id`` is in it are kept. Raises whatever ``fetcher`` raises
    (ContactNotFound for a 404, RetriesExhausted, the run-stopping errors).
    """
    url = summary_url(base, report, scope, work.item_id, api)
    if report.shape == "object":
        records = [await fetcher.fetch_object(url)]
    else:
        records = await fetcher.fetch_list(url)
    owned(records, scope, work.item_id)
    if keep is not None:
        records = [r for r in records if r.get("contact_id") in keep]
    yield PageBatch(work.item_id, records, None, work=work)
