"""bulkopens: bulk, rate-limited, exactly-once export of Constant Contact tracking reports.

Library use::

    async with bulkopens.Client(api_key, token) as client:
        async for record in client.records(contact_ids):
            ...
        summary = await client.export(contact_ids, "out/")
        summary = await client.export_campaigns(bulkopens.SENT, "campaign-out/")
"""

from __future__ import annotations

from importlib.metadata import version as _version

from bulkopens._artifacts import Summary
from bulkopens._campaigns import SENT, Plan
from bulkopens._client import Client, RecordStream
from bulkopens._config import DEFAULT_BASE_URL, Settings, parse_contact_id
from bulkopens._exceptions import (
    AuthenticationError,
    BulkOpensError,
    ConfigurationError,
    ContactError,
    ContactNotFound,
    ForeignNextLink,
    InvalidContactId,
    OutputError,
    QuotaExhausted,
    RetriesExhausted,
    RetryableError,
    RunStopped,
    ThrottledError,
    TransientError,
)
from bulkopens._reports import REPORTS
from bulkopens._stats import Progress
from bulkopens._writer import ContactFailed

__version__ = _version("bulkopens")

__all__ = [
    "DEFAULT_BASE_URL",
    "REPORTS",
    "SENT",
    "AuthenticationError",
    "BulkOpensError",
    "Client",
    "ConfigurationError",
    "ContactError",
    "ContactFailed",
    "ContactNotFound",
    "ForeignNextLink",
    "InvalidContactId",
    "OutputError",
    "Plan",
    "Progress",
    "QuotaExhausted",
    "RecordStream",
    "RetriesExhausted",
    "RetryableError",
    "RunStopped",
    "Settings",
    "Summary",
    "ThrottledError",
    "TransientError",
    "__version__",
    "parse_contact_id",
]
