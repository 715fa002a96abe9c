"""bulkopens: bulk, rate-limited, exactly-once export of Constant Contact tracking reports.

Library use::

    async with bulkopens.Client(api_key, token) as client:
        async with client.records(contact_ids) as stream:
            async for record in stream:
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
    AnswerTooLarge,
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
    ServiceUnavailable,
    ThrottledError,
    TransientError,
)
from bulkopens._log import LOGGER_NAME
from bulkopens._reports import REPORTS
from bulkopens._stats import Progress, RequestMetrics
from bulkopens._types import (
    ActivityRecord,
    BounceRecord,
    CampaignActivitySummary,
    CampaignReportName,
    CampaignSummary,
    ClickRecord,
    ContactSummary,
    ForwardRecord,
    Ids,
    OpenRecord,
    Record,
    ReportName,
    RunStatus,
    SendRecord,
    UnsubscribeRecord,
)
from bulkopens._writer import Failure

__version__ = _version("bulkopens")

__all__ = [
    "DEFAULT_BASE_URL",
    "LOGGER_NAME",
    "REPORTS",
    "SENT",
    "ActivityRecord",
    "AnswerTooLarge",
    "AuthenticationError",
    "BounceRecord",
    "BulkOpensError",
    "CampaignActivitySummary",
    "CampaignReportName",
    "CampaignSummary",
    "ClickRecord",
    "Client",
    "ConfigurationError",
    "ContactError",
    "ContactNotFound",
    "ContactSummary",
    "Failure",
    "ForeignNextLink",
    "ForwardRecord",
    "Ids",
    "InvalidContactId",
    "OpenRecord",
    "OutputError",
    "Plan",
    "Progress",
    "QuotaExhausted",
    "Record",
    "RecordStream",
    "ReportName",
    "RequestMetrics",
    "RetriesExhausted",
    "RetryableError",
    "RunStatus",
    "RunStopped",
    "SendRecord",
    "ServiceUnavailable",
    "Settings",
    "Summary",
    "ThrottledError",
    "TransientError",
    "UnsubscribeRecord",
    "__version__",
    "parse_contact_id",
]


# Public classes say where to find them: ``bulkopens.QuotaExhausted`` in tracebacks and reprs,
# not the private module that defines them.
for _name in __all__:
    _obj = globals()[_name]
    if isinstance(_obj, type) and _obj.__module__.startswith("bulkopens._"):
        _obj.__module__ = __name__
del _name, _obj
