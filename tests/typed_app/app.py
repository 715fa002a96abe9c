"""A small typed app on bulkopens' public API: ``mypy --strict`` must accept it as it is
(tests/test_library_app.py runs it outside the repository, on the installed package)."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import bulkopens
from bulkopens import Client, OpenRecord, QuotaExhausted, RecordStream, Summary


def on_request(metrics: bulkopens.RequestMetrics) -> None:
    status: int | None = metrics.status
    logging.getLogger("app").debug("%s %s %.3f", metrics.path, status, metrics.seconds)


async def load(client: Client, ids: list[int]) -> list[str]:
    dates: list[str] = []
    stream: RecordStream[OpenRecord] = client.records(ids, since=datetime(2024, 1, 1, tzinfo=UTC))
    async with stream:
        async for record in stream:
            dates.append(record["open_date"])  # a str, typed
    for failure in stream.failures:
        error: bulkopens.ContactError = failure.error
        print(failure.id, error.status, error.error_key, failure.retryable)
    if stream.summary is not None and stream.summary.status == "incomplete":
        print(stream.summary.records)
    return dates


async def clicks(client: Client) -> set[str]:
    async with contextlib.aclosing(client.records(["1"], report="clicks")) as stream:
        return {r["click_date"] async for r in stream}


async def summaries(client: Client) -> int:
    total = 0
    async with client.records(["1"], report="summary") as stream:
        async for row in stream:
            total += row["opens"] + row["clicks"]
    async with client.campaign_records(bulkopens.SENT, report="summary") as per_campaign:
        async for campaign in per_campaign:
            print(campaign["campaign_id"], campaign["sends"])
    return total


async def export(client: Client, ids: AsyncIterator[str]) -> Summary | None:
    report: bulkopens.ReportName = "opens"
    try:
        return await client.export(ids, "out/", report=report)
    except QuotaExhausted as exc:
        print(exc.resets_at)
        return exc.summary


async def main() -> None:
    logging.getLogger(bulkopens.LOGGER_NAME).setLevel(logging.INFO)
    client = Client("key", "token", rate=4, on_request=on_request)
    try:
        await load(client, [1, 2, 3])
        status: bulkopens.RunStatus | None = None
        print(status, await clicks(client), await summaries(client))
    finally:
        await client.aclose()
