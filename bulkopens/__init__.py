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

import importlib
from typing import TYPE_CHECKING, Any

from bulkopens._version import __version__

if TYPE_CHECKING:
    from bulkopens._budget import (
        Budget,
    )
    from bulkopens._campaigns import (
        Plan,
    )
    from bulkopens._client import (
        Client,
        RecordStream,
    )
    from bulkopens._config import (
        DEFAULT_BASE_URL,
        parse_contact_id,
    )
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
        RequestLimitReached,
        RetriesExhausted,
        RunStopped,
        ServiceUnavailable,
    )
    from bulkopens._log import (
        LOGGER_NAME,
    )
    from bulkopens._stats import (
        Progress,
        RequestMetrics,
        Summary,
    )
    from bulkopens._tokens import (
        StaticToken,
        TokenFile,
        TokenProvider,
    )
    from bulkopens._types import (
        SENT,
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
    from bulkopens._writer import (
        Failure,
    )

#: Where each public name lives. The package imports a module on first use of one of its
#: names (PEP 562), so ``import bulkopens`` costs nothing until a name is used, and
#: ``bulkopens --version`` needs no HTTP stack.
_WHERE: dict[str, str] = {
    "ActivityRecord": "bulkopens._types",
    "AnswerTooLarge": "bulkopens._exceptions",
    "AuthenticationError": "bulkopens._exceptions",
    "BounceRecord": "bulkopens._types",
    "Budget": "bulkopens._budget",
    "BulkOpensError": "bulkopens._exceptions",
    "CampaignActivitySummary": "bulkopens._types",
    "CampaignReportName": "bulkopens._types",
    "CampaignSummary": "bulkopens._types",
    "ClickRecord": "bulkopens._types",
    "Client": "bulkopens._client",
    "ConfigurationError": "bulkopens._exceptions",
    "ContactError": "bulkopens._exceptions",
    "ContactNotFound": "bulkopens._exceptions",
    "ContactSummary": "bulkopens._types",
    "DEFAULT_BASE_URL": "bulkopens._config",
    "Failure": "bulkopens._writer",
    "ForeignNextLink": "bulkopens._exceptions",
    "ForwardRecord": "bulkopens._types",
    "Ids": "bulkopens._types",
    "InvalidContactId": "bulkopens._exceptions",
    "LOGGER_NAME": "bulkopens._log",
    "OpenRecord": "bulkopens._types",
    "OutputError": "bulkopens._exceptions",
    "Plan": "bulkopens._campaigns",
    "Progress": "bulkopens._stats",
    "QuotaExhausted": "bulkopens._exceptions",
    "RequestLimitReached": "bulkopens._exceptions",
    "Record": "bulkopens._types",
    "RecordStream": "bulkopens._client",
    "ReportName": "bulkopens._types",
    "RequestMetrics": "bulkopens._stats",
    "RetriesExhausted": "bulkopens._exceptions",
    "RunStatus": "bulkopens._types",
    "RunStopped": "bulkopens._exceptions",
    "SENT": "bulkopens._types",
    "SendRecord": "bulkopens._types",
    "ServiceUnavailable": "bulkopens._exceptions",
    "Summary": "bulkopens._stats",
    "UnsubscribeRecord": "bulkopens._types",
    "StaticToken": "bulkopens._tokens",
    "TokenFile": "bulkopens._tokens",
    "TokenProvider": "bulkopens._tokens",
    "parse_contact_id": "bulkopens._config",
}

__all__ = [
    "DEFAULT_BASE_URL",
    "LOGGER_NAME",
    "SENT",
    "ActivityRecord",
    "AnswerTooLarge",
    "AuthenticationError",
    "BounceRecord",
    "Budget",
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
    "RequestLimitReached",
    "RequestMetrics",
    "RetriesExhausted",
    "RunStatus",
    "RunStopped",
    "SendRecord",
    "ServiceUnavailable",
    "StaticToken",
    "Summary",
    "TokenFile",
    "TokenProvider",
    "UnsubscribeRecord",
    "__version__",
    "parse_contact_id",
]


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'bulkopens' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    # Public classes say where to find them: ``bulkopens.Client`` in tracebacks and reprs,
    # not the private module that defines them.
    if isinstance(value, type) and value.__module__.startswith("bulkopens._"):
        value.__module__ = __name__
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
